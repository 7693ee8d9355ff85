// The local cluster DNS's objects and dnsmasq command line, and a ClusterFirst pod's resolv.conf, without a cluster.
import { test } from "node:test";
import assert from "node:assert/strict";
import { clusterDnsObjects, dnsmasqCommand } from "./cluster-dns.ts";
import { clusterFirstResolvConf } from "./kubelet.ts";
import { OUTSIDE_CIDR, OUTSIDE_CNAMES, OUTSIDE_HOSTS } from "./outside.ts";
import { parsePrefix } from "../core/cidr.ts";

test("dnsmasq answers every outside host's names and the CNAMEs from its command line alone (no config file, no upstream, no hosts file)", () => {
  const cmd = dnsmasqCommand(OUTSIDE_HOSTS, OUTSIDE_CNAMES);
  assert.equal(cmd[0], "dnsmasq");
  for (const flag of ["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"]) assert.ok(cmd.includes(flag), flag);
  for (const h of OUTSIDE_HOSTS) for (const n of h.names) assert.ok(cmd.includes(`--host-record=${n},${h.ip}`), n);
  assert.ok(cmd.includes("--cname=alias.outside.test,api.outside.test"));
});

test("the kube-dns Pod and Service are kube-system's, labelled and selected by k8s-app=kube-dns, port 53 over UDP and TCP", () => {
  const { service, pod } = clusterDnsObjects("node-1", OUTSIDE_HOSTS, OUTSIDE_CNAMES) as unknown as {
    service: { metadata: { namespace: string; labels: Record<string, string> }; spec: { selector: Record<string, string>; ports: { port: number; protocol: string }[] } };
    pod: { metadata: { namespace: string; labels: Record<string, string> }; spec: { nodeName: string; dnsPolicy: string; containers: { command: string[]; ports: { containerPort: number; protocol: string }[] }[] } };
  };
  assert.equal(service.metadata.namespace, "kube-system");
  assert.equal(pod.metadata.namespace, "kube-system");
  assert.equal(service.metadata.labels["k8s-app"], "kube-dns");
  assert.deepEqual(service.spec.selector, { "k8s-app": "kube-dns" });
  assert.deepEqual(pod.metadata.labels, { "k8s-app": "kube-dns" });
  assert.deepEqual(service.spec.ports.map((p) => `${p.protocol}/${p.port}`), ["UDP/53", "TCP/53"]);
  assert.deepEqual(pod.spec.containers[0]!.ports.map((p) => `${p.protocol}/${p.containerPort}`), ["UDP/53", "TCP/53"]);
  assert.equal(pod.spec.nodeName, "node-1");
  assert.equal(pod.spec.dnsPolicy, "Default", "the resolver does not resolve through itself");
  assert.deepEqual(pod.spec.containers[0]!.command, ["dnsmasq"]);
});

test("outside hosts are in OUTSIDE_CIDR, outside the pod range and the underlay, and every name is unique", () => {
  const outside = parsePrefix(OUTSIDE_CIDR)!;
  const inside = (ip: string, cidr: string): boolean => {
    const p = parsePrefix(cidr)!;
    const a = parsePrefix(`${ip}/32`)!.addr;
    const mask = ((1n << BigInt(p.bits)) - 1n) << BigInt(32 - p.bits);
    return (a & mask) === (p.addr & mask);
  };
  for (const h of OUTSIDE_HOSTS) {
    assert.ok(inside(h.ip, OUTSIDE_CIDR), `${h.ip} in ${OUTSIDE_CIDR} (${outside.bits})`);
    assert.ok(!inside(h.ip, "10.244.0.0/16") && !inside(h.ip, "172.30.0.0/24"), h.ip);
  }
  const names = OUTSIDE_HOSTS.flatMap((h) => h.names);
  assert.equal(new Set(names).size, names.length);
});

test("a ClusterFirst pod's resolv.conf names the cluster DNS, its namespace's search list and ndots:5, as a kubelet writes it", () => {
  assert.equal(clusterFirstResolvConf(["10.244.1.7"], "shop"), "nameserver 10.244.1.7\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n");
});
