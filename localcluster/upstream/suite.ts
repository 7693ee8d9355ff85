// The upstream NetworkPolicy e2e suite (built by build.sh from the pinned k8s.io/kubernetes module): which specs run, the binary run against a cluster, and its ginkgo JSON report read into passed / failed / skipped.
import { execFile, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const buildScript = fileURLToPath(new URL("./build.sh", import.meta.url));

/**
 * Every NetworkPolicy spec of the pinned suite: `[sig-network] Netpol`, `Netpol [LinuxOnly]` (UDP) and `Netpol API`,
 * and any spec outside them whose text names NetworkPolicy. In k8s.io/kubernetes v1.36.3 there is none (a dry run of
 * the full e2e.test lists the same 50 specs for both); spec-packages.test.ts checks that every package whose specs
 * could name it is linked into our binary, so a later pin that adds one runs it here.
 */
export const NETPOL_FOCUS = String.raw`\[sig-network\] Netpol|NetworkPolicy`;
/**
 * The specs that send SCTP (`[Feature:SCTPConnectivity]`): not run, as the issue asks. The TCP specs whose policies
 * merely name SCTP stay in. Nothing of the Netpol specs needs a cloud.
 */
export const NETPOL_SKIP = String.raw`\[Feature:SCTPConnectivity\]`;

export interface SpecResult {
  /** The spec's full text as ginkgo prints it (containers and leaf, space-separated). */
  name: string;
  state: "passed" | "failed" | "skipped" | "pending" | "panicked" | "timedout" | "interrupted" | "aborted";
  seconds: number;
  /** The failure's message, first lines only. */
  failure?: string;
}

export interface SuiteSummary {
  passed: number;
  failed: number;
  skipped: number;
  specs: SpecResult[];
}

interface GinkgoSpecReport {
  ContainerHierarchyTexts?: string[] | null;
  LeafNodeText?: string;
  LeafNodeType?: string;
  State?: string;
  RunTime?: number;
  Failure?: { Message?: string };
}

const STATES = new Set(["passed", "failed", "skipped", "pending", "panicked", "timedout", "interrupted", "aborted"]);

/**
 * Reads ginkgo's `--ginkgo.json-report` file: one entry per It under the scope (suite setup nodes are not specs, but
 * their failure is reported as a failed spec so a broken setup is not a green run); anything not passed or skipped
 * counts as failed.
 */
export function summarizeReport(json: string, scope: RegExp = new RegExp(NETPOL_FOCUS)): SuiteSummary {
  const reports = JSON.parse(json) as { SpecReports?: GinkgoSpecReport[] | null }[];
  if (!Array.isArray(reports)) throw new Error("ginkgo JSON report: an array of suite reports is required");
  const specs: SpecResult[] = [];
  for (const report of reports) {
    for (const s of report.SpecReports ?? []) {
      const state = s.State ?? "";
      if (!STATES.has(state)) throw new Error(`ginkgo JSON report: unknown spec State "${state}"`);
      const isSpec = s.LeafNodeType === "It";
      if (!isSpec && state === "passed") continue;
      if (!isSpec && state === "skipped") continue;
      const name = [...(s.ContainerHierarchyTexts ?? []), s.LeafNodeText ?? s.LeafNodeType ?? ""].filter((t) => t !== "").join(" ");
      // The binary links upstream's test/e2e/common too (the suite's entry point imports it): its specs are no
      // NetworkPolicy specs skipped, so they are left out of the counts. The whole text is matched, as ginkgo's
      // focus does: a feature label is in the leaf's text.
      if (isSpec && !scope.test(name)) continue;
      specs.push({
        name: isSpec ? name : `[${s.LeafNodeType}] ${name}`,
        state: state as SpecResult["state"],
        seconds: Math.round((s.RunTime ?? 0) / 1e8) / 10,
        ...(s.Failure?.Message ? { failure: s.Failure.Message.split("\n").slice(0, 6).join("\n") } : {}),
      });
    }
  }
  const passed = specs.filter((s) => s.state === "passed").length;
  const skipped = specs.filter((s) => s.state === "skipped" || s.state === "pending").length;
  return { passed, failed: specs.length - passed - skipped, skipped, specs };
}

/** Builds (or finds in the cache) the suite's test binary; resolves with its path. */
export function buildNetpolSuite(): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("bash", [buildScript], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`upstream/build.sh failed: ${stderr.trim().split("\n").slice(-10).join("\n")}`));
      else resolve(join(stdout.trim().split("\n").at(-1)!, "e2e-netpol.test"));
    });
  });
}

