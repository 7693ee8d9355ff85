// CiliumCIDRGroup objects parsed, and cidrGroupRef/cidrGroupSelector entries replaced by the groups' CIDRs as Cilium means them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parse } from "yaml";
import { type CIDRGroup, expandCIDRGroups, missingCIDRGroups, parseCIDRGroup } from "./cidr-group.ts";
import type { Peer, Policy } from "./model.ts";
import { parsePolicyObject } from "./parser/index.ts";

const group = (name: string, cidrs: string[], labels: Record<string, string> = {}, apiVersion = "cilium.io/v2alpha1"): unknown => ({
  apiVersion,
  kind: "CiliumCIDRGroup",
  metadata: { name, labels },
  spec: { externalCIDRs: cidrs },
});

function groupsOf(...objs: unknown[]): Map<string, CIDRGroup> {
  const out = new Map<string, CIDRGroup>();
  for (const o of objs) {
    const r = parseCIDRGroup(o);
    if (!r.ok) assert.fail(JSON.stringify(r.errors));
    out.set(r.value.name, r.value);
  }
  return out;
}

function policies(yaml: string): Policy[] {
  const r = parsePolicyObject(parse(yaml));
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

const cnp = (section: string, entry: string): string =>
  `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n  endpointSelector: {}\n  ${section}:\n  - ${section.startsWith("ingress") ? "fromCIDRSet" : "toCIDRSet"}:\n    - ${entry}\n`;

const peersOf = (ps: readonly Policy[]): readonly Peer[] => ps[0]!.rules[0]!.peers;

test("a CiliumCIDRGroup in either served version parses to its canonical CIDRs and its labels", () => {
  for (const v of ["cilium.io/v2alpha1", "cilium.io/v2"]) {
    const r = parseCIDRGroup(group("vpn", ["10.48.0.0/24", "10.16.0.1/24", "2001:db8::/32"], { role: "vpn" }, v));
    assert.ok(r.ok, JSON.stringify(r));
    assert.deepEqual(r.value.cidrs, ["10.16.0.0/24", "10.48.0.0/24", "2001:db8::/32"]);
    assert.equal(r.value.labels.key, "cidrgroup:role=vpn");
  }
});

test("a malformed CIDR in externalCIDRs is refused naming its field, and the group is not used in part", () => {
  const r = parseCIDRGroup(group("vpn", ["10.48.0.0/24", "10.16.0.0", "300.0.0.0/8"]));
  assert.equal(r.ok, false);
  assert.deepEqual(
    !r.ok && r.errors.map((e) => e.path),
    ["spec.externalCIDRs[1]", "spec.externalCIDRs[2]"],
  );
  assert.equal(parseCIDRGroup({ ...(group("x", []) as object), apiVersion: "cilium.io/v1" }).ok, false);
  assert.equal(parseCIDRGroup({ apiVersion: "cilium.io/v2", kind: "CiliumCIDRGroup", metadata: { name: "x" } }).ok, false);
});

test("cidrGroupRef stands for every CIDR of the group, minus the entry's excepts that fall inside each", () => {
  const groups = groupsOf(group("partner", ["198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/26"]));
  const ps = policies(cnp("egress", "cidrGroupRef: partner\n      except:\n      - 198.51.100.128/25\n      - 192.0.2.0/24"));
  assert.deepEqual(peersOf(expandCIDRGroups(ps, groups)), [
    // 192.0.2.0/26 lies inside an except: none of it is left.
    { kind: "cidr", cidr: "198.51.100.0/24", except: ["198.51.100.128/25"] },
    { kind: "cidr", cidr: "203.0.113.0/24", except: [] },
  ]);
});

test("cidrGroupSelector stands for every group its label selector matches, CIDRs once each", () => {
  const groups = groupsOf(
    group("vpn-1", ["10.48.0.0/24"], { role: "vpn" }),
    group("vpn-2", ["10.16.0.0/24", "10.48.0.0/24"], { role: "vpn" }),
    group("office", ["10.1.0.0/16"], { role: "office" }),
  );
  const ps = policies(cnp("ingress", "cidrGroupSelector:\n        matchLabels:\n          role: vpn"));
  assert.deepEqual(peersOf(expandCIDRGroups(ps, groups)), [
    { kind: "cidr", cidr: "10.16.0.0/24", except: [] },
    { kind: "cidr", cidr: "10.48.0.0/24", except: [] },
  ]);
  const none = policies(cnp("ingress", "cidrGroupSelector:\n        matchLabels:\n          role: nobody"));
  assert.deepEqual(peersOf(expandCIDRGroups(none, groups)), []);
});

test("a reference to a group that does not exist selects nothing, and is named as missing", () => {
  const ps = policies(cnp("ingressDeny", "cidrGroupRef: gone"));
  assert.deepEqual(peersOf(expandCIDRGroups(ps, new Map())), []);
  assert.deepEqual(missingCIDRGroups(ps, new Map()), ["gone"]);
  assert.deepEqual(missingCIDRGroups(ps, groupsOf(group("gone", ["10.0.0.0/8"]))), []);
});

test("policies without group entries come back as they are; deny and CCNP entries expand the same way", () => {
  const plain = policies(cnp("egress", "cidr: 10.0.0.0/8"));
  assert.equal(expandCIDRGroups(plain, new Map()), plain);
  const groups = groupsOf(group("bad-actors", ["192.0.2.0/24"]));
  const ccnp = parse(cnp("egressDeny", "cidrGroupRef: bad-actors")) as { kind: string; metadata: { namespace?: string } };
  ccnp.kind = "CiliumClusterwideNetworkPolicy";
  delete ccnp.metadata.namespace;
  const r = parsePolicyObject(ccnp);
  assert.ok(r.ok);
  const [expanded] = expandCIDRGroups(r.value, groups);
  assert.equal(expanded!.rules[0]!.verdict, "deny");
  assert.deepEqual(expanded!.rules[0]!.peers, [{ kind: "cidr", cidr: "192.0.2.0/24", except: [] }]);
});
