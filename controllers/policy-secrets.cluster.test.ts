// The operator against a real kube-apiserver: the Secrets a TLS rule names reach, inside the compiled policy, only the agent of the node hosting its subject; a missing or malformed Secret fails the rule closed and its status names the Secret, never its bytes.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { IDENTITY_ANNOTATION } from "../kube/objects.ts";
import { makePki } from "../kube/testing/pki.ts";
import { issueCA, issueCert } from "../kube/pki.ts";
import type { RuleTls } from "../core/model.ts";
import { AgentClient } from "./testing/agent.ts";
import { OperatorProcess, eventually } from "./testing/operator-process.ts";

const CRD_DIR = fileURLToPath(new URL("../crds/generated/", import.meta.url));
const NS = "tls";

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

describe("TLS inspection's Secrets: read by the operator, sent only where the subject runs, failing closed", { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let op: OperatorProcess | undefined;
  const agents: AgentClient[] = [];
  let pki: Awaited<ReturnType<typeof makePki>> | undefined;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const apply = (obj: unknown): Promise<string> => kubectl(["apply", "-f", "-"], JSON.stringify(obj));
  const secret = (name: string, data: Record<string, string>) =>
    apply({ apiVersion: "v1", kind: "Secret", metadata: { name, namespace: NS }, data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])) });
  const enforced = async (): Promise<Condition | undefined> =>
    (JSON.parse(await kubectl(["get", "cnp", "-n", NS, "client", "-o", "json"])) as { status?: { conditions?: Condition[] } }).status?.conditions?.find((c) => c.type === "Enforced");
  /** The TLS of the client's rule in the state `agent` holds now. */
  const tlsHeld = (agent: AgentClient, subject: number): RuleTls | undefined => agent.state.policies.find((p) => p.subject === subject)?.http?.[0]?.tls;

  before(async () => {
    cp = await startControlPlane({ name: `policy-secrets-${process.pid}` });
    for (const f of readdirSync(CRD_DIR).filter((f) => f.endsWith(".yaml"))) await kubectl(["apply", "-f", `${CRD_DIR}${f}`]);
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    for (let i = 0; (await cp.kubectl(["get", "cnp", "-A"])).code !== 0; i++) {
      if (i > 100) throw new Error("the CRDs never became servable");
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  after(async () => {
    for (const a of agents) a.close();
    await op?.stop("SIGTERM");
    pki?.remove();
    await cp?.stop();
  });

  it("the client's node gets the material, the other node none; a deleted or malformed Secret fails the rule closed with the Secret named in the status", async () => {
    await apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
    await apply({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default", namespace: NS } });
    pki = await makePki(["n1", "n2"]);
    for (const [node, ip] of [["n1", "192.0.2.11"], ["n2", "192.0.2.12"]] as const) await apply({ apiVersion: "v1", kind: "Node", metadata: { name: node }, status: { addresses: [{ type: "InternalIP", address: ip }] } });
    op = new OperatorProcess("op-secrets", cp!.kubeconfig, [
      "--leader-elect", "false", "--controllers", "identity,policy", "--enable-policy-secrets", "true",
      "--distribution-port", "0", "--tls-ca", pki.file("ca.crt"), "--tls-cert", pki.file("operator.crt"), "--tls-key", pki.file("operator.key"),
    ]);
    const port = (await op.waitForLog((l) => l.msg === "distribution stream listening")).port as number;
    const pod = (name: string, node: string) => ({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace: NS, labels: { app: name } }, spec: { nodeName: node, automountServiceAccountToken: false, containers: [{ name: "c", image: "example.invalid/none" }] } });
    await apply(pod("client", "n1"));
    await apply(pod("other", "n2"));
    const clientId = Number(
      await eventually("client identity", async () => (JSON.parse(await kubectl(["get", "pod", "-n", NS, "client", "-o", "json"])) as { metadata: { annotations?: Record<string, string> } }).metadata.annotations?.[IDENTITY_ANNOTATION]),
    );

    const ca = await issueCA({ commonName: "pods' test CA", days: 1 });
    const served = await issueCert(ca, { commonName: "api.example.com", usage: "server", dnsNames: ["api.example.com"], days: 1 });
    const outsideCA = await issueCA({ commonName: "outside CA", days: 1 });
    await secret("api-tls", { "tls.crt": served.cert, "tls.key": served.key });
    await secret("outside-ca", { "ca.crt": outsideCA.cert });
    await apply({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "client", namespace: NS },
      spec: {
        endpointSelector: { matchLabels: { app: "client" } },
        egress: [
          {
            toEntities: ["world"],
            toPorts: [
              {
                ports: [{ port: "443", protocol: "TCP" }],
                terminatingTLS: { secret: { name: "api-tls" } },
                originatingTLS: { secret: { name: "outside-ca" } },
                serverNames: ["api.example.com"],
                rules: { http: [{ method: "GET", path: "/public/.*" }] },
              },
            ],
          },
        ],
      },
    });

    const creds = (node: string) => ({ ca: pki!.read("ca.crt"), cert: pki!.read(`${node}.crt`), key: pki!.read(`${node}.key`) });
    const n1 = new AgentClient(`127.0.0.1:${port}`, creds("n1"), "n1", { l7Proxy: true });
    const n2 = new AgentClient(`127.0.0.1:${port}`, creds("n2"), "n2", { l7Proxy: true });
    agents.push(n1, n2);
    const held = await eventually("n1 holds the Secrets' material", () => {
      const t = tlsHeld(n1, clientId);
      return t?.terminating?.material && t.originating?.material ? t : undefined;
    });
    assert.deepEqual(held.terminating?.secret, { namespace: NS, name: "api-tls" }, "the Secret's namespace defaults to the policy's");
    assert.equal(held.terminating?.material?.certificate, served.cert);
    assert.equal(held.terminating?.material?.privateKey, served.key);
    assert.equal(held.originating?.material?.trustedCA, outsideCA.cert);
    assert.deepEqual(held.serverNames, ["api.example.com"]);
    const keyLine = served.key.split("\n")[1]!;
    await eventually("n2 has its state", () => (n2.received.length > 0 ? true : undefined));
    assert.ok(!n2.received.some((m) => JSON.stringify(m).includes(keyLine)), "the node hosting no subject of the rule never receives the key");
    const ok = await eventually("Enforced=True", async () => ((await enforced())?.status === "True" ? await enforced() : undefined));
    assert.equal(ok?.message, "1/1 nodes");

    // The originating Secret deleted: the rule fails closed on the node, and the status says which Secret.
    await kubectl(["delete", "secret", "-n", NS, "outside-ca"]);
    const gone = await eventually("n1 told the CA Secret is gone", () => tlsHeld(n1, clientId)?.originating?.unavailable);
    assert.equal(gone, "not found");
    const notFound = await eventually("Enforced=False naming the Secret", async () => {
      const c = await enforced();
      return c?.reason === "RulesNotEnforced" ? c : undefined;
    });
    assert.equal(notFound.status, "False");
    assert.match(notFound.message, /spec\.egress\[0\]\.toPorts\[0\]\.originatingTLS: Secret tls\/outside-ca not found: connections to the port are refused/);

    // A malformed key: named by its item, its bytes nowhere in the status, the node's state or the operator's log.
    await secret("outside-ca", { "ca.crt": outsideCA.cert });
    await secret("api-tls", { "tls.crt": served.cert, "tls.key": "-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRETBYTES\n-----END PRIVATE KEY-----\n" });
    const malformed = await eventually("n1 told the key is malformed", () => tlsHeld(n1, clientId)?.terminating?.unavailable);
    assert.equal(malformed, 'item "tls.key" is not a PEM private key');
    assert.equal(tlsHeld(n1, clientId)?.terminating?.material, undefined, "no material is sent with it");
    const bad = await eventually("Enforced=False naming the malformed Secret", async () => {
      const c = await enforced();
      return c?.message.includes("terminatingTLS: Secret tls/api-tls") ? c : undefined;
    });
    assert.match(bad.message, /Secret tls\/api-tls item "tls\.key" is not a PEM private key/);
    assert.doesNotMatch(bad.message, /SECRETBYTES/);
    assert.ok(!op.logs.some((l) => JSON.stringify(l).includes("SECRETBYTES") || JSON.stringify(l).includes(keyLine)), "no Secret bytes in the operator's log");

    // Fixed: the material is back and the policy is enforced again.
    await secret("api-tls", { "tls.crt": served.cert, "tls.key": served.key });
    await eventually("n1 holds the key again", () => tlsHeld(n1, clientId)?.terminating?.material?.privateKey === served.key || undefined);
    await eventually("Enforced=True again", async () => ((await enforced())?.status === "True" ? true : undefined));
  });
});
