// Unit tests of the policy status logic: condition contents for invalid, pending, enforced and refused policies, and the agent reconnect grace.
import { test } from "node:test";
import assert from "node:assert/strict";
import { describeErrors, duringReconnectGrace, policyConditions, type PolicyStatus, sameStatus } from "./policy.ts";

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

test("during the agent reconnect grace a node not heard from counts as the stored status of the same generation and node count saw it; anything heard counts as it is", () => {
  const stored = (enforcedNodes: number, reason = "Acknowledged", generation = 2, totalNodes = 3): PolicyStatus => ({
    observedGeneration: generation,
    enforcedNodes,
    totalNodes,
    conditions: [{ type: "Enforced", status: reason === "Acknowledged" ? "True" : "False", reason, message: "", lastTransitionTime: "", observedGeneration: generation }],
  });
  const none = { acknowledged: 0, refused: [], unheard: ["a", "b", "c"], withoutDnsProxy: ["a", "b", "c"], withoutL7Proxy: ["a", "b", "c"] };
  // Nobody back yet: the stored 3/3 stands, proxies included.
  assert.deepEqual(duringReconnectGrace(none, stored(3), 2, 3), { ...none, acknowledged: 3, withoutDnsProxy: [], withoutL7Proxy: [] });
  // One back and acknowledging, two not heard from: still 3/3; the one heard without a DNS proxy is named.
  const one = { acknowledged: 1, refused: [], unheard: ["b", "c"], withoutDnsProxy: ["a", "b", "c"], withoutL7Proxy: ["b", "c"] };
  assert.deepEqual(duringReconnectGrace(one, stored(3), 2, 3), { ...one, acknowledged: 3, withoutDnsProxy: ["a"], withoutL7Proxy: [] });
  // Never above what the heard and unheard nodes can make: one heard that does not hold the generation, one unheard.
  assert.equal(duringReconnectGrace({ acknowledged: 0, refused: [], unheard: ["c"] }, stored(3), 2, 3).acknowledged, 1);
  // Never below what was heard, and the stored count is not raised to: 1/3 stored, 2 acknowledged now.
  assert.equal(duringReconnectGrace({ acknowledged: 2, refused: [], unheard: ["c"] }, stored(1, "Pending"), 2, 3).acknowledged, 2);
  assert.equal(duringReconnectGrace({ acknowledged: 0, refused: [], unheard: ["a", "b", "c"] }, stored(1, "Pending"), 2, 3).acknowledged, 1);
  // A refusal the stored status names stands while its node is not heard from; heard again, the node counts as it answers.
  const refusedBefore = { ...stored(2, "Refused"), nodeErrors: [{ node: "c", message: "map full" }] };
  assert.deepEqual(duringReconnectGrace(none, refusedBefore, 2, 3), { ...none, acknowledged: 2, refused: [{ node: "c", message: "map full" }], withoutDnsProxy: [], withoutL7Proxy: [] });
  const back = { acknowledged: 1, refused: [], unheard: ["a", "b"], withoutDnsProxy: ["a", "b"], withoutL7Proxy: ["a", "b"] };
  assert.deepEqual(duringReconnectGrace(back, refusedBefore, 2, 3), { ...back, acknowledged: 2, withoutDnsProxy: [], withoutL7Proxy: [] });
  // A stored status that found rules not enforced: unheard nodes keep being named as lacking the proxies.
  assert.deepEqual(duringReconnectGrace(none, stored(3, "RulesNotEnforced"), 2, 3), { ...none, acknowledged: 3 });
  // A new generation, another node count, no stored status, or every node heard: shown as reported.
  assert.equal(duringReconnectGrace(none, stored(3), 3, 3), none);
  assert.equal(duringReconnectGrace(none, stored(3, "Acknowledged", 2, 4), 2, 3), none);
  assert.equal(duringReconnectGrace(none, undefined, 2, 3), none);
  const all = { acknowledged: 1, refused: [{ node: "b", message: "map full" }], unheard: [] };
  assert.equal(duringReconnectGrace(all, stored(3), 2, 3), all);
  // The conditions then are the stored ones: 3/3 nodes, True.
  const [, enforced] = policyConditions({ ok: true, value: [] }, 2, 3, duringReconnectGrace(none, stored(3), 2, 3));
  assert.deepEqual([enforced?.status, enforced?.message], ["True", "3/3 nodes"]);
});

test("a status read back from the API server (nodeErrors' fields in its own order) is the same as the one written: a refused policy is not rewritten on every pass", () => {
  const written: PolicyStatus = { observedGeneration: 2, enforced: "0/1", enforcedNodes: 0, totalNodes: 1, selectedEndpoints: 1, nodeErrors: [{ node: "n1", message: "policy map full" }] };
  const readBack = JSON.parse('{"enforced":"0/1","enforcedNodes":0,"nodeErrors":[{"message":"policy map full","node":"n1"}],"observedGeneration":2,"selectedEndpoints":1,"totalNodes":1}') as PolicyStatus;
  assert.ok(sameStatus(readBack, written));
  assert.ok(!sameStatus(readBack, { ...written, nodeErrors: [{ node: "n1", message: "another" }] }));
  assert.ok(!sameStatus(readBack, { ...written, nodeErrors: [] }));
  assert.ok(!sameStatus(readBack, { ...written, enforced: "1/1" }));
});
