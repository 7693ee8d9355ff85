// End to end: the Kubernetes NetworkPolicy conformance model with real packets on two nodes joined by WireGuard in strict mode (issue #17), and `policy trace` agreeing with every measured verdict.
// Cross-node traffic either went through the tunnel or was dropped, so the model passing means policy is enforced through it.
// Process-based cluster because: (a) `dev up --encryption` (WireGuard between the nodes, strict) is refused on real nodes. The model itself (every
// case, the policy trace agreement, the CNP fromCIDR case) runs on real pods in make test: realnode.test.ts "the NetworkPolicy conformance model on
// real pods". make test runs this variant beside the main runner (the Makefile's BESIDE); make test-conformance-wireguard runs it alone.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import { CASES, CONTAINER_PORTS, NAMESPACES, PODS, namespaceLabels, renderCase, type ConformanceCase, type ModelPod, type Probe } from "../core/conformance/model.ts";
import { canonicalPrefix } from "../core/cidr.ts";
import { isNotFound, resourcePath, type KubeObject } from "../kube/kube.ts";
import { CILIUM_NODES, CNPS, NETWORK_POLICIES } from "../kube/resources.ts";
import { EnforcementBarrier, TestCluster, measureModelTable, tracedModelTable, type PodProber } from "./harness.ts";

const NODES = 2;
const ENCRYPTION = { mode: "wireguard" as const, strict: true };
/** A denied probe waits this long; an allowed one answers in milliseconds. */
const DENIED_TIMEOUT_MS = 1_000;

const tc = new TestCluster(`cf${process.pid % 100000}-`);
const barrier = new EnforcementBarrier(tc, NODES);
const ips = new Map<string, string>();
const probers = new Map<string, PodProber>();

/**
 * A case's policies as objects, parsed as YAML 1.2 (the model quotes `"y"`, which YAML 1.1 — kubectl —
 * would otherwise read as the boolean true).
 */
function caseObjects(c: ConformanceCase): KubeObject[] {
  return parseAllDocuments(renderCase(c, (id) => ips.get(id))).map((d) => d.toJSON() as KubeObject);
}

/** Pods alternate between the nodes in table order, so every table has same-node and cross-node pairs. */
const nodeOf = (i: number): number => (i % NODES) + 1;

/** One probe's 9×9 table, from each pod's prober (the pod servers answer with the pod's name). */
function measure(probe: Probe): Promise<string[]> {
  return measureModelTable(probe, { proberOf: (p) => probers.get(p.id)!, addressOf: (p) => ips.get(p.id)!, replyOf: (p) => p.name, timeoutMs: DENIED_TIMEOUT_MS });
}

/** Tables next to each other with row and column headers, and a '*' on rows that differ. */
function sideBySide(titles: readonly string[], tables: readonly (readonly string[])[]): string {
  const head = (t: string): string => `${t.padEnd(31)}`;
  const cols = (): string => `     ${PODS.map((p) => p.id.padEnd(3)).join("")}`.padEnd(31);
  const lines = [tables.map((_, i) => head(titles[i]!)).join("  "), tables.map(cols).join("  ")];
  PODS.forEach((p, r) => {
    const differs = tables.some((t) => t[r] !== tables[0]![r]);
    lines.push(tables.map((t) => `${p.id.padEnd(5)}${[...t[r]!].map((c) => c.padEnd(3)).join("")}`.padEnd(31)).join("  ") + (differs ? " *" : ""));
  });
  return lines.join("\n");
}

