// The Helm chart against the real local API server: install creates every object, RBAC holds under `kubectl auth can-i`, uninstall removes them.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { CHART_DIR, objectKey, parseManifest, setArgs, type K8sObject } from "../localcluster/chart.ts";

const RELEASE = "membrane";
const NS = "membrane-chart-test";
// Encryption (ipsec) on: the install then also covers the MembraneEncryptionKey and the operator's Secret Role.
// Hubble's dynamic exporter on: its ConfigMap and the agents' volumes for it pass the API server's validation too.
const VALUES = { "encryption.enabled": true, "encryption.type": "ipsec", "hubble.export.dynamic.enabled": true };
const sa = (name: string): string => `system:serviceaccount:${NS}:${name}`;

interface List {
  items: K8sObject[];
}

describe("charts/membrane on a real API server", { timeout: 600_000 }, () => {
  let cp: ControlPlane | undefined;
  let manifest = "";
  let released: K8sObject[] = [];

  const kubectl = async (args: string[], input?: string) => {
    assert.ok(cp, "control plane started");
    return cp.kubectl(args, input);
  };

  /** `kubectl auth can-i` as a ServiceAccount: true for "yes". */
  const canI = async (who: string, verb: string, resource: string, extra: string[] = []): Promise<boolean> => {
    const r = await kubectl(["auth", "can-i", verb, resource, `--as=${who}`, ...extra]);
    if (r.code !== 0 && r.stdout.trim() !== "no") throw new Error(`kubectl auth can-i ${verb} ${resource}: ${r.stderr}`);
    return r.stdout.trim() === "yes";
  };

  /** A kubeconfig impersonating the agent on `node` as its pod-bound token would present it (the node name in the user's extra). */
  const agentKubeconfig = (node: string): string => {
    assert.ok(cp);
    const kubeconfig = parse(readFileSync(cp.kubeconfig, "utf8")) as { users: { name: string; user: Record<string, unknown> }[] };
    for (const u of kubeconfig.users) {
      u.user["as"] = sa("membrane-agent");
      u.user["as-groups"] = ["system:serviceaccounts", `system:serviceaccounts:${NS}`, "system:authenticated"];
      u.user["as-user-extra"] = { "authentication.kubernetes.io/node-name": [node] };
    }
    const file = join(cp.dir, `agent-${node}.kubeconfig`);
    writeFileSync(file, stringify(kubeconfig), { mode: 0o600 });
    return file;
  };

  before(async () => {
    cp = await startControlPlane({ name: "membrane-chart" });
  });

  after(async () => {
    // Removes the API server's whole state (etcd data included), so nothing this test made survives it.
    await cp?.stop();
  });

  it("helm install creates every object of the rendered release, and the CRDs", async () => {
    assert.ok(cp);
    const install = await cp.helm(["install", RELEASE, CHART_DIR, "--namespace", NS, "--create-namespace", ...setArgs(VALUES)]);
    assert.equal(install.code, 0, `helm install: ${install.stderr}`);
    assert.match(install.stdout, /helm test membrane -n membrane-chart-test/, "NOTES.txt tells the user what to run next");

    const got = await cp.helm(["get", "manifest", RELEASE, "--namespace", NS]);
    assert.equal(got.code, 0, got.stderr);
    manifest = got.stdout;
    released = parseManifest(manifest);
    const kinds = new Set(released.map((o) => o.kind));
    for (const kind of ["Deployment", "DaemonSet", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Secret", "ConfigMap", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "PodDisruptionBudget", "MembraneEncryptionKey"]) {
      assert.ok(kinds.has(kind), `the release has a ${kind}`);
    }

    // The API server's view of exactly the objects the manifest names.
    const live = await kubectl(["get", "-f", "-", "-o", "json"], manifest);
    assert.equal(live.code, 0, `objects of the release missing from the API server: ${live.stderr}`);
    const liveItems = (JSON.parse(live.stdout) as List).items;
    assert.deepEqual(liveItems.map(objectKey).sort(), released.map(objectKey).sort());
    for (const o of liveItems) {
      assert.equal(o.metadata.labels?.["app.kubernetes.io/instance"], RELEASE, `${objectKey(o)} is labelled with the release`);
    }

    const crds = await kubectl(["get", "crd", "-l", "app.kubernetes.io/part-of=membrane", "-o", "json"]);
    assert.equal(crds.code, 0, crds.stderr);
    const established = (JSON.parse(crds.stdout) as List).items
      .filter((c) => ((c as unknown as { status?: { conditions?: { type: string; status: string }[] } }).status?.conditions ?? []).some((x) => x.type === "Established" && x.status === "True"))
      .map((c) => c.metadata.name)
      .sort();
    const chartCrds = readdirSync(join(CHART_DIR, "crds"))
      .map((f) => (parse(readFileSync(join(CHART_DIR, "crds", f), "utf8")) as K8sObject).metadata.name)
      .sort();
    assert.deepEqual(established, chartCrds);

    // The test hook runs only under `helm test`.
    const hook = await kubectl(["get", "pod", `${RELEASE}-membrane-test`, "-n", NS, "--ignore-not-found", "-o", "name"]);
    assert.equal(hook.stdout.trim(), "");
  });

  it("fails closed: with no webhook replica answering, a policy write is refused", async () => {
    const policy = stringify({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "allow-empire", namespace: NS },
      spec: { endpointSelector: { matchLabels: { class: "deathstar" } }, ingress: [{ fromEndpoints: [{ matchLabels: { org: "empire" } }] }] },
    });
    const r = await kubectl(["apply", "-f", "-"], policy);
    assert.notEqual(r.code, 0, "the policy was admitted without the webhook");
    assert.match(r.stderr, /failed calling webhook "policies\.membrane\.io"/);
    const none = await kubectl(["get", "cnp", "allow-empire", "-n", NS, "--ignore-not-found", "-o", "name"]);
    assert.equal(none.stdout.trim(), "");
  });

  it("the agent can update CiliumNode status but cannot write policies, Secrets or CiliumNode specs", async () => {
    const agent = sa("membrane-agent");
    assert.equal(await canI(agent, "update", "ciliumnodes.cilium.io", ["--subresource=status"]), true);
    assert.equal(await canI(agent, "patch", "ciliumnodes.cilium.io", ["--subresource=status"]), true);
    assert.equal(await canI(agent, "get", "ciliumnodes.cilium.io"), true);
    assert.equal(await canI(agent, "update", "ciliumnodes.cilium.io"), false);
    assert.equal(await canI(agent, "delete", "ciliumnodes.cilium.io"), false);
    for (const resource of ["ciliumnetworkpolicies.cilium.io", "ciliumclusterwidenetworkpolicies.cilium.io", "networkpolicies.networking.k8s.io"]) {
      for (const verb of ["create", "update", "patch", "delete"]) {
        assert.equal(await canI(agent, verb, resource, ["-n", "default"]), false, `agent can ${verb} ${resource}`);
      }
    }
    assert.equal(await canI(agent, "get", "secrets", ["-n", NS]), false);
    assert.equal(await canI(agent, "create", "ciliumidentities.cilium.io"), false);
  });

  it("the operator reads only its named Secret in its own namespace, and no Secret elsewhere", async () => {
    const operator = sa("membrane-operator");
    assert.equal(await canI(operator, "get", "secrets/membrane-encryption-key", ["-n", NS]), true);
    assert.equal(await canI(operator, "update", "secrets/membrane-encryption-key", ["-n", NS]), true);
    assert.equal(await canI(operator, "get", "secrets/membrane-webhook-tls", ["-n", NS]), false);
    assert.equal(await canI(operator, "list", "secrets", ["-n", NS]), false);
    for (const ns of ["kube-system", "default"]) {
      assert.equal(await canI(operator, "get", "secrets", ["-n", ns]), false, `operator reads secrets in ${ns}`);
      assert.equal(await canI(operator, "get", "secrets/membrane-encryption-key", ["-n", ns]), false);
    }
    // TLS rules' Secrets: read (list and watch: its informer) in the policy secrets namespace, nothing written there.
    for (const verb of ["get", "list", "watch"]) assert.equal(await canI(operator, verb, "secrets", ["-n", "membrane-secrets"]), true, `${verb} secrets in membrane-secrets`);
    for (const verb of ["create", "update", "delete"]) assert.equal(await canI(operator, verb, "secrets", ["-n", "membrane-secrets"]), false, `${verb} secrets in membrane-secrets`);
    assert.equal(await canI(operator, "list", "secrets", ["--all-namespaces"]), false, "never every namespace's Secrets");
    // What it needs.
    assert.equal(await canI(operator, "patch", "pods", ["-n", "default"]), true, "the identity annotation on pods");
    assert.equal(await canI(operator, "update", "pods", ["-n", "default"]), false);
    assert.equal(await canI(operator, "create", "ciliumidentities.cilium.io"), true);
    assert.equal(await canI(operator, "patch", "ciliumnetworkpolicies.cilium.io", ["--subresource=status", "-n", "default"]), true);
    assert.equal(await canI(operator, "update", "ciliumnetworkpolicies.cilium.io", ["-n", "default"]), false, "status only, never the user's spec");
    assert.equal(await canI(operator, "update", "leases.coordination.k8s.io/membrane-operator", ["-n", NS]), true);
    assert.equal(await canI(operator, "update", "leases.coordination.k8s.io/someone-else", ["-n", NS]), false);
    // A standby's watch of its own Lease, as kube/leader.ts asks for it (the field selector on its name), and no other Lease.
    const leases = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`;
    for (const query of ["fieldSelector=metadata.name%3Dmembrane-operator", "fieldSelector=metadata.name%3Dmembrane-operator&watch=true&timeoutSeconds=1"]) {
      const r = await kubectl(["get", "--raw", `${leases}?${query}`, `--as=${operator}`]);
      assert.equal(r.code, 0, `the operator's ${query}: ${r.stderr}`);
    }
    const all = await kubectl(["get", "--raw", `${leases}?watch=true&timeoutSeconds=1`, `--as=${operator}`]);
    assert.match(all.stderr, /forbidden/i, "not a watch of every Lease of the namespace");
  });

  it("the operator can review an agent's pod-bound token for the chart's audience, and learns the agent's node from it", async () => {
    const operator = sa("membrane-operator");
    const agent = sa("membrane-agent");
    assert.equal(await canI(operator, "create", "tokenreviews.authentication.k8s.io"), true);
    assert.equal(await canI(agent, "create", "tokenreviews.authentication.k8s.io"), false);
    // The DaemonSet's pods cannot run here (no kubelet): a pod of the agent's ServiceAccount on a Node stands in.
    const nodeName = "chart-token-node";
    const podName = "chart-token-agent";
    try {
      assert.equal((await kubectl(["apply", "-f", "-"], stringify({ apiVersion: "v1", kind: "Node", metadata: { name: nodeName } }))).code, 0);
      const pod = { apiVersion: "v1", kind: "Pod", metadata: { name: podName, namespace: NS }, spec: { serviceAccountName: "membrane-agent", nodeName, automountServiceAccountToken: false, containers: [{ name: "agent", image: "membrane/agent:test" }] } };
      const created = await kubectl(["apply", "-f", "-"], stringify(pod));
      assert.equal(created.code, 0, created.stderr);
      const audience = /audience: (\S+)/.exec(stringify(released.find((o) => o.kind === "DaemonSet")))?.[1];
      assert.equal(audience, "membrane-operator");
      const token = await kubectl(["create", "token", "membrane-agent", "-n", NS, "--audience", audience, "--bound-object-kind", "Pod", "--bound-object-name", podName]);
      assert.equal(token.code, 0, token.stderr);
      const review = stringify({ apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token: token.stdout.trim(), audiences: [audience] } });
      const r = await kubectl(["create", "--validate=false", "-o", "json", "-f", "-", `--as=${operator}`], review);
      assert.equal(r.code, 0, r.stderr);
      const status = (JSON.parse(r.stdout) as { status: { authenticated?: boolean; user?: { username?: string; extra?: Record<string, string[]> } } }).status;
      assert.equal(status.authenticated, true);
      assert.equal(status.user?.username, agent);
      assert.deepEqual(status.user?.extra?.["authentication.kubernetes.io/node-name"], [nodeName]);
    } finally {
      await kubectl(["delete", "pod", "-n", NS, podName, "--ignore-not-found", "--grace-period=0", "--force"]);
      await kubectl(["delete", "node", nodeName, "--ignore-not-found"]);
    }
  });

  it("the webhook can patch its own ValidatingWebhookConfiguration and Secret, nothing else of the kind", async () => {
    const webhook = sa("membrane-webhook");
    assert.equal(await canI(webhook, "patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/membrane-policy-validation"), true);
    assert.equal(await canI(webhook, "update", "validatingwebhookconfigurations.admissionregistration.k8s.io/membrane-policy-validation"), true);
    assert.equal(await canI(webhook, "patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/another-webhook"), false);
    assert.equal(await canI(webhook, "delete", "validatingwebhookconfigurations.admissionregistration.k8s.io/membrane-policy-validation"), false);
    assert.equal(await canI(webhook, "update", "secrets/membrane-webhook-tls", ["-n", NS]), true);
    assert.equal(await canI(webhook, "get", "secrets/membrane-distribution-tls-server", ["-n", NS]), false);
    assert.equal(await canI(webhook, "get", "secrets", ["-n", "kube-system"]), false);
  });

  it("an agent may write the status of its own node's CiliumNode only (ValidatingAdmissionPolicy on the token's node name)", async () => {
    assert.ok(cp);
    for (const name of ["node-1", "node-2"]) {
      const r = await kubectl(["create", "-f", "-"], stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name }, spec: {} }));
      assert.equal(r.code, 0, r.stderr);
    }
    const agentOnNode1 = agentKubeconfig("node-1");
    const patch = (node: string) =>
      kubectl(["--kubeconfig", agentOnNode1, "patch", "ciliumnode", node, "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { agent: { version: "test" } } })]);
    const own = await patch("node-1");
    assert.equal(own.code, 0, `own CiliumNode: ${own.stderr}`);
    const other = await patch("node-2");
    assert.notEqual(other.code, 0, "the agent of node-1 wrote node-2's CiliumNode");
    assert.match(other.stderr, /membrane-agent may write only the CiliumNode of its own node; node-2 is not node-1/);
  });

  it("an agent may create and renew only its own node's heartbeat Lease in kube-node-lease: not another agent's, not a kubelet's, nothing elsewhere", async () => {
    const agent = sa("membrane-agent");
    for (const verb of ["create", "get", "update"]) assert.equal(await canI(agent, verb, "leases.coordination.k8s.io", ["-n", "kube-node-lease"]), true, `agent can ${verb} leases`);
    for (const verb of ["list", "watch", "patch", "delete"]) assert.equal(await canI(agent, verb, "leases.coordination.k8s.io", ["-n", "kube-node-lease"]), false, `agent can ${verb} leases`);
    assert.equal(await canI(agent, "create", "leases.coordination.k8s.io", ["-n", "kube-system"]), false, "agent can create leases outside kube-node-lease");

    const lease = (name: string, holder: string) =>
      stringify({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name, namespace: "kube-node-lease" }, spec: { holderIdentity: holder, leaseDurationSeconds: 40 } });
    // A kubelet's node Lease, as the node's kubelet would have made it.
    const kubelet = await kubectl(["create", "-f", "-"], lease("node-2", "node-2"));
    assert.equal(kubelet.code, 0, kubelet.stderr);
    const asAgent = agentKubeconfig("node-1");
    const own = await kubectl(["--kubeconfig", asAgent, "create", "-f", "-"], lease("membrane-agent-node-1", "node-1"));
    assert.equal(own.code, 0, `own Lease: ${own.stderr}`);
    const renew = await kubectl(["--kubeconfig", asAgent, "replace", "-f", "-"], lease("membrane-agent-node-1", "node-1"));
    assert.equal(renew.code, 0, `renewing its own Lease: ${renew.stderr}`);
    const other = await kubectl(["--kubeconfig", asAgent, "create", "-f", "-"], lease("membrane-agent-node-2", "node-1"));
    assert.notEqual(other.code, 0, "the agent of node-1 created node-2's agent Lease");
    assert.match(other.stderr, /membrane-agent may write only the Lease membrane-agent-<its node>; membrane-agent-node-2 is not membrane-agent-node-1/);
    const kubelets = await kubectl(["--kubeconfig", asAgent, "replace", "-f", "-"], lease("node-2", "node-1"));
    assert.notEqual(kubelets.code, 0, "the agent of node-1 renewed a kubelet's node Lease");
    assert.match(kubelets.stderr, /membrane-agent may write only the Lease membrane-agent-<its node>; node-2 is not/);
  });

  it("helm upgrade keeps the distribution certificates and the caBundle the webhook patched in", async () => {
    assert.ok(cp);
    const secretData = async (name: string): Promise<Record<string, string>> => {
      const r = await kubectl(["get", "secret", name, "-n", NS, "-o", "json"]);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { data: Record<string, string> }).data;
    };
    const before = { server: await secretData("membrane-distribution-tls-server"), client: await secretData("membrane-distribution-tls-client") };
    // What the webhook does at start: write its CA into the configuration.
    const caBundle = Buffer.from("-----BEGIN CERTIFICATE-----\nplaceholder\n-----END CERTIFICATE-----\n").toString("base64");
    const patched = await kubectl(["patch", "validatingwebhookconfiguration", "membrane-policy-validation", "--type=json", "-p", JSON.stringify([{ op: "add", path: "/webhooks/0/clientConfig/caBundle", value: caBundle }])]);
    assert.equal(patched.code, 0, patched.stderr);

    const up = await cp.helm(["upgrade", RELEASE, CHART_DIR, "--namespace", NS, ...setArgs({ ...VALUES, "webhook.timeoutSeconds": 15 })]);
    assert.equal(up.code, 0, `helm upgrade: ${up.stderr}`);
    assert.deepEqual({ server: await secretData("membrane-distribution-tls-server"), client: await secretData("membrane-distribution-tls-client") }, before);
    const vwc = await kubectl(["get", "validatingwebhookconfiguration", "membrane-policy-validation", "-o", "json"]);
    const webhook = (JSON.parse(vwc.stdout) as { webhooks: { timeoutSeconds: number; clientConfig: { caBundle?: string } }[] }).webhooks[0];
    assert.equal(webhook?.timeoutSeconds, 15, "the upgrade applied the new value");
    assert.equal(webhook?.clientConfig.caBundle, caBundle, "the upgrade kept the webhook's caBundle");
  });

  it("helm uninstall removes every object of the release but the policy secrets namespace and the Secrets users put there (the CRDs and their objects stay, as Helm does)", async () => {
    assert.ok(cp);
    // A user's Secret for a TLS rule, where the chart tells users to put it.
    const user = await kubectl(["create", "secret", "generic", "front-tls", "-n", "membrane-secrets", "--from-literal=ca.crt=x"]);
    assert.equal(user.code, 0, user.stderr);
    const r = await cp.helm(["uninstall", RELEASE, "--namespace", NS, "--wait", "--timeout", "2m"]);
    assert.equal(r.code, 0, `helm uninstall: ${r.stderr}`);
    const left = await kubectl(["get", "-f", "-", "--ignore-not-found", "-o", "json"], manifest);
    assert.equal(left.code, 0, left.stderr);
    const remaining = left.stdout.trim() === "" ? [] : (JSON.parse(left.stdout) as List).items;
    assert.deepEqual(remaining.map(objectKey), [objectKey({ kind: "Namespace", metadata: { name: "membrane-secrets" } })], "only the kept secrets namespace");
    assert.equal((await kubectl(["get", "secret", "front-tls", "-n", "membrane-secrets", "-o", "name"])).stdout.trim(), "secret/front-tls", "the user's Secret survives");
    const crds = await kubectl(["get", "crd", "ciliumnetworkpolicies.cilium.io", "-o", "name"]);
    assert.equal(crds.code, 0, "CRDs are kept on uninstall so users' policies survive");
    const list = await cp.helm(["list", "--namespace", NS, "--all", "-q"]);
    assert.equal(list.stdout.trim(), "");
  });
});
