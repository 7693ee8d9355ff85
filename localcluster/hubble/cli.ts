// The real `hubble` CLI, built from the pinned Cilium module by build.sh (cached by version), for tests and `membrane dev`.
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const BUILD = fileURLToPath(new URL("./build.sh", import.meta.url));

let cached: string | undefined;

/** The hubble binary: builds it on first use (minutes), afterwards the cache answers in a fraction of a second. */
export function hubbleBinary(): string {
  if (cached !== undefined) return cached;
  const out = execFileSync(BUILD, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
  cached = path.join(out, "hubble");
  return cached;
}
