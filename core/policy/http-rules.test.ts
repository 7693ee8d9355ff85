// The HTTP part of a subject's compiled policy: what the operator sends the node's L7 proxy, and how it travels in snapshots and deltas.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LabelSet, Policy } from "../model.ts";
import { label, labelSetFrom } from "../labels.ts";
import { parsePolicyObject } from "../parser/index.ts";
import { PolicyCompiler, compileAll, policyKey } from "../compiler.ts";
import { parseDownstream } from "../wire.ts";
import { EMPTY_STATE, applyDelta, diffState } from "../nodestate.ts";
import { sameSubjectHttp } from "./http-rules.ts";

const pod = (cls: string, org: string): LabelSet =>
  labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "default"), label("k8s", "class", cls), label("k8s", "org", org), label("k8s", "io.cilium.k8s.policy.cluster", "default")]);
const DEATHSTAR = 300;
const XWING = 301;
const TIEFIGHTER = 302;
const ids = new Map<number, LabelSet>([
  [DEATHSTAR, pod("deathstar", "empire")],
  [XWING, pod("xwing", "alliance")],
  [TIEFIGHTER, pod("tiefighter", "empire")],
]);

function parse(spec: unknown, name = "rule1"): Policy[] {
  const r = parsePolicyObject({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name, namespace: "default", uid: "u1", generation: 1 }, spec });
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

// Cilium's star-wars demo, as its documentation writes it (an ingress rule on the deathstar).
const SPEC = {
  endpointSelector: { matchLabels: { org: "empire", class: "deathstar" } },
  ingress: [
    {
      fromEndpoints: [{ matchLabels: { org: "empire" } }],
      toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "POST", path: "/v1/request-landing" }] } }],
    },
  ],
};

test("a subject's compiled policy carries the HTTP rules of each L7 allow rule, under the ruleId its proxied entries carry", () => {
  const c = compileAll(parse(SPEC), ids);
  const p = c.snapshot(DEATHSTAR);
  const proxied = p.entries.filter((e) => e.proxyPort !== 0);
  assert.ok(proxied.length > 0, "the port is proxied");
  assert.deepEqual(p.http, [{ ruleId: proxied[0]!.ruleId, direction: "ingress", rules: [{ method: "POST", path: "/v1/request-landing" }] }]);
  assert.equal(c.snapshot(XWING).http, undefined, "a subject without HTTP rules has no HTTP part");
});

test("HTTP rules over several toPorts of one rule are one list; egress rules are carried with their direction; denies give none", () => {
  const c = compileAll(
    parse({
      endpointSelector: { matchLabels: { class: "xwing" } },
      egress: [
        {
          toEndpoints: [{ matchLabels: { class: "deathstar" } }],
          toPorts: [
            { ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/v1/.*" }] } },
            { ports: [{ port: "8080", protocol: "TCP" }], rules: { http: [{ headers: ["X-Token"] }] } },
          ],
        },
      ],
      egressDeny: [{ toEndpoints: [{ matchLabels: { class: "tiefighter" } }] }],
    }),
    ids,
  );
  const http = c.snapshot(XWING).http;
  assert.equal(http?.length, 1);
  assert.equal(http?.[0]?.direction, "egress");
  assert.deepEqual(http?.[0]?.rules, [{ method: "GET", path: "/v1/.*" }, { headers: ["X-Token"] }]);
});

test("changing a policy's HTTP rules is in the subject's delta even when no map entry moves", () => {
  const c = new PolicyCompiler();
  for (const [id, l] of ids) c.upsertIdentity(id, l);
  const key = policyKey({ kind: "CiliumNetworkPolicy", namespace: "default", name: "rule1" });
  c.upsertPolicy(key, parse(SPEC));
  const changed = { ...SPEC, ingress: [{ ...SPEC.ingress[0], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "PUT", path: "/v1/exhaust-port" }] } }] }] };
  const d = c.upsertPolicy(key, parse(changed)).find((x) => x.subject === DEATHSTAR);
  assert.ok(d, "the subject has a delta");
  assert.deepEqual([d.added, d.removed], [[], []], "no map entry moved");
  assert.deepEqual(d.http?.[0]?.rules, [{ method: "PUT", path: "/v1/exhaust-port" }]);
  c.removePolicy(key);
  assert.equal(c.snapshot(DEATHSTAR).http, undefined);
});

test("the HTTP part travels in snapshots and deltas: the agent's record follows it, and diffState sees a change of it alone", () => {
  const c = compileAll(parse(SPEC), ids);
  const before = { ...EMPTY_STATE, policies: [c.snapshot(DEATHSTAR)] };
  const without = { ...EMPTY_STATE, policies: [{ ...c.snapshot(DEATHSTAR), http: undefined }] };
  const delta = diffState(without, before);
  assert.equal(delta.subjects.length, 1);
  assert.ok(sameSubjectHttp(delta.subjects[0]!.http, before.policies[0]!.http));
  assert.ok(sameSubjectHttp(applyDelta(without, delta).policies[0]!.http, before.policies[0]!.http));
  assert.equal(applyDelta(before, diffState(before, without)).policies[0]!.http, undefined, "a delta without an HTTP part clears it");
  const snap = parseDownstream(JSON.parse(JSON.stringify({ type: "snapshot", version: 1, nonce: "n", state: before })));
  assert.ok(snap.ok);
  assert.ok(sameSubjectHttp(snap.value.type === "snapshot" ? snap.value.state.policies[0]!.http : undefined, before.policies[0]!.http));
});

test("the agent refuses a malformed HTTP part, naming the field", () => {
  const p = compileAll(parse(SPEC), ids).snapshot(DEATHSTAR);
  const bad = (http: unknown): string => {
    const r = parseDownstream({ type: "snapshot", version: 1, nonce: "n", state: { ...EMPTY_STATE, policies: [{ ...p, http }] } });
    assert.ok(!r.ok);
    return `${r.errors[0]!.path}: ${r.errors[0]!.message}`;
  };
  assert.equal(bad([{ ruleId: 1, direction: "up", rules: [] }]), "state.policies[0].http[0].direction: must be one of ingress, egress");
  assert.equal(bad([{ ruleId: 1, direction: "ingress", rules: [{ method: 5 }] }]), "state.policies[0].http[0].rules[0].method: must be a string");
  assert.equal(
    bad([{ ruleId: 1, direction: "ingress", rules: [{ headerMatches: [{ name: "X", mismatch: "DROP" }] }] }]),
    "state.policies[0].http[0].rules[0].headerMatches[0].mismatch: must be one of LOG, ADD, DELETE, REPLACE",
  );
  assert.equal(bad({}), "state.policies[0].http: must be a list");
});
