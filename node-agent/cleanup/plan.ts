// What `membrane node cleanup` removes from a node after Membrane's uninstall, or why it refuses: pure, from an inventory of what the node holds.

/** A pod's host-side veth the CNI plugin made (`mbr…`): the pod still runs on Membrane's network. */
export interface WiredLink {
  readonly ifname: string;
  /** The pod addresses routed over it. */
  readonly routes: readonly string[];
  /** The pod it belongs to, as "namespace/name" or "container <id>", when the agent's or the IPAM's records say. */
  readonly pod?: string;
}

/** A process Membrane started that outlives agents by design, found by the pid file its agent wrote. */
export interface RecordedProcess {
  readonly what: string;
  readonly pid: number;
}

/** Everything on the node that is Membrane's, as read by node-agent/cleanup/inventory.ts. */
export interface NodeInventory {
  /** The agent's endpoint socket, when something accepts connections on it: an agent runs here. */
  readonly agentSocket?: string;
  readonly wiredLinks: readonly WiredLink[];
  readonly processes: readonly RecordedProcess[];
  /** The WireGuard device, its rule or routing table of this node (encryption.ts's names), when any is there. */
  readonly wireguard: boolean;
  /** The overlay device named by --tunnel-device, when it exists: `membranes` says whether an agent made it (node-agent/overlay-device.ts overlayRemoval: its mark). */
  readonly overlayDevice?: { readonly name: string; readonly membranes: boolean; readonly problem?: string };
  /** Pin directories under /sys/fs/bpf/membrane: each holds maps and the links that name their interfaces. */
  readonly pinDirs: readonly string[];
  /** The CNI conflist, the plugin and the files the plugin writes beside it, when present. */
  readonly cniFiles: readonly string[];
  /** Directories only Membrane writes (IPAM state, agent state, sockets), when present. */
  readonly dirs: readonly string[];
  /** Single files of Membrane's elsewhere (sockets), when present. */
  readonly files: readonly string[];
}

export type CleanupStep =
  | { readonly kind: "remove-cni-file"; readonly path: string }
  | { readonly kind: "stop-process"; readonly what: string; readonly pid: number }
  | { readonly kind: "remove-wireguard" }
  | { readonly kind: "delete-overlay-device"; readonly name: string }
  | { readonly kind: "remove-pins"; readonly dir: string }
  | { readonly kind: "remove-dir"; readonly path: string }
  | { readonly kind: "remove-file"; readonly path: string };

export type CleanupPlan =
  | { readonly ok: true; readonly steps: readonly CleanupStep[]; readonly kept: readonly string[] }
  | { readonly ok: false; readonly inUse: readonly string[] };

/**
 * The cleanup's steps, or what is still in use. It refuses while an agent answers (Membrane is installed: the
 * uninstall is the agent's to do) and while any pod still has a Membrane-wired interface (removing the conflist and
 * plugin would leave it undeletable: the runtime tears a sandbox down through them). Otherwise the conflist goes
 * first (no new pod is wired while the rest goes), then the processes that hold programs, the devices, the pins (each
 * pinned link detached from the interface it names), and the files. An overlay device of that name that is not
 * Membrane's kind is kept and said so.
 */
export function planNodeCleanup(inv: NodeInventory): CleanupPlan {
  const inUse: string[] = [];
  if (inv.agentSocket !== undefined) inUse.push(`an agent answers on ${inv.agentSocket}: Membrane is still installed on this node (helm uninstall first; the agent removes its own state when its DaemonSet is gone)`);
  for (const l of inv.wiredLinks) inUse.push(`pod interface ${l.ifname}${describeLink(l)}: delete or drain the node's pods first`);
  if (inUse.length > 0) return { ok: false, inUse };
  const steps: CleanupStep[] = [];
  const kept: string[] = [];
  const conflists = inv.cniFiles.filter((f) => f.endsWith(".conflist"));
  for (const f of [...conflists, ...inv.cniFiles.filter((f) => !conflists.includes(f))]) steps.push({ kind: "remove-cni-file", path: f });
  for (const p of inv.processes) steps.push({ kind: "stop-process", what: p.what, pid: p.pid });
  if (inv.wireguard) steps.push({ kind: "remove-wireguard" });
  if (inv.overlayDevice) {
    if (inv.overlayDevice.membranes) steps.push({ kind: "delete-overlay-device", name: inv.overlayDevice.name });
    else kept.push(`link ${inv.overlayDevice.name}: ${inv.overlayDevice.problem ?? "not Membrane's overlay device"}`);
  }
  for (const d of inv.pinDirs) steps.push({ kind: "remove-pins", dir: d });
  for (const d of inv.dirs) steps.push({ kind: "remove-dir", path: d });
  for (const f of inv.files) steps.push({ kind: "remove-file", path: f });
  return { ok: true, steps, kept };
}

function describeLink(l: WiredLink): string {
  const parts = [...l.routes, ...(l.pod ? [l.pod] : [])];
  return parts.length > 0 ? ` (${parts.join(", ")})` : "";
}

/** One line per step, as the command prints it. */
export function describeStep(s: CleanupStep): string {
  switch (s.kind) {
    case "remove-cni-file":
      return `remove CNI file ${s.path}`;
    case "stop-process":
      return `stop ${s.what} (pid ${s.pid})`;
    case "remove-wireguard":
      return "remove the WireGuard device, its rule and routing table";
    case "delete-overlay-device":
      return `delete overlay device ${s.name}`;
    case "remove-pins":
      return `detach the programs pinned in ${s.dir} and remove its pins`;
    case "remove-dir":
      return `remove ${s.path}`;
    case "remove-file":
      return `remove ${s.path}`;
  }
}
