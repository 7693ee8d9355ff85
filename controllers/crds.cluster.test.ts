// CRD registration against a real API server: an operator started on a cluster whose CRDs came from an older release
// (Helm never upgrades crds/) upgrades Membrane's older ones, creates a missing one, and leaves a newer one and another
// owner's alone; the upgraded schema stops pruning the fields the old one lacked. Two registrations at once: one writes.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { startControlPlane } from "../localcluster/cluster.ts";
import { KubeClient } from "../kube/kube.ts";
import { CRDS } from "../crds/schema/index.ts";
import { CRD_SCHEMA_VERSION } from "../crds/generated/schema-version.ts";
import { CRD_SCHEMA_VERSION_LABEL, withSchemaVersion } from "../crds/version.ts";
import type { CustomResourceDefinition } from "../crds/schema/index.ts";
import { bundledCRDs, registerCRDs } from "./crds.ts";
import { OperatorProcess, eventually } from "./testing/operator-process.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;
const MEK = "membraneencryptionkeys.membrane.io";
const TPN = "tracingpoliciesnamespaced.cilium.io";
const NODES = "ciliumnodes.cilium.io";
const IDENTITIES = "ciliumidentities.cilium.io";

interface CrdJson {
  metadata: { name: string; resourceVersion: string; labels?: Record<string, string> };
  spec: { versions: { schema: { openAPIV3Schema: { properties: Record<string, { properties?: Record<string, unknown> }> } } }[] };
  status?: { conditions?: { type: string; status: string }[] };
}

const ours = (name: string): CustomResourceDefinition => withSchemaVersion(CRDS.find((c) => c.metadata.name === name)!, CRD_SCHEMA_VERSION);
const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

/** The key's CRD as the release before the version label shipped it: no label, and no status.rotationRequest. */
function olderKeyCRD(): unknown {
  const c = clone(CRDS.find((x) => x.metadata.name === MEK)!) as unknown as CrdJson;
  const status = c.spec.versions[0]!.schema.openAPIV3Schema.properties.status!;
  delete status.properties!.rotationRequest;
  return c;
}

