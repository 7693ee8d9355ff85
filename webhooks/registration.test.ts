// The ValidatingWebhookConfiguration the webhook registers, and the command's flag parsing.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseListen } from "./main.ts";
import { webhookConfiguration, type RegistrationOptions } from "./registration.ts";

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

  it("parses --listen", () => {
    assert.deepEqual(parseListen("127.0.0.1:9443"), { host: "127.0.0.1", port: 9443 });
    assert.deepEqual(parseListen("[::1]:8443"), { host: "::1", port: 8443 });
    assert.equal(typeof parseListen("9443"), "string");
    assert.equal(typeof parseListen("127.0.0.1:70000"), "string");
  });
});
