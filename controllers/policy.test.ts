// Unit tests of the policy status logic: condition contents for invalid, pending, enforced and refused policies.
import { test } from "node:test";
import assert from "node:assert/strict";
import { describeErrors, policyConditions } from "./policy.ts";

test("an invalid policy is Valid=False with every error and its path, and not enforced", () => {
  const parsed = { ok: false as const, errors: [{ path: "spec.egress[0].toPorts[0].ports[0].port", message: "must be 0-65535" }, { path: "spec.endpointSelector", message: "required" }] };
  const [valid, enforced] = policyConditions(parsed, 3, 2, { acknowledged: 0, refused: [] });
  assert.equal(valid?.status, "False");
  assert.equal(valid?.reason, "ParseError");
  assert.equal(valid?.message, "spec.egress[0].toPorts[0].ports[0].port: must be 0-65535; spec.endpointSelector: required");
  assert.equal(valid?.observedGeneration, 3);
  assert.equal(enforced?.status, "False");
  assert.match(enforced?.message ?? "", /^0\/2 nodes/);
});

test("a valid policy counts acknowledging nodes and names the ones that refused", () => {
  const parsed = { ok: true as const, value: [] };
  assert.deepEqual(
    policyConditions(parsed, 1, 3, { acknowledged: 1, refused: [] }).map((c) => [c.type, c.status, c.reason, c.message]),
    [["Valid", "True", "Parsed", "0 rules"], ["Enforced", "Unknown", "Pending", "1/3 nodes"]],
  );
  assert.equal(policyConditions(parsed, 1, 3, { acknowledged: 3, refused: [] })[1]?.status, "True");
  const refused = policyConditions(parsed, 1, 3, { acknowledged: 2, refused: [{ node: "n3", message: "map full" }] })[1];
  assert.equal(refused?.status, "False");
  assert.equal(refused?.message, "2/3 nodes; refused by n3: map full");
  assert.equal(policyConditions(parsed, 1, 0, { acknowledged: 0, refused: [] })[1]?.reason, "NoSelectedEndpoints");
});

test("errors without a path are shown as their message", () => {
  assert.equal(describeErrors([{ path: "", message: "not an object" }]), "not an object");
});

test("DNS rules and toFQDNs are Enforced once every node concerned runs the DNS proxy, HTTP rules once every one runs the L7 proxy", async () => {
  const { parsePolicyObject } = await import("../core/parser/index.ts");
  const cnp = (egress: unknown[]) => parsePolicyObject({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "p", namespace: "ns" }, spec: { endpointSelector: {}, egress } });
  const dnsOnly = cnp([
    { toEndpoints: [{}], toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*" }] } }] },
    { toFQDNs: [{ matchName: "a.test" }], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] },
  ]);
  const on = policyConditions(dnsOnly, 1, 2, { acknowledged: 2, refused: [], withoutDnsProxy: [] })[1];
  assert.deepEqual([on?.status, on?.reason, on?.message], ["True", "Acknowledged", "2/2 nodes"]);
  const off = policyConditions(dnsOnly, 1, 2, { acknowledged: 2, refused: [], withoutDnsProxy: ["n2"] })[1];
  assert.deepEqual([off?.status, off?.reason], ["False", "RulesNotEnforced"]);
  assert.match(off?.message ?? "", /spec\.egress\[1\]\.toFQDNs: not enforced on n2 \(no DNS proxy runs there\)/);
  const http = cnp([{ toEndpoints: [{}], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } }] }]);
  const l7 = policyConditions(http, 1, 2, { acknowledged: 2, refused: [], withoutDnsProxy: [], withoutL7Proxy: ["n2"] })[1];
  assert.deepEqual([l7?.status, l7?.reason], ["False", "RulesNotEnforced"]);
  assert.match(l7?.message ?? "", /rules\.http: not enforced on n2 \(no L7 proxy runs there\): the port is allowed for every request/);
  const l7on = policyConditions(http, 1, 2, { acknowledged: 2, refused: [], withoutDnsProxy: ["n2"], withoutL7Proxy: [] })[1];
  assert.deepEqual([l7on?.status, l7on?.reason, l7on?.message], ["True", "Acknowledged", "2/2 nodes"]);
  const unknown = policyConditions(http, 1, 2, { acknowledged: 2, refused: [], withoutDnsProxy: [] })[1];
  assert.match(unknown?.message ?? "", /rules\.http: not enforced yet/, "not known which nodes run it: not enforced");
});

test("a cidrGroupRef to a CiliumCIDRGroup that does not exist makes the policy not enforced, naming the group", () => {
  const parsed = { ok: true as const, value: [] };
  const [, missing] = policyConditions(parsed, 1, 2, { acknowledged: 2, refused: [] }, ["partner"]);
  assert.deepEqual([missing?.status, missing?.reason, missing?.message], ["False", "CIDRGroupNotFound", '2/2 nodes; "partner": no such CiliumCIDRGroup, so the cidrGroupRef entries naming it select nothing']);
});
