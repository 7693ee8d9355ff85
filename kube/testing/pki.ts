// Test helper: a throwaway CA with an operator serving certificate (127.0.0.1) and one client certificate per node (CN = node name), in a temp dir.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { writeAgentPki } from "../pki.ts";

export interface TestPki {
  readonly dir: string;
  file(name: string): string;
  read(name: string): Buffer;
  remove(): void;
}

export async function makePki(clients: readonly string[]): Promise<TestPki> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-pki-"));
  await writeAgentPki(dir, clients, { caName: "test-ca", days: 1 });
  return {
    dir,
    file: (name) => path.join(dir, name),
    read: (name) => fs.readFileSync(path.join(dir, name)),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
