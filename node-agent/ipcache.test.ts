// A delta's datapath ipcache writes, found from the prefixes it touches, are exactly what comparing
// the two whole datapath ipcaches gives, delta after delta.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { EMPTY_STATE, NO_PART_CHANGE, applyDelta, canonicalState } from "../core/nodestate.ts";
import type { IPCacheEntry, NodeState } from "../core/wire.ts";
import { type IPCacheDelta, IpcacheIndex, datapathIpcache, remotePodPrefixes, sameIpcacheEntry } from "./ipcache.ts";
import type { IpcacheEntry } from "./bpf/layout.ts";

const NODE_IP = "192.0.2.9";
// Node addresses double as prefixes, so entries for a node's own address and pods tunnelled to it meet.
const NODES = ["192.0.2.1", "192.0.2.2", NODE_IP, "fd00::2"];
const PREFIXES = ["10.0.0.1/32", "10.0.0.2/32", "10.0.0.0/24", "192.0.2.1/32", "192.0.2.2/32", `${NODE_IP}/32`, "fd00::2/128"];

const entry: fc.Arbitrary<IPCacheEntry> = fc.record(
  { prefix: fc.constantFrom(...PREFIXES), identity: fc.constantFrom(6, 256, 257, 1 << 24), node: fc.constantFrom(...NODES) },
  { requiredKeys: ["prefix", "identity"] },
);
const table = fc.uniqueArray(entry, { selector: (e) => e.prefix, maxLength: PREFIXES.length });
const delta: fc.Arbitrary<IPCacheDelta> = fc
  .tuple(fc.uniqueArray(entry, { selector: (e) => e.prefix, maxLength: 4 }), fc.subarray(PREFIXES, { maxLength: 3 }))
  .map(([upserts, removals]) => ({ ipcacheUpserts: upserts, ipcacheRemovals: removals.filter((p) => !upserts.some((e) => e.prefix === p)) }));

const stateOf = (ipcache: readonly IPCacheEntry[]): NodeState => canonicalState({ ...EMPTY_STATE, ipcache });
const after = (s: NodeState, d: IPCacheDelta): NodeState => applyDelta(s, { ...NO_PART_CHANGE, ...d, subjects: [], removedSubjects: [], policyGenerationUpserts: [], policyGenerationRemovals: [] });

/** The writes from comparing the two datapath ipcaches whole. */
function wholeWrites(from: NodeState, to: NodeState, nodeIP: string | undefined): { set: IpcacheEntry[]; remove: string[] } {
  const old = new Map(datapathIpcache(from, nodeIP).map((e) => [e.cidr, e]));
  const now = datapathIpcache(to, nodeIP);
  return {
    set: now.filter((e) => !old.has(e.cidr) || !sameIpcacheEntry(old.get(e.cidr)!, e)),
    remove: [...old.keys()].filter((c) => !now.some((e) => e.cidr === c)),
  };
}

const byCidr = (es: readonly IpcacheEntry[]): IpcacheEntry[] => [...es].sort((a, b) => (a.cidr < b.cidr ? -1 : a.cidr > b.cidr ? 1 : 0));

test("property: a delta's writes equal the whole-table comparison, and the index follows the deltas", () => {
  fc.assert(
    fc.property(table, fc.array(delta, { minLength: 1, maxLength: 6 }), fc.constantFrom(NODE_IP, undefined), (initial, deltas, nodeIP) => {
      let s = stateOf(initial);
      const index = new IpcacheIndex(s.ipcache, nodeIP);
      for (const d of deltas) {
        const next = after(s, d);
        const writes = index.writes(d);
        const expected = wholeWrites(s, next, nodeIP);
        assert.deepEqual(byCidr(writes.set), byCidr(expected.set), "set");
        assert.deepEqual([...writes.remove].sort(), [...expected.remove].sort(), "remove");
        index.apply(d, next.ipcache);
        s = next;
      }
    }),
    { numRuns: 1000 },
  );
});

test("a delta's ipBlock writes: a prefix gaining an ipBlock identity is set, one losing it (or leaving) is removed", () => {
  const block = (prefix: string, ipBlockIdentity?: number) => ({ prefix, identity: (1 << 24) + 1, ...(ipBlockIdentity !== undefined ? { ipBlockIdentity } : {}) });
  const index = new IpcacheIndex([block("10.1.0.0/16", (1 << 24) + 2), block("10.2.0.0/16", (1 << 24) + 3), block("10.3.0.0/16")], NODE_IP);
  const w = index.writes({ ipcacheUpserts: [block("10.1.0.0/16"), block("10.3.0.0/16", (1 << 24) + 4)], ipcacheRemovals: ["10.2.0.0/16"] });
  assert.deepEqual(w.setBlocks, [{ cidr: "10.3.0.0/16", identity: (1 << 24) + 4 }]);
  assert.deepEqual([...w.removeBlocks].sort(), ["10.1.0.0/16", "10.2.0.0/16"]);
});

test("a delta that moves one pod touches only its prefix, whatever the size of the table", () => {
  const big = stateOf(Array.from({ length: 5000 }, (_, i) => ({ prefix: `10.${(i >> 8) & 255}.${i & 255}.1/32`, identity: 256, node: "192.0.2.1" })));
  const index = new IpcacheIndex(big.ipcache, NODE_IP);
  const writes = index.writes({ ipcacheUpserts: [{ prefix: "10.0.7.1/32", identity: 300, node: "192.0.2.1" }], ipcacheRemovals: ["10.0.8.1/32"] });
  assert.deepEqual(writes, { set: [{ cidr: "10.0.7.1/32", identity: 300, tunnelEndpoint: "192.0.2.1" }], remove: ["10.0.8.1/32"], setBlocks: [], removeBlocks: [] });
  // The last pod tunnelled to a node leaves: the node's trusted remote-node entry goes with it.
  const one = stateOf([{ prefix: "10.0.0.1/32", identity: 256, node: "192.0.2.2" }]);
  const gone = new IpcacheIndex(one.ipcache, NODE_IP).writes({ ipcacheUpserts: [], ipcacheRemovals: ["10.0.0.1/32"] });
  assert.deepEqual(gone.set, []);
  assert.deepEqual([...gone.remove].sort(), ["10.0.0.1/32", "192.0.2.2/32"]);
});

test("remote pod prefixes by node (WireGuard's allowed IPs when routed): other nodes' pods only, never a node's own address, this node's pods, CIDR-only entries or IPv6", () => {
  const ipcache: IPCacheEntry[] = [
    { prefix: "10.244.2.7/32", identity: 300, node: "172.30.0.3" },
    { prefix: "10.244.2.5/32", identity: 301, node: "172.30.0.3" },
    { prefix: "172.30.0.3/32", identity: 6, node: "172.30.0.3" },
    { prefix: "10.244.3.9/32", identity: 300, node: "172.30.0.4" },
    { prefix: "10.244.1.4/32", identity: 300, node: "172.30.0.2" },
    { prefix: "192.0.2.0/24", identity: 16777217 },
    { prefix: "fd00::7/128", identity: 300, node: "172.30.0.3" },
  ];
  assert.deepEqual(remotePodPrefixes(ipcache, "172.30.0.2"), new Map([["172.30.0.3", ["10.244.2.5/32", "10.244.2.7/32"]], ["172.30.0.4", ["10.244.3.9/32"]]]));
});
