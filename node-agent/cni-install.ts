// Installs the CNI plugin on the node at agent start, as Cilium does: a launcher in the CNI bin dir and the network's conflist in the CNI conf dir.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { KOFFI_FILE_PREFIX } from "./cni/sea-koffi.ts";
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
  /** The node's IPv6 pod CIDR on a dual-stack node: every pod gets an address of each. */
  readonly podCIDRv6?: string;
  readonly agentSocket: string;
  readonly mtu?: number;
  readonly logLevel?: string;
}

/** The conflist (CNI spec 1.0), its one plugin validated by the plugin's own parser so the agent never installs a config the plugin refuses. */
export function cniConflist(o: CniConflistOptions): Record<string, unknown> {
  const plugin = {
    type: PLUGIN_TYPE,
    podCIDR: o.podCIDR,
    ...(o.podCIDRv6 ? { podCIDRv6: o.podCIDRv6 } : {}),
    agentSocket: o.agentSocket,
    mtu: o.mtu ?? DEFAULT_POD_MTU,
    ...(o.logLevel ? { logLevel: o.logLevel } : {}),
  };
  parseNetConf({ cniVersion: "1.0.0", name: NETWORK_NAME, ...plugin }); // throws a CniError naming the field
  return { cniVersion: "1.0.0", name: NETWORK_NAME, plugins: [plugin] };
}

/** Where an installation's built plugin is: the single executable `make build` writes (scripts/bundle.ts). */
const CNI_EXECUTABLE = "dist/cni/membrane-cni";
/** What earlier versions installed beside the launcher (the bundle with its own Node and koffi): removed on install. */
const OLD_BUNDLE_DIR = `${PLUGIN_TYPE}.d`;

/**
 * Writes `binDir/membrane-cni` (mode 0755); returns its path. An installation with its sources (a checkout)
 * installs a launcher of them; one without (the image, whose files the node's runtime cannot see) installs its
 * built plugin, a single executable with Node inside, so the node needs nothing of the agent's installation.
 */
export function installCniPlugin(binDir: string, repoRoot = REPO_ROOT, nodeBinary = process.execPath): string {
  const file = path.join(binDir, PLUGIN_TYPE);
  if (fs.existsSync(path.join(repoRoot, "node-agent/cni/main.ts"))) {
    writeAtomic(file, cniLauncher(repoRoot, nodeBinary), 0o755);
    return file;
  }
  const built = path.join(repoRoot, CNI_EXECUTABLE);
  if (!fs.existsSync(built)) throw new Error(`${built} missing: an installation without sources needs the built plugin (make build)`);
  if (!sameContent(built, file)) {
    fs.mkdirSync(binDir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.copyFileSync(built, tmp);
    fs.chmodSync(tmp, 0o755);
    fs.renameSync(tmp, file); // a runtime never runs a half-copied plugin; one running keeps the old file open
    // The native module an older executable wrote beside itself (node-agent/cni/sea-koffi.ts) is written anew on first use.
    for (const f of fs.readdirSync(binDir)) if (f.startsWith(KOFFI_FILE_PREFIX)) fs.rmSync(path.join(binDir, f), { force: true });
  }
  fs.rmSync(path.join(binDir, OLD_BUNDLE_DIR), { recursive: true, force: true });
  return file;
}

/** Whether two files have the same bytes (size first; the hash of ~120 MB takes a fraction of a second, once per agent start). */
function sameContent(a: string, b: string): boolean {
  let sb: fs.Stats;
  try {
    sb = fs.statSync(b);
  } catch {
    return false;
  }
  if (fs.statSync(a).size !== sb.size) return false;
  const digest = (f: string): string => {
    const h = createHash("sha256");
    const fd = fs.openSync(f, "r");
    try {
      const buf = Buffer.allocUnsafe(1 << 20);
      for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
    } finally {
      fs.closeSync(fd);
    }
    return h.digest("hex");
  };
  return digest(a) === digest(b);
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
