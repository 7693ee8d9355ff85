// Pure IPAM allocation: ranges, idempotence, release, exhaustion, and no double assignment (property).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  allocate,
  EMPTY_STATE,
  parseState,
  podRange,
  rangeSize,
  release,
  type IpamState,
  type PodRange,
} from "./ipam.ts";

function range(cidr: string): PodRange {
  const r = podRange(cidr);
  assert.ok(r.ok, r.ok ? "" : r.reason);
  return r.range;
}

function alloc(
  state: IpamState,
  r: PodRange,
  containerId: string,
): { state: IpamState; ip: string; fresh: boolean } {
  const res = allocate(state, r, { containerId, ifname: "eth0" });
  assert.ok(res.ok, res.ok ? "" : res.message);
  return res;
}

describe("pod CIDR range", () => {
  it("reserves the network address, the gateway (first address) and the broadcast address", () => {
    const r = range("10.244.1.0/24");
    assert.equal(r.gateway, "10.244.1.1");
    assert.equal(rangeSize(r), 253);
    assert.equal(range("10.244.1.7/30").gateway, "10.244.1.5");
    assert.equal(rangeSize(range("10.0.0.0/30")), 1);
  });

  it("rejects what is not a usable IPv4 pod CIDR, saying why", () => {
    for (const [cidr, why] of [
      ["10.0.0.0/31", /too small/],
      ["10.0.0.1", /too small/],
      ["fd00::/64", /only IPv4/],
      ["banana", /not a CIDR/],
      ["10.0.0.0/33", /not a CIDR/],
    ] as const) {
      const r = podRange(cidr);
      assert.equal(r.ok, false, cidr);
      assert.match(r.ok ? "" : r.reason, why);
    }
  });
});

describe("a dual-stack owner", () => {
  const r4 = range("10.244.1.0/24");
  const r6r = podRange("fd00:10:244:1::/64", 6);
  assert.ok(r6r.ok);
  const r6 = r6r.range;

  it("holds one address of each range, gets both again unchanged, and releases both", () => {
    const a4 = alloc(EMPTY_STATE, r4, "a");
    const a6 = alloc(a4.state, r6, "a");
    assert.deepEqual([a4.ip, a6.ip, r6.gateway], ["10.244.1.2", "fd00:10:244:1::2", "fd00:10:244:1::1"]);
    const b6 = alloc(alloc(a6.state, r4, "b").state, r6, "b");
    assert.equal(b6.ip, "fd00:10:244:1::3");
    const again4 = alloc(b6.state, r4, "a");
    const again6 = alloc(again4.state, r6, "a");
    assert.deepEqual([again4.ip, again4.fresh, again6.ip, again6.fresh], ["10.244.1.2", false, "fd00:10:244:1::2", false]);
    assert.equal(again6.state, b6.state);
    assert.deepEqual(release(b6.state, { containerId: "a", ifname: "eth0" }).released.sort(), ["10.244.1.2", "fd00:10:244:1::2"]);
  });

  it("an IPv6 range must be IPv6 and leave room for a pod", () => {
    assert.match(((r) => (r.ok ? "" : r.reason))(podRange("10.0.0.0/24", 6)), /an IPv6 CIDR is required/);
    assert.match(((r) => (r.ok ? "" : r.reason))(podRange("fd00::/127", 6)), /too small.*\/126/);
  });
});

describe("allocate and release", () => {
  const r = range("10.244.1.0/24");

  it("hands out addresses after the gateway, one per owner", () => {
    let s = EMPTY_STATE;
    const a = alloc(s, r, "a");
    s = a.state;
    const b = alloc(s, r, "b");
    assert.deepEqual([a.ip, b.ip, a.fresh, b.fresh], ["10.244.1.2", "10.244.1.3", true, true]);
  });

  it("gives the same owner the same address again, without changing the state", () => {
    const a = alloc(EMPTY_STATE, r, "a");
    const again = alloc(a.state, r, "a");
    assert.equal(again.ip, a.ip);
    assert.equal(again.fresh, false);
    assert.equal(again.state, a.state);
  });

  it("tells interfaces of one container apart", () => {
    const a = alloc(EMPTY_STATE, r, "a");
    const net1 = allocate(a.state, r, { containerId: "a", ifname: "net1" });
    assert.ok(net1.ok);
    assert.notEqual(net1.ip, a.ip);
  });

  it("frees on release, and does not reuse a freed address before the rest of the range", () => {
    const a = alloc(EMPTY_STATE, r, "a");
    const freed = release(a.state, { containerId: "a", ifname: "eth0" });
    assert.deepEqual(freed.released, ["10.244.1.2"]);
    assert.deepEqual(freed.state.allocations, {});
    assert.equal(alloc(freed.state, r, "b").ip, "10.244.1.3");
  });

  it("releasing what is not held changes nothing", () => {
    const a = alloc(EMPTY_STATE, r, "a");
    const none = release(a.state, { containerId: "zzz", ifname: "eth0" });
    assert.deepEqual(none.released, []);
    assert.equal(none.state, a.state);
  });

  it("wraps around to freed addresses and reports exhaustion clearly", () => {
    const small = range("10.9.0.0/29"); // .2 … .6
    let s = EMPTY_STATE;
    for (const id of ["a", "b", "c", "d", "e"]) s = alloc(s, small, id).state;
    const full = allocate(s, small, { containerId: "f", ifname: "eth0" });
    assert.equal(full.ok, false);
    assert.equal(
      full.ok ? "" : full.message,
      "no free address in pod CIDR 10.9.0.0/29: all 5 pod addresses are assigned",
    );
    s = release(s, { containerId: "b", ifname: "eth0" }).state;
    assert.equal(alloc(s, small, "f").ip, "10.9.0.3");
  });

  it("state survives a JSON round trip and rejects a corrupt one", () => {
    const a = alloc(EMPTY_STATE, r, "a");
    assert.deepEqual(parseState(JSON.parse(JSON.stringify(a.state))), a.state);
    assert.equal(parseState({ version: 2, allocations: {} }), undefined);
    assert.equal(parseState({ version: 1, allocations: { "10.0.0.2": { containerId: 3 } } }), undefined);
  });

  it("never gives one address to two owners, whatever the order of adds and deletes (property)", () => {
    const small = range("10.7.0.0/28"); // 13 pod addresses: exhaustion happens often
    const op = fc.record({ del: fc.boolean(), id: fc.integer({ min: 0, max: 20 }) });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        let s = EMPTY_STATE;
        const held = new Map<number, string>();
        for (const { del, id } of ops) {
          const owner = { containerId: `c${id}`, ifname: "eth0" };
          if (del) {
            s = release(s, owner).state;
            held.delete(id);
            continue;
          }
          const res = allocate(s, small, owner);
          if (!res.ok) {
            assert.equal(held.size, rangeSize(small)); // exhausted only when really full
            assert.ok(!held.has(id));
            continue;
          }
          if (held.has(id)) assert.equal(res.ip, held.get(id));
          held.set(id, res.ip);
          s = res.state;
        }
        const ips = [...held.values()];
        assert.equal(new Set(ips).size, ips.length);
        assert.deepEqual(Object.keys(s.allocations).sort(), [...ips].sort());
        for (const ip of ips)
          assert.ok(
            ip.startsWith("10.7.0.") && Number(ip.split(".")[3]) >= 2 && Number(ip.split(".")[3]) <= 14,
          );
      }),
    );
  });
});
