// CoreDNS's objects for the real-node cluster: kubeadm's addon shape, at the address the kubelets are given.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
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

test("the lean CoreDNS build (coredns/main.go) has every plugin the Corefile uses, in CoreDNS's order", () => {
  // The server block's own directives: the first word of each line one level deep.
  const used: string[] = [];
  let depth = 0;
  for (const line of corefile().split("\n")) {
    const word = line.trim().split(/\s+/)[0]!;
    if (depth === 1 && word && word !== "}") used.push(word);
    depth += (line.match(/\{/g) ?? []).length - (line.match(/\}/g) ?? []).length;
  }
  assert.deepEqual(used, ["errors", "health", "ready", "kubernetes", "cache", "loadbalance"]);
  const main = readFileSync(new URL("./coredns/main.go", import.meta.url), "utf8");
  const imported = [...main.matchAll(/^\s+_ "github\.com\/coredns\/coredns\/plugin\/([a-z0-9_]+)"$/gm)].map((m) => m[1]!);
  const list = /var directives = \[\]string\{([^}]*)\}/.exec(main)?.[1];
  assert.ok(list, "coredns/main.go: no directives list");
  const directives = [...list.matchAll(/"([a-z0-9_]+)"/g)].map((m) => m[1]!);
  for (const d of used) {
    assert.ok(imported.includes(d), `Corefile directive ${d}: coredns/main.go does not import plugin/${d}`);
    assert.ok(directives.includes(d), `Corefile directive ${d}: not in coredns/main.go's directives`);
  }
  // plugin.cfg's order (ready, health, errors, loadbalance, cache, kubernetes), which decides the query's path.
  assert.deepEqual(directives, ["ready", "health", "errors", "loadbalance", "cache", "kubernetes"]);
  assert.deepEqual([...imported].sort(), [...directives].sort());
});
