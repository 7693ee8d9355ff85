// Tests for selectors: operators, sources, canonical form, namespace defaulting and NetworkPolicy peers.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type { LabelSet, Selector } from "./model.ts";
import { labelSetFromStrings, securityLabels } from "./labels.ts";
import { canonicalSelector, matchesSelector, namespaceSelectorFrom, networkPolicyPeerSelector, selectorFrom } from "./selector.ts";

const pod = (ns: string, labels: Record<string, string>, nsLabels: Record<string, string> = {}): LabelSet =>
  securityLabels({ podLabels: labels, namespace: ns, namespaceLabels: { "kubernetes.io/metadata.name": ns, ...nsLabels } });

const webProd = pod("prod", { app: "web", tier: "front" }, { env: "production" });
const dbProd = pod("prod", { app: "db" }, { env: "production" });
const webDev = pod("dev", { app: "web" }, { env: "dev" });
const host = labelSetFromStrings(["reserved:host"]);
const init = labelSetFromStrings(["reserved:init"]);

const sel = (matchLabels: Record<string, string>, matchExpressions: { key: string; operator: string; values?: string[] }[] = []): Selector =>
  selectorFrom({ matchLabels, matchExpressions });

test("matchLabels and the four operators follow Kubernetes semantics", () => {
  assert.ok(matchesSelector(sel({ app: "web" }), webProd));
  assert.ok(!matchesSelector(sel({ app: "web" }), dbProd));
  const inSel = sel({}, [{ key: "app", operator: "In", values: ["web", "db"] }]);
  assert.ok(matchesSelector(inSel, webProd) && matchesSelector(inSel, dbProd) && !matchesSelector(inSel, host));
  const notIn = sel({}, [{ key: "app", operator: "NotIn", values: ["web"] }]);
  assert.ok(!matchesSelector(notIn, webProd) && matchesSelector(notIn, dbProd));
  assert.ok(matchesSelector(notIn, host), "NotIn matches when the label is absent");
  const exists = sel({}, [{ key: "tier", operator: "Exists" }]);
  assert.ok(matchesSelector(exists, webProd) && !matchesSelector(exists, dbProd));
  const absent = sel({}, [{ key: "tier", operator: "DoesNotExist" }]);
  assert.ok(!matchesSelector(absent, webProd) && matchesSelector(absent, dbProd) && matchesSelector(absent, host));
  // All requirements must hold.
  assert.ok(matchesSelector(sel({ app: "web" }, [{ key: "tier", operator: "In", values: ["front"] }]), webProd));
  assert.ok(!matchesSelector(sel({ app: "web" }, [{ key: "tier", operator: "In", values: ["back"] }]), webProd));
  // The empty selector selects everything.
  assert.ok(matchesSelector(sel({}), host) && matchesSelector(sel({}), webProd));
});

test("a bare key matches any source; a k8s: or reserved: key only its own", () => {
  const containerWeb = labelSetFromStrings(["container:app=web"]);
  assert.ok(matchesSelector(sel({ app: "web" }), containerWeb));
  assert.ok(!matchesSelector(sel({ "k8s:app": "web" }), containerWeb));
  assert.ok(matchesSelector(sel({ "k8s:app": "web" }), webProd));
  assert.ok(matchesSelector(sel({ "reserved:host": "" }), host));
  assert.ok(!matchesSelector(sel({ "reserved:host": "" }), webProd));
  assert.ok(matchesSelector(sel({ "any:app": "web" }), webProd));
  assert.equal(sel({ app: "web" }).canonical, sel({ "any:app": "web" }).canonical);
});

test("canonical form ignores order and duplicates, and distinguishes everything else", () => {
  const a = sel({ app: "web", tier: "front" }, [{ key: "x", operator: "In", values: ["2", "1", "1"] }]);
  const b = selectorFrom({ matchExpressions: [{ key: "x", operator: "In", values: ["1", "2"] }], matchLabels: { tier: "front", app: "web" } });
  assert.equal(a.canonical, b.canonical);
  assert.notEqual(a.canonical, sel({ app: "web", tier: "back" }, [{ key: "x", operator: "In", values: ["1", "2"] }]).canonical);
  assert.equal(canonicalSelector([...a.requirements].reverse()).canonical, a.canonical);
  assert.notEqual(sel({ "k8s:app": "web" }).canonical, sel({ app: "web" }).canonical);
});

