// Test helper: a throwaway kubeconfig pointing at a plain-HTTP fake API server on loopback.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/** `insecure-skip-tls-verify` because @kubernetes/client-node refuses an http:// server without it. */
export function writeKubeconfig(server: string): { path: string; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-kubeconfig-"));
  const file = path.join(dir, "kubeconfig");
  fs.writeFileSync(
    file,
    `apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "${server}", insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n`,
  );
  return { path: file, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