describe("CRD registration against a real API server", { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let op: OperatorProcess | undefined;
  let client: KubeClient | undefined;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const crd = async (name: string): Promise<CrdJson> => JSON.parse(await kubectl(["get", "crd", name, "-o", "json"])) as CrdJson;
  const established = async (name: string): Promise<boolean | undefined> =>
    (await crd(name)).status?.conditions?.some((c) => c.type === "Established" && c.status === "True") || undefined;
  const keyStatus = async (): Promise<Record<string, unknown>> =>
    (JSON.parse(await kubectl(["get", "membraneencryptionkey", "k", "-o", "json"])) as { status?: Record<string, unknown> }).status ?? {};

  before(async () => {
    cp = await startControlPlane({ name: `crdreg${process.pid}` });
    client = await KubeClient.fromKubeconfig(cp.kubeconfig);
    // Every CRD as this build ships it, but: the key's from an older release, TracingPolicyNamespaced missing, the
    // CiliumNode CRD one version newer (a newer operator's, mid rolling upgrade), the CiliumIdentity CRD Cilium's own.
    const newer = ours(NODES);
    newer.metadata.labels[CRD_SCHEMA_VERSION_LABEL] = String(CRD_SCHEMA_VERSION + 1);
    const foreign = clone(ours(IDENTITIES)) as unknown as CrdJson;
    foreign.metadata.labels = { "io.cilium.k8s.crd.schema.version": "1.30.0" };
    const installed = [
      ...CRDS.filter((c) => ![MEK, TPN, NODES, IDENTITIES].includes(c.metadata.name)).map((c) => withSchemaVersion(c, CRD_SCHEMA_VERSION)),
      olderKeyCRD(),
      newer,
      foreign,
    ];
    for (const c of installed) await kubectl(["create", "-f", "-"], JSON.stringify(c));
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
  });

  after(async () => {
    await op?.stop("SIGKILL");
    client?.close();
    await cp?.stop();
  });

  it("the operator upgrades Membrane's older CRD, creates the missing one, keeps the newer and another owner's; the upgraded schema keeps the field the old one pruned", async () => {
    // The old schema prunes what it does not know: a status written with rotationRequest loses it.
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "membrane.io/v1alpha1", kind: "MembraneEncryptionKey", metadata: { name: "k" }, spec: { mode: "wireguard", secretRef: { name: "unused" } } }));
    const patch = JSON.stringify({ status: { rotationRequest: "r1", lastRotation: "2026-12-06T00:00:00Z" } });
    await kubectl(["patch", "membraneencryptionkey", "k", "--subresource=status", "--type=merge", "-p", patch]);
    const pruned = await keyStatus();
    assert.equal(pruned.lastRotation, "2026-12-06T00:00:00Z");
    assert.equal(pruned.rotationRequest, undefined, "the older schema prunes rotationRequest");
    const nodesBefore = await crd(NODES);
    const identitiesBefore = await crd(IDENTITIES);

    op = new OperatorProcess("op-crd", cp!.kubeconfig, ["--leader-elect", "false", "--lease-namespace", "kube-system", "--controllers", "identity"]);
    const upgraded = await op.waitForLog((l) => l.msg === "CRD upgraded to this operator's schema" && l.crd === MEK, 120_000);
    assert.equal(upgraded.from, null, "the older CRD had no version label");
    assert.equal(upgraded.version, CRD_SCHEMA_VERSION);
    await op.waitForLog((l) => l.msg === "CRD created" && l.crd === TPN);
    const kept = await op.waitForLog((l) => l.msg === "CRD newer than this operator's: kept" && l.crd === NODES);
    assert.equal(kept.version, CRD_SCHEMA_VERSION + 1);
    await op.waitForLog((l) => l.msg === "CRD not Membrane's (no app.kubernetes.io/part-of=membrane): kept as it is" && l.crd === IDENTITIES);

    const key = await crd(MEK);
    assert.equal(key.metadata.labels?.[CRD_SCHEMA_VERSION_LABEL], String(CRD_SCHEMA_VERSION));
    assert.equal(key.metadata.labels?.["app.kubernetes.io/part-of"], "membrane");
    assert.ok(key.spec.versions[0]!.schema.openAPIV3Schema.properties.status!.properties!.rotationRequest, "the upgraded schema has status.rotationRequest");
    await eventually("the upgraded schema keeps rotationRequest", async () => {
      await kubectl(["patch", "membraneencryptionkey", "k", "--subresource=status", "--type=merge", "-p", patch]);
      return (await keyStatus()).rotationRequest === "r1" || undefined;
    });
    assert.equal((await keyStatus()).lastRotation, "2026-12-06T00:00:00Z", "the key object itself survived the upgrade");

    assert.ok(await eventually("the created CRD Established", () => established(TPN)));
    assert.equal((await crd(TPN)).metadata.labels?.[CRD_SCHEMA_VERSION_LABEL], String(CRD_SCHEMA_VERSION));
    await kubectl(["get", "tracingpoliciesnamespaced", "-A"]);
    assert.equal((await crd(NODES)).metadata.resourceVersion, nodesBefore.metadata.resourceVersion, "a newer CRD is not written");
    assert.equal((await crd(IDENTITIES)).metadata.resourceVersion, identitiesBefore.metadata.resourceVersion, "another owner's CRD is not written");
    assert.equal(op.logs.filter((l) => l.msg === "CRDs not registered: the cluster's are used as they are").length, 0);

    await op.stop();
    op = undefined;
  });

  it("registering again writes nothing: every CRD is as new as this build's, newer, or not Membrane's", async () => {
    const versions = new Map(await Promise.all(CRDS.map(async (c) => [c.metadata.name, (await crd(c.metadata.name)).metadata.resourceVersion] as const)));
    const r = await registerCRDs(client!, await bundledCRDs(), pino({ level: "silent" }));
    assert.deepEqual(Object.fromEntries(r.map((x) => [x.name, x.outcome])), {
      ...Object.fromEntries(CRDS.map((c) => [c.metadata.name, "current"])),
      [NODES]: "newer",
      [IDENTITIES]: "foreign",
    });
    for (const c of CRDS) assert.equal((await crd(c.metadata.name)).metadata.resourceVersion, versions.get(c.metadata.name), `${c.metadata.name} not written again`);
  });

  it("two registrations at once (two replicas starting): one upgrades the older CRD, the other finds it current", async () => {
    await kubectl(["replace", "-f", "-"], JSON.stringify({ ...(olderKeyCRD() as object), metadata: { ...(await crd(MEK)).metadata, labels: { "app.kubernetes.io/part-of": "membrane" } } }));
    const mine = (await bundledCRDs()).filter((c) => c.metadata.name === MEK);
    const log = pino({ level: "silent" });
    const [a, b] = await Promise.all([registerCRDs(client!, mine, log), registerCRDs(client!, mine, log)]);
    const outcomes = [a[0]!.outcome, b[0]!.outcome].sort();
    assert.deepEqual(outcomes, ["current", "updated"]);
    assert.equal((await crd(MEK)).metadata.labels?.[CRD_SCHEMA_VERSION_LABEL], String(CRD_SCHEMA_VERSION));
  });
});
