// The `cluster` entity with a cluster name other than "default" (`--cluster-name`) must select the cluster's pods.
import assert from "node:assert/strict";
import { test } from "node:test";
import { compileAll, type CompilerOptions } from "../compiler.ts";
import { securityLabels } from "../labels.ts";
import { lookup } from "./mapstate.ts";
import type { LabelSet, Policy } from "../model.ts";
import { parsePolicyObject } from "../parser/index.ts";

const CLUSTER = "prod-eu";
const WEB = 300;
const DB = 301;

/** Pod identities as the operator builds them when started with `--cluster-name prod-eu`. */
const identities = new Map<number, LabelSet>([
  [WEB, securityLabels({ podLabels: { app: "web" }, namespace: "shop", namespaceLabels: {}, clusterName: CLUSTER })],
  [DB, securityLabels({ podLabels: { app: "db" }, namespace: "shop", namespaceLabels: {}, clusterName: CLUSTER })],
]);

function webToCluster(): Policy[] {
  const r = parsePolicyObject({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "web-to-cluster", namespace: "shop" },
    spec: {
      endpointSelector: { matchLabels: { app: "web" } },
      egress: [{ toEntities: ["cluster"], toPorts: [{ ports: [{ port: "5432", protocol: "TCP" }] }] }],
    },
  });
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

/** The compiler as the operator runs it with `--cluster-name prod-eu`. */
const options: CompilerOptions = { namedPorts: () => [], clusterName: CLUSTER };

test(
  "toEntities: [cluster] allows egress to a pod of the cluster when the cluster is not named default",
  () => {
    assert.ok(
      identities.get(DB)!.labels.some((l) => l.key === "io.cilium.k8s.policy.cluster" && l.value === CLUSTER),
      "the peer's identity carries the cluster name",
    );
    const compiled = compileAll(webToCluster(), identities, options);
    const web = compiled.snapshot(WEB);
    assert.equal(web.egressEnforced, true);
    assert.equal(lookup(web, "egress", DB, 6, 5432).verdict, "allow", "db is inside the cluster named prod-eu");
    assert.equal(lookup(web, "egress", DB, 6, 5433).verdict, "deny", "only the listed port");
  },
);

test("toEntities: [cluster] allows egress to a pod of the cluster named default (the control for the case above)", () => {
  const inDefault = new Map<number, LabelSet>([
    [WEB, securityLabels({ podLabels: { app: "web" }, namespace: "shop", namespaceLabels: {} })],
    [DB, securityLabels({ podLabels: { app: "db" }, namespace: "shop", namespaceLabels: {} })],
  ]);
  const web = compileAll(webToCluster(), inDefault).snapshot(WEB);
  assert.equal(lookup(web, "egress", DB, 6, 5432).verdict, "allow");
  assert.equal(lookup(web, "egress", DB, 6, 5433).verdict, "deny");
});
