// Against the real API server: registering over a configuration an installer (the Helm chart) made changes only its CA bundle.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { KubeClient } from "../kube/kube.ts";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { WebhookRegistration, type RegistrationOptions } from "./registration.ts";

const silent = pino({ level: "silent" });
const CONFIGS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
const CA_1 = "-----BEGIN CERTIFICATE-----\nfirst\n-----END CERTIFICATE-----\n";
const CA_2 = "-----BEGIN CERTIFICATE-----\nsecond\n-----END CERTIFICATE-----\n";
const b64 = (s: string): string => Buffer.from(s).toString("base64");

interface Webhook {
  name: string;
  clientConfig: { caBundle?: string; url?: string; service?: unknown };
  [k: string]: unknown;
}
interface Config {
  metadata: { name: string; labels?: Record<string, string> };
  webhooks: Webhook[];
}

/** What a chart installs: two webhooks served by us, each with its own rules, timeout and selectors, and no caBundle yet. */
function chartConfiguration(name: string): unknown {
  // Ignore + a namespaceSelector that matches no namespace: this test object must never get in the way of a write.
  const common = {
    admissionReviewVersions: ["v1"],
    failurePolicy: "Ignore",
    matchPolicy: "Exact",
    sideEffects: "None",
    namespaceSelector: { matchLabels: { "membrane.io/registration-test": "never" } },
    objectSelector: { matchExpressions: [{ key: "membrane.io/validated-by-chart", operator: "DoesNotExist" }] },
  };
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: { name, labels: { "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "membrane" } },
    webhooks: [
      {
        ...common,
        name: "policies.membrane.io",
        clientConfig: { service: { namespace: "membrane-system", name: "membrane-webhook", path: "/validate", port: 8443 } },
        rules: [{ apiGroups: ["cilium.io"], apiVersions: ["v2"], resources: ["ciliumnetworkpolicies"], operations: ["CREATE"], scope: "Namespaced" }],
        timeoutSeconds: 3,
      },
      {
        ...common,
        name: "keys.membrane.io",
        clientConfig: { service: { namespace: "membrane-system", name: "membrane-webhook", path: "/validate", port: 8443 } },
        rules: [{ apiGroups: ["membrane.io"], apiVersions: ["v1alpha1"], resources: ["membraneencryptionkeys"], operations: ["CREATE", "UPDATE"], scope: "*" }],
        timeoutSeconds: 7,
      },
    ],
  };
}

/** Everything of a webhook except its caBundle: what an installer owns. */
function withoutCaBundle(w: Webhook): Webhook {
  const { caBundle: _dropped, ...clientConfig } = w.clientConfig;
  return { ...w, clientConfig };
}

describe("webhook registration against the real API server", { timeout: 300_000 }, () => {
  let cp: ControlPlane;
  let kube: KubeClient;
  const created: string[] = [];
  const options = (configName: string, over: Partial<RegistrationOptions> = {}): RegistrationOptions => ({
    configName,
    webhookName: "policies.membrane.io",
    target: { service: "membrane-webhook", port: 8443 },
    namespace: "membrane-system",
    secretName: "membrane-webhook-tls",
    timeoutSeconds: 10,
    ...over,
  });
  const get = (name: string): Promise<Config> => kube.get<Config>(`${CONFIGS}/${name}`);

  before(async () => {
    cp = await startControlPlane({ name: "webhook-registration-test" });
    kube = await KubeClient.fromKubeconfig(cp.kubeconfig);
  });

  after(async () => {
    try {
      for (const name of created) await kube?.delete(`${CONFIGS}/${name}`).catch(() => undefined);
    } finally {
      await cp?.stop();
    }
  });

  it("over a chart's configuration patches only each webhook's caBundle, keeping rules, timeouts and selectors", async () => {
    const name = "membrane-chart-style";
    created.push(name);
    await kube.create(CONFIGS, chartConfiguration(name));
    const installed = await get(name);
    const registration = new WebhookRegistration(kube, options(name), silent);

    await registration.register(CA_1);
    const first = await get(name);
    assert.deepEqual(first.webhooks.map((w) => w.clientConfig.caBundle), [b64(CA_1), b64(CA_1)]);
    assert.deepEqual(first.webhooks.map(withoutCaBundle), installed.webhooks.map(withoutCaBundle));
    assert.deepEqual(first.metadata.labels, installed.metadata.labels, "the installer's labels stay");

    // A rotation: the new CA replaces the old one, and still nothing else moves.
    await registration.register(CA_2);
    const second = await get(name);
    assert.deepEqual(second.webhooks.map((w) => w.clientConfig.caBundle), [b64(CA_2), b64(CA_2)]);
    assert.deepEqual(second.webhooks.map(withoutCaBundle), installed.webhooks.map(withoutCaBundle));
  });

  it("creates the whole configuration when none exists, and follows its own URL when restarted on another port", async () => {
    const name = "membrane-local-style";
    created.push(name);
    const registration = new WebhookRegistration(kube, options(name, { target: { url: "https://127.0.0.1:9443/validate" } }), silent);
    await registration.register(CA_1);
    const made = await get(name);
    assert.equal(made.webhooks.length, 1);
    const [w] = made.webhooks;
    assert.equal(w?.name, "policies.membrane.io");
    assert.equal(w?.failurePolicy, "Fail");
    assert.equal(w?.timeoutSeconds, 10);
    assert.deepEqual(w?.clientConfig, { url: "https://127.0.0.1:9443/validate", caBundle: b64(CA_1) });

    registration.setUrl("https://127.0.0.1:9555/validate");
    await registration.register(CA_2);
    const moved = await get(name);
    assert.deepEqual(moved.webhooks[0]?.clientConfig, { url: "https://127.0.0.1:9555/validate", caBundle: b64(CA_2) });
    assert.deepEqual(withoutCaBundle({ ...moved.webhooks[0]!, clientConfig: {} }), withoutCaBundle({ ...w!, clientConfig: {} }));
  });
});
