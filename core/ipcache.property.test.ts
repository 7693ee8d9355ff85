// The incremental ipcache against its definition read literally: after any sequence of pod, node and
// CIDR events, each take equals the ipcache built from scratch from the objects as they are, and its
// delta turns the previous take into it.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ClusterIPCache, type NodeAddress, type PodAddresses } from "./ipcache.ts";
import { IDENTITY } from "./identity.ts";
import { applyDelta, EMPTY_STATE, NO_PART_CHANGE, sameIPCacheEntry } from "./nodestate.ts";
import type { IPCacheEntry } from "./wire.ts";

// Small pools, so that pods, nodes and CIDRs often claim the same prefix.
const IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.0.2.1", "192.0.2.2", "fd00::1"];
const PODS = ["a/p", "a/q", "b/p", "b/r"];
const NODES = ["n1", "n2", "n3"];
const CIDRS = ["10.0.0.1/32", "10.0.0.0/24", "192.0.2.1/32", "198.51.100.0/24"];

type Event =
  | { kind: "pod"; key: string; pod: PodAddresses | undefined }
  | { kind: "node"; name: string; addresses: NodeAddress[] | undefined }
  | { kind: "cidr"; prefix: string; identity: number | undefined }
  | { kind: "take" };

const event: fc.Arbitrary<Event> = fc.oneof(
  fc.record({
    kind: fc.constant("pod" as const),
    key: fc.constantFrom(...PODS),
    pod: fc.option(
      fc.record({
        identity: fc.integer({ min: 256, max: 259 }),
        node: fc.option(fc.constantFrom(...NODES, ""), { nil: undefined }),
        ips: fc.subarray(IPS, { maxLength: 2 }),
        workload: fc.option(fc.constantFrom({ kind: "Deployment", name: "web" }, { kind: "StatefulSet", name: "web" }), { nil: undefined }),
      }),
      { nil: undefined },
    ),
  }),
  fc.record({
    kind: fc.constant("node" as const),
    name: fc.constantFrom(...NODES),
    addresses: fc.option(fc.array(fc.record({ type: fc.constantFrom("InternalIP", "ExternalIP"), ip: fc.constantFrom(...IPS) }), { maxLength: 3 }), { nil: undefined }),
  }),
  fc.record({ kind: fc.constant("cidr" as const), prefix: fc.constantFrom(...CIDRS), identity: fc.option(fc.constantFrom(1 << 24, (1 << 24) + 1), { nil: undefined }) }),
  fc.constant({ kind: "take" as const }),
);

const hostPrefix = (ip: string): string => `${ip}/${ip.includes(":") ? 128 : 32}`;

/** The definition: per prefix, a pod's claim beats a node's, a node's beats a policy CIDR's; within a kind the smallest key wins. */
function fromScratch(pods: ReadonlyMap<string, PodAddresses>, nodes: ReadonlyMap<string, readonly NodeAddress[]>, cidrs: ReadonlyMap<string, number>): IPCacheEntry[] {
  const claims: { rank: number; key: string; entry: IPCacheEntry }[] = [];
  for (const [key, p] of pods) {
    const internal = p.node ? nodes.get(p.node)?.find((a) => a.type === "InternalIP")?.ip : undefined;
    for (const ip of p.ips) claims.push({ rank: 0, key, entry: { prefix: hostPrefix(ip), identity: p.identity, ...(internal ? { node: internal } : {}), pod: key, ...(p.workload ? { workload: p.workload } : {}) } });
  }
  for (const [name, addrs] of nodes) for (const a of addrs) claims.push({ rank: 1, key: name, entry: { prefix: hostPrefix(a.ip), identity: IDENTITY.remoteNode, node: a.ip } });
  for (const [prefix, identity] of cidrs) claims.push({ rank: 2, key: "", entry: { prefix, identity } });
  const best = new Map<string, (typeof claims)[number]>();
  for (const c of claims) {
    const b = best.get(c.entry.prefix);
    if (!b || c.rank < b.rank || (c.rank === b.rank && c.key < b.key)) best.set(c.entry.prefix, c);
  }
  return [...best.values()].map((c) => c.entry).sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
}

