// The agent's overlay device: the create/adopt/refuse decision and the uninstall's removal decision from a node's links (pure), then in a real network namespace: made when missing, adopted on restart and from the node, refused when the name is some other link, removed at uninstall only when an agent made it.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import { OVERLAY_DEVICE, OVERLAY_MADE_BY, type LinkDetails, overlayRemoval, planOverlay, removeOverlayDevice, startOverlayDevice } from "./overlay-device.ts";

const log = pino({ level: "silent" });
const vxlan = (ifname: string, ifindex: number, data: { external?: boolean; port?: number }, ifalias?: string): LinkDetails => ({ ifname, ifindex, ...(ifalias ? { ifalias } : {}), linkinfo: { info_kind: "vxlan", info_data: data } });
const LO: LinkDetails = { ifname: "lo", ifindex: 1 };
const ETH0: LinkDetails = { ifname: "eth0", ifindex: 2, linkinfo: { info_kind: "veth" } };

describe("the decision from the node's links", () => {
  test("made when no link has the name and no VXLAN device holds 8472 (one on another port does not)", () => {
    assert.deepEqual(planOverlay(OVERLAY_DEVICE, [LO, ETH0, vxlan("other", 3, { external: true, port: 4789 })]), { action: "create" });
  });

  test("adopted when a collect-metadata device of that name is on 8472: an earlier agent's (marked) or the node's own (unmarked)", () => {
    assert.deepEqual(planOverlay(OVERLAY_DEVICE, [LO, vxlan(OVERLAY_DEVICE, 7, { external: true, port: 8472 }, OVERLAY_MADE_BY)]), { action: "adopt", ifindex: 7, madeByMembrane: true });
    assert.deepEqual(planOverlay("vxlan0", [LO, vxlan("vxlan0", 4, { external: true, port: 8472 })]), { action: "adopt", ifindex: 4, madeByMembrane: false });
  });

  test("refused when the name is another kind of link, a VXLAN device without collect-metadata or on another port", () => {
    const problem = (links: LinkDetails[]) => {
      const p = planOverlay(OVERLAY_DEVICE, links);
      return p.action === "refuse" ? p.problem : p.action;
    };
    assert.equal(problem([{ ...ETH0, ifname: OVERLAY_DEVICE }]), "a veth link, not a VXLAN device");
    assert.match(problem([vxlan(OVERLAY_DEVICE, 5, { port: 8472 })]), /without collect-metadata/);
    assert.match(problem([vxlan(OVERLAY_DEVICE, 5, { external: true, port: 4789 })]), /on port 4789, not the overlay's 8472/);
  });

  test("refused, naming it, when another VXLAN device holds 8472 (the process-based cluster's old vxlan0, flannel's flannel.1): a second device there collides", () => {
    const p = planOverlay(OVERLAY_DEVICE, [LO, vxlan("vxlan0", 4, { external: true, port: 8472 })]);
    assert.equal(p.action, "refuse");
    assert.match(p.action === "refuse" ? p.problem : "", /collect-metadata VXLAN device on UDP 8472, vxlan0, .*--tunnel-device vxlan0/);
    const q = planOverlay(OVERLAY_DEVICE, [LO, vxlan("flannel.1", 4, { port: 8472 })]);
    assert.match(q.action === "refuse" ? q.problem : "", /flannel\.1, a VXLAN device without collect-metadata, holds UDP 8472/);
  });

  test("an uninstall removes only a device an agent made: not the node's own, not another kind of link, nothing when it is gone", () => {
    assert.deepEqual(overlayRemoval(OVERLAY_DEVICE, [vxlan(OVERLAY_DEVICE, 7, { external: true, port: 8472 }, OVERLAY_MADE_BY)]), { remove: true, ifindex: 7 });
    assert.deepEqual(overlayRemoval(OVERLAY_DEVICE, [vxlan(OVERLAY_DEVICE, 7, { external: true, port: 8472 })]), { remove: false, why: "not made by Membrane (adopted from the node): kept" });
    assert.equal(overlayRemoval(OVERLAY_DEVICE, [{ ...ETH0, ifname: OVERLAY_DEVICE, ifalias: OVERLAY_MADE_BY }]).remove, false);
    assert.deepEqual(overlayRemoval(OVERLAY_DEVICE, [LO]), { remove: false, why: "no such link" });
  });
});

describe("in a real network namespace", () => {
  const netns = `ovl-t${process.pid}`;
  const ip = (...args: string[]): string => execFileSync("ip", ["-n", netns, ...args]).toString();
  const show = (name: string) =>
    (JSON.parse(ip("-d", "-j", "link", "show", "dev", name)) as { ifindex: number; mtu: number; ifalias?: string; flags: string[]; linkinfo: { info_data: { external: boolean; port: number } } }[])[0]!;
  const exists = (name: string): boolean => (JSON.parse(ip("-j", "link", "show")) as { ifname: string }[]).some((l) => l.ifname === name);
  const recorder = () => {
    const attached: number[] = [];
    return { attached, datapath: { attachOverlay: (ifindex: number, ns?: string) => void (ns === netns && attached.push(ifindex)) } };
  };

  before(() => execFileSync("ip", ["netns", "add", netns]));
  after(() => execFileSync("ip", ["netns", "del", netns]));

  test("made as a collect-metadata VXLAN device on 8472 with the pod MTU's room and the agent's mark, from-overlay attached on it; a restart adopts the same device; an uninstall removes it", () => {
    const { attached, datapath } = recorder();
    const first = startOverlayDevice({ datapath, device: OVERLAY_DEVICE, netns, log });
    assert.deepEqual([first.created, first.madeByMembrane], [true, true]);
    const link = show(OVERLAY_DEVICE);
    assert.deepEqual([link.linkinfo.info_data.external, link.linkinfo.info_data.port, link.mtu, link.flags.includes("UP"), link.ifalias], [true, 8472, 1450, true, OVERLAY_MADE_BY]);
    ip("link", "set", OVERLAY_DEVICE, "down"); // as after a node's networking restart: the restart brings it up again
    const again = startOverlayDevice({ datapath, device: OVERLAY_DEVICE, netns, log });
    assert.deepEqual([again.created, again.madeByMembrane, again.ifindex, show(OVERLAY_DEVICE).flags.includes("UP")], [false, true, first.ifindex, true]);
    assert.deepEqual(attached, [link.ifindex, link.ifindex]);
    assert.equal(removeOverlayDevice({ device: OVERLAY_DEVICE, netns, log }), true);
    assert.equal(exists(OVERLAY_DEVICE), false, "removed");
  });

  test("one the node made (no mark) is adopted and attached, a second device on 8472 is refused, and an uninstall keeps the node's own", () => {
    ip("link", "add", "nodevx", "type", "vxlan", "external", "dstport", "8472");
    try {
      const { attached, datapath } = recorder();
      assert.throws(() => startOverlayDevice({ datapath, device: OVERLAY_DEVICE, netns, log }), /--tunnel-device membrane_vxlan: the node already has a collect-metadata VXLAN device on UDP 8472, nodevx/);
      assert.equal(exists(OVERLAY_DEVICE), false, "nothing made");
      const adopted = startOverlayDevice({ datapath, device: "nodevx", netns, log });
      assert.deepEqual([adopted.created, adopted.madeByMembrane, attached], [false, false, [show("nodevx").ifindex]]);
      assert.equal(removeOverlayDevice({ device: "nodevx", netns, log }), false);
      assert.equal(exists("nodevx"), true, "the node's device stays");
    } finally {
      ip("link", "del", "nodevx");
    }
  });

  test("a link of that name that is not the overlay is refused, naming the flag, and nothing is attached or removed", () => {
    ip("link", "add", "notvxlan0", "type", "veth", "peer", "name", "notvxlan1");
    ip("link", "add", "vxlan42", "type", "vxlan", "id", "42", "dstport", "4789");
    const { attached, datapath } = recorder();
    assert.throws(() => startOverlayDevice({ datapath, device: "notvxlan0", netns, log }), /--tunnel-device notvxlan0: a veth link, not a VXLAN device/);
    assert.throws(() => startOverlayDevice({ datapath, device: "vxlan42", netns, log }), /--tunnel-device vxlan42: a VXLAN device without collect-metadata/);
    assert.deepEqual(attached, []);
    assert.equal(removeOverlayDevice({ device: "notvxlan0", netns, log }), false);
    assert.equal(exists("notvxlan0"), true);
  });
});
