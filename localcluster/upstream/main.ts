// `make test-upstream`: the upstream NetworkPolicy e2e suite against a real-node cluster with Membrane installed by its chart; writes summary.json and prints passed / failed / skipped, then removes the cluster.
// Usage: node --import tsx localcluster/upstream/main.ts [--out DIR] [--focus REGEX] [--skip REGEX] [--timeout-minutes N] [--shards N]
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { destroyRealNode } from "../realnode/realnode.ts";
import { startUpstreamCluster, type UpstreamCluster } from "./cluster.ts";
import { NETPOL_FOCUS, NETPOL_SKIP, buildNetpolSuite, runNetpolSuite } from "./suite.ts";

const { values } = parseArgs({
  options: {
    out: { type: "string", default: "upstream-results" },
    focus: { type: "string", default: NETPOL_FOCUS },
    skip: { type: "string", default: NETPOL_SKIP },
    "timeout-minutes": { type: "string", default: "120" },
    shards: { type: "string", default: "4" },
  },
});
const timeoutMinutes = Number(values["timeout-minutes"]);
if (!Number.isFinite(timeoutMinutes) || timeoutMinutes <= 0) {
  console.error(`--timeout-minutes: a positive number is required, got "${values["timeout-minutes"]}"`);
  process.exit(2);
}
const shards = Number(values.shards);
if (!Number.isInteger(shards) || shards < 1) {
  console.error(`--shards: a positive integer is required, got "${values.shards}"`);
  process.exit(2);
}
const outDir = resolve(values.out);
await mkdir(outDir, { recursive: true });
const scratch = await mkdtemp(join(tmpdir(), "membrane-upstream-"));
let cluster: UpstreamCluster | undefined;
const cleanUp = async (): Promise<void> => {
  // A cluster still starting has no handle yet: its node is removed through the record in its dir (the control
  // plane exits with this process).
  if (cluster) await cluster.stop();
  else await destroyRealNode(join(scratch, "node")).catch((err: unknown) => console.error(`test-upstream: node cleanup: ${(err as Error).message}`));
  await rm(scratch, { recursive: true, force: true });
};
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => void cleanUp().finally(() => process.exit(130)));
}

let exitCode = 1;
try {
  const started = Date.now();
  const [binary, c] = await Promise.all([buildNetpolSuite(), startUpstreamCluster({ dir: scratch, nodeName: `up-${process.pid}`, index: process.pid % 255 })]);
  cluster = c;
  const ready = Date.now();
  const summary = await runNetpolSuite({ binary, kubeconfig: c.cp.kubeconfig, focus: values.focus, skip: values.skip, outDir, timeoutMs: timeoutMinutes * 60_000, shards });
  const record = {
    date: new Date().toISOString(),
    focus: values.focus,
    skip: values.skip,
    shards,
    setupSeconds: Math.round((ready - started) / 1000),
    suiteSeconds: Math.round((Date.now() - ready) / 1000),
    passed: summary.passed,
    failed: summary.failed,
    skipped: summary.skipped,
    specs: summary.specs,
  };
  await writeFile(join(outDir, "summary.json"), JSON.stringify(record, null, 2) + "\n");
  for (const s of summary.specs.filter((x) => x.state !== "skipped")) console.log(`${s.state.padEnd(8)} ${String(s.seconds).padStart(6)}s  ${s.name}`);
  console.log(`\nupstream NetworkPolicy specs: ${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped (suite ${record.suiteSeconds} s, setup ${record.setupSeconds} s); ${join(outDir, "summary.json")}, log ${summary.log}`);
  exitCode = summary.failed === 0 && summary.passed > 0 ? 0 : 1;
} catch (err) {
  console.error(`test-upstream: ${(err as Error).message}`);
} finally {
  await cleanUp();
}
process.exit(exitCode);
