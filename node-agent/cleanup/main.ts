// `membrane node cleanup`, run on a node: removes what Membrane left there after `helm uninstall` (the CNI conflist, plugin and IPAM state the uninstall keeps on purpose) and whatever an agent killed mid-uninstall left (pins, attached programs, the overlay and WireGuard devices, processes, files), found by the agent's own records and names; refuses while an agent runs or a pod still uses Membrane's network.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pino, type Logger } from "pino";
import { parseFlags } from "../../kube/flags.ts";
import { BPFFS_ROOT } from "../bpf/loader.ts";
import { CONFLIST_NAME } from "../cni-install.ts";
import { KOFFI_FILE_PREFIX } from "../cni/sea-koffi.ts";
import { hostIfname } from "../cni/podnet.ts";
import { PLUGIN_TYPE } from "../cni/spec.ts";
import { OVERLAY_VXLAN_PORT } from "../encryption/mode.ts";
import { RULE_PREF, WIREGUARD_TABLE, wireguardIfname } from "../encryption/wireguard.ts";
import { removeWireguard } from "../encryption/wireguard-removal.ts";
import { HOST_IFNAME, listHostLinks, readWiredPods } from "../endpoint-links.ts";
import { type LinkDetails, OVERLAY_DEVICE, overlayRemoval } from "../overlay-device.ts";
import { recordedPid, stopProcess } from "../recorded-process.ts";
import { removePins } from "../uninstall.ts";
import { describeStep, planNodeCleanup, type CleanupStep, type NodeInventory, type RecordedProcess, type WiredLink } from "./plan.ts";

const USAGE = `usage: membrane node cleanup [--dry-run] [--cni-bin-dir DIR] [--cni-conf-dir DIR] [--cni-state-dir DIR] [--state-dir DIR]
                             [--cni-socket PATH] [--hubble-socket PATH] [--l7-proxy-socket-dir DIR] [--netns NAME]
                             [--tunnel-device NAME] [--node-name NAME]

Run on a node after helm uninstall (Cilium's users run a cleanup for the same): removes the CNI conflist, the plugin
and its IPAM state, which the uninstall keeps while pods still need them for their teardown, and what an agent
killed during the uninstall left (programs attached by the links pinned under ${BPFFS_ROOT}, the pins, the overlay
device named by --tunnel-device (default ${OVERLAY_DEVICE}, the chart's) when an agent made it (its mark), the WireGuard device, rule and table, the runtime
enforcer and L7 proxy it recorded, its state and sockets). Refuses, naming them, while an agent answers on
--cni-socket or a pod still has a Membrane-wired interface (mbr…). Defaults are the chart's paths.

  --dry-run     print what would be removed, remove nothing
`;

interface CleanupFlags {
  readonly dryRun: boolean;
  readonly cniBinDir: string;
  readonly cniConfDir: string;
  readonly cniStateDir: string;
  readonly stateDir: string;
  readonly cniSocket: string;
  readonly hubbleSocket: string;
  readonly l7ProxySocketDir: string;
  readonly netns?: string;
  readonly tunnelDevice: string;
  readonly nodeName: string;
}

const PATH_FLAGS = ["cni-bin-dir", "cni-conf-dir", "cni-state-dir", "state-dir", "cni-socket", "hubble-socket", "l7-proxy-socket-dir"] as const;

