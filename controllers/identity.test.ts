// Unit tests of the identity reconciler's pure parts: the CiliumIdentity label map and which pods need identities.
import { test } from "node:test";
import assert from "node:assert/strict";
import { securityLabels } from "../core/labels.ts";
import { pino } from "pino";
import { IdentityReconciler, podNeedsIdentity } from "./identity.ts";
import type { Informer } from "../kube/informer.ts";
import type { KubeClient, KubeObject } from "../kube/kube.ts";
import type { OperatorMetrics } from "../kube/metrics.ts";
import type { IdentityObject, PodObject } from "../kube/objects.ts";
import { labelSetOfIdentity, securityLabelsMap } from "../kube/objects.ts";
import { type Endpoint, EndpointIndex, groupEndpoints, selectEndpoints } from "./selection.ts";
import fc from "fast-check";
import { matchesSelector, selectorFromLabels } from "../core/selector.ts";
import { label } from "../core/labels.ts";
import type { Policy } from "../core/model.ts";
import { nodeHostLabels } from "../core/host-endpoint.ts";

test("security-labels round-trips to the same label set", () => {
  const set = securityLabels({ podLabels: { app: "web", tier: "a:b" }, namespace: "prod", namespaceLabels: { team: "x" }, serviceAccount: "sa" });
  const map = securityLabelsMap(set);
  assert.equal(map["k8s:app"], "web");
  assert.equal(map["k8s:io.kubernetes.pod.namespace"], "prod");
  assert.equal(labelSetOfIdentity({ metadata: { name: "256" }, "security-labels": map }).key, set.key);
});

test("host-network and finished pods need no identity", () => {
  assert.equal(podNeedsIdentity({ metadata: { name: "p" } }), true);
  assert.equal(podNeedsIdentity({ metadata: { name: "p" }, spec: { hostNetwork: true } }), false);
  assert.equal(podNeedsIdentity({ metadata: { name: "p" }, status: { phase: "Succeeded" } }), false);
  assert.equal(podNeedsIdentity({ metadata: { name: "p" }, status: { phase: "Running" } }), true);
});

test("selection counts pods matched by any subject and the nodes they run on; host policies select no pods (nodes instead, below)", () => {
  const web = securityLabels({ podLabels: { app: "web" }, namespace: "default", namespaceLabels: {} });
  const db = securityLabels({ podLabels: { app: "db" }, namespace: "default", namespaceLabels: {} });
  const subject = selectorFromLabels([label("k8s", "app", "web")]);
  const policy = { subject, rules: [] } as unknown as Policy;
  const groups = groupEndpoints([{ labels: web, node: "n1" }, { labels: web, node: "n2" }, { labels: db, node: "n3" }, { labels: web }, { labels: web, node: "n1" }]);
  assert.deepEqual(groups.map((g) => [g.count, [...g.nodes.keys()]]), [[4, ["n1", "n2"]], [1, ["n3"]]], "one group per label set");
  const sel = selectEndpoints([policy], groups);
  assert.equal(sel.endpoints, 4);
  assert.deepEqual([...sel.nodes].sort(), ["n1", "n2"]);
  assert.equal(selectEndpoints([{ ...policy, nodeSelector: subject } as Policy], groupEndpoints([{ labels: web }])).endpoints, 0);
  // The same policy asked again after the pods changed: new counts.
  assert.equal(selectEndpoints([policy], groupEndpoints([{ labels: db, node: "n3" }, { labels: web, node: "n4" }])).endpoints, 1);
});

test("selection with remembered verdicts agrees with matching every label set afresh, over changing pods", () => {
  const apps = ["web", "db", "cache", "queue"];
  const sets = apps.flatMap((app) => ["a", "b"].map((ns) => securityLabels({ podLabels: { app }, namespace: ns, namespaceLabels: {} })));
  const subjects = [selectorFromLabels([label("k8s", "app", "web")]), selectorFromLabels([label("k8s", "app", "db")]), selectorFromLabels([label("k8s", "io.kubernetes.pod.namespace", "b")])];
  for (let round = 0; round < 20; round++) {
    const endpoints = sets.filter((_, i) => (i + round) % 3 !== 0).flatMap((labels, i) => Array.from({ length: 1 + ((i + round) % 4) }, (_, k) => ({ labels, node: `n${(i + k + round) % 5}` })));
    const groups = groupEndpoints(endpoints);
    for (const subject of subjects) {
      const sel = selectEndpoints([{ subject, rules: [] } as unknown as Policy], groups);
      const fresh = endpoints.filter((e) => matchesSelector(subject, e.labels));
      assert.equal(sel.endpoints, fresh.length);
      assert.deepEqual([...sel.nodes].sort(), [...new Set(fresh.map((e) => e.node))].sort());
    }
  }
});

