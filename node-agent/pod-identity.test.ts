// A pod object's identity claim is taken only when the operator's labels of that identity fit the pod.
import { test } from "node:test";
import assert from "node:assert/strict";
import { podIdentityClaims, sameClaim, verifiedIdentity, type PodIdentityClaim } from "./pod-identity.ts";

const WEB = ["k8s:app=web", "k8s:io.cilium.k8s.namespace.labels.team=a", "k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.cilium.k8s.policy.serviceaccount=web", "k8s:io.kubernetes.pod.namespace=shop"];
const claim = (labels: Record<string, string>, serviceAccount = "web", identity = 300): PodIdentityClaim => ({ identity, labels, serviceAccount });

test("the operator's annotation is the pod's identity when the identity's labels fit the pod", () => {
  assert.equal(verifiedIdentity("shop", claim({ app: "web", "pod-template-hash": "x" }), WEB), 300, "labels the identity leaves out (not security-relevant) do not matter");
});

test("an annotation the pod's creator wrote is refused when it names another namespace's identity, a label value the pod lacks, or another service account", () => {
  assert.equal(verifiedIdentity("other", claim({ app: "web" }), WEB), undefined, "another namespace");
  assert.equal(verifiedIdentity("shop", claim({ app: "db" }), WEB), undefined, "another label value");
  assert.equal(verifiedIdentity("shop", claim({}), WEB), undefined, "a label the pod does not carry");
  assert.equal(verifiedIdentity("shop", claim({ app: "web" }, "admin"), WEB), undefined, "another service account");
  assert.equal(verifiedIdentity("shop", claim({ app: "web" }), ["k8s:app=web"]), undefined, "an identity that names no namespace");
  assert.equal(verifiedIdentity("shop", claim({ app: "web" }), ["reserved:host"]), undefined, "not a pod's identity");
  assert.equal(verifiedIdentity("shop", claim({ app: "web" }, "web", 1), WEB), undefined, "a reserved number");
  assert.equal(verifiedIdentity("shop", claim({ app: "web" }), undefined), undefined, "an identity the state does not list");
});

test("claims are read from the annotated pods only, by namespace and name", () => {
  const claims = podIdentityClaims([
    { metadata: { name: "a", namespace: "shop", labels: { app: "web" }, annotations: { "membrane.io/identity": "300" } }, spec: { serviceAccountName: "web" } },
    { metadata: { name: "b", namespace: "shop", annotations: { "membrane.io/identity": "nope" } } },
    { metadata: { name: "c", namespace: "shop" } },
  ]);
  assert.deepEqual([...(claims.get("shop")?.keys() ?? [])], ["a"]);
  assert.ok(sameClaim(claims.get("shop")?.get("a"), claim({ app: "web" })));
  assert.ok(!sameClaim(claims.get("shop")?.get("a"), claim({ app: "web", v: "2" })));
});
