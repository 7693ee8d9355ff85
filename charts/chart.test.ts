// The Helm chart without a cluster: lint, render, goldens, CRDs in sync, least-privilege RBAC, and values the schema refuses.
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHART_CRDS_DIR, GENERATED_DIR, crdDrift } from "./crds.ts";
import { parse } from "yaml";
import { OVERLAY_DEVICE } from "../node-agent/overlay-device.ts";
import { parseAgentFlags } from "../node-agent/flags.ts";
import { CHART_DIR, KUBE_VERSION, NAMESPACE, RELEASE, TESTDATA_DIR, goldenText, helm, parseManifest, renderText, setArgs, type K8sObject } from "../localcluster/chart.ts";
import { AGENT_NODE_OPTIONS } from "../node-agent/flags.ts";

const CONFIGS: Record<string, Record<string, string | number | boolean>> = {
  default: {},
  encryption: { "encryption.enabled": true },
};

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

const byKindName = (objects: K8sObject[], kind: string, name: string): K8sObject => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  assert.ok(found, `${kind} ${name} is rendered`);
  return found;
};

const rulesOf = (objects: K8sObject[], kind: "ClusterRole" | "Role", name: string): Rule[] => byKindName(objects, kind, name).rules as Rule[];

/** Whether some rule grants `verb` on `resource` (e.g. "ciliumnodes/status") in `group`. */
function grants(rules: Rule[], group: string, resource: string, verb: string): boolean {
  return rules.some((r) => (r.apiGroups ?? []).includes(group) && (r.resources ?? []).includes(resource) && r.verbs.includes(verb));
}

const rendered: Record<string, K8sObject[]> = {};

