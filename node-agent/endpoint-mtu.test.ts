// Pods wired before encryption was turned on get the new pod MTU (and the normal one back when it is turned off): real veths between
// a node namespace and a pod namespace, and pings with DF just over and at the path MTU.
// Run under flock /tmp/membrane-kernel.lock (network namespaces).
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { after, before, describe, it } from "node:test";
import pino from "pino";
import { applyEndpointMtu, type EndpointLink } from "./endpoint-mtu.ts";
import { podMtu } from "./mtu.ts";

const NODE_NS = `mtunode${process.pid % 100000}`;
const POD_NS = `mtupod${process.pid % 100000}`;
const HOST_IF = `mbr${(process.pid % 100000).toString(16).padStart(11, "0")}`;
const GATEWAY = "169.254.1.1";
const POD_IP = "10.99.0.5";
const log = pino({ level: "silent" });

const ip = (...args: string[]): string => execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
const mtuIn = (ns: string, dev: string): number => (JSON.parse(ip("-n", ns, "-j", "link", "show", "dev", dev)) as { mtu: number }[])[0]!.mtu;

/** One ping with DF whose IP packet is `size` bytes, from `ns` to `to`: what the sender is told. */
function ping(ns: string, to: string, size: number): { ok: boolean; output: string } {
  const r = spawnSync("ip", ["netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", String(size - 28), to], { encoding: "utf8" });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

describe("endpoint MTU follows the agent's encryption mode", () => {
  let endpoint: EndpointLink;

  before(() => {
    ip("netns", "add", NODE_NS);
    ip("netns", "add", POD_NS);
    // As the CNI plugin wires a pod (node-agent/cni/podnet.ts), at the MTU without encryption.
    const mtu = String(podMtu("disabled"));
    ip("-n", NODE_NS, "link", "add", HOST_IF, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", POD_NS);
    ip("-n", NODE_NS, "addr", "add", `${GATEWAY}/32`, "dev", HOST_IF);
    ip("-n", NODE_NS, "link", "set", HOST_IF, "up");
    ip("-n", NODE_NS, "route", "replace", `${POD_IP}/32`, "dev", HOST_IF, "scope", "link", "src", GATEWAY);
    ip("-n", POD_NS, "addr", "add", `${POD_IP}/32`, "dev", "eth0");
    ip("-n", POD_NS, "link", "set", "eth0", "up");
    ip("-n", POD_NS, "link", "set", "lo", "up");
    ip("-n", POD_NS, "route", "replace", "default", "via", GATEWAY, "dev", "eth0", "onlink");
    const hostIfindex = (JSON.parse(ip("-n", NODE_NS, "-j", "link", "show", "dev", HOST_IF)) as { ifindex: number }[])[0]!.ifindex;
    endpoint = { namespace: "shop", pod: "web", hostIfname: HOST_IF, hostIfindex, netns: `/var/run/netns/${POD_NS}` };
  });

  after(() => {
    spawnSync("ip", ["netns", "del", POD_NS]);
    spawnSync("ip", ["netns", "del", NODE_NS]);
  });

  it("a pod wired before WireGuard sends a full 1450-byte packet until its MTU is lowered", () => {
    assert.ok(ping(POD_NS, GATEWAY, podMtu("disabled")).ok, "the old MTU's full packet leaves the pod");
  });

  it("with encryption on, both veth ends get the WireGuard pod MTU: a DF packet one byte over is refused in the pod, one at it passes both ways", async () => {
    const wg = podMtu("wireguard");
    assert.deepEqual(await applyEndpointMtu([endpoint], wg, { netns: NODE_NS, log }), { changed: 1, unchanged: 0, failed: 0 });
    assert.equal(mtuIn(POD_NS, "eth0"), wg);
    assert.equal(mtuIn(NODE_NS, HOST_IF), wg);
    const over = ping(POD_NS, GATEWAY, wg + 1);
    assert.equal(over.ok, false);
    assert.match(over.output, new RegExp(`message too long, mtu=${wg}|mtu = ${wg}`), "the pod is told the path MTU, nothing leaves");
    assert.ok(ping(POD_NS, GATEWAY, wg).ok, "a packet at the new MTU passes");
    assert.equal(ping(NODE_NS, POD_IP, wg + 1).ok, false, "the node side does not send the pod more either");
    assert.ok(ping(NODE_NS, POD_IP, wg).ok);
    assert.deepEqual(await applyEndpointMtu([endpoint], wg, { netns: NODE_NS, log }), { changed: 0, unchanged: 1, failed: 0 }, "a second start changes nothing");
  });

  it("with encryption off again, the normal MTU comes back on both ends", async () => {
    const plain = podMtu("disabled");
    assert.deepEqual(await applyEndpointMtu([endpoint], plain, { netns: NODE_NS, log }), { changed: 1, unchanged: 0, failed: 0 });
    assert.equal(mtuIn(POD_NS, "eth0"), plain);
    assert.equal(mtuIn(NODE_NS, HOST_IF), plain);
    assert.ok(ping(POD_NS, GATEWAY, plain).ok, "a full 1450-byte packet passes again");
    assert.equal(ping(POD_NS, GATEWAY, plain + 1).ok, false);
  });

  it("an endpoint whose veth is gone is counted as failed and the others are still changed", async () => {
    const gone: EndpointLink = { namespace: "shop", pod: "gone", hostIfname: "mbr00000000000", hostIfindex: 999_999, netns: `/var/run/netns/${POD_NS}` };
    assert.deepEqual(await applyEndpointMtu([gone, endpoint], podMtu("wireguard"), { netns: NODE_NS, log }), { changed: 1, unchanged: 0, failed: 1 });
    assert.equal(mtuIn(POD_NS, "eth0"), podMtu("wireguard"));
  });
});