test("property: every take equals the ipcache built from scratch, and its delta turns the previous take into it", () => {
  fc.assert(
    fc.property(fc.array(event, { maxLength: 60 }), (events) => {
      const ipc = new ClusterIPCache();
      const pods = new Map<string, PodAddresses>();
      const nodes = new Map<string, readonly NodeAddress[]>();
      const cidrs = new Map<string, number>();
      let held: readonly IPCacheEntry[] = [];
      for (const ev of [...events, { kind: "take" } as const]) {
        if (ev.kind === "pod") {
          ipc.setPod(ev.key, ev.pod);
          if (ev.pod && ev.pod.ips.length > 0) pods.set(ev.key, ev.pod);
          else pods.delete(ev.key);
        } else if (ev.kind === "node") {
          ipc.setNode(ev.name, ev.addresses);
          if (ev.addresses) nodes.set(ev.name, ev.addresses);
          else nodes.delete(ev.name);
        } else if (ev.kind === "cidr") {
          ipc.setCIDR(ev.prefix, ev.identity);
          if (ev.identity === undefined) cidrs.delete(ev.prefix);
          else cidrs.set(ev.prefix, ev.identity);
        } else {
          const expected = fromScratch(pods, nodes, cidrs);
          const change = ipc.take();
          if (!change) {
            assert.deepEqual(held, expected, "no change reported, and none there");
            continue;
          }
          assert.deepEqual(change.entries, expected);
          assert.equal(ipc.entries(), change.entries);
          const before = new Map(held.map((e) => [e.prefix, e]));
          for (const e of change.upserts) assert.ok(!before.has(e.prefix) || !sameIPCacheEntry(before.get(e.prefix)!, e), `${e.prefix} is upserted only when it moved`);
          for (const p of change.removals) assert.ok(before.has(p), `${p} is removed only when it was there`);
          const applied = applyDelta({ ...EMPTY_STATE, ipcache: held }, { ...NO_PART_CHANGE, subjects: [], removedSubjects: [], ipcacheUpserts: change.upserts, ipcacheRemovals: change.removals, policyGenerationUpserts: [], policyGenerationRemovals: [] });
          assert.deepEqual(applied.ipcache, change.entries, "the delta turns the previous take into this one");
          for (const e of change.entries) {
            const b = before.get(e.prefix);
            if (b && sameIPCacheEntry(b, e)) assert.equal(e, b, `${e.prefix}: an unchanged entry keeps its object`);
          }
          held = change.entries;
        }
      }
    }),
    { numRuns: 500 },
  );
});

test("a node's new InternalIP moves the tunnel endpoint of its pods' entries, and only those", () => {
  const ipc = new ClusterIPCache();
  ipc.setNode("n1", [{ type: "InternalIP", ip: "192.0.2.1" }]);
  ipc.setNode("n2", [{ type: "InternalIP", ip: "192.0.2.2" }]);
  ipc.setPod("ns/a", { identity: 256, node: "n1", ips: ["10.0.1.5"] });
  ipc.setPod("ns/b", { identity: 257, node: "n2", ips: ["10.0.2.5"] });
  const first = ipc.take()!;
  ipc.setNode("n1", [{ type: "InternalIP", ip: "192.0.2.9" }]);
  const moved = ipc.take()!;
  assert.deepEqual(moved.upserts, [
    { prefix: "10.0.1.5/32", identity: 256, node: "192.0.2.9", pod: "ns/a" },
    { prefix: "192.0.2.9/32", identity: IDENTITY.remoteNode, node: "192.0.2.9" },
  ]);
  assert.deepEqual(moved.removals, ["192.0.2.1/32"]);
  assert.equal(moved.entries.find((e) => e.pod === "ns/b"), first.entries.find((e) => e.pod === "ns/b"), "the other node's pod keeps its entry object");
  assert.equal(ipc.take(), undefined, "nothing moved since");
});

test("a pod's identity is found by its address in any spelling (what a Service's backend addresses stand for)", () => {
  const ipc = new ClusterIPCache();
  ipc.setPod("ns/v6", { identity: 300, node: "n1", ips: ["fd00:0:0::1"] });
  ipc.setPod("ns/b", { identity: 301, ips: ["10.0.0.7"] });
  ipc.setPod("ns/a", { identity: 302, ips: ["10.0.0.7"] });
  assert.equal(ipc.podIdentity("fd00::1"), 300);
  assert.equal(ipc.podIdentity("10.0.0.7"), 302, "two pods with one address: the smallest key, as in the ipcache");
  ipc.setPod("ns/a", undefined);
  assert.equal(ipc.podIdentity("10.0.0.7"), 301);
  assert.equal(ipc.podIdentity("10.0.0.8"), undefined);
});
