// The operator against a real kube-apiserver, under the chart's RBAC: the Secrets a TLS rule names are read from the policy secrets namespace only (the API server's audit log shows no Secret request elsewhere) and reach, inside the compiled policy, only the agent of the node hosting its subject; a Secret named in another namespace, missing or malformed fails the rule closed and its status names the Secret, never its bytes.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { NAMESPACE as RELEASE_NS, parseManifest, renderText } from "../localcluster/chart.ts";
import { IDENTITY_ANNOTATION } from "../kube/objects.ts";
import { makePki } from "../kube/testing/pki.ts";
import { issueCA, issueCert } from "../kube/pki.ts";
import type { RuleTls } from "../core/model.ts";
import { AgentClient } from "./testing/agent.ts";
import { OperatorProcess, eventually } from "./testing/operator-process.ts";

const CRD_DIR = fileURLToPath(new URL("../crds/generated/", import.meta.url));
const NS = "tls";
/** The chart's default policy secrets namespace (values.yaml tls.secretsNamespace.name). */
const SECRETS_NS = "membrane-secrets";
const OPERATOR_USER = `system:serviceaccount:${RELEASE_NS}:membrane-operator`;
/** The chart's objects that give the operator its permissions (and the secrets namespace itself). */
const CHART_RBAC = new Set([
  `Namespace/${SECRETS_NS}`,
  "ServiceAccount/membrane-operator",
  "ClusterRole/membrane-operator",
  "ClusterRoleBinding/membrane-operator",
  "Role/membrane-operator",
  "RoleBinding/membrane-operator",
  "Role/membrane-operator-policy-secrets",
  "RoleBinding/membrane-operator-policy-secrets",
]);

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

