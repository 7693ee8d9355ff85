// Start-up reconciliation plan: records and host links are matched by name and ifindex.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { planEndpointReconcile } from "./endpoint-links.ts";
import { hostIfname } from "./cni/podnet.ts";

const rec = (id: string, ifname: string, ifindex: number) => ({ containerId: id, hostIfname: ifname, hostIfindex: ifindex });

describe("endpoint reconciliation plan", () => {
  it("keeps a record whose link exists, drops one whose link is gone, and names a link no record owns", () => {
    const a = rec("a", "mbr0000000000a", 10);
    const b = rec("b", "mbr0000000000b", 11);
    const plan = planEndpointReconcile([a, b], [{ ifname: "mbr0000000000a", ifindex: 10 }, { ifname: "mbr0000000000c", ifindex: 12 }]);
    assert.deepEqual(plan, { keep: [a], stale: [b], adopt: [], orphans: [], unproven: [{ ifname: "mbr0000000000c", ifindex: 12 }] });
  });

  it("a link re-created under another index is not the recorded one: the record is dropped and the link, its pod gone from IPAM, is stale", () => {
    const a = rec("a", "mbr0000000000a", 10);
    const plan = planEndpointReconcile([a], [{ ifname: "mbr0000000000a", ifindex: 99 }], []);
    assert.deepEqual(plan, { keep: [], stale: [a], adopt: [], orphans: [{ ifname: "mbr0000000000a", ifindex: 99 }], unproven: [] });
  });

  it("two records for one link keep only the first (no duplicate endpoint)", () => {
    const a = rec("a", "mbr0000000000a", 10);
    const dup = rec("a2", "mbr0000000000a", 10);
    const plan = planEndpointReconcile([a, dup], [{ ifname: "mbr0000000000a", ifindex: 10 }]);
    assert.deepEqual(plan, { keep: [a], stale: [dup], adopt: [], orphans: [], unproven: [] });
  });

  it("links that are not pod veths (eth0, vxlan0, other names) are never orphans", () => {
    const plan = planEndpointReconcile([], [{ ifname: "eth0", ifindex: 2 }, { ifname: "mbrX", ifindex: 3 }, { ifname: "lxc12345", ifindex: 4 }], []);
    assert.deepEqual([plan.orphans, plan.adopt, plan.unproven], [[], [], []]);
  });

  it("a link the CNI plugin wired while the agent was away (its pod in IPAM, the address routed over it) is adopted, not removed", () => {
    const pod = { containerId: "c0ffee", ifname: "eth0", ips: ["10.244.3.7"] };
    const link = { ifname: hostIfname(pod.containerId), ifindex: 21, routes: ["10.244.3.7"] };
    const plan = planEndpointReconcile([], [link], [pod, { containerId: "other", ifname: "eth0", ips: ["10.244.3.8"] }]);
    assert.deepEqual(plan, { keep: [], stale: [], adopt: [{ link, pod }], orphans: [], unproven: [] });
  });

  it("a dual-stack pod is adopted with both addresses when both are routed over its link, and left alone when its IPv6 route is missing", () => {
    const pod = { containerId: "d0ffee", ifname: "eth0", ips: ["10.244.3.9", "fd00:10:244:3::9"] };
    const link = { ifname: hostIfname(pod.containerId), ifindex: 23, routes: ["10.244.3.9", "fd00:10:244:3::9"] };
    assert.deepEqual(planEndpointReconcile([], [link], [pod]).adopt, [{ link, pod }]);
    const v4only = { ...link, routes: ["10.244.3.9"] };
    assert.deepEqual(planEndpointReconcile([], [v4only], [pod]).unproven, [v4only]);
  });

  it("only a link whose pod IPAM no longer holds is stale; an unreadable IPAM or an address not routed over the link proves nothing, so the link is left alone", () => {
    const pod = { containerId: "c0ffee", ifname: "eth0", ips: ["10.244.3.7"] };
    const wrongRoute = { ifname: hostIfname(pod.containerId), ifindex: 21, routes: ["10.244.3.99"] };
    const gone = { ifname: hostIfname("deleted"), ifindex: 22, routes: ["10.244.3.9"] };
    assert.deepEqual(planEndpointReconcile([], [wrongRoute, gone], [pod]), { keep: [], stale: [], adopt: [], orphans: [gone], unproven: [wrongRoute] });
    assert.deepEqual(planEndpointReconcile([], [wrongRoute, gone], undefined), { keep: [], stale: [], adopt: [], orphans: [], unproven: [wrongRoute, gone] });
  });
});