export function parseCleanupFlags(args: string[]): { ok: true; flags: CleanupFlags } | { ok: false; error: string } {
  const parsed = parseFlags({
    args,
    options: { "dry-run": { type: "boolean" }, netns: { type: "string" }, "tunnel-device": { type: "string" }, "node-name": { type: "string" }, ...Object.fromEntries(PATH_FLAGS.map((f) => [f, { type: "string" as const }])) },
  });
  if (!parsed.ok) return parsed;
  const v = parsed.parsed.values as Record<string, string | boolean | undefined>;
  for (const f of PATH_FLAGS) if (v[f] !== undefined && !String(v[f]).startsWith("/")) return { ok: false, error: `--${f}: must be an absolute path, got ${JSON.stringify(v[f])}` };
  const name = (f: string): string | undefined => v[f] as string | undefined;
  for (const f of ["netns", "tunnel-device"]) if (name(f) !== undefined && !/^[A-Za-z0-9._@-]{1,64}$/.test(name(f)!)) return { ok: false, error: `--${f}: must be a name, got ${JSON.stringify(name(f))}` };
  return {
    ok: true,
    flags: {
      dryRun: v["dry-run"] === true,
      cniBinDir: name("cni-bin-dir") ?? "/opt/cni/bin",
      cniConfDir: name("cni-conf-dir") ?? "/etc/cni/net.d",
      cniStateDir: name("cni-state-dir") ?? "/var/lib/membrane/cni/membrane",
      stateDir: name("state-dir") ?? "/var/run/membrane/state",
      cniSocket: name("cni-socket") ?? "/var/run/membrane/agent.sock",
      hubbleSocket: name("hubble-socket") ?? "/var/run/membrane/hubble.sock",
      l7ProxySocketDir: name("l7-proxy-socket-dir") ?? "/var/run/membrane/l7proxy",
      ...(name("netns") !== undefined ? { netns: name("netns")! } : {}),
      tunnelDevice: name("tunnel-device") ?? OVERLAY_DEVICE,
      nodeName: name("node-name") ?? os.hostname(),
    },
  };
}

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "help" || sub === "--help" || sub === "-h") {
    process.stdout.write(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== "cleanup") {
    process.stderr.write(`membrane node: unknown command ${JSON.stringify(sub)}\n${USAGE}`);
    return 2;
  }
  const parsed = parseCleanupFlags(rest);
  if (!parsed.ok) {
    process.stderr.write(`membrane node cleanup: ${parsed.error}\n${USAGE}`);
    return 2;
  }
  const f = parsed.flags;
  const log = pino({ base: { component: "node-cleanup", node: f.nodeName } }, pino.destination(2));
  const plan = planNodeCleanup(await readInventory(f));
  if (!plan.ok) {
    process.stderr.write(`membrane node cleanup: refused, Membrane is still in use on this node:\n${plan.inUse.map((u) => `  ${u}\n`).join("")}`);
    return 1;
  }
  for (const k of plan.kept) process.stdout.write(`kept: ${k}\n`);
  if (plan.steps.length === 0) {
    process.stdout.write("nothing of Membrane's is left on this node\n");
    return 0;
  }
  let failed = 0;
  for (const step of plan.steps) {
    process.stdout.write(`${f.dryRun ? "would " : ""}${describeStep(step)}\n`);
    if (f.dryRun) continue;
    try {
      await execute(step, f, log);
    } catch (err) {
      failed++;
      log.error({ step: step.kind, error: (err as Error).message }, "cleanup step failed");
      process.stderr.write(`  failed: ${(err as Error).message}\n`);
    }
  }
  // A plugin invocation already running when its executable went may write koffi's native module after the list above
  // (node-agent/cni/sea-koffi.ts): none can start now, so one more look removes what such a late one left.
  if (!f.dryRun && !fs.existsSync(path.join(f.cniBinDir, PLUGIN_TYPE))) {
    for (const n of list(f.cniBinDir).filter((x) => x.startsWith(KOFFI_FILE_PREFIX))) {
      fs.rmSync(path.join(f.cniBinDir, n), { force: true });
      process.stdout.write(`remove CNI file ${path.join(f.cniBinDir, n)} (written by a plugin invocation during the cleanup)\n`);
    }
  }
  log.flush();
  return failed > 0 ? 1 : 0;
}

/** What Membrane left on the node: read, nothing changed. */
export async function readInventory(f: CleanupFlags): Promise<NodeInventory> {
  const agentSocket = (await answers(f.cniSocket)) ? f.cniSocket : undefined;
  const podOf = podNames(f);
  const wiredLinks: WiredLink[] = listHostLinks(f.netns)
    .filter((l) => HOST_IFNAME.test(l.ifname))
    .map((l) => ({ ifname: l.ifname, routes: l.routes ?? [], ...(podOf.has(l.ifname) ? { pod: podOf.get(l.ifname)! } : {}) }));
  const processes: RecordedProcess[] = [];
  const runtime = recordedPid(path.join(f.stateDir, "runtime.pid"), path.join(f.stateDir, "runtime-policies.yaml"));
  if (runtime !== undefined) processes.push({ what: "the runtime enforcer", pid: runtime });
  const l7 = recordedPid(path.join(f.stateDir, "l7proxy.pid"), "l7proxy");
  if (l7 !== undefined) processes.push({ what: "the L7 proxy", pid: l7 });
  const wgIfname = wireguardIfname(f.nodeName);
  const wgRule = (JSON.parse(ipOr(f.netns, ["-j", "rule", "list", "pref", String(RULE_PREF)], "[]") || "[]") as { table?: string }[]).some((r) => r.table === String(WIREGUARD_TABLE));
  const wireguard = linkDetails(f.netns, wgIfname) !== undefined || wgRule || fs.existsSync(path.join(f.stateDir, "wireguard-go.pid"));
  let overlayDevice: NodeInventory["overlayDevice"];
  if (f.tunnelDevice) {
    const link = linkDetails(f.netns, f.tunnelDevice);
    if (link) {
      // Only a device an agent made (its mark), as at uninstall: one the node brought and an agent adopted stays.
      const removal = overlayRemoval(f.tunnelDevice, [link]);
      overlayDevice = { name: f.tunnelDevice, membranes: removal.remove, ...(removal.remove ? {} : { problem: removal.why }) };
    }
  }
  const pinDirs = list(BPFFS_ROOT).map((d) => path.join(BPFFS_ROOT, d));
  const conflist = path.join(f.cniConfDir, CONFLIST_NAME);
  const cniFiles = [conflist, path.join(f.cniBinDir, PLUGIN_TYPE), path.join(f.cniBinDir, `${PLUGIN_TYPE}.d`), ...list(f.cniBinDir).filter((n) => n.startsWith(KOFFI_FILE_PREFIX)).map((n) => path.join(f.cniBinDir, n))].filter((p) => fs.existsSync(p));
  // The sockets' directory is Membrane's own run dir (the chart's /var/run/membrane hostPath, which outlives the agent's pod) only by that name.
  const runDir = path.dirname(f.cniSocket);
  const dirs = [f.cniStateDir, f.stateDir, f.l7ProxySocketDir, ...(path.basename(runDir) === "membrane" ? [runDir] : [])].filter((d) => fs.existsSync(d));
  const files = [f.cniSocket, f.hubbleSocket].filter((p) => fs.existsSync(p));
  return { ...(agentSocket ? { agentSocket } : {}), wiredLinks, processes, wireguard, ...(overlayDevice ? { overlayDevice } : {}), pinDirs, cniFiles, dirs, files };
}