/** One line of the API server's audit log (Metadata level). */
interface AuditEvent {
  verb: string;
  requestURI: string;
  impersonatedUser?: { username: string };
  objectRef?: { resource?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
}

describe("TLS inspection's Secrets: read by the operator from the policy secrets namespace only, sent only where the subject runs, failing closed", { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let op: OperatorProcess | undefined;
  const agents: AgentClient[] = [];
  let pki: Awaited<ReturnType<typeof makePki>> | undefined;
  const auditDir = mkdtempSync(join(tmpdir(), "membrane-policy-secrets-audit-"));
  const auditLog = join(auditDir, "audit.log");
  let clientId = 0;
  let otherId = 0;
  let n1: AgentClient | undefined;
  let n2: AgentClient | undefined;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const apply = (obj: unknown): Promise<string> => kubectl(["apply", "-f", "-"], JSON.stringify(obj));
  const secret = (namespace: string, name: string, data: Record<string, string>) =>
    apply({ apiVersion: "v1", kind: "Secret", metadata: { name, namespace }, data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])) });
  const enforced = async (policy: string): Promise<Condition | undefined> =>
    (JSON.parse(await kubectl(["get", "cnp", "-n", NS, policy, "-o", "json"])) as { status?: { conditions?: Condition[] } }).status?.conditions?.find((c) => c.type === "Enforced");
  /** The TLS of a subject's rule in the state `agent` holds now. */
  const tlsHeld = (agent: AgentClient, subject: number): RuleTls | undefined => agent.state.policies.find((p) => p.subject === subject)?.http?.[0]?.tls;
  const tlsPolicy = (name: string, app: string, tls: Record<string, unknown>) => ({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name, namespace: NS },
    spec: {
      endpointSelector: { matchLabels: { app } },
      egress: [{ toEntities: ["world"], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }], ...tls, rules: { http: [{ method: "GET", path: "/public/.*" }] } }] }],
    },
  });
  const identityOf = async (pod: string): Promise<number> =>
    Number(await eventually(`${pod} identity`, async () => (JSON.parse(await kubectl(["get", "pod", "-n", NS, pod, "-o", "json"])) as { metadata: { annotations?: Record<string, string> } }).metadata.annotations?.[IDENTITY_ANNOTATION]));

  before(async () => {
    // Every request at Metadata level (never a Secret's bytes): the test reads which ones the operator made.
    const policy = join(auditDir, "policy.yaml");
    writeFileSync(policy, stringify({ apiVersion: "audit.k8s.io/v1", kind: "Policy", omitStages: ["RequestReceived"], rules: [{ level: "Metadata" }] }));
    cp = await startControlPlane({ name: `policy-secrets-${process.pid}`, apiserverArgs: [`--audit-policy-file=${policy}`, `--audit-log-path=${auditLog}`] });
    for (const f of readdirSync(CRD_DIR).filter((f) => f.endsWith(".yaml"))) await kubectl(["apply", "-f", `${CRD_DIR}${f}`]);
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    for (let i = 0; (await cp.kubectl(["get", "cnp", "-A"])).code !== 0; i++) {
      if (i > 100) throw new Error("the CRDs never became servable");
      await new Promise((r) => setTimeout(r, 200));
    }
    // The operator runs with exactly the chart's RBAC: its ServiceAccount, impersonated.
    await apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: RELEASE_NS } });
    const rbac = parseManifest(await renderText()).filter((o) => CHART_RBAC.has(`${o.kind}/${o.metadata.name}`));
    assert.equal(rbac.length, CHART_RBAC.size, "the chart renders every object the operator's permissions come from");
    await apply({ apiVersion: "v1", kind: "List", items: rbac });
  });

  after(async () => {
    for (const a of agents) a.close();
    await op?.stop("SIGTERM");
    pki?.remove();
    await cp?.stop();
    rmSync(auditDir, { recursive: true, force: true });
  });

  it("a Secret in the secrets namespace: the client's node gets the material, the other node none; deleted or malformed, the rule fails closed with the Secret named in the status", async () => {
    await apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
    await apply({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default", namespace: NS } });
    pki = await makePki(["n1", "n2"]);
    for (const [node, ip] of [["n1", "192.0.2.11"], ["n2", "192.0.2.12"]] as const) await apply({ apiVersion: "v1", kind: "Node", metadata: { name: node }, status: { addresses: [{ type: "InternalIP", address: ip }] } });
    const kubeconfig = parse(readFileSync(cp!.kubeconfig, "utf8")) as { users: { user: Record<string, unknown> }[] };
    for (const u of kubeconfig.users) u.user["as"] = OPERATOR_USER;
    const operatorKubeconfig = join(auditDir, "operator.kubeconfig");
    writeFileSync(operatorKubeconfig, stringify(kubeconfig), { mode: 0o600 });
    op = new OperatorProcess("op-secrets", operatorKubeconfig, [
      "--leader-elect", "false", "--lease-namespace", RELEASE_NS, "--controllers", "identity,policy", "--policy-secrets-namespace", SECRETS_NS,
      "--distribution-port", "0", "--tls-ca", pki.file("ca.crt"), "--tls-cert", pki.file("operator.crt"), "--tls-key", pki.file("operator.key"),
    ]);
    const port = (await op.waitForLog((l) => l.msg === "distribution stream listening")).port as number;
    const pod = (name: string, node: string) => ({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace: NS, labels: { app: name } }, spec: { nodeName: node, automountServiceAccountToken: false, containers: [{ name: "c", image: "example.invalid/none" }] } });
    await apply(pod("client", "n1"));
    await apply(pod("other", "n2"));
    clientId = await identityOf("client");
    otherId = await identityOf("other");

    const ca = await issueCA({ commonName: "pods' test CA", days: 1 });
    const served = await issueCert(ca, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com"], days: 1 });
    const outsideCA = await issueCA({ commonName: "outside CA", days: 1 });
    await secret(SECRETS_NS, "api-tls", { "tls.crt": served.cert, "tls.key": served.key });
    await secret(SECRETS_NS, "outside-ca", { "ca.crt": outsideCA.cert });
    await apply(
      tlsPolicy("client", "client", {
        terminatingTLS: { secret: { namespace: SECRETS_NS, name: "api-tls" } },
        originatingTLS: { secret: { namespace: SECRETS_NS, name: "outside-ca" } },
        serverNames: ["api.example.com"],
      }),
    );

    const creds = (node: string) => ({ ca: pki!.read("ca.crt"), cert: pki!.read(`${node}.crt`), key: pki!.read(`${node}.key`) });
    n1 = new AgentClient(`127.0.0.1:${port}`, creds("n1"), "n1", { l7Proxy: true });
    n2 = new AgentClient(`127.0.0.1:${port}`, creds("n2"), "n2", { l7Proxy: true });
    agents.push(n1, n2);
    const held = await eventually("n1 holds the Secrets' material", () => {
      const t = tlsHeld(n1!, clientId);
      return t?.terminating?.material && t.originating?.material ? t : undefined;
    });
    assert.deepEqual(held.terminating?.secret, { namespace: SECRETS_NS, name: "api-tls" });
    assert.equal(held.terminating?.material?.certificate, served.cert);
    assert.equal(held.terminating?.material?.privateKey, served.key);
    assert.equal(held.originating?.material?.trustedCA, outsideCA.cert);
    assert.deepEqual(held.serverNames, ["api.example.com"]);
    const keyLine = served.key.split("\n")[1]!;
    await eventually("n2 has its state", () => (n2!.received.length > 0 ? true : undefined));
    assert.ok(!n2.received.some((m) => JSON.stringify(m).includes(keyLine)), "the node hosting no subject of the rule never receives the key");
    const ok = await eventually("Enforced=True", async () => ((await enforced("client"))?.status === "True" ? await enforced("client") : undefined));
    assert.equal(ok?.message, "1/1 nodes");

    // The originating Secret deleted: the rule fails closed on the node, and the status says which Secret.
    await kubectl(["delete", "secret", "-n", SECRETS_NS, "outside-ca"]);
    const gone = await eventually("n1 told the CA Secret is gone", () => tlsHeld(n1!, clientId)?.originating?.unavailable);
    assert.equal(gone, "not found");
    const notFound = await eventually("Enforced=False naming the Secret", async () => {
      const c = await enforced("client");
      return c?.reason === "RulesNotEnforced" ? c : undefined;
    });
    assert.equal(notFound.status, "False");
    assert.match(notFound.message, /spec\.egress\[0\]\.toPorts\[0\]\.originatingTLS: Secret membrane-secrets\/outside-ca not found: connections to the port are refused/);

    // A malformed key: named by its item, its bytes nowhere in the status, the node's state or the operator's log.
    await secret(SECRETS_NS, "outside-ca", { "ca.crt": outsideCA.cert });
    await secret(SECRETS_NS, "api-tls", { "tls.crt": served.cert, "tls.key": "-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRETBYTES\n-----END PRIVATE KEY-----\n" });
    const malformed = await eventually("n1 told the key is malformed", () => tlsHeld(n1!, clientId)?.terminating?.unavailable);
    assert.equal(malformed, 'item "tls.key" is not a PEM private key');
    assert.equal(tlsHeld(n1, clientId)?.terminating?.material, undefined, "no material is sent with it");
    const bad = await eventually("Enforced=False naming the malformed Secret", async () => {
      const c = await enforced("client");
      return c?.message.includes("terminatingTLS: Secret membrane-secrets/api-tls") ? c : undefined;
    });
    assert.match(bad.message, /Secret membrane-secrets\/api-tls item "tls\.key" is not a PEM private key/);
    assert.doesNotMatch(bad.message, /SECRETBYTES/);
    assert.ok(!op.logs.some((l) => JSON.stringify(l).includes("SECRETBYTES") || JSON.stringify(l).includes(keyLine)), "no Secret bytes in the operator's log");

    // Fixed: the material is back and the policy is enforced again.
    await secret(SECRETS_NS, "api-tls", { "tls.crt": served.cert, "tls.key": served.key });
    await eventually("n1 holds the key again", () => tlsHeld(n1!, clientId)?.terminating?.material?.privateKey === served.key || undefined);
    await eventually("Enforced=True again", async () => ((await enforced("client"))?.status === "True" ? true : undefined));
  });

  it("a Secret named in another namespace is not read, even though it exists there: the node is told where it must live, the port fails closed and the status names the Secret", async () => {
    const ca = await issueCA({ commonName: "app namespace CA", days: 1 });
    const beside = await issueCert(ca, { commonName: "beside.example.com", usage: "server", days: 1 });
    // Beside the policy, as a Cilium user without a secrets namespace would put it (the policy names no namespace).
    await secret(NS, "api-tls", { "tls.crt": beside.cert, "tls.key": beside.key });
    await apply(tlsPolicy("elsewhere", "other", { terminatingTLS: { secret: { name: "api-tls" } } }));
    const told = await eventually("n2 told the Secret is not read", () => tlsHeld(n2!, otherId)?.terminating);
    assert.deepEqual(told.secret, { namespace: NS, name: "api-tls" });
    assert.equal(told.unavailable, "is not read: TLS rules' Secrets must live in the policy secrets namespace membrane-secrets (name it with secret.namespace: membrane-secrets)");
    assert.equal(told.material, undefined);
    const c = await eventually("Enforced=False naming the Secret and the secrets namespace", async () => {
      const e = await enforced("elsewhere");
      return e?.reason === "RulesNotEnforced" ? e : undefined;
    });
    assert.equal(c.status, "False");
    assert.match(c.message, /spec\.egress\[0\]\.toPorts\[0\]\.terminatingTLS: Secret tls\/api-tls is not read: TLS rules' Secrets must live in the policy secrets namespace membrane-secrets .*: connections to the port are refused/);
    const besideKey = beside.key.split("\n")[1]!;
    assert.ok(![...n1!.received, ...n2!.received].some((m) => JSON.stringify(m).includes(besideKey)), "no node ever receives that Secret's key");
    assert.equal((await enforced("client"))?.status, "True", "the other policy's Secrets are still served");
  });

  it("the API server saw the operator ask for Secrets in the secrets namespace only (list and watch, nothing cluster-wide or elsewhere), and refused none of its requests under the chart's RBAC", () => {
    const events = readFileSync(auditLog, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as AuditEvent);
    const operator = events.filter((e) => e.impersonatedUser?.username === OPERATOR_USER);
    assert.ok(operator.length > 0, "the audit log holds the operator's requests");
    const secrets = operator.filter((e) => e.objectRef?.resource === "secrets");
    const outside = secrets.filter((e) => e.objectRef?.namespace !== SECRETS_NS);
    assert.deepEqual(outside.map((e) => `${e.verb} ${e.requestURI}`), [], "no Secret request outside the secrets namespace");
    assert.deepEqual([...new Set(secrets.map((e) => e.verb))].sort(), ["list", "watch"], "the informer lists and watches there");
    const refused = operator.filter((e) => e.responseStatus?.code === 403);
    assert.deepEqual(refused.map((e) => `${e.verb} ${e.requestURI}`), [], "the chart's RBAC is all the operator needs");
  });
});