describe("charts/membrane", () => {
  before(async () => {
    for (const [name, values] of Object.entries(CONFIGS)) rendered[name] = parseManifest(await renderText(values));
  });

  it("passes helm lint --strict and renders without warnings, with the default values and with encryption enabled", async () => {
    for (const values of Object.values(CONFIGS)) {
      const r = await helm(["lint", "--strict", CHART_DIR, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, ...setArgs(values)]);
      assert.equal(r.code, 0, `helm lint: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      const t = await helm(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, ...setArgs(values)]);
      assert.equal(t.code, 0, t.stderr);
      assert.equal(t.stderr, "", "helm template prints no warnings");
    }
  });

  it("keeps charts/membrane/crds identical to crds/generated (sync with `node --import tsx charts/crds.ts`)", () => {
    assert.deepEqual(crdDrift(), []);
  });

  it("reports a CRD edited by hand, one missing and one extra in the chart", () => {
    const dir = mkdtempSync(join(tmpdir(), "membrane-chart-crds-"));
    try {
      for (const f of readdirSync(CHART_CRDS_DIR)) copyFileSync(join(CHART_CRDS_DIR, f), join(dir, f));
      appendFileSync(join(dir, "ciliumnodes.cilium.io.yaml"), "# hand edit\n");
      rmSync(join(dir, "tracingpolicies.cilium.io.yaml"));
      writeFileSync(join(dir, "extra.yaml"), "kind: CustomResourceDefinition\n");
      assert.deepEqual(crdDrift(GENERATED_DIR, dir), [
        "ciliumnodes.cilium.io.yaml: differs from crds/generated",
        "tracingpolicies.cilium.io.yaml: missing from charts/membrane/crds",
        "extra.yaml: in charts/membrane/crds but not in crds/generated",
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const name of Object.keys(CONFIGS)) {
    it(`renders the ${name} values exactly as testdata/${name}.golden.yaml (UPDATE_GOLDEN=1 refreshes)`, () => {
      const file = join(TESTDATA_DIR, `${name}.golden.yaml`);
      const text = goldenText(rendered[name] ?? []);
      if (process.env.UPDATE_GOLDEN === "1") writeFileSync(file, text);
      assert.ok(existsSync(file), `${file} is missing: run with UPDATE_GOLDEN=1`);
      assert.equal(text, readFileSync(file, "utf8"), `rendered manifests drifted from ${file}; if intended, run UPDATE_GOLDEN=1 node --import tsx --test charts/chart.test.ts`);
    });
  }

  it("renders every CRD of crds/generated and every component", () => {
    const objects = rendered.default ?? [];
    const crds = objects.filter((o) => o.kind === "CustomResourceDefinition").map((o) => o.metadata.name).sort();
    assert.deepEqual(crds, [
      "ciliumcidrgroups.cilium.io",
      "ciliumclusterwidenetworkpolicies.cilium.io",
      "ciliumidentities.cilium.io",
      "ciliumnetworkpolicies.cilium.io",
      "ciliumnodes.cilium.io",
      "membraneencryptionkeys.membrane.io",
      "tracingpolicies.cilium.io",
      "tracingpoliciesnamespaced.cilium.io",
    ]);
    for (const [kind, name] of [
      ["Deployment", "membrane-operator"],
      ["Deployment", "membrane-webhook"],
      ["DaemonSet", "membrane-agent"],
      ["Service", "membrane-operator"],
      ["Service", "membrane-webhook"],
      ["ValidatingWebhookConfiguration", "membrane-policy-validation"],
      ["ValidatingAdmissionPolicy", "membrane-agent-own-ciliumnode"],
      ["ValidatingAdmissionPolicy", "membrane-agent-own-lease"],
      ["ServiceAccount", "membrane-agent"],
    ] as const) {
      const o = byKindName(objects, kind, name);
      if (kind !== "ValidatingWebhookConfiguration" && kind !== "ValidatingAdmissionPolicy") assert.equal(o.metadata.namespace, NAMESPACE, `${kind} ${name} namespace`);
    }
    assert.equal(objects.filter((o) => o.kind === "MembraneEncryptionKey").length, 0, "no encryption key unless enabled");
  });

  it("runs two leader-elected operator replicas with probes on /healthz and /readyz", () => {
    const op = byKindName(rendered.default ?? [], "Deployment", "membrane-operator") as K8sObject & {
      spec: { replicas: number; template: { spec: { containers: { args: string[]; livenessProbe: { httpGet: { path: string } }; readinessProbe: { httpGet: { path: string } }; resources: object }[] } } };
    };
    assert.equal(op.spec.replicas, 2);
    const c = op.spec.template.spec.containers[0];
    assert.ok(c);
    assert.ok(c.args.includes("--leader-elect=true"));
    assert.ok(c.args.includes(`--lease-namespace=${NAMESPACE}`));
    assert.equal(c.livenessProbe.httpGet.path, "/healthz");
    assert.equal(c.readinessProbe.httpGet.path, "/readyz");
    assert.ok(Object.keys(c.resources).length > 0, "resources are set");
  });

  it("rolls the agents one node at a time, the old agent stopped before the new one starts, and tells the agent its DaemonSet", () => {
    const ds = byKindName(rendered.default ?? [], "DaemonSet", "membrane-agent") as K8sObject & {
      spec: {
        updateStrategy: { type: string; rollingUpdate: { maxUnavailable: number; maxSurge: number } };
        template: { spec: { hostNetwork: boolean; tolerations: { operator: string; key?: string }[]; containers: { securityContext: { privileged: boolean }; ports?: unknown[]; volumeMounts: { mountPath: string }[] }[] } };
      };
    };
    assert.deepEqual(ds.spec.updateStrategy, { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } });
    const pod = ds.spec.template.spec;
    assert.equal(pod.hostNetwork, true);
    assert.ok(pod.tolerations.some((t) => t.operator === "Exists" && t.key === undefined), "tolerates every taint");
    const c = pod.containers[0];
    assert.ok(c);
    assert.equal(c.securityContext.privileged, true);
    // A declared port on a host-network pod is a hostPort: nothing needs one.
    assert.equal(c.ports, undefined);
    // Its own DaemonSet, whose removal at the agent's stop means uninstall (node-agent/uninstall.ts).
    assert.ok((c as unknown as { args: string[] }).args.includes(`--owner-daemonset=${NAMESPACE}/membrane-agent`));
    const mounts = c.volumeMounts.map((m) => m.mountPath);
    for (const path of ["/sys/fs/bpf", "/host/opt/cni/bin", "/host/etc/cni/net.d"]) assert.ok(mounts.includes(path), `mounts ${path}`);
    // The Node options bench/scale measures the agent with (its RSS after a full-size snapshot, issue #21).
    const env = (c as unknown as { env: { name: string; value?: string }[] }).env;
    assert.equal(env.find((e) => e.name === "NODE_OPTIONS")?.value, AGENT_NODE_OPTIONS);
  });

  it("registers the webhook fail-closed for every policy kind on CREATE and UPDATE", () => {
    const vwc = byKindName(rendered.default ?? [], "ValidatingWebhookConfiguration", "membrane-policy-validation") as K8sObject & {
      webhooks: { name: string; failurePolicy: string; sideEffects: string; timeoutSeconds: number; rules: { apiGroups: string[]; resources: string[]; operations: string[] }[]; clientConfig: { service: { name: string; namespace: string } } }[];
    };
    const [wh] = vwc.webhooks;
    assert.ok(wh);
    assert.equal(wh.name, "policies.membrane.io");
    assert.equal(wh.failurePolicy, "Fail");
    assert.equal(wh.sideEffects, "None");
    assert.equal(wh.timeoutSeconds, 10);
    assert.deepEqual(wh.clientConfig.service, { namespace: NAMESPACE, name: "membrane-webhook", path: "/validate", port: 9443 });
    const covered = wh.rules.flatMap((r) => r.resources.map((res) => `${r.apiGroups.join()}/${res}:${r.operations.join()}`)).sort();
    assert.deepEqual(covered, [
      "cilium.io/ciliumcidrgroups:CREATE,UPDATE",
      "cilium.io/ciliumclusterwidenetworkpolicies:CREATE,UPDATE",
      "cilium.io/ciliumnetworkpolicies:CREATE,UPDATE",
      "cilium.io/tracingpolicies:CREATE,UPDATE",
      "cilium.io/tracingpoliciesnamespaced:CREATE,UPDATE",
      "membrane.io/membraneencryptionkeys:CREATE,UPDATE",
      "networking.k8s.io/networkpolicies:CREATE,UPDATE",
    ]);
  });

  it("has no wildcard in any RBAC rule, in any configuration", () => {
    for (const [name, objects] of Object.entries(rendered)) {
      const roles = objects.filter((o) => o.kind === "ClusterRole" || o.kind === "Role");
      assert.ok(roles.length >= 4, `${name}: roles rendered`);
      for (const role of roles) {
        for (const [i, rule] of (role.rules as Rule[]).entries()) {
          for (const field of ["apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"] as const) {
            const values = rule[field] ?? [];
            assert.ok(!values.some((v) => v.includes("*")), `${name}: ${role.kind} ${role.metadata.name} rules[${i}].${field} has a wildcard: ${values.join(",")}`);
          }
        }
      }
    }
  });

  it("grants Secrets only through namespaced Roles, by name except for create and the policy secrets namespace's Role (get, list, watch there only, never in the release namespace)", () => {
    for (const [name, objects] of Object.entries(rendered)) {
      for (const role of objects.filter((o) => o.kind === "ClusterRole")) {
        assert.ok(!(role.rules as Rule[]).some((r) => (r.resources ?? []).includes("secrets")), `${name}: ClusterRole ${role.metadata.name} grants secrets`);
      }
      for (const role of objects.filter((o) => o.kind === "Role")) {
        for (const rule of (role.rules as Rule[]).filter((r) => (r.resources ?? []).includes("secrets"))) {
          if (rule.resourceNames !== undefined) continue;
          // list and watch cannot be limited by name: the one Role that reads Secrets unnamed is the namespace's that holds only TLS rules' Secrets.
          if (role.metadata.name === "membrane-operator-policy-secrets") {
            assert.equal(role.metadata.namespace, "membrane-secrets", `${name}: the policy secrets Role lives in the secrets namespace`);
            assert.deepEqual(rule.verbs, ["get", "list", "watch"], `${name}: the policy secrets Role only reads`);
          } else assert.deepEqual(rule.verbs, ["create"], `${name}: Role ${role.metadata.name} reads secrets without resourceNames`);
        }
      }
      const bound = objects.filter((o) => o.kind === "RoleBinding" && (o.roleRef as { name: string }).name === "membrane-operator-policy-secrets");
      assert.deepEqual(
        bound.map((b) => [b.metadata.namespace, b.subjects]),
        [["membrane-secrets", [{ kind: "ServiceAccount", name: "membrane-operator", namespace: NAMESPACE }]]],
        `${name}: only the operator is bound to it, in that namespace`,
      );
    }
    const op = rulesOf(rendered.encryption ?? [], "Role", "membrane-operator");
    assert.ok(op.some((r) => r.resourceNames?.includes("membrane-encryption-key") && r.verbs.includes("get")), "with encryption, the operator reads its key Secret");
    assert.ok(!rulesOf(rendered.default ?? [], "Role", "membrane-operator").some((r) => (r.resources ?? []).includes("secrets")), "without encryption, no Secrets at all");
  });

  it("lets the operator patch pods (the membrane.io/identity annotation the agents' stream reads) and nothing more of them", () => {
    const rules = rulesOf(rendered.default ?? [], "ClusterRole", "membrane-operator");
    assert.ok(grants(rules, "", "pods", "patch"), "the operator writes each pod's identity annotation");
    for (const verb of ["create", "update", "delete"]) assert.ok(!grants(rules, "", "pods", verb), `the operator may not ${verb} pods`);
    for (const verb of ["list", "watch"]) assert.ok(grants(rules, "cilium.io", "ciliumcidrgroups", verb), `the operator may ${verb} the CIDR groups policies name`);
    assert.ok(!grants(rules, "cilium.io", "ciliumcidrgroups", "update"), "the operator only reads CIDR groups");
  });

  it("lets the agent write only CiliumNode status and patch CiliumNodes (its annotation), and read no policy it could not get from the operator", () => {
    const rules = rulesOf(rendered.default ?? [], "ClusterRole", "membrane-agent");
    for (const rule of rules) {
      const writes = rule.verbs.filter((v) => !["get", "list", "watch"].includes(v));
      if (writes.length === 0) continue;
      const only = rule.resources?.length === 1 ? rule.resources[0] : undefined;
      const ok = only === "ciliumnodes/status" || (only === "ciliumnodes" && writes.every((v) => v === "patch"));
      assert.ok(ok, `agent writes ${writes.join(",")} on ${String(rule.resources)}`);
    }
    assert.ok(grants(rules, "cilium.io", "ciliumnodes/status", "update"));
    for (const r of ["ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies"]) assert.ok(!grants(rules, "cilium.io", r, "create"));
  });

  it("lets the agent renew its heartbeat Lease in kube-node-lease (create, get, update only; nothing else there), where its --lease-namespace points", () => {
    const objects = rendered.default ?? [];
    const role = byKindName(objects, "Role", "membrane-agent");
    assert.equal(role.metadata.namespace, "kube-node-lease");
    assert.deepEqual(role.rules, [{ apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["create", "get", "update"] }]);
    const binding = byKindName(objects, "RoleBinding", "membrane-agent") as K8sObject & { roleRef: { kind: string; name: string }; subjects: { kind: string; name: string; namespace: string }[] };
    assert.equal(binding.metadata.namespace, "kube-node-lease");
    assert.deepEqual(binding.roleRef, { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "membrane-agent" });
    assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: "membrane-agent", namespace: NAMESPACE }]);
    assert.ok(!grants(rulesOf(objects, "ClusterRole", "membrane-agent"), "coordination.k8s.io", "leases", "update"), "no cluster-wide Lease access");
    const ds = byKindName(objects, "DaemonSet", "membrane-agent") as K8sObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
    assert.ok(ds.spec.template.spec.containers[0]?.args.includes("--lease-namespace=kube-node-lease"));
    // RBAC cannot name each node's Lease: the admission policy holds an agent to its own.
    const vap = byKindName(objects, "ValidatingAdmissionPolicy", "membrane-agent-own-lease") as K8sObject & { spec: { validations: { expression: string }[] } };
    assert.match(vap.spec.validations[0]?.expression ?? "", /'membrane-agent-' \+ n == request\.name/);
  });

  it("with encryption enabled, creates the MembraneEncryptionKey the operator fills, exempt from the not-yet-running webhook", () => {
    const mek = byKindName(rendered.encryption ?? [], "MembraneEncryptionKey", "membrane") as K8sObject & { spec: unknown };
    assert.deepEqual(mek.spec, { mode: "wireguard", rotationInterval: "720h", secretRef: { name: "membrane-encryption-key", namespace: NAMESPACE } });
    assert.equal(mek.metadata.labels?.["membrane.io/validated-by-chart"], "true");
    const ds = byKindName(rendered.encryption ?? [], "DaemonSet", "membrane-agent") as K8sObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
    assert.ok(ds.spec.template.spec.containers[0]?.args.includes("--encryption=wireguard"));
    assert.ok(ds.spec.template.spec.containers[0]?.args.includes("--wireguard-routing=routed"), "routed WireGuard by default");
  });

  it("encryption.wireguard.routing: vxlan reaches the agents as --wireguard-routing=vxlan; without encryption or with ipsec no routing flag at all", async () => {
    type Agent = K8sObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
    const routingArgs = (objects: K8sObject[]) => (byKindName(objects, "DaemonSet", "membrane-agent") as Agent).spec.template.spec.containers[0]!.args.filter((a) => a.startsWith("--wireguard-routing"));
    assert.deepEqual(routingArgs(parseManifest(await renderText({ "encryption.enabled": true, "encryption.wireguard.routing": "vxlan" }))), ["--wireguard-routing=vxlan"]);
    assert.deepEqual(routingArgs(rendered.default ?? []), [], "encryption off: the agent refuses --wireguard-routing without --encryption wireguard");
    assert.deepEqual(routingArgs(parseManifest(await renderText({ "encryption.enabled": true, "encryption.type": "ipsec", "encryption.wireguard.routing": "vxlan" }))), [], "ipsec: not passed");
  });

  it("encryption.strictMode.enabled reaches WireGuard agents as --encryption-strict, which the agent parses; off by default, and refused with ipsec naming the field", async () => {
    type Agent = K8sObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
    const argsOf = (objects: K8sObject[]) => (byKindName(objects, "DaemonSet", "membrane-agent") as Agent).spec.template.spec.containers[0]!.args;
    const strict = argsOf(parseManifest(await renderText({ "encryption.enabled": true, "encryption.strictMode.enabled": true })));
    assert.deepEqual(strict.filter((a) => a.startsWith("--encryption")), ["--encryption=wireguard", "--encryption-strict"]);
    assert.deepEqual(argsOf(rendered.encryption ?? []).filter((a) => a === "--encryption-strict"), [], "not strict by default (as Cilium's)");
    assert.deepEqual(argsOf(parseManifest(await renderText({ "encryption.strictMode.enabled": true }))).filter((a) => a.startsWith("--encryption")), [], "encryption off: nothing to be strict about");
    // The kubelet's $(VAR) expansion, as on a node.
    const parsed = parseAgentFlags(strict.slice(1).map((a) => a.replaceAll("$(NODE_NAME)", "node-1").replaceAll("$(HOST_IPS)", "10.0.0.1").replaceAll("$(HOST_IP)", "10.0.0.1").replaceAll("$(MEMBRANE_OPERATOR_SERVICE_HOST)", "10.96.0.20")));
    assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
    assert.equal(parsed.flags.encryptionStrict, true);
    const ipsec = await helm(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, ...setArgs({ "encryption.enabled": true, "encryption.type": "ipsec", "encryption.strictMode.enabled": true })]);
    assert.notEqual(ipsec.code, 0, "helm template accepted strict mode with ipsec");
    assert.match(ipsec.stderr, /encryption\.strictMode\.enabled: strict mode is WireGuard's/);
  });

  it("routingMode tunnel (the default) gives every agent the VXLAN overlay device membrane_vxlan; native gives none", async () => {
    type Agent = K8sObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
    const tunnelArgs = (objects: K8sObject[]) => (byKindName(objects, "DaemonSet", "membrane-agent") as Agent).spec.template.spec.containers[0]!.args.filter((a) => a.startsWith("--tunnel-device"));
    const values = parse(readFileSync(join(CHART_DIR, "values.yaml"), "utf8")) as { routingMode: string; agent: { tunnelDevice: string } };
    assert.deepEqual([values.routingMode, values.agent.tunnelDevice], ["tunnel", OVERLAY_DEVICE], "the chart's defaults name the device the local clusters and the tests look for");
    assert.deepEqual(tunnelArgs(rendered.default ?? []), [`--tunnel-device=${OVERLAY_DEVICE}`]);
    assert.deepEqual(tunnelArgs(rendered.encryption ?? []), [`--tunnel-device=${OVERLAY_DEVICE}`], "kept with WireGuard (routed): IPv6 pods and nodes without a key still cross in it");
    assert.deepEqual(tunnelArgs(parseManifest(await renderText({ "agent.tunnelDevice": "cilium_vxlan" }))), ["--tunnel-device=cilium_vxlan"]);
    assert.deepEqual(tunnelArgs(parseManifest(await renderText({ routingMode: "native", "encryption.enabled": true }))), [], "native (here with WireGuard routed, which it allows)");
  });

  it("agent.nodeDevice reaches the agent as --node-device, a list of names and prefix+ wildcards it parses; empty passes none (detected)", async () => {
    type Agent = K8sObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
    const deviceArgs = (objects: K8sObject[]) => (byKindName(objects, "DaemonSet", "membrane-agent") as Agent).spec.template.spec.containers[0]!.args.filter((a) => a.startsWith("--node-device"));
    assert.deepEqual(deviceArgs(rendered.default ?? []), []);
    // helm's --set splits at commas: a list is given with them escaped, as Cilium's devices.
    const args = deviceArgs(parseManifest(await renderText({ "agent.nodeDevice": "eth0\\,rnm+" })));
    assert.deepEqual(args, ["--node-device=eth0,rnm+"]);
    const parsed = parseAgentFlags(["--node-name", "n", "--operator", "127.0.0.1:9", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a", ...args]);
    assert.deepEqual(parsed.ok && parsed.flags.nodeDevices, [{ kind: "name", name: "eth0" }, { kind: "prefix", prefix: "rnm" }]);
  });

  it("refuses an overlay without a device, and VXLAN inside WireGuard without the overlay, naming the field", async () => {
    for (const [values, field] of [
      [{ "agent.tunnelDevice": "" }, /agent\.tunnelDevice: empty, but routingMode is tunnel/],
      [{ routingMode: "native", "encryption.enabled": true, "encryption.wireguard.routing": "vxlan" }, /encryption\.wireguard\.routing: vxlan .* routingMode is native/],
    ] as const) {
      const r = await helm(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, ...setArgs(values)]);
      assert.notEqual(r.code, 0, `helm template accepted ${JSON.stringify(values)}`);
      assert.match(r.stderr, field);
    }
  });

  it("ipam.mode reaches the operator as --ipam (cluster-pool by default, kubernetes to take each node's pod CIDR from its Node)", async () => {
    type Operator = K8sObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
    const ipamArgs = (objects: K8sObject[]) => (byKindName(objects, "Deployment", "membrane-operator") as Operator).spec.template.spec.containers[0]!.args.filter((a) => a.startsWith("--ipam"));
    assert.deepEqual(ipamArgs(rendered.default ?? []), ["--ipam=cluster-pool"]);
    assert.deepEqual(ipamArgs(parseManifest(await renderText({ "ipam.mode": "kubernetes" }))), ["--ipam=kubernetes"]);
  });

  it("with ipsec, the agents get no key material: they program no XFRM states yet (the Secret stays the operator's)", async () => {
    const objects = parseManifest(await renderText({ "encryption.enabled": true, "encryption.type": "ipsec" }));
    const ds = byKindName(objects, "DaemonSet", "membrane-agent") as K8sObject & { spec: { template: { spec: { containers: { args: string[] }[]; volumes?: { secret?: { secretName: string } }[] } } } };
    assert.ok(ds.spec.template.spec.containers[0]?.args.includes("--encryption=ipsec"));
    assert.deepEqual(ds.spec.template.spec.containers[0]?.args.filter((a) => a.startsWith("--encryption-key")), []);
    assert.deepEqual((ds.spec.template.spec.volumes ?? []).filter((v) => v.secret?.secretName === "membrane-encryption-key"), []);
  });

  it("ships a helm test hook that checks the operator and the webhook answer", () => {
    const text = readFileSync(join(CHART_DIR, "templates", "tests", "test-answers.yaml"), "utf8");
    assert.match(text, /helm\.sh\/hook: test/);
    assert.match(text, /\/readyz/);
    assert.match(text, /\/healthz/);
  });

  it("extendedIPProtocols.enabled passes --enable-extended-ip-protocols to both the webhook and the operator, and by default to neither", async () => {
    const argsOf = (objects: K8sObject[], name: string): string[] => {
      const d = byKindName(objects, "Deployment", name) as K8sObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
      return d.spec.template.spec.containers[0]?.args ?? [];
    };
    const on = parseManifest(await renderText({ "extendedIPProtocols.enabled": true }));
    for (const name of ["membrane-webhook", "membrane-operator"]) {
      assert.ok(argsOf(on, name).includes("--enable-extended-ip-protocols"), `${name} gets the flag`);
      assert.ok(!argsOf(rendered.default ?? [], name).includes("--enable-extended-ip-protocols"), `${name} is off by default`);
    }
  });

  it("TLS inspection's Secrets: by default the chart creates membrane-secrets (kept on uninstall) and passes --policy-secrets-namespace to the operator and the webhook; off, neither the flag nor the Role; an existing namespace is named, never the release's", async () => {
    const argsOf = (objects: K8sObject[], name: string): string[] => {
      const d = byKindName(objects, "Deployment", name) as K8sObject & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
      return d.spec.template.spec.containers[0]?.args ?? [];
    };
    const objects = rendered.default ?? [];
    for (const name of ["membrane-operator", "membrane-webhook"]) assert.ok(argsOf(objects, name).includes("--policy-secrets-namespace=membrane-secrets"), `${name} gets the flag`);
    assert.equal(byKindName(objects, "Namespace", "membrane-secrets").metadata.annotations?.["helm.sh/resource-policy"], "keep", "helm uninstall keeps the users' Secrets");

    const existing = parseManifest(await renderText({ "tls.secretsNamespace.create": false, "tls.secretsNamespace.name": "tls-keys" }));
    assert.ok(!existing.some((o) => o.kind === "Namespace"), "an existing namespace is not created");
    assert.equal(byKindName(existing, "Role", "membrane-operator-policy-secrets").metadata.namespace, "tls-keys");
    assert.ok(argsOf(existing, "membrane-operator").includes("--policy-secrets-namespace=tls-keys"));

    const off = parseManifest(await renderText({ "tls.policySecrets.enabled": false }));
    assert.ok(!off.some((o) => o.metadata.name === "membrane-operator-policy-secrets" || o.metadata.name === "membrane-secrets"), "off: no Role, no namespace");
    for (const name of ["membrane-operator", "membrane-webhook"]) assert.ok(!argsOf(off, name).some((a) => a.startsWith("--policy-secrets-namespace")), `off: ${name} gets no flag`);

    const r = await helm(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, ...setArgs({ "tls.secretsNamespace.name": NAMESPACE })]);
    assert.notEqual(r.code, 0, "the release namespace as the secrets namespace is refused");
    assert.match(r.stderr, /tls\.secretsNamespace\.name: "membrane-system" is the release namespace/);
  });

  it("hostFirewall.enabled passes the agent its node address and one --host-firewall-device per device, and by default nothing", async () => {
    type Agent = K8sObject & { spec: { template: { spec: { containers: { args: string[]; env?: { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[] }[] } } } };
    const agentOf = (objects: K8sObject[]) => (byKindName(objects, "DaemonSet", "membrane-agent") as Agent).spec.template.spec.containers[0]!;
    const on = agentOf(parseManifest(await renderText({ "hostFirewall.enabled": true, "hostFirewall.devices": "{eth0,bond0}", "hostFirewall.apiServerPort": 16443, "hubble.enabled": false })));
    assert.deepEqual(
      on.args.filter((a) => /^--(node-ip|host-firewall)/.test(a)),
      ["--node-ip=$(HOST_IPS)", "--host-firewall-device=eth0", "--host-firewall-device=bond0", "--host-firewall-api-server-port=16443"],
    );
    assert.equal(on.env?.find((e) => e.name === "HOST_IPS")?.valueFrom?.fieldRef?.fieldPath, "status.hostIPs", "HOST_IPS is set without hubble too");
    assert.ok(!agentOf(rendered.default ?? []).args.some((a) => a.startsWith("--host-firewall")), "off by default");
    assert.ok(agentOf(rendered.default ?? []).args.includes("--node-ip=$(HOST_IPS)"), "the node address is passed by default (the DNS proxy listens on it)");
  });

  describe("values.schema.json refuses bad values, naming the field", () => {
    const cases: [string, Record<string, string | number | boolean>, RegExp][] = [
      ["an enforcement mode outside the enum", { policyEnforcementMode: "sometimes" }, /policyEnforcementMode/],
      ["a monitor aggregation level outside the enum", { monitorAggregation: "max" }, /monitorAggregation/],
      ["an allow-localhost mode outside the enum", { allowLocalhost: "never" }, /allowLocalhost/],
      ["a policy map smaller than the agent accepts", { "bpf.policyMapMax": 1000 }, /policyMapMax/],
      ["a policy map larger than the agent accepts", { "bpf.policyMapMax": 16777217 }, /policyMapMax/],
      ["a policy map size that is not an integer", { "bpf.policyMapMax": "1M" }, /policyMapMax/],
      ["an unknown encryption type", { "encryption.type": "aes" }, /encryption\/type|encryption\.type/],
      ["a WireGuard routing the agent does not know", { "encryption.enabled": true, "encryption.wireguard.routing": "native" }, /encryption\/wireguard\/routing|encryption\.wireguard\.routing/],
      ["a webhook timeout over the API server's 30 s", { "webhook.timeoutSeconds": 31 }, /timeoutSeconds/],
      ["a pod CIDR that is not one", { clusterPodCIDR: "10.0.0.0/33" }, /clusterPodCIDR/],
      ["an IPAM mode the operator does not know", { "ipam.mode": "eni" }, /ipam\/mode|ipam\.mode/],
      ["a GC interval that is not a duration", { "identity.gcInterval": "soon" }, /gcInterval/],
      ["a misspelt key", { "operator.replica": 3 }, /replica/],
      ["extended IP protocols switched on with a string", { "extendedIPProtocols.enabled": "yes" }, /extendedIPProtocols/],
      ["two replicas without leader election", { "operator.leaderElection": false, "operator.replicas": 2 }, /replicas/],
      ["a failure policy Kubernetes does not know", { "webhook.failurePolicy": "Retry" }, /failurePolicy/],
      ["an image pull policy Kubernetes does not know", { "image.pullPolicy": "Sometimes" }, /pullPolicy/],
      ["a host firewall device that is not an interface name", { "hostFirewall.devices": "{eth0 eth1}" }, /hostFirewall\/devices|devices/],
      ["a host firewall API server port out of range", { "hostFirewall.apiServerPort": 70000 }, /apiServerPort/],
      ["a secrets namespace that is not a namespace name", { "tls.secretsNamespace.name": "TLS_Keys" }, /secretsNamespace\/name|secretsNamespace\.name/],
      ["an L7 proxy mode the chart does not know", { "l7Proxy.mode": "sidecar" }, /l7Proxy\/mode|l7Proxy\.mode/],
      ["a routing mode the chart does not know", { routingMode: "geneve" }, /routingMode/],
      ["an overlay device name the agent refuses", { "agent.tunnelDevice": "a-name-far-too-long" }, /tunnelDevice/],
      ["a node device list with a '+' inside a name", { "agent.nodeDevice": "e+th0" }, /nodeDevice/],
      ["a relative L7 proxy socket directory", { "l7Proxy.socketDir": "run/l7" }, /l7Proxy\/socketDir|l7Proxy\.socketDir/],
    ];
    for (const [what, values, field] of cases) {
      it(`refuses ${what}`, async () => {
        const r = await helm(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, ...setArgs(values)]);
        assert.notEqual(r.code, 0, `helm template accepted ${JSON.stringify(values)}`);
        assert.match(r.stderr, /values don't meet the specifications of the schema/);
        assert.match(r.stderr, field);
      });
    }

    it("accepts each enforcement mode and each encryption type", async () => {
      for (const mode of ["always", "never"]) await renderText({ policyEnforcementMode: mode });
      for (const level of ["none", "low", "maximum"]) assert.match(await renderText({ monitorAggregation: level }), new RegExp(`--monitor-aggregation=${level}\n`));
      assert.match(await renderText({}), /--allow-localhost=always\n/);
      assert.match(await renderText({ allowLocalhost: "policy" }), /--allow-localhost=policy\n/);
      assert.match(await renderText({}), /--policy-map-max=262144\n/);
      assert.match(await renderText({ "bpf.policyMapMax": 4194304 }), /--policy-map-max=4194304\n/);
      assert.match(await renderText({ "bpf.policyMapMax": 16777216 }), /--policy-map-max=16777216\n/);
      await renderText({ "encryption.enabled": true, "encryption.type": "ipsec", "flowExport.enabled": true });
    });
  });
});