async function execute(step: CleanupStep, f: CleanupFlags, log: Logger): Promise<void> {
  switch (step.kind) {
    case "remove-cni-file":
    case "remove-file":
      fs.rmSync(step.path, { recursive: true, force: true });
      removeIfEmpty(path.dirname(step.path), step.kind === "remove-file");
      return;
    case "stop-process":
      return stopProcess(step.pid, 10_000);
    case "remove-wireguard":
      await removeWireguard({ nodeName: f.nodeName, ...(f.netns ? { netns: f.netns } : {}), stateDir: f.stateDir, vxlanPort: OVERLAY_VXLAN_PORT, log });
      return;
    case "delete-overlay-device":
      execFileSync("ip", [...(f.netns ? ["-n", f.netns] : []), "link", "del", step.name], { stdio: ["ignore", "ignore", "pipe"] });
      return;
    case "remove-pins":
      removePins(step.dir, log);
      return;
    case "remove-dir":
      fs.rmSync(step.path, { recursive: true, force: true });
      removeIfEmpty(path.dirname(step.path), true);
  }
}

/** Whether something accepts connections on the unix socket (a stale socket file refuses). */
function answers(socket: string): Promise<boolean> {
  if (!fs.existsSync(socket)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const s = net.connect(socket);
    const done = (v: boolean): void => {
      s.destroy();
      resolve(v);
    };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    s.setTimeout(1_000, () => done(false));
  });
}

/** Host-side veth name → pod, from the agent's endpoint records (namespace/name) or else the IPAM's (container id). */
function podNames(f: CleanupFlags): Map<string, string> {
  const names = new Map<string, string>();
  try {
    for (const p of readWiredPods(f.cniStateDir) ?? []) names.set(hostIfname(p.containerId), `container ${p.containerId.slice(0, 12)}`);
  } catch {
    // an unreadable IPAM state names nothing
  }
  try {
    const records = JSON.parse(fs.readFileSync(path.join(f.stateDir, "endpoints.json"), "utf8")) as { hostIfname?: string; namespace?: string; pod?: string }[];
    for (const r of records) if (r.hostIfname && r.namespace && r.pod) names.set(r.hostIfname, `${r.namespace}/${r.pod}`);
  } catch {
    // no records (the uninstall removed them, or none were kept)
  }
  return names;
}

function linkDetails(netns: string | undefined, name: string): LinkDetails | undefined {
  const out = ipOr(netns, ["-d", "-j", "link", "show", "dev", name], "");
  return out ? (JSON.parse(out) as LinkDetails[])[0] : undefined;
}

function ipOr(netns: string | undefined, args: string[], fallback: string): string {
  try {
    return execFileSync("ip", [...(netns ? ["-n", netns] : []), ...args], { stdio: ["ignore", "pipe", "ignore"] }).toString();
  } catch {
    return fallback;
  }
}

function list(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** The socket's or state's parent goes too when that leaves it empty (/var/run/membrane); CNI dirs are the node's and stay. */
function removeIfEmpty(dir: string, ours: boolean): void {
  if (!ours) return;
  try {
    fs.rmdirSync(dir);
  } catch {
    // not empty, or already gone
  }
}
