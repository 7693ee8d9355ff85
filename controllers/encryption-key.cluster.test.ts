// The encryption-key controller against a real API server: bad key material named by Secret and field,
// a missing Secret created, rotation with the previous key kept until every node moved, and a node whose
// real kernel probe says KernelLacksESP named in the key's status; with WireGuard, a rotation of the key asked of every node. Creates a network namespace for the
// probe: run under flock /tmp/membrane-kernel.lock.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { startControlPlane } from "../localcluster/cluster.ts";
import { KubeClient } from "../kube/kube.ts";
import { CiliumNodeHealth } from "../node-agent/health.ts";
import { IpsecEncryption } from "../node-agent/encryption/ipsec.ts";
import { OperatorProcess, eventually } from "./testing/operator-process.ts";
import type { AgentStatus } from "../node-agent/agent.ts";
import type { EncryptionKeyStatus } from "./encryption-key.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;
const CRD_DIR = fileURLToPath(new URL("../crds/generated/", import.meta.url));
const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const NS = "kube-system";
const KEY = "0123456789abcdef0123456789abcdef01234567";
const b64 = (s: string): string => Buffer.from(s).toString("base64");

describe("encryption-key controller against a real API server", { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let op: OperatorProcess | undefined;
  let client: KubeClient | undefined;
  let health: CiliumNodeHealth | undefined;
  const netns = `mbr-enc-${process.pid}`;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const apply = (obj: unknown): Promise<string> => kubectl(["apply", "-f", "-"], JSON.stringify(obj));
  const keyStatus = async (name: string): Promise<EncryptionKeyStatus> =>
    ((JSON.parse(await kubectl(["get", "membraneencryptionkey", name, "-o", "json"])) as { status?: EncryptionKeyStatus }).status ?? {});
  const ready = async (name: string) => (await keyStatus(name)).conditions?.find((c) => c.type === "Ready");
  const secretData = async (name: string): Promise<Record<string, string>> => {
    const s = JSON.parse(await kubectl(["get", "secret", "-n", NS, name, "-o", "json"])) as { data?: Record<string, string> };
    return Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]));
  };
  const ciliumNode = (name: string) => ({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name }, spec: { addresses: [{ type: "InternalIP", ip: "192.0.2.10" }] } });

  before(async () => {
    cp = await startControlPlane({ name: `enckey${process.pid}` });
    for (const f of readdirSync(CRD_DIR).filter((f) => f.endsWith(".yaml"))) await kubectl(["apply", "-f", `${CRD_DIR}${f}`]);
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    execFileSync("ip", ["netns", "add", netns]);
    client = await KubeClient.fromKubeconfig(cp.kubeconfig);
    await apply(ciliumNode("node-a"));
    await apply(ciliumNode("node-b"));
    op = new OperatorProcess("op-enc", cp.kubeconfig, ["--leader-elect", "false", "--lease-namespace", NS, "--controllers", "encryption-key"]);
  });

  after(async () => {
    await health?.stop();
    await op?.stop("SIGKILL");
    client?.close();
    await cp?.stop();
    execFileSync("ip", ["netns", "del", netns]);
  });

  it("names the Secret and each bad field when the key material is wrong, and takes the fixed Secret", async () => {
    await apply({ apiVersion: "v1", kind: "Secret", metadata: { name: "ipsec-bad", namespace: NS }, data: { algorithm: b64("rfc4106(gcm(aes))"), key: b64("abcd"), spi: b64("99") } });
    await apply({ apiVersion: "membrane.io/v1alpha1", kind: "MembraneEncryptionKey", metadata: { name: "bad" }, spec: { mode: "ipsec", secretRef: { name: "ipsec-bad" } } });
    const c = await eventually("InvalidKeyMaterial", async () => ((await ready("bad"))?.reason === "InvalidKeyMaterial" ? ready("bad") : undefined));
    assert.equal(c?.status, "False");
    assert.match(c!.message, /^Secret kube-system\/ipsec-bad: data\.key: is 2 bytes: .*; data\.spi: "99" is not an SPI: an integer 1\.\.15$/);
    assert.ok(!c!.message.includes("abcd"), "the key never appears in the status");

    await apply({ apiVersion: "v1", kind: "Secret", metadata: { name: "ipsec-bad", namespace: NS }, data: { algorithm: b64("rfc4106(gcm(aes))"), key: b64(KEY), spi: b64("3") } });
    const st = await eventually("the fixed key taken", async () => ((await keyStatus("bad")).currentSPI === 3 ? keyStatus("bad") : undefined));
    assert.equal(st.currentKeyID, 1);
    assert.equal(st.nodesOnCurrentKey, "0/2");
    await kubectl(["delete", "membraneencryptionkey", "bad"]);
  });

  it("creates the Secret it names when it is missing, with valid material", async () => {
    await apply({ apiVersion: "membrane.io/v1alpha1", kind: "MembraneEncryptionKey", metadata: { name: "auto" }, spec: { mode: "ipsec", secretRef: { name: "ipsec-auto" } } });
    const data = await eventually("Secret created", () => secretData("ipsec-auto").catch(() => undefined));
    assert.equal(data.algorithm, "rfc4106(gcm(aes))");
    assert.equal(data.spi, "1");
    assert.match(data.key!, /^[0-9a-f]{72}$/);
    const st = await eventually("status", async () => ((await keyStatus("auto")).currentSPI === 1 ? keyStatus("auto") : undefined));
    assert.equal(st.currentKeyID, 1);
    await kubectl(["delete", "membraneencryptionkey", "auto"]);
  });

  it("a node whose kernel lacks ESP is named; rotation keeps the previous key until every node moved", async () => {
    // node-a runs the agent's real IPsec mode: a probe of this kernel in its namespace, published on its CiliumNode.
    const enc = new IpsecEncryption({ netns, log: pino({ level: "silent" }) });
    await enc.start();
    const status: AgentStatus = { connected: true, version: 1, lastError: undefined, endpoints: 0, policyEnforcementMode: "default", policyAuditMode: false, auditedEndpoints: 0 };
    health = new CiliumNodeHealth({
      client: client!,
      nodeName: "node-a",
      status: () => status,
      onStatus: (f) => enc.onChange(f),
      datapath: "test",
      encryption: () => enc.publication(),
      log: pino({ level: "silent" }),
    });
    health.start();

    await apply({ apiVersion: "v1", kind: "Secret", metadata: { name: "ipsec-main", namespace: NS }, data: { algorithm: b64("rfc4106(gcm(aes))"), key: b64(KEY), spi: b64("3") } });
    await apply({ apiVersion: "membrane.io/v1alpha1", kind: "MembraneEncryptionKey", metadata: { name: "main" }, spec: { mode: "ipsec", secretRef: { name: "ipsec-main" } } });
    const cannot = await eventually("node-a named", async () => ((await keyStatus("main")).nodesUnable?.length ? keyStatus("main") : undefined));
    assert.equal(cannot.nodesUnable![0]!.name, "node-a");
    assert.equal(cannot.nodesUnable![0]!.reason, "KernelLacksESP");
    assert.match(cannot.nodesUnable![0]!.message, /Requested (type|AEAD algorithm) not found/);
    const r0 = await ready("main");
    assert.equal(r0?.reason, "NodesCannotEncrypt");
    assert.match(r0!.message, /^0\/2 nodes on key 1 \(SPI 3\); cannot use it: node-a \(KernelLacksESP: /);

    // node-b stands for a node whose kernel has ESP and programmed SPI 3 (what its agent announces).
    await kubectl(["patch", "ciliumnode", "node-b", "--type=merge", "-p", JSON.stringify({ spec: { encryption: { key: 3 } } })]);
    await eventually("1/2", async () => ((await keyStatus("main")).nodesOnCurrentKey === "1/2" ? true : undefined));

    // Rotation on request, through the CLI.
    execFileSync(MEMBRANE, ["encryption", "rotate", "--key", "main", "--kubeconfig", cp!.kubeconfig]);
    const rotatedStatus = await eventually("rotated", async () => ((await keyStatus("main")).currentSPI === 4 ? keyStatus("main") : undefined));
    assert.equal(rotatedStatus.currentKeyID, 2);
    assert.equal(rotatedStatus.previousSPI, 3);
    assert.equal(rotatedStatus.nodesOnCurrentKey, "0/2");
    assert.ok(rotatedStatus.lastRotation);
    const asked = (JSON.parse(await kubectl(["get", "membraneencryptionkey", "main", "-o", "json"])) as { metadata: { annotations?: Record<string, string> } }).metadata.annotations?.["membrane.io/rotate"];
    assert.ok(asked, "the CLI's request on the key");
    assert.equal(rotatedStatus.rotationRequest, asked, "the status names the request the current key answers");
    const during = await secretData("ipsec-main");
    assert.equal(during.spi, "4");
    assert.equal(during["previous-spi"], "3");
    assert.equal(during["previous-key"], KEY, "the previous key is kept while nodes use it");
    assert.match(during.key!, /^[0-9a-f]{40}$/, "a fresh key of the same length");
    assert.notEqual(during.key, KEY);

    // A second request waits: one rotation at a time.
    await kubectl(["annotate", "membraneencryptionkey", "main", "--overwrite", "membrane.io/rotate=second"]);
    await eventually("the second rotation waits", async () => {
      const c = (await keyStatus("main")).conditions?.find((x) => x.type === "Rotating");
      return c?.reason === "PreviousKeyInUse" ? true : undefined;
    });
    assert.equal((await secretData("ipsec-main")).spi, "4");
    assert.equal((await keyStatus("main")).rotationRequest, asked, "a waiting request is not named as carried out");

    // node-b moves; node-a (no ESP) never can: the previous key stays while it is a node.
    await kubectl(["patch", "ciliumnode", "node-b", "--type=merge", "-p", JSON.stringify({ spec: { encryption: { key: 4 } } })]);
    await eventually("1/2 on the new key", async () => ((await keyStatus("main")).nodesOnCurrentKey === "1/2" ? true : undefined));
    assert.equal((await secretData("ipsec-main"))["previous-spi"], "3");

    // node-a leaves: every node is on SPI 4, the previous key goes, and the waiting rotation runs.
    await health.stop();
    health = undefined;
    await kubectl(["delete", "ciliumnode", "node-a"]);
    const after2 = await eventually("second rotation", async () => ((await keyStatus("main")).currentSPI === 5 ? keyStatus("main") : undefined));
    assert.equal(after2.currentKeyID, 3);
    assert.equal(after2.previousSPI, 4, "SPI 3 was dropped once every node had SPI 4");
    assert.equal(after2.rotationRequest, "second");
    const data = await secretData("ipsec-main");
    assert.deepEqual([data.spi, data["previous-spi"]], ["5", "4"]);

    // `membrane encryption status` shows the key and the nodes.
    const out = execFileSync(MEMBRANE, ["encryption", "status", "--kubeconfig", cp!.kubeconfig]).toString();
    assert.match(out, /main\s+ipsec\s+3\s+5 \(previous 4\)\s+0\/1\s+False\/NodesPending/);
    assert.match(out, /node-b\s+4\s+-/);
  });

  it("WireGuard: a rotation of the key (membrane encryption rotate --key) asks every node's agent for a new key pair, once per request; a node rotated on its own and a node that joins later are not asked again", async () => {
    const annotationOf = async (node: string) =>
      (JSON.parse(await kubectl(["get", "ciliumnode", node, "-o", "json"])) as { metadata: { annotations?: Record<string, string> } }).metadata.annotations?.["membrane.io/wireguard-rotate"];
    await apply(ciliumNode("node-w"));
    await apply({ apiVersion: "membrane.io/v1alpha1", kind: "MembraneEncryptionKey", metadata: { name: "wg" }, spec: { mode: "wireguard", rotationInterval: "720h", secretRef: { name: "unused" } } });
    const first = await eventually("the WireGuard key's status", async () => {
      const st = await keyStatus("wg");
      return st.lastRotation && st.nextRotation ? st : undefined;
    });
    assert.equal(Date.parse(first.nextRotation!) - Date.parse(first.lastRotation!), 720 * 3600_000, "the next rotation is due rotationInterval after the last");
    assert.equal(first.rotationRequest, undefined, "nothing asked yet");
    assert.deepEqual([await annotationOf("node-b"), await annotationOf("node-w")], [undefined, undefined]);

    execFileSync(MEMBRANE, ["encryption", "rotate", "--key", "wg", "--kubeconfig", cp!.kubeconfig]);
    const asked = await eventually("every node asked", async () => {
      const st = await keyStatus("wg");
      return st.rotationRequest ? st : undefined;
    });
    assert.deepEqual([await annotationOf("node-b"), await annotationOf("node-w")], [asked.rotationRequest, asked.rotationRequest], "the CLI's request on every CiliumNode");
    assert.ok(Date.parse(asked.lastRotation!) >= Date.parse(first.lastRotation!));

    // node-w rotated on its own (membrane encryption rotate --node), then a node joins: the key's request is done, nobody is asked again.
    await kubectl(["annotate", "ciliumnode", "node-w", "--overwrite", "membrane.io/wireguard-rotate=by-node"]);
    await apply(ciliumNode("node-late"));
    await eventually("the key counts the late node", async () => ((await keyStatus("wg")).nodesOnCurrentKey === "0/3" ? true : undefined));
    assert.deepEqual([await annotationOf("node-w"), await annotationOf("node-late")], ["by-node", undefined]);
    assert.equal((await keyStatus("wg")).lastRotation, asked.lastRotation);
    await kubectl(["delete", "membraneencryptionkey", "wg"]);
    await kubectl(["delete", "ciliumnode", "node-w", "node-late"]);
  });
});
