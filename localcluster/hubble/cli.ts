// The real `hubble` CLI, built from the pinned Cilium module by build.sh (cached by version), for tests and `membrane dev`.
import { execFile, execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { GetFlowsResponse, HubbleFlow, HubbleLostEvent } from "../../flowapi/hubble/types.ts";

const BUILD = fileURLToPath(new URL("./build.sh", import.meta.url));

let cached: string | undefined;

/** The hubble binary: builds it on first use (minutes), afterwards the cache answers in a fraction of a second. */
export function hubbleBinary(): string {
  if (cached !== undefined) return cached;
  const out = execFileSync(BUILD, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
  cached = path.join(out, "hubble");
  return cached;
}

export interface HubbleRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `hubble ARGS…` to the end; a non-zero exit is an answer (its code and output), not an exception. */
export function runHubble(args: readonly string[], timeoutMs = 30_000): Promise<HubbleRun> {
  return promisify(execFile)(hubbleBinary(), [...args], { timeout: timeoutMs }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

/** The GetFlowsResponses of `hubble observe -o json` output (one per line). */
export function jsonResponses(stdout: string): GetFlowsResponse[] {
  return stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as GetFlowsResponse);
}

/** The flows of `hubble observe -o json` output (one GetFlowsResponse per line; other responses left out). */
export function jsonFlows(stdout: string): HubbleFlow[] {
  return jsonResponses(stdout).flatMap((r) => (r.flow !== undefined ? [r.flow] : []));
}

/** The LostEvents of `hubble observe -o json` output. */
export function jsonLostEvents(stdout: string): HubbleLostEvent[] {
  return jsonResponses(stdout).flatMap((r) => (r.lost_events !== undefined ? [r.lost_events] : []));
}

/** `hubble observe --server SERVER ARGS… -o json`'s flows; a non-zero exit is an error with hubble's stderr. */
export async function observeFlows(server: string, args: readonly string[]): Promise<HubbleFlow[]> {
  const r = await runHubble(["observe", "--server", server, ...args, "-o", "json"]);
  if (r.code !== 0) throw new Error(`hubble observe ${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
  return jsonFlows(r.stdout);
}
