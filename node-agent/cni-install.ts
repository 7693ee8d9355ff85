// Installs the CNI plugin on the node at agent start, as Cilium does: a launcher in the CNI bin dir and the network's conflist in the CNI conf dir.
import { createHash } from "node:crypto";
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

/** Where an installation's built plugin is (scripts/bundle.ts), and what it needs beside it (koffi, loaded by path). */
const CNI_BUNDLE = "dist/cni/membrane-cni.mjs";
const CNI_BUNDLE_PACKAGES = ["koffi", "@koromix"];
/** The bundled plugin's directories, one per version, beside the launcher in the CNI bin dir. */
const BUNDLE_DIR = `${PLUGIN_TYPE}.d`;

/**
 * Writes `binDir/membrane-cni` (mode 0755); returns its path. An installation with its sources (a checkout)
 * installs a launcher of them; one without (the image, whose files the node's runtime cannot see) installs its
 * built plugin with its own Node and koffi in `binDir/membrane-cni.d/<hash>/` and a launcher of that.
 */
export function installCniPlugin(binDir: string, repoRoot = REPO_ROOT, nodeBinary = process.execPath): string {
  const file = path.join(binDir, PLUGIN_TYPE);
  if (fs.existsSync(path.join(repoRoot, "node-agent/cni/main.ts"))) {
    writeAtomic(file, cniLauncher(repoRoot, nodeBinary), 0o755);
    return file;
  }
  const version = installCniBundle(binDir, repoRoot, nodeBinary);
  // Relative to the launcher: the agent writes through its mount of the dir, the runtime runs it by the node's path.
  const launcher = ["#!/bin/sh", "# membrane-cni, installed by the membrane agent: its bundled plugin with its own Node.", `d="$(dirname "$0")/${BUNDLE_DIR}/${version}"`, 'exec "$d/node" "$d/membrane-cni.mjs" "$@"', ""].join("\n");
  writeAtomic(file, launcher, 0o755);
  // Older versions go once the launcher names the new one (a plugin already running keeps its open files).
  for (const old of fs.readdirSync(path.join(binDir, BUNDLE_DIR))) {
    if (old !== version) fs.rmSync(path.join(binDir, BUNDLE_DIR, old), { recursive: true, force: true });
  }
  return file;
}

/** Copies the built plugin, Node and koffi into `binDir/membrane-cni.d/<hash of them>` unless there; returns the hash. */
function installCniBundle(binDir: string, repoRoot: string, nodeBinary: string): string {
  const bundle = path.join(repoRoot, CNI_BUNDLE);
  if (!fs.existsSync(bundle)) throw new Error(`${bundle} missing: an installation without sources needs the built plugin (make build)`);
  const koffi = JSON.parse(fs.readFileSync(path.join(repoRoot, "node_modules/koffi/package.json"), "utf8")) as { version: string };
  const node = fs.statSync(nodeBinary);
  // Node by its version and size (hashing 100+ MB at every agent start is not worth it).
  const version = createHash("sha256").update(fs.readFileSync(bundle)).update(`${process.version} ${node.size} koffi ${koffi.version}`).digest("hex").slice(0, 16);
  const dir = path.join(binDir, BUNDLE_DIR, version);
  if (fs.existsSync(dir)) return version;
  const tmp = `${dir}.${process.pid}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.join(tmp, "node_modules"), { recursive: true });
  fs.copyFileSync(nodeBinary, path.join(tmp, "node"));
  fs.chmodSync(path.join(tmp, "node"), 0o755);
  fs.copyFileSync(bundle, path.join(tmp, "membrane-cni.mjs"));
  for (const pkg of CNI_BUNDLE_PACKAGES) fs.cpSync(path.join(repoRoot, "node_modules", pkg), path.join(tmp, "node_modules", pkg), { recursive: true, dereference: true });
  fs.renameSync(tmp, dir); // a runtime never runs a half-copied plugin
  return version;
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
