// Test fixture, run inside a real node (its mount namespace, where the agent pod pinned its maps): prints the keys of the agent's pinned policy map and its drop counters by reason, one JSON line (realnode.test's policy matrix).
//   pinned-maps-fixture.ts <bpf scope>
import path from "node:path";
import { MAPS } from "../../node-agent/bpf/datapath.ts";
import { BPFFS_ROOT, closePinnedMap, openPinnedMap } from "../../node-agent/bpf/loader.ts";
import { DROP_REASONS, decodePolicyKey } from "../../node-agent/bpf/layout.ts";

const [scope] = process.argv.slice(2);
if (!scope) {
  console.error("usage: pinned-maps-fixture.ts <bpf scope>");
  process.exit(2);
}
// The pinned maps alone, not Datapath.load: nothing is loaded or attached beside the running agent.
const policy = openPinnedMap(path.join(BPFFS_ROOT, scope, MAPS.policy), "policy");
const drops = openPinnedMap(path.join(BPFFS_ROOT, scope, MAPS.drops), "drops");
try {
  const key = (code: number): Buffer => {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(code);
    return k;
  };
  const byReason = Object.fromEntries(Object.entries(DROP_REASONS).map(([code, reason]) => [reason, String(drops.lookupPerCpuSum(key(Number(code))))]));
  console.log(JSON.stringify({ policyKeys: policy.keys().map(decodePolicyKey), drops: byReason }));
} finally {
  closePinnedMap(policy);
  closePinnedMap(drops);
}