test("property: the endpoint index kept per pod change selects what matching every pod of the final set afresh does", () => {
  const sets = ["web", "db", "cache"].flatMap((app) => ["a", "b"].map((ns) => securityLabels({ podLabels: { app }, namespace: ns, namespaceLabels: {} })));
  const subjects = [selectorFromLabels([label("k8s", "app", "web")]), selectorFromLabels([label("k8s", "io.kubernetes.pod.namespace", "b")]), selectorFromLabels([])];
  // A change: pod k gets label set s on node n (n = 3: not scheduled), or goes (s = sets.length).
  const change = fc.record({ pod: fc.integer({ min: 0, max: 7 }), set: fc.integer({ min: 0, max: sets.length }), node: fc.integer({ min: 0, max: 3 }) });
  fc.assert(
    fc.property(fc.array(change, { maxLength: 40 }), (changes) => {
      const index = new EndpointIndex();
      const final = new Map<string, Endpoint>();
      for (const c of changes) {
        const key = `ns/p${c.pod}`;
        const labels = sets[c.set];
        const ep = labels && { labels, ...(c.node < 3 ? { node: `n${c.node}` } : {}) };
        const before = final.get(key);
        const moved = index.set(key, ep);
        assert.equal(moved, before?.labels.key !== ep?.labels.key || before?.node !== ep?.node, "moved exactly when the pod's label set or node did");
        if (ep) final.set(key, ep);
        else final.delete(key);
        // Asked between changes too, as policy status does.
        if (c.pod % 3 === 0) selectEndpoints([{ subject: subjects[0]!, rules: [] } as unknown as Policy], index.groups());
      }
      for (const subject of subjects) {
        const sel = selectEndpoints([{ subject, rules: [] } as unknown as Policy], index.groups());
        const fresh = [...final.values()].filter((e) => matchesSelector(subject, e.labels));
        assert.equal(sel.endpoints, fresh.length);
        assert.deepEqual([...sel.nodes].sort(), [...new Set(fresh.flatMap((e) => (e.node ? [e.node] : [])))].sort());
      }
      const counts = (groups: readonly { labels: { key: string }; count: number; nodes: ReadonlyMap<string, number> }[]): unknown =>
        groups.map((g) => [g.labels.key, g.count, [...g.nodes].sort()]).sort();
      assert.deepEqual(counts(index.groups()), counts(groupEndpoints(final.values())), "the same groups as grouping the final pods at once");
    }),
    { numRuns: 300 },
  );
});

test("a host policy's selection is the nodes whose labels its nodeSelector matches, one endpoint each", () => {
  const mgmt = selectorFromLabels([label("any", "tier", "mgmt")]);
  const hostPolicy = { subject: mgmt, nodeSelector: mgmt, rules: [] } as unknown as Policy;
  const hosts = [
    { node: "n1", labels: nodeHostLabels({ tier: "mgmt" }) },
    { node: "n2", labels: nodeHostLabels({ tier: "web" }) },
    { node: "n3", labels: nodeHostLabels(undefined) },
  ];
  const web = securityLabels({ podLabels: { tier: "mgmt" }, namespace: "default", namespaceLabels: {} });
  const sel = selectEndpoints([hostPolicy], groupEndpoints([{ labels: web, node: "n2" }]), hosts);
  assert.equal(sel.endpoints, 1, "a pod with the same label is not a host");
  assert.deepEqual([...sel.nodes], ["n1"]);
  const all = selectEndpoints([{ ...hostPolicy, nodeSelector: selectorFromLabels([]) } as Policy], [], hosts);
  assert.deepEqual([...all.nodes].sort(), ["n1", "n2", "n3"], "nodeSelector {} selects every node");
});

test("an init policy (subject selecting reserved:init) concerns every node, as every node enforces it; the endpoints it selects are the agents' and not counted", () => {
  const initPolicy = { subject: selectorFromLabels([label("reserved", "init")]), rules: [] } as unknown as Policy;
  const hosts = [
    { node: "n1", labels: nodeHostLabels(undefined) },
    { node: "n2", labels: nodeHostLabels(undefined) },
  ];
  const web = securityLabels({ podLabels: { app: "web" }, namespace: "default", namespaceLabels: {} });
  const sel = selectEndpoints([initPolicy], groupEndpoints([{ labels: web, node: "n2" }]), hosts);
  assert.deepEqual({ endpoints: sel.endpoints, nodes: [...sel.nodes].sort() }, { endpoints: 0, nodes: ["n1", "n2"] });
  const podsOnly = selectEndpoints([{ subject: selectorFromLabels([label("any", "app", "web")]), rules: [] } as unknown as Policy], groupEndpoints([{ labels: web, node: "n2" }]), hosts);
  assert.deepEqual([...podsOnly.nodes], ["n2"], "a pod selector concerns its pods' nodes only");
});

test("pods with equal security labels share one LabelSet object in the identity reconciler (a 50,000-pod cluster keeps one per identity, not one per pod)", () => {
  const ns: KubeObject = { metadata: { name: "prod", labels: { team: "x" } } };
  const pod = (name: string, app: string): PodObject => ({ metadata: { name, namespace: "prod", labels: { app } }, spec: { nodeName: "n1" } });
  const pods = [pod("web-1", "web"), pod("web-2", "web"), pod("db-1", "db")];
  const cache = <T extends KubeObject>(objs: T[]): Informer<T> =>
    ({ list: () => objs, get: (k: string) => objs.find((o) => `${o.metadata.namespace ? `${o.metadata.namespace}/` : ""}${o.metadata.name}` === k), size: objs.length }) as unknown as Informer<T>;
  const r = new IdentityReconciler({
    client: {} as KubeClient,
    pods: cache(pods),
    namespaces: cache([ns]),
    identities: cache<IdentityObject>([]),
    metrics: { identities: { set: () => undefined } } as unknown as OperatorMetrics,
    log: pino({ level: "silent" }),
    clusterName: "default",
  });
  r.init();
  const [web1, web2, db1] = pods.map((p) => r.securityLabelsOf(p));
  assert.ok(web1 && web2 && db1);
  assert.equal(web1.key, web2.key);
  assert.ok(web1 === web2, "web-1 and web-2 hold the same object");
  assert.notEqual(db1.key, web1.key);
  // A pod seen later (a new object, e.g. after an update) with the same labels gets that object too.
  assert.ok(r.securityLabelsOf(pod("web-3", "web")) === web1);
  assert.deepEqual(web1.labels, securityLabels({ podLabels: { app: "web" }, namespace: "prod", namespaceLabels: { team: "x" }, clusterName: "default" }).labels);
});
