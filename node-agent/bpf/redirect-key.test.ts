// The redirect record's key as the datapath writes it (bpf/lib/layout.h redirect_key): address, port, protocol, family.
import { test } from "node:test";
import assert from "node:assert/strict";
import { encodeRedirectKey } from "./redirect.ts";

test("an IPv4 and an IPv6 source encode address, port (network order), protocol and family; a reused buffer keeps nothing of the last key", () => {
  const four = "0acb0001" + "00".repeat(12) + "d431" + "11" + "04";
  const six = "fd000000000000000000000000000001" + "0035" + "06" + "06";
  assert.equal(encodeRedirectKey("10.203.0.1", 54321, "udp").toString("hex"), four);
  assert.equal(encodeRedirectKey("fd00::1", 53, "tcp").toString("hex"), six);
  const into = Buffer.alloc(20);
  assert.equal(encodeRedirectKey("fd00::1", 53, "tcp", into).toString("hex"), six);
  assert.equal(encodeRedirectKey("10.203.0.1", 54321, "udp", into).toString("hex"), four);
  assert.throws(() => encodeRedirectKey("10.203.0.256", 1, "udp"), /invalid IPv4 address/);
});