test("an unknown operator selects nothing instead of throwing", () => {
  const bad = sel({}, [{ key: "app", operator: "Like", values: ["web"] }]);
  assert.ok(!matchesSelector(bad, webProd) && !matchesSelector(bad, host));
});

test("a namespaced policy's subject is always restricted to the policy's namespace", () => {
  const s = selectorFrom({ matchLabels: { app: "web" } }, { role: "subject", namespace: "prod" });
  assert.ok(matchesSelector(s, webProd) && !matchesSelector(s, webDev));
  const other = selectorFrom({ matchLabels: { app: "web", "k8s:io.kubernetes.pod.namespace": "dev" } }, { role: "subject", namespace: "prod" });
  assert.ok(matchesSelector(other, webProd) && !matchesSelector(other, webDev), "the policy's namespace wins");
  const all = selectorFrom({}, { role: "subject", namespace: "prod" });
  assert.ok(matchesSelector(all, dbProd) && !matchesSelector(all, webDev) && !matchesSelector(all, host));
  const clusterwide = selectorFrom({ matchLabels: { app: "web" } }, { role: "subject" });
  assert.ok(matchesSelector(clusterwide, webProd) && matchesSelector(clusterwide, webDev));
});

test("a namespaced policy's peers default to its namespace unless they name one", () => {
  const same = selectorFrom({ matchLabels: { app: "web" } }, { role: "peer", namespace: "prod" });
  assert.ok(matchesSelector(same, webProd) && !matchesSelector(same, webDev));
  const named = selectorFrom({ matchLabels: { app: "web", "k8s:io.kubernetes.pod.namespace": "dev" } }, { role: "peer", namespace: "prod" });
  assert.ok(!matchesSelector(named, webProd) && matchesSelector(named, webDev));
  const anyNs = selectorFrom(
    { matchLabels: { app: "web" }, matchExpressions: [{ key: "io.kubernetes.pod.namespace", operator: "Exists" }] },
    { role: "peer", namespace: "prod" },
  );
  assert.ok(matchesSelector(anyNs, webProd) && matchesSelector(anyNs, webDev));
  const reservedPeer = selectorFrom({ matchLabels: { "reserved:host": "" } }, { role: "peer", namespace: "prod" });
  assert.ok(matchesSelector(reservedPeer, host), "reserved peers get no namespace");
  const reservedRequires = selectorFrom({ matchLabels: { "reserved:host": "" } }, { role: "peer", namespace: "prod", requires: true });
  assert.ok(!matchesSelector(reservedRequires, host), "fromRequires gets the namespace even for reserved labels");
  const byNsLabel = selectorFrom({ matchLabels: { "io.cilium.k8s.namespace.labels.env": "dev" } }, { role: "peer", namespace: "prod" });
  assert.ok(matchesSelector(byNsLabel, webDev) && !matchesSelector(byNsLabel, webProd), "selecting by namespace labels crosses namespaces");
});

test("a cluster-wide policy whose subject selects reserved:init leaves its peers unrestricted", () => {
  const forInit = selectorFrom({}, { role: "peer", subjectSelectsInit: true });
  assert.ok(matchesSelector(forInit, init) && matchesSelector(forInit, host));
});

test("a cluster-wide policy's peers select only endpoints that have a namespace", () => {
  const all = selectorFrom({}, { role: "peer" });
  assert.ok(matchesSelector(all, webProd) && matchesSelector(all, webDev));
  assert.ok(!matchesSelector(all, host), "an empty peer selector in a CCNP does not select the host");
});

