// `membrane version`: the version of this build (package.json's), and whether it runs bundled or from the TypeScript sources.
import { readFileSync } from "node:fs";

/** The version in package.json, read at the repository root (scripts/bundle.ts keeps this path true in the bundle). */
export function membraneVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: unknown };
  if (typeof pkg.version !== "string") throw new Error("package.json: version is not a string");
  return pkg.version;
}

export async function run(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write("usage: membrane version\n\nPrints the version of this build.\n");
    return 0;
  }
  if (args.length > 0) {
    process.stderr.write(`membrane version: unexpected argument "${args[0]}"\n`);
    return 2;
  }
  process.stdout.write(`membrane ${membraneVersion()}\n`);
  return 0;
}
