// Start-up reconciliation plan: records and host links are matched by name and ifindex.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { planEndpointReconcile } from "./endpoint-links.ts";

const rec = (id: string, ifname: string, ifindex: number) => ({ containerId: id, hostIfname: ifname, hostIfindex: ifindex });

describe("endpoint reconciliation plan", () => {
  it("keeps a record whose link exists, drops one whose link is gone, and names a link no record owns", () => {
    const a = rec("a", "mbr0000000000a", 10);
    const b = rec("b", "mbr0000000000b", 11);
    const plan = planEndpointReconcile([a, b], [{ ifname: "mbr0000000000a", ifindex: 10 }, { ifname: "mbr0000000000c", ifindex: 12 }]);
    assert.deepEqual(plan, { keep: [a], stale: [b], orphans: [{ ifname: "mbr0000000000c", ifindex: 12 }] });
  });

  it("a link re-created under another index is not the recorded one: the record is dropped and the link is an orphan", () => {
    const a = rec("a", "mbr0000000000a", 10);
    const plan = planEndpointReconcile([a], [{ ifname: "mbr0000000000a", ifindex: 99 }]);
    assert.deepEqual(plan, { keep: [], stale: [a], orphans: [{ ifname: "mbr0000000000a", ifindex: 99 }] });
  });

  it("two records for one link keep only the first (no duplicate endpoint)", () => {
    const a = rec("a", "mbr0000000000a", 10);
    const dup = rec("a2", "mbr0000000000a", 10);
    const plan = planEndpointReconcile([a, dup], [{ ifname: "mbr0000000000a", ifindex: 10 }]);
    assert.deepEqual(plan, { keep: [a], stale: [dup], orphans: [] });
  });

  it("links that are not pod veths (eth0, vxlan0, other names) are never orphans", () => {
    const plan = planEndpointReconcile([], [{ ifname: "eth0", ifindex: 2 }, { ifname: "mbrX", ifindex: 3 }, { ifname: "lxc12345", ifindex: 4 }]);
    assert.deepEqual(plan.orphans, []);
  });
});
