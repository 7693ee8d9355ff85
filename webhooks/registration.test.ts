// The ValidatingWebhookConfiguration the webhook registers, and the command's flag parsing.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseListen } from "./main.ts";
import { caBundlePatch, webhookConfiguration, type RegistrationOptions } from "./registration.ts";

const opts: RegistrationOptions = {
  configName: "membrane-policy-validation",
  webhookName: "policies.membrane.io",
  target: { url: "https://127.0.0.1:9443/validate" },
  namespace: "membrane-system",
  secretName: "membrane-webhook-tls",
  timeoutSeconds: 10,
};

describe("webhook registration", () => {
  it("fails closed, has no side effects, speaks v1 and covers every admitted resource on CREATE and UPDATE", () => {
    const c = webhookConfiguration(opts, "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
    const [w] = c.webhooks as Record<string, unknown>[];
    assert.ok(w);
    assert.equal(w.name, "policies.membrane.io");
    assert.equal(w.failurePolicy, "Fail");
    assert.equal(w.sideEffects, "None");
    assert.equal(w.timeoutSeconds, 10);
    assert.deepEqual(w.admissionReviewVersions, ["v1"]);
    assert.deepEqual(w.clientConfig, {
      url: "https://127.0.0.1:9443/validate",
      caBundle: Buffer.from("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n").toString("base64"),
    });
    const rules = w.rules as { apiGroups: string[]; apiVersions: string[]; resources: string[]; operations: string[] }[];
    const covered = rules.flatMap((r) => r.resources.map((res) => `${r.apiGroups[0]}/${r.apiVersions[0]}/${res}`)).sort();
    assert.deepEqual(covered, [
      "cilium.io/v1alpha1/tracingpolicies",
      "cilium.io/v1alpha1/tracingpoliciesnamespaced",
      "cilium.io/v2/ciliumcidrgroups",
      "cilium.io/v2/ciliumclusterwidenetworkpolicies",
      "cilium.io/v2/ciliumnetworkpolicies",
      "membrane.io/v1alpha1/membraneencryptionkeys",
      "networking.k8s.io/v1/networkpolicies",
    ]);
    // Status writes by the operator go to the /status subresource, which is deliberately not covered.
    assert.ok(rules.every((r) => r.operations.join() === "CREATE,UPDATE" && r.resources.every((res) => !res.includes("/"))));
  });

  it("points at a Service in-cluster", () => {
    const c = webhookConfiguration({ ...opts, target: { service: "membrane-webhook", port: 443 } }, "ca");
    const [w] = c.webhooks as { clientConfig: unknown }[];
    assert.deepEqual(w?.clientConfig, {
      service: { namespace: "membrane-system", name: "membrane-webhook", path: "/validate", port: 443 },
      caBundle: Buffer.from("ca").toString("base64"),
    });
  });

  it("patches an existing configuration's caBundle only, each guarded by a test of the webhook's name", () => {
    const existing = {
      webhooks: [
        { name: "policies.membrane.io", clientConfig: { service: { name: "membrane-webhook", namespace: "membrane-system" } }, timeoutSeconds: 3 },
        { name: "keys.membrane.io", clientConfig: { url: "https://127.0.0.1:1/validate", caBundle: "b2xk" } },
      ],
    };
    const ca = Buffer.from("ca").toString("base64");
    assert.deepEqual(caBundlePatch(existing, "ca"), [
      { op: "test", path: "/webhooks/0/name", value: "policies.membrane.io" },
      { op: "add", path: "/webhooks/0/clientConfig/caBundle", value: ca },
      { op: "test", path: "/webhooks/1/name", value: "keys.membrane.io" },
      { op: "add", path: "/webhooks/1/clientConfig/caBundle", value: ca },
    ]);
    // Addressed by URL (the local cluster): the URL follows the server; a Service is never rewritten.
    const byUrl = caBundlePatch(existing, "ca", "https://127.0.0.1:2/validate");
    assert.deepEqual(byUrl?.filter((op) => op.op === "replace"), [{ op: "replace", path: "/webhooks/1/clientConfig/url", value: "https://127.0.0.1:2/validate" }]);
    assert.equal(caBundlePatch({ webhooks: [] }, "ca"), undefined);
  });

  it("parses --listen", () => {
    assert.deepEqual(parseListen("127.0.0.1:9443"), { host: "127.0.0.1", port: 9443 });
    assert.deepEqual(parseListen("[::1]:8443"), { host: "::1", port: 8443 });
    assert.equal(typeof parseListen("9443"), "string");
    assert.equal(typeof parseListen("127.0.0.1:70000"), "string");
  });
});
