// What one pod's ipcache change costs at a cluster's size, in process: the operator's ClusterIPCache.take, the distribution's canonical form of the new ipcache, and an agent's applyDelta of the change. One JSON line.
// Usage: node --import tsx bench/scale/ipcache-change.ts [checkout] [pods] — another checkout's code for a side-by-side run (default: this one; 50,000 pods).
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";

const root = process.argv[2] ?? fileURLToPath(new URL("../..", import.meta.url));
const pods = Number(process.argv[3] ?? 50_000);
// Imported from `root` so that a run against another checkout measures its code.
const { ClusterIPCache } = (await import(`${root}/core/ipcache.ts`)) as typeof import("../../core/ipcache.ts");
const { StateDiffer } = (await import(`${root}/controllers/distribution/differ.ts`)) as typeof import("../../controllers/distribution/differ.ts");
const { applyDelta, EMPTY_STATE } = (await import(`${root}/core/nodestate.ts`)) as typeof import("../../core/nodestate.ts");

const ip = (c: number): string => `172.${16 + ((c >> 16) & 15)}.${(c >> 8) & 255}.${c & 255}`;
const NO_CHANGE = { subjects: [], removedSubjects: [], ipcacheUpserts: [], ipcacheRemovals: [], identityUpserts: [], identityRemovals: [], ruleUpserts: [], policyGenerationUpserts: [], policyGenerationRemovals: [] };
const ipc = new ClusterIPCache();
// bench/scale's shape: 5,000 identities, 1,000 nodes.
for (let p = 0; p < pods; p++) ipc.setPod(`ns/p-${p}`, { identity: 256 + (p % 5000), node: `n-${p % 1000}`, ips: [ip(p + 1)] });
const first = ipc.take();
if (!first) throw new Error("no ipcache");
const differ = new StateDiffer();
let agent = applyDelta(EMPTY_STATE, { ...NO_CHANGE, ipcacheUpserts: first.entries });
const rounds = 300;
let take = 0;
let canonical = 0;
let apply = 0;
for (let r = 0; r < rounds; r++) {
  ipc.setPod(`ns/new-${r}`, { identity: 256 + (r % 5000), node: `n-${r % 1000}`, ips: [ip(pods + 1 + r)] });
  let t = performance.now();
  const c = ipc.take();
  take += performance.now() - t;
  if (!c) throw new Error("a new pod moved nothing");
  t = performance.now();
  differ.canonical({ ...EMPTY_STATE, ipcache: c.entries });
  canonical += performance.now() - t;
  t = performance.now();
  agent = applyDelta(agent, { ...NO_CHANGE, ipcacheUpserts: c.upserts, ipcacheRemovals: c.removals });
  apply += performance.now() - t;
}
if (agent.ipcache.length !== pods + rounds) throw new Error(`the agent holds ${agent.ipcache.length} entries, not ${pods + rounds}`);
const us = (ms: number): number => Math.round((ms / rounds) * 1000);
console.log(JSON.stringify({ bench: "scale-ipcache-change", checkout: root, pods, rounds, take_us: us(take), canonical_us: us(canonical), apply_delta_us: us(apply), load_1m: Math.round(loadavg()[0]! * 10) / 10 }));
