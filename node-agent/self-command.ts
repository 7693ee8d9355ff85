// How the agent starts another `membrane` command as a process of its own (the L7 proxy, the runtime enforcer): the arguments before the command's name, for this installation.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Node's arguments that run `membrane`: a checkout runs its TypeScript sources through tsx (as bin/membrane
 * does); an installation without sources (the image) runs its bundle, dist/membrane.mjs (scripts/bundle.ts).
 */
export function membraneCommand(root = ROOT): string[] {
  const cli = path.join(root, "cli/main.ts");
  if (fs.existsSync(cli)) return ["--import", path.join(root, "node_modules/tsx/dist/esm/index.mjs"), cli];
  return [path.join(root, "dist/membrane.mjs")];
}
