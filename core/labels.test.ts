// Tests for security labels: parsing, canonical label sets and a pod's security-relevant labels.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  formatLabel,
  labelFilter,
  labelSetFrom,
  labelSetFromStrings,
  labelSetStrings,
  parseLabel,
  parseSelectorLabel,
  securityLabels,
} from "./labels.ts";

test("parseLabel reads source, key and value as Cilium does", () => {
  assert.deepEqual(parseLabel("k8s:app=web"), { source: "k8s", key: "app", value: "web" });
  assert.deepEqual(parseLabel("reserved:host"), { source: "reserved", key: "host", value: "" });
  assert.deepEqual(parseLabel("$world"), { source: "reserved", key: "world", value: "" });
  assert.deepEqual(parseLabel("app=web"), { source: "unspec", key: "app", value: "web" });
  // A colon after '=' is part of the value, not a source delimiter.
  assert.deepEqual(parseLabel("app=a:b"), { source: "unspec", key: "app", value: "a:b" });
  assert.deepEqual(parseLabel("k8s:app=a=b"), { source: "k8s", key: "app", value: "a=b" });
  assert.deepEqual(parseLabel("cidr:10.0.0.0/8"), { source: "cidr", key: "10.0.0.0/8", value: "" });
});

test("a bare key in a selector label means any source", () => {
  assert.deepEqual(parseSelectorLabel("app=web"), { source: "any", key: "app", value: "web" });
  assert.deepEqual(parseSelectorLabel("k8s:app"), { source: "k8s", key: "app", value: "" });
});

test("formatLabel and parseLabel round-trip", () => {
  for (const s of ["k8s:app=web", "reserved:host", "cidr:10.0.0.0/8", "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=x"]) {
    assert.equal(formatLabel(parseLabel(s)), s);
  }
});

test("label sets are order-insensitive and de-duplicated", () => {
  const a = labelSetFromStrings(["k8s:app=web", "k8s:tier=front", "reserved:host"]);
  const b = labelSetFromStrings(["reserved:host", "k8s:tier=front", "k8s:app=web", "k8s:app=web"]);
  assert.equal(a.key, b.key);
  assert.equal(b.labels.length, 3);
  assert.deepEqual(labelSetStrings(a), ["k8s:app=web", "k8s:tier=front", "reserved:host"]);
  assert.notEqual(a.key, labelSetFromStrings(["k8s:app=web", "k8s:tier=back", "reserved:host"]).key);
});

test("label set keys are unambiguous: different sets never share a key", () => {
  const str = fc.string({ maxLength: 4, unit: fc.constantFrom("a", ":", "=", ";", "\\", "k") });
  const lbl = fc.record({ source: str, key: str, value: str });
  fc.assert(
    fc.property(fc.array(lbl, { maxLength: 3 }), fc.array(lbl, { maxLength: 3 }), (x, y) => {
      const a = labelSetFrom(x);
      const b = labelSetFrom(y);
      const same = JSON.stringify(a.labels) === JSON.stringify(b.labels);
      assert.equal(a.key === b.key, same);
    }),
    { numRuns: 2000 },
  );
});

const web = {
  podLabels: { app: "web", "pod-template-hash": "5d8f7c", "controller-revision-hash": "abc", "statefulset.kubernetes.io/pod-name": "web-0" },
  namespace: "shop",
  namespaceLabels: { team: "payments", "kubernetes.io/metadata.name": "shop" },
  serviceAccount: "web-sa",
};

test("a pod's security labels carry Cilium's sources and prefixes", () => {
  assert.deepEqual(labelSetStrings(securityLabels(web)), [
    "k8s:app=web",
    "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
    "k8s:io.cilium.k8s.namespace.labels.team=payments",
    "k8s:io.cilium.k8s.policy.cluster=default",
    "k8s:io.cilium.k8s.policy.serviceaccount=web-sa",
    "k8s:io.kubernetes.pod.namespace=shop",
  ]);
  const named = securityLabels({ ...web, clusterName: "east" });
  assert.ok(labelSetStrings(named).includes("k8s:io.cilium.k8s.policy.cluster=east"));
});

test("pods differing only in non-security labels share a key", () => {
  const a = securityLabels(web);
  const b = securityLabels({ ...web, podLabels: { app: "web", "pod-template-hash": "other", "pod-template-generation": "3", "k8s.io/x": "y" } });
  assert.equal(a.key, b.key);
  const c = securityLabels({ ...web, podLabels: { app: "api" } });
  assert.notEqual(a.key, c.key);
});

test("a pod cannot claim another namespace, namespace labels, service account or cluster", () => {
  const spoof = securityLabels({
    podLabels: {
      app: "web",
      "io.kubernetes.pod.namespace": "kube-system",
      "io.cilium.k8s.namespace.labels.team": "admins",
      "io.cilium.k8s.policy.serviceaccount": "root",
      "io.cilium.k8s.policy.cluster": "other",
    },
    namespace: "shop",
    namespaceLabels: {},
  });
  assert.deepEqual(labelSetStrings(spoof), ["k8s:app=web", "k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.kubernetes.pod.namespace=shop"]);
});

test("configured ignores add to the defaults; strings are key prefixes, RegExps are anchored", () => {
  const pod = { podLabels: { app: "web", "build-id": "17", "tmp.example.com/x": "1", "x-tmp": "2" }, namespace: "n", namespaceLabels: {} };
  const got = labelSetStrings(securityLabels(pod, { ignoredLabelKeys: ["build", /tmp\./] }));
  assert.deepEqual(got, ["k8s:app=web", "k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.kubernetes.pod.namespace=n", "k8s:x-tmp=2"]);
});

test("include patterns switch to an allow list; namespace, namespace labels, service account and cluster stay", () => {
  const pod = { podLabels: { app: "web", "app.kubernetes.io/name": "shop", version: "3" }, namespace: "n", namespaceLabels: { team: "a" } };
  const got = labelSetStrings(securityLabels(pod, { includedLabelKeys: ["app"] }));
  assert.deepEqual(got, [
    "k8s:app=web",
    "k8s:app.kubernetes.io/name=shop",
    "k8s:io.cilium.k8s.namespace.labels.team=a",
    "k8s:io.cilium.k8s.policy.cluster=default",
    "k8s:io.kubernetes.pod.namespace=n",
  ]);
});

test("the longer of an include and an ignore match wins", () => {
  const f = labelFilter({ ignoredLabelKeys: ["io.cilium.k8s.namespace.labels.field.cattle.io"] });
  assert.equal(f.isRelevant(parseLabel("k8s:io.cilium.k8s.namespace.labels.team=a")), true);
  assert.equal(f.isRelevant(parseLabel("k8s:io.cilium.k8s.namespace.labels.field.cattle.io/projectId=p")), false);
  assert.equal(f.isRelevant(parseLabel("k8s:io.kubernetes.pod.namespace=a")), true);
  assert.equal(f.isRelevant(parseLabel("k8s:io.kubernetes.container.name=a")), false);
  assert.equal(f.isRelevant(parseLabel("reserved:host")), true);
});
