// The userspace WireGuard (`wireguard-go`) built from its pinned Go module by build.sh (cached by version), for `membrane dev` agents and tests.
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const BUILD = fileURLToPath(new URL("./build.sh", import.meta.url));

let cached: string | undefined;

/** The wireguard-go binary: builds it on first use (seconds), afterwards the cache answers at once. */
export function wireguardGoBinary(): string {
  cached ??= execFileSync(BUILD, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
  return cached;
}
