// Pod naming for flows: remote pods from the ipcache's `pod`, local registrations first, IPv6 text in any form.
import { test } from "node:test";
import assert from "node:assert/strict";
import { enrich, type EnrichLookups } from "./enrich.ts";
import { parsePodRef, podByAddress, podsFromIpcache } from "./pods.ts";
import type { VerdictEvent } from "../bpf/layout.ts";
import { DROP_REASON_CODES } from "../bpf/layout.ts";
import { PROTO_NUMBER } from "../../core/model.ts";

const ipcache = [
  { prefix: "10.1.0.5/32", identity: 300, node: "192.168.0.2", pod: "shop/web-0", workload: { kind: "StatefulSet", name: "web" } },
  { prefix: "fd00:0:0:1::5/128", identity: 300, node: "192.168.0.2", pod: "shop/web-1" },
  { prefix: "10.0.0.7/32", identity: 256, pod: "default/client-1", workload: { kind: "Deployment", name: "client" } },
  { prefix: "10.9.0.0/16", identity: 16777217 }, // a CIDR identity: no pod
  { prefix: "10.8.0.0/16", identity: 400, pod: "odd/range" }, // a range never names one pod
  { prefix: "10.1.0.6/32", identity: 300, pod: "no-slash" },
];

test("ipcache entries with a pod name their single address; ranges and malformed names do not", () => {
  const pods = podsFromIpcache(ipcache);
  assert.deepEqual(Object.fromEntries(pods), {
    "10.1.0.5": { namespace: "shop", pod: "web-0", workload: { kind: "StatefulSet", name: "web" } },
    "fd00:0:0:1::5": { namespace: "shop", pod: "web-1" },
    "10.0.0.7": { namespace: "default", pod: "client-1", workload: { kind: "Deployment", name: "client" } },
  });
  assert.equal(parsePodRef("/x"), undefined);
  assert.equal(parsePodRef("x/"), undefined);
  assert.deepEqual(parsePodRef("ns/a/b"), { namespace: "ns", pod: "a/b" });
});

test("the local registration wins over the ipcache; a remote address is named from the ipcache; IPv6 in uncompressed form matches", () => {
  const cluster = podsFromIpcache(ipcache);
  const local = new Map([["10.0.0.7", { namespace: "default", pod: "client-1-renamed" }]]);
  assert.deepEqual(podByAddress("10.0.0.7", local, cluster), { namespace: "default", pod: "client-1-renamed" });
  assert.deepEqual(podByAddress("10.1.0.5", local, cluster), { namespace: "shop", pod: "web-0", workload: { kind: "StatefulSet", name: "web" } });
  assert.deepEqual(podByAddress("fd00:0:0:1:0:0:0:5", local, cluster), { namespace: "shop", pod: "web-1" });
  assert.equal(podByAddress("10.9.1.1", local, cluster), undefined);
});

test("a local registration takes the ipcache's workload when the ipcache names the same pod", () => {
  const cluster = podsFromIpcache(ipcache);
  const local = new Map([["10.0.0.7", { namespace: "default", pod: "client-1" }]]);
  assert.deepEqual(podByAddress("10.0.0.7", local, cluster), { namespace: "default", pod: "client-1", workload: { kind: "Deployment", name: "client" } });
});

test("a flow to a pod on another node names that pod, its namespace and its workload", () => {
  const cluster = podsFromIpcache(ipcache);
  const local = new Map([["10.0.0.7", { namespace: "default", pod: "client-1" }]]);
  const lookups: EnrichLookups = {
    node: "node-a",
    identityLabels: (id) => (id === 300 ? ["k8s:app=web"] : id === 256 ? ["k8s:app=client"] : undefined),
    endpointByIp: (ip) => podByAddress(ip, local, cluster),
    ruleOrigin: () => undefined,
    wallClock: () => new Date(0),
  };
  const e: VerdictEvent = {
    timestampNs: 0n,
    verdict: "dropped",
    direction: "egress",
    ctState: "new",
    tcpFlags: 2,
    reasonCode: DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY!,
    reason: "policy denied (default deny)",
    proto: PROTO_NUMBER.TCP,
    srcIdentity: 256,
    dstIdentity: 300,
    ifindex: 3,
    src: "10.0.0.7",
    dst: "10.1.0.5",
    sport: 40000,
    dport: 8080,
  };
  const f = enrich(e, lookups);
  assert.deepEqual(f.source, { identity: 256, labels: ["k8s:app=client"], namespace: "default", pod: "client-1", workloads: [{ kind: "Deployment", name: "client" }], ip: "10.0.0.7", port: 40000 });
  assert.deepEqual(f.destination, { identity: 300, labels: ["k8s:app=web"], namespace: "shop", pod: "web-0", workloads: [{ kind: "StatefulSet", name: "web" }], ip: "10.1.0.5", port: 8080 });
  assert.deepEqual(f.decidedBy, { kind: "default-deny" });
});
