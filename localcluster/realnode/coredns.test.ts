// CoreDNS's objects for the real-node cluster: kubeadm's addon shape, at the address the kubelets are given.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parse } from "yaml";
import { CLUSTER_DNS_ADDRESS, kubeletConfig, planRealNode } from "./config.ts";
import { coreDNSObjects, corefile } from "./coredns.ts";

interface Obj {
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: Record<string, unknown>;
  rules?: { resources: string[]; verbs: string[] }[];
}

test("the kube-dns Service sits at the kubelets' clusterDNS address and selects the CoreDNS pods", () => {
  const objs = coreDNSObjects("membrane.local/coredns:v1") as Obj[];
  const svc = objs.find((o) => o.kind === "Service")!;
  assert.deepEqual([svc.metadata.namespace, svc.metadata.name], ["kube-system", "kube-dns"]);
  assert.equal(svc.spec!["clusterIP"], CLUSTER_DNS_ADDRESS);
  const planned = planRealNode({ name: "w", dir: "/tmp/w", index: 1 });
  assert.ok(planned.ok);
  const kubelet = parse(kubeletConfig(planned.plan, "/ca.crt")) as { clusterDNS: string[]; clusterDomain: string };
  assert.deepEqual(kubelet.clusterDNS, [CLUSTER_DNS_ADDRESS]);
  const deploy = objs.find((o) => o.kind === "Deployment")! as Obj & { spec: { selector: { matchLabels: Record<string, string> }; template: { spec: { dnsPolicy: string; containers: { image: string; imagePullPolicy: string }[] } } } };
  assert.deepEqual(deploy.spec.selector.matchLabels, svc.spec!["selector"]);
  assert.equal(deploy.spec.template.spec.containers[0]!.image, "membrane.local/coredns:v1");
  assert.equal(deploy.spec.template.spec.containers[0]!.imagePullPolicy, "Never");
  // Not ClusterFirst: CoreDNS asking itself would loop.
  assert.equal(deploy.spec.template.spec.dnsPolicy, "Default");
});

test("CoreDNS may read what its kubernetes plugin watches, and nothing more", () => {
  const role = (coreDNSObjects("i") as Obj[]).find((o) => o.kind === "ClusterRole")!;
  assert.deepEqual(role.rules!.flatMap((r) => r.resources).sort(), ["endpoints", "endpointslices", "namespaces", "pods", "services"]);
  for (const r of role.rules!) assert.deepEqual(r.verbs, ["list", "watch"]);
});

test("the Corefile answers the cluster domain from the API server, with health and readiness for the probes", () => {
  const c = corefile();
  assert.match(c, /^\s+kubernetes cluster\.local in-addr\.arpa ip6\.arpa \{$/m);
  assert.match(c, /^\s+ready$/m);
  assert.match(c, /^\s+health \{$/m);
  assert.doesNotMatch(c, /forward/, "no upstream on the real nodes");
});
