// The reference evaluator names why a packet got its verdict: the deciding rule, default-deny or no-policy.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LabelSet, Policy } from "./model.ts";
import { label, labelSetFrom } from "./labels.ts";
import { parsePolicyObject } from "./parser/index.ts";
import { verdict } from "./evaluator.ts";

const pod = (app: string): LabelSet =>
  labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "prod"), label("k8s", "app", app)]);
const web = { id: 300, labels: pod("web") };
const client = { id: 301, labels: pod("client") };
const bad = { id: 302, labels: pod("bad") };

function parse(obj: unknown): Policy[] {
  const r = parsePolicyObject(obj);
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

const policies = parse({
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "web", namespace: "prod" },
  spec: {
    endpointSelector: { matchLabels: { app: "web" } },
    ingress: [
      {
        fromEndpoints: [{ matchLabels: { app: "client" } }],
        toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }],
      },
    ],
    egressDeny: [{ toEndpoints: [{ matchLabels: { app: "bad" } }] }],
  },
});

test("an allowed packet names the allowing rule", () => {
  const v = verdict({ policies, src: client, dst: web, protocol: 6, port: 80 });
  assert.equal(v.verdict, "allow");
  assert.equal(v.direction, "ingress");
  assert.deepEqual(v.rule, policies[0]!.rules.find((r) => r.direction === "ingress")!.origin);
});

test("a packet no rule allows in an enforced direction is default-deny", () => {
  const v = verdict({ policies, src: client, dst: web, protocol: 6, port: 81 });
  assert.deepEqual([v.verdict, v.rule, v.direction], ["deny", "default-deny", "ingress"]);
});

test("an egress deny decides before the destination's ingress is looked at", () => {
  const v = verdict({ policies, src: web, dst: bad, protocol: 17, port: 53 });
  assert.equal(v.verdict, "deny");
  assert.equal(v.direction, "egress");
  assert.equal(typeof v.rule === "object" && v.rule.path, "spec.egressDeny[0]");
  assert.deepEqual(v.ingress, { verdict: "allow", rule: "no-policy" });
});

test("traffic between endpoints no policy selects is allowed with no-policy", () => {
  const v = verdict({ policies, src: client, dst: bad, protocol: 6, port: 80 });
  assert.deepEqual([v.verdict, v.rule], ["allow", "no-policy"]);
});
