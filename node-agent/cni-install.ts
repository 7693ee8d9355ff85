// Installs the CNI plugin on the node at agent start, as Cilium does: a launcher in the CNI bin dir and the network's conflist in the CNI conf dir.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PLUGIN_TYPE, parseNetConf } from "./cni/spec.ts";
import { podMtu } from "./mtu.ts";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The conflist's file name: sorts before most others, so a runtime picking the first file picks it. */
export const CONFLIST_NAME = "05-membrane.conflist";
export const NETWORK_NAME = "membrane";
/** A 1500-byte underlay less the VXLAN encapsulation (50 bytes); with WireGuard the agent passes `podMtu("wireguard")`. */
export const DEFAULT_POD_MTU = podMtu("disabled");

function writeAtomic(file: string, text: string, mode: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode });
  fs.chmodSync(tmp, mode); // the umask may have narrowed it
  fs.renameSync(tmp, file); // a runtime never sees a half-written file
}

/** The launcher: runs this installation's plugin (node-agent/cni/main.ts) with this node binary and tsx. */
export function cniLauncher(repoRoot = REPO_ROOT, nodeBinary = process.execPath): string {
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    "#!/bin/sh",
    "# membrane-cni, installed by the membrane agent: runs the plugin of the agent's installation.",
    `exec ${q(nodeBinary)} --import ${q(path.join(repoRoot, "node_modules/tsx/dist/esm/index.mjs"))} ${q(path.join(repoRoot, "node-agent/cni/main.ts"))} "$@"`,
    "",
  ].join("\n");
}

export interface CniConflistOptions {
  readonly podCIDR: string;
  readonly agentSocket: string;
  readonly mtu?: number;
  readonly logLevel?: string;
}

/** The conflist (CNI spec 1.0), its one plugin validated by the plugin's own parser so the agent never installs a config the plugin refuses. */
export function cniConflist(o: CniConflistOptions): Record<string, unknown> {
  const plugin = { type: PLUGIN_TYPE, podCIDR: o.podCIDR, agentSocket: o.agentSocket, mtu: o.mtu ?? DEFAULT_POD_MTU, ...(o.logLevel ? { logLevel: o.logLevel } : {}) };
  parseNetConf({ cniVersion: "1.0.0", name: NETWORK_NAME, ...plugin }); // throws a CniError naming the field
  return { cniVersion: "1.0.0", name: NETWORK_NAME, plugins: [plugin] };
}

/** Writes `binDir/membrane-cni` (mode 0755); returns its path. */
export function installCniPlugin(binDir: string): string {
  const file = path.join(binDir, PLUGIN_TYPE);
  writeAtomic(file, cniLauncher(), 0o755);
  return file;
}

/** Writes `confDir/05-membrane.conflist` when its content differs; returns its path and whether it changed. */
export function writeCniConflist(confDir: string, o: CniConflistOptions): { file: string; changed: boolean } {
  const file = path.join(confDir, CONFLIST_NAME);
  const text = JSON.stringify(cniConflist(o), null, 2) + "\n";
  const current = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : undefined;
  if (current === text) return { file, changed: false };
  writeAtomic(file, text, 0o644);
  return { file, changed: true };
}
