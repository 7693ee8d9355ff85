// The agent's overlay device in a real network namespace: made when missing, found again on restart, refused when the name is some other link.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, test } from "node:test";
import { pino } from "pino";
import { startOverlayDevice } from "./overlay-device.ts";

const netns = `ovl-t${process.pid}`;
const log = pino({ level: "silent" });
const ip = (...args: string[]): string => execFileSync("ip", ["-n", netns, ...args]).toString();

before(() => execFileSync("ip", ["netns", "add", netns]));
after(() => execFileSync("ip", ["netns", "del", netns]));

test("made as a collect-metadata VXLAN device on 8472 with the pod MTU's room, from-overlay attached on it; a restart finds the same device", () => {
  const attached: number[] = [];
  const datapath = { attachOverlay: (ifindex: number, ns?: string) => void (ns === netns && attached.push(ifindex)) };
  const first = startOverlayDevice({ datapath, device: "membrane_vxlan", netns, log });
  assert.equal(first.created, true);
  const link = (JSON.parse(ip("-d", "-j", "link", "show", "dev", "membrane_vxlan")) as { ifindex: number; mtu: number; flags: string[]; linkinfo: { info_data: { external: boolean; port: number } } }[])[0]!;
  assert.deepEqual([link.linkinfo.info_data.external, link.linkinfo.info_data.port, link.mtu, link.flags.includes("UP")], [true, 8472, 1450, true]);
  const again = startOverlayDevice({ datapath, device: "membrane_vxlan", netns, log });
  assert.deepEqual([again.created, again.ifindex], [false, first.ifindex]);
  assert.deepEqual(attached, [link.ifindex, link.ifindex]);
});

test("a link of that name that is not the overlay is refused, naming the flag, and nothing is attached", () => {
  ip("link", "add", "notvxlan0", "type", "veth", "peer", "name", "notvxlan1");
  ip("link", "add", "vxlan42", "type", "vxlan", "id", "42", "dstport", "4789");
  const attached: number[] = [];
  const datapath = { attachOverlay: (ifindex: number) => void attached.push(ifindex) };
  assert.throws(() => startOverlayDevice({ datapath, device: "notvxlan0", netns, log }), /--tunnel-device notvxlan0: a veth link, not a VXLAN device/);
  assert.throws(() => startOverlayDevice({ datapath, device: "vxlan42", netns, log }), /--tunnel-device vxlan42: a VXLAN device without collect-metadata/);
  assert.deepEqual(attached, []);
});
