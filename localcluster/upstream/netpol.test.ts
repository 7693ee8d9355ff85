// A few specs of the upstream NetworkPolicy e2e suite (the pinned Kubernetes module's test/e2e/network/netpol, agnhost as its workload) pass against Membrane installed by its chart on a real node; `make test-upstream` runs all of them.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startUpstreamCluster, type UpstreamCluster } from "./cluster.ts";
import { NETPOL_SKIP, buildNetpolSuite, quoteRegex, runNetpolSuite } from "./suite.ts";

const TIMEOUT_MS = 60 * 60_000; // the first build of the suite's binary is long; later runs hit the cache
const TCP = "[sig-network] Netpol NetworkPolicy between server and client";
/**
 * Ingress isolation, egress isolation, and ingress and egress allowed by podSelector on their own: each a different
 * path through Membrane (the compiled ingress and egress entries of the datapath, the identities of the suite's
 * pods) that a no-op or allow-all datapath fails. And an egress namespaceSelector `NotIn` on the namespace-name label:
 * the pods of other namespaces reached through their Services' ClusterIPs (the socket-level translation), one
 * namespace's blocked, which a selector that also matched the world let through (README). `make test-upstream` runs
 * all of them.
 */
const SUBSET = [
  `${TCP} should support a 'default-deny-ingress' policy`,
  `${TCP} should deny egress from pods based on PodSelector`,
  `${TCP} should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector`,
  `${TCP} should enforce policy based on NamespaceSelector with MatchExpressions using default ns label`,
];

describe("upstream Netpol subset", { timeout: TIMEOUT_MS }, () => {
  let scratch: string;
  let cluster: UpstreamCluster | undefined;
  let binary: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "membrane-upstream-test-"));
    [binary, cluster] = await Promise.all([buildNetpolSuite(), startUpstreamCluster({ dir: scratch, nodeName: `up-t${process.pid}`, index: process.pid % 255 })]);
  });

  after(async () => {
    await cluster?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  test("agnhost is on the node under the reference the pinned suite asks for, so nothing is pulled", async () => {
    assert.equal(cluster!.agnhost, "registry.k8s.io/e2e-test-images/agnhost:2.63.0");
    const r = await cluster!.node.ctr(["images", "ls", "-q"]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.split("\n").includes(cluster!.agnhost), r.stdout);
  });

  test("the suite's default-deny-ingress, egress-deny, podSelector ingress/egress and namespaceSelector NotIn egress specs pass against Membrane", async () => {
    const outDir = join(scratch, "suite");
    await mkdir(outDir, { recursive: true });
    const summary = await runNetpolSuite({
      binary,
      kubeconfig: cluster!.cp.kubeconfig,
      // The leaf texts end in the feature label, " [Feature:NetworkPolicy]".
      focus: SUBSET.map((s) => `(^| )${quoteRegex(s)} `).join("|"),
      skip: NETPOL_SKIP,
      outDir,
      timeoutMs: 10 * 60_000,
      shards: SUBSET.length,
    });
    const ran = summary.specs.filter((s) => s.state !== "skipped");
    const failures = ran.filter((s) => s.state !== "passed").map((s) => `${s.name}: ${s.state}\n${s.failure ?? ""}`);
    assert.deepEqual(failures, [], `see ${summary.log}`);
    assert.deepEqual(ran.map((s) => s.name.replace(/ \[Feature:NetworkPolicy\]$/, "")).sort(), [...SUBSET].sort());
    assert.equal(summary.exitCode, 0);
  });
});