/** Every node's EncryptionReady is TunnelUp with a peer for each other node. */
async function tunnelsUp(): Promise<void> {
  const kube = await tc.kube();
  const until = Date.now() + 60_000;
  for (;;) {
    const cns = await kube.get<{ items: { status?: { conditions?: { type: string; reason: string; message: string }[] } }[] }>(resourcePath(CILIUM_NODES));
    const ready = cns.items.filter((cn) => cn.status?.conditions?.some((c) => c.type === "EncryptionReady" && c.reason === "TunnelUp" && c.message.includes(`${NODES - 1} peer`)));
    if (ready.length === NODES) return;
    if (Date.now() > until) throw new Error(`WireGuard tunnels not up: ${JSON.stringify(cns.items.map((cn) => cn.status?.conditions?.find((c) => c.type === "EncryptionReady")))}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe("NetworkPolicy conformance model with real packets (2 nodes, WireGuard strict)", { timeout: 6 * 60_000 }, () => {
  before(async () => {
    await tc.start(NODES, { encryption: ENCRYPTION });
    await tunnelsUp();
    const sentinel = barrier.pods();
    const namespaces = { ...Object.fromEntries(NAMESPACES.map((ns) => [ns, namespaceLabels(ns)])), ...sentinel.namespaces };
    const pods = [
      ...PODS.map((p: ModelPod, i) => ({ namespace: p.namespace, name: p.name, node: nodeOf(i), labels: { ...p.labels }, ports: CONTAINER_PORTS })),
      ...sentinel.pods,
    ];
    for (const [k, v] of await tc.createPods(namespaces, pods)) ips.set(k, v);
    for (const p of PODS) probers.set(p.id, await tc.prober(p.namespace, p.name));
  });

  after(() => tc.stop());

  it("with no policy every pod reaches every other on TCP and UDP 80 and 81, on one node and across", async () => {
    for (const protocol of ["TCP", "UDP"] as const) {
      for (const port of [80, 81]) {
        const want: Probe = { protocol, port, table: PODS.map((_, r) => PODS.map((__, c) => (r === c ? "-" : ".")).join("")) };
        const got = await measure(want);
        assert.deepEqual(got, want.table, `${protocol}/${port} with no policy\n${sideBySide(["expected", "measured"], [want.table, got])}`);
      }
    }
  });

  for (const c of CASES) {
    it(`${c.name}: measured reachability equals the model, and policy trace agrees with the packets`, async (t) => {
      const objects = caseObjects(c);
      assert.ok(objects.every((o) => o.kind === NETWORK_POLICIES.kind), "the model's cases are NetworkPolicies");
      const kube = await tc.kube();
      try {
        for (const o of objects) await kube.create(resourcePath(NETWORK_POLICIES, o.metadata.namespace), o);
        await barrier.pass();
        for (const probe of c.probes) {
          const [got, trace] = await Promise.all([measure(probe), tracedModelTable(kube, probe)]);
          const what = `${c.name}, ${probe.protocol}/${probe.port}`;
          await t.test(`${probe.protocol}/${probe.port}: the packets give the model's table`, () => {
            assert.deepEqual(got, probe.table, `${what}: packets differ from the model\n${sideBySide(["expected", "measured (packets)", "policy trace"], [probe.table, got, trace])}`);
          });
          await t.test(`${probe.protocol}/${probe.port}: policy trace agrees with the packets`, () => {
            assert.deepEqual(trace, got, `${what}: policy trace disagrees with the packets\n${sideBySide(["measured (packets)", "policy trace"], [got, trace])}`);
          });
        }
        // Addresses outside the cluster are never a target from this machine: those probes stay with core's unit tests.
        if (c.external?.length) t.diagnostic(`${c.external.length} probes to external addresses not sent (no test hosts outside the cluster)`);
      } finally {
        for (const o of objects) await kube.delete(resourcePath(NETWORK_POLICIES, o.metadata.namespace, o.metadata.name)).catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e as Error)));
        await barrier.pass();
      }
    });
  }

  it("a CNP fromCIDR covering the pod network matches no pod (Cilium's meaning, unlike a NetworkPolicy ipBlock): x/a accepts nothing", async () => {
    const cnp: KubeObject = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "from-cidr-pods", namespace: "x" },
      ...({ spec: { endpointSelector: { matchLabels: { pod: "a" } }, ingress: [{ fromCIDR: [canonicalPrefix(`${ips.get("x/a")!}/8`)!] }] } } as object),
    };
    const kube = await tc.kube();
    try {
      await kube.create(resourcePath(CNPS, "x"), cnp);
      await barrier.pass();
      const want: Probe = { protocol: "TCP", port: 80, table: PODS.map((_, r) => PODS.map((__, col) => (r === col ? "-" : col === 0 ? "X" : ".")).join("")) };
      const got = await measure(want);
      assert.deepEqual(got, want.table, `fromCIDR over the pod network\n${sideBySide(["expected", "measured"], [want.table, got])}`);
    } finally {
      await kube.delete(resourcePath(CNPS, "x", "from-cidr-pods")).catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e as Error)));
      await barrier.pass();
    }
  });
});
