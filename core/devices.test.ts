// Device lists in Cilium's --devices syntax: what parses, what is refused and why, and which links a list selects.
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatDeviceList, parseDeviceList, selectsDevice } from "./devices.ts";

test("names and trailing-+ prefix wildcards parse in order, and print back as given", () => {
  const r = parseDeviceList("eth0,bond0.100,rnm+");
  assert.deepEqual(r, { ok: true, value: [{ kind: "name", name: "eth0" }, { kind: "name", name: "bond0.100" }, { kind: "prefix", prefix: "rnm" }] });
  assert.equal(formatDeviceList(r.ok ? r.value : []), "eth0,bond0.100,rnm+");
  assert.deepEqual(parseDeviceList("eth0"), { ok: true, value: [{ kind: "name", name: "eth0" }] });
});

test("a wildcard selects every link its prefix starts, the bare prefix too; a name only itself", () => {
  const r = parseDeviceList("eth+,bond0");
  assert.ok(r.ok);
  for (const yes of ["eth", "eth0", "eth1", "eth0.100", "bond0"]) assert.equal(selectsDevice(r.value, yes), true, yes);
  for (const no of ["bond1", "bond", "veth0", "et", "lo", "Eth0"]) assert.equal(selectsDevice(r.value, no), false, no);
});

test("bad lists are refused saying which entry and why", () => {
  const error = (text: string): string => {
    const r = parseDeviceList(text);
    assert.ok(!r.ok, `${text} is refused`);
    return r.error;
  };
  assert.equal(error(""), "must name at least one device");
  assert.equal(error("eth0,,eth1"), 'entry 2 is empty, got "eth0,,eth1"');
  assert.equal(error("eth0,"), 'entry 2 is empty, got "eth0,"');
  assert.equal(error("+"), 'entry 1: a wildcard needs a prefix before its "+" (as in "eth+"), got "+"');
  assert.equal(error("eth0,e+th"), 'entry 2: "+" is only a wildcard at the end of a name, got "e+th"');
  assert.equal(error("eth++"), 'entry 1: "+" is only a wildcard at the end of a name, got "eth++"');
  assert.match(error("eth 0"), /^entry 1: must be an interface name .*, got "eth 0"$/);
  assert.match(error("eth0, eth1"), /^entry 2: must be an interface name/);
  assert.match(error("averyveryverylongname"), /^entry 1: must be an interface name/);
  assert.match(error("averyveryverylong+"), /^entry 1: must be an interface name .* before the "\+"/);
  assert.equal(error("eth0,eth0"), '"eth0" is listed twice');
  assert.equal(error("eth0,none"), 'entry 2: "none" is not a device name ("none" stands alone: no device)');
});