test("NetworkPolicy: namespaceSelector matches namespace labels, podSelector alone means the policy's namespace", () => {
  const nsOnly = networkPolicyPeerSelector({ namespaceSelector: { matchLabels: { env: "production" } } }, "dev")!;
  assert.ok(matchesSelector(nsOnly, webProd) && matchesSelector(nsOnly, dbProd) && !matchesSelector(nsOnly, webDev));
  const podOnly = networkPolicyPeerSelector({ podSelector: { matchLabels: { app: "web" } } }, "dev")!;
  assert.ok(!matchesSelector(podOnly, webProd) && matchesSelector(podOnly, webDev));
  const both = networkPolicyPeerSelector({ podSelector: { matchLabels: { app: "web" } }, namespaceSelector: { matchLabels: { env: "production" } } }, "dev")!;
  assert.ok(matchesSelector(both, webProd) && !matchesSelector(both, dbProd) && !matchesSelector(both, webDev), "one peer = conjunction");
  const everyNs = namespaceSelectorFrom({});
  assert.ok(matchesSelector(everyNs, webDev) && matchesSelector(everyNs, dbProd) && !matchesSelector(everyNs, host));
  const byName = namespaceSelectorFrom({ matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "In", values: ["dev"] }] });
  assert.ok(matchesSelector(byName, webDev) && !matchesSelector(byName, webProd));
  assert.equal(networkPolicyPeerSelector({}, "dev"), undefined);
  // The upstream suite's "NamespaceSelector with MatchExpressions using default ns label": NotIn [y] selects the pods
  // of every other namespace and nothing outside the cluster, though NotIn holds where the label is absent.
  const notY = networkPolicyPeerSelector({ namespaceSelector: { matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["dev"] }] } }, "prod")!;
  assert.ok(matchesSelector(notY, webProd) && !matchesSelector(notY, webDev));
  for (const outside of [host, init, labelSetFromStrings(["reserved:world"]), labelSetFromStrings(["reserved:world-ipv4"]), labelSetFromStrings(["cidr:10.96.0.0/12", "reserved:world"])]) {
    assert.ok(!matchesSelector(notY, outside), `NotIn on a namespace label selects no ${outside.labels.map((l) => `${l.source}:${l.key}`).join(",")}`);
  }
  const unlabelled = namespaceSelectorFrom({ matchExpressions: [{ key: "team", operator: "DoesNotExist" }] });
  assert.ok(matchesSelector(unlabelled, webProd) && !matchesSelector(unlabelled, host) && !matchesSelector(unlabelled, labelSetFromStrings(["reserved:world"])));
  const local = networkPolicyPeerSelector({ namespaceSelector: {} }, "dev", { clusterName: "default" })!;
  assert.ok(matchesSelector(local, webDev));
  assert.ok(!matchesSelector(local, securityLabels({ podLabels: {}, namespace: "dev", namespaceLabels: {}, clusterName: "east" })), "peers mean the local cluster");
  // NetworkPolicy keys are plain Kubernetes keys with source k8s.
  assert.ok(!matchesSelector(networkPolicyPeerSelector({ podSelector: { matchLabels: { app: "web" } } }, "x")!, labelSetFromStrings(["container:app=web", "k8s:io.kubernetes.pod.namespace=x"])));
});

test("selectors never throw and the canonical string decides the meaning", () => {
  const key = fc.constantFrom("app", "k8s:app", "tier", "reserved:host", "any:tier", "io.kubernetes.pod.namespace", ":x", "$host");
  const value = fc.constantFrom("", "web", "db", "front");
  const expr = fc.record({ key, operator: fc.constantFrom("In", "NotIn", "Exists", "DoesNotExist", "Bogus"), values: fc.array(value, { maxLength: 3 }) });
  const input = fc.record({ matchLabels: fc.dictionary(key, value, { maxKeys: 3 }), matchExpressions: fc.array(expr, { maxLength: 3 }) });
  const sets = [webProd, dbProd, webDev, host, init, labelSetFromStrings(["container:app=web", "k8s:tier=front"])];
  fc.assert(
    fc.property(input, input, fc.constantFrom(undefined, "prod"), (a, b, ns) => {
      const sa = selectorFrom(a, { role: "peer", namespace: ns });
      const sb = selectorFrom(b, { role: "peer", namespace: ns });
      if (sa.canonical === sb.canonical) for (const s of sets) assert.equal(matchesSelector(sa, s), matchesSelector(sb, s));
      assert.equal(canonicalSelector(sa.requirements).canonical, sa.canonical);
    }),
    { numRuns: 500 },
  );
});