export interface RunOptions {
  binary: string;
  kubeconfig: string;
  /** ginkgo regular expressions over the specs' full text. */
  focus: string;
  skip: string;
  /** Where the suite writes its JSON reports and logs (`netpol[-N].json`, `netpol[-N].log`). */
  outDir: string;
  /** Each run's limit: past it the binary is killed (by its pid) and its specs count as failed. */
  timeoutMs: number;
  /**
   * How many copies of the binary run side by side, each on its own share of the specs (default 1). A spec spends
   * most of its time waiting on probes that must time out (3 s each, three workers), not on CPU, and every spec
   * makes its own namespaces, so copies do not meet; ginkgo's own parallel mode needs its CLI as a server.
   */
  shards?: number;
}

/** The text as a regular expression that matches it literally. */
export function quoteRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Each exact spec text, anchored, joined: a focus that picks exactly those specs. ginkgo matches against the text
 * with a space before it (its top container's empty text), hence `(^| )` rather than `^`.
 */
export function exactFocus(names: readonly string[]): string {
  return names.map((n) => `(^| )${quoteRegex(n)}$`).join("|");
}

/** Splits the specs round-robin into at most n non-empty shares (neighbours in the file are alike in length). */
export function shareSpecs(names: readonly string[], n: number): string[][] {
  const shares: string[][] = Array.from({ length: Math.max(1, Math.min(n, names.length)) }, () => []);
  names.forEach((name, i) => shares[i % shares.length]!.push(name));
  return shares;
}

/** Runs the suite; resolves with its summary once every copy exits (a failing spec is not a rejection). */
export async function runNetpolSuite(opts: RunOptions): Promise<SuiteSummary & { exitCode: number | null; log: string }> {
  const shards = opts.shards ?? 1;
  if (!Number.isInteger(shards) || shards < 1) throw new Error(`shards: a positive integer is required, got ${shards}`);
  if (shards === 1) return runOnce(opts, "netpol", opts.focus);
  // The specs the focus picks, from a dry run (nothing touches the cluster), then one copy per share.
  const listed = await runOnce(opts, "netpol-list", opts.focus, ["--ginkgo.dry-run"]);
  const toRun = listed.specs.filter((s) => s.state === "passed").map((s) => s.name);
  const notRun = listed.specs.filter((s) => s.state !== "passed");
  const runs = await Promise.all(shareSpecs(toRun, shards).map((share, i) => runOnce(opts, `netpol-${i + 1}`, exactFocus(share))));
  const specs = [...notRun, ...runs.flatMap((r) => r.specs.filter((s) => s.state !== "skipped"))];
  const passed = specs.filter((s) => s.state === "passed").length;
  const skipped = specs.filter((s) => s.state === "skipped" || s.state === "pending").length;
  const exitCode = runs.every((r) => r.exitCode === 0) ? 0 : (runs.find((r) => r.exitCode !== 0)?.exitCode ?? null);
  return { passed, failed: specs.length - passed - skipped, skipped, specs, exitCode, log: runs.map((r) => r.log).join(" ") };
}

async function runOnce(opts: RunOptions, name: string, focus: string, extra: string[] = []): Promise<SuiteSummary & { exitCode: number | null; log: string }> {
  const report = join(opts.outDir, `${name}.json`);
  const logFile = join(opts.outDir, `${name}.log`);
  const args = [
    "-test.timeout=0", // the go test binary's own 10 min default would end a full run; ginkgo.timeout limits it
    `--kubeconfig=${opts.kubeconfig}`,
    "--provider=skeleton",
    `--ginkgo.focus=${focus}`,
    `--ginkgo.skip=${opts.skip}`,
    `--ginkgo.json-report=${report}`,
    `--ginkgo.timeout=${Math.ceil(opts.timeoutMs / 1000)}s`,
    "--ginkgo.no-color",
    "--ginkgo.v",
    ...extra,
  ];
  const out = createWriteStream(logFile);
  const child = spawn(opts.binary, args, { cwd: opts.outDir, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(out, { end: false });
  child.stderr.pipe(out, { end: false });
  // A grace period past ginkgo's own timeout, in which it writes its report.
  const killer = setTimeout(() => child.pid && process.kill(child.pid, "SIGKILL"), opts.timeoutMs + 60_000);
  const exitCode = await new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => resolve(code));
  }).finally(() => clearTimeout(killer));
  await new Promise<void>((resolve) => out.end(resolve));
  let text: string;
  try {
    text = await readFile(report, "utf8");
  } catch {
    const tail = (await readFile(logFile, "utf8")).split("\n").slice(-30).join("\n");
    throw new Error(`the suite wrote no report (exit ${exitCode}); the end of ${logFile}:\n${tail}`);
  }
  return { ...summarizeReport(text), exitCode, log: logFile };
}
