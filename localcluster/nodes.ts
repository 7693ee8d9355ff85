// The local cluster's nodes: one network namespace each on a shared underlay bridge, pod routes, and a Node object (the VXLAN overlay device is the agents' own, as under the chart).
import { execFile, spawn } from "node:child_process";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pino } from "pino";
import { formatIP, formatPrefix, parsePrefix } from "../core/cidr.ts";
import { podRange } from "../node-agent/cni/ipam.ts";
import { KubeClient, isNotFound, resourcePath } from "../kube/kube.ts";
import { NODES } from "../kube/resources.ts";
import { isProcessAlive } from "./cluster.ts";

const log = pino({ name: "nodes", level: process.env.MEMBRANE_LOG_LEVEL ?? "info" }, pino.destination({ fd: 2, sync: true }));

/** The underlay MTU is 1500; VXLAN over IPv4 costs 50 bytes. */
export const POD_MTU = 1450;

export interface LocalNode {
  /** Node object name and network namespace name: `<prefix>node-<i>`. */
  name: string;
  netns: string;
  /** The node's address on the underlay (its InternalIP). */
  internalIP: string;
  podCIDR: string;
  /** Where this node's agent serves the CNI endpoint socket, once an agent runs (see `agent` option). */
  agentSocket?: string;
  /** The agent process started for this node, if any. */
  agentPid?: number;
}

/** Everything createNodes made, so destroyNodes (or `dev down` after a crash) removes exactly that. */
export interface NodesState {
  version: 1;
  prefix: string;
  underlayNetns: string;
  underlayCIDR: string;
  /** Every network namespace created (or about to be), in creation order. */
  netns: string[];
  nodes: LocalNode[];
  /** Node objects created in the API server. */
  nodeObjects: string[];
  /** The dir holding per-node CNI state (IPAM) and this file. */
  dir: string;
  /** The MTU pods get (the CNI config's `mtu`); POD_MTU when absent. Lower with WireGuard (node-agent/mtu.ts). */
  podMtu?: number;
}

export interface AgentHook {
  /** The endpoint socket path of the node's agent; passed to the CNI plugin as `agentSocket`. */
  socket(node: LocalNode): string;
  /** The agent's command line, run inside the node's netns; omitted: no process is started (an agent is run elsewhere). */
  command?(node: LocalNode): string[];
}

export interface CreateNodesOptions {
  /** Prepended to every netns name (`""` for `membrane dev`: `node-1`…; tests use e.g. `t1234-`). */
  prefix: string;
  count: number;
  /** The shared underlay; node i gets the (i+1)th address. Default 172.30.0.0/24. */
  underlayCIDR?: string;
  /** One pod CIDR per node; default 10.244.<i>.0/24. */
  podCIDRs?: string[];
  /** The cluster's dir: the state file (`nodes.json`) and CNI state go here. */
  dir: string;
  /** The API server's admin kubeconfig: Node objects are created there. */
  kubeconfig: string;
  /** The node agent, once it exists: its socket and (optionally) its process. */
  agent?: AgentHook;
  /** The MTU pods get; POD_MTU when absent. */
  podMtu?: number;
}

/** Where the state of the nodes of a cluster dir is recorded. */
export function nodesStateFile(dir: string): string {
  return join(dir, "nodes.json");
}

/** The CNI plugin's state dir for a node (IPAM allocations). */
export function cniStateDir(dir: string, node: string): string {
  return join(dir, "cni", node);
}

/** The network config the CNI plugin gets on stdin for this node. */
export function cniConfig(state: NodesState, node: LocalNode): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: "membrane",
    type: "membrane-cni",
    podCIDR: node.podCIDR,
    mtu: state.podMtu ?? POD_MTU,
    stateDir: cniStateDir(state.dir, node.name),
    ...(node.agentSocket ? { agentSocket: node.agentSocket } : {}),
  };
}

export type PlanResult = { ok: true; nodes: LocalNode[]; underlayNetns: string; underlayCIDR: string } | { ok: false; errors: string[] };

/** Checks the options and computes names and addresses; pure. */
export function planNodes(opts: Pick<CreateNodesOptions, "prefix" | "count" | "underlayCIDR" | "podCIDRs">): PlanResult {
  const errors: string[] = [];
  const underlayCIDR = opts.underlayCIDR ?? "172.30.0.0/24";
  if (!Number.isInteger(opts.count) || opts.count < 1 || opts.count > 200) errors.push(`count: must be an integer from 1 to 200, got ${opts.count}`);
  if (!/^[a-z0-9-]*$/.test(opts.prefix)) errors.push(`prefix: only lowercase letters, digits and "-" are allowed, got "${opts.prefix}"`);
  const underlay = parsePrefix(underlayCIDR);
  if (!underlay || underlay.family !== 4) errors.push(`underlayCIDR: "${underlayCIDR}" is not an IPv4 CIDR`);
  else if (Number.isInteger(opts.count) && 2 ** (32 - underlay.bits) - 2 < opts.count) errors.push(`underlayCIDR: "${underlayCIDR}" has no room for ${opts.count} nodes`);
  const podCIDRs = opts.podCIDRs ?? Array.from({ length: Math.max(0, opts.count) }, (_, i) => `10.244.${i + 1}.0/24`);
  if (podCIDRs.length !== opts.count) errors.push(`podCIDRs: ${podCIDRs.length} given for ${opts.count} nodes`);
  const seen: { cidr: string; index: number }[] = [];
  podCIDRs.forEach((cidr, i) => {
    const r = podRange(cidr);
    if (!r.ok) return errors.push(`podCIDRs[${i}]: ${r.reason}`);
    const p = r.range.cidr;
    for (const s of seen) {
      const q = parsePrefix(s.cidr)!;
      const bits = Math.min(p.bits, q.bits);
      const mask = ((1n << BigInt(bits)) - 1n) << BigInt(32 - bits);
      if ((p.addr & mask) === (q.addr & mask)) errors.push(`podCIDRs[${i}]: "${cidr}" overlaps podCIDRs[${s.index}] "${s.cidr}"`);
    }
    seen.push({ cidr, index: i });
  });
  if (errors.length > 0 || !underlay) return { ok: false, errors };
  const nodes = podCIDRs.map((podCIDR, i) => ({
    name: `${opts.prefix}node-${i + 1}`,
    netns: `${opts.prefix}node-${i + 1}`,
    internalIP: formatIP(4, underlay.addr + BigInt(i + 2)),
    podCIDR: formatPrefix(parsePrefix(podCIDR)!),
  }));
  return { ok: true, nodes, underlayNetns: `${opts.prefix}underlay`, underlayCIDR: formatPrefix(underlay) };
}

/** Creates the underlay and the nodes; on any failure removes what it made and throws. */
export async function createNodes(opts: CreateNodesOptions): Promise<NodesState> {
  const plan = planNodes(opts);
  if (!plan.ok) throw new Error(`createNodes: ${plan.errors.join("; ")}`);
  const underlayBits = parsePrefix(plan.underlayCIDR)!.bits;
  const state: NodesState = {
    version: 1,
    prefix: opts.prefix,
    underlayNetns: plan.underlayNetns,
    underlayCIDR: plan.underlayCIDR,
    netns: [],
    nodes: plan.nodes.map((n) => (opts.agent ? { ...n, agentSocket: opts.agent.socket(n) } : n)),
    nodeObjects: [],
    dir: opts.dir,
    ...(opts.podMtu !== undefined ? { podMtu: opts.podMtu } : {}),
  };
  const kube = await KubeClient.fromKubeconfig(opts.kubeconfig);
  try {
    await addNetns(state, state.underlayNetns);
    await ipIn(state.underlayNetns, "link", "add", "br0", "type", "bridge");
    await ipIn(state.underlayNetns, "link", "set", "br0", "up");
    await ipIn(state.underlayNetns, "link", "set", "lo", "up");

    for (const [i, node] of state.nodes.entries()) {
      await addNetns(state, node.netns);
      // Both ends are made inside our namespaces: the host's root namespace never sees them.
      const port = `n${i + 1}`;
      await ipIn(state.underlayNetns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node.netns);
      await ipIn(state.underlayNetns, "link", "set", port, "master", "br0");
      await ipIn(state.underlayNetns, "link", "set", port, "up");
      await ipIn(node.netns, "link", "set", "lo", "up");
      await ipIn(node.netns, "addr", "add", `${node.internalIP}/${underlayBits}`, "dev", "eth0");
      await ipIn(node.netns, "link", "set", "eth0", "up");
      for (const key of ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]) {
        await run("ip", ["netns", "exec", node.netns, "sysctl", "-qw", key]);
      }
    }
    // Plain routing until the datapath takes over: each node reaches the others' pod CIDRs via their underlay address.
    for (const node of state.nodes) {
      for (const peer of state.nodes) {
        if (peer !== node) await ipIn(node.netns, "route", "add", peer.podCIDR, "via", peer.internalIP, "dev", "eth0");
      }
    }
    for (const node of state.nodes) {
      await registerNode(kube, node); // a Node of that name made by someone else fails here (409) and is not recorded as ours
      state.nodeObjects.push(node.name);
      await saveState(state);
    }
    if (opts.agent?.command) {
      for (const node of state.nodes) {
        node.agentPid = startAgent(node, opts.agent.command(node), opts.dir);
        await saveState(state);
      }
    }
    log.info({ nodes: state.nodes.map((n) => n.name), underlay: state.underlayNetns }, "nodes created");
    return state;
  } catch (err) {
    log.error({ err: (err as Error).message }, "createNodes failed, removing what was made");
    await destroyNodes(state).catch((e: unknown) => log.error({ err: (e as Error).message }, "cleanup after failure failed"));
    throw err;
  } finally {
    kube.close();
  }
}

/**
 * Removes exactly what `state` records: agent processes (by pid, if still the one we started), Node
 * objects, network namespaces (their links go with them), CNI state and the state file. Idempotent.
 * Pods must be gone first (the kubelet's `stop({ removePods: true })`): a pod netns is not a node's.
 */
export async function destroyNodes(state: NodesState, kubeconfig?: string): Promise<void> {
  for (const node of state.nodes) {
    if (node.agentPid !== undefined && isProcessAlive(node.agentPid)) await terminateProcess(node.agentPid, 5_000);
  }
  if (kubeconfig && state.nodeObjects.length > 0) {
    try {
      const kube = await KubeClient.fromKubeconfig(kubeconfig);
      try {
        for (const name of state.nodeObjects) {
          await kube.delete(resourcePath(NODES, undefined, name)).catch((e: unknown) => {
            if (!isNotFound(e)) throw e;
          });
        }
      } finally {
        kube.close();
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, "could not delete Node objects (API server down?)");
    }
  }
  for (const ns of [...state.netns].reverse()) {
    if (await netnsExists(ns)) await ip("netns", "del", ns);
  }
  await rm(join(state.dir, "cni"), { recursive: true, force: true });
  await rm(nodesStateFile(state.dir), { force: true });
  log.info({ netns: state.netns }, "nodes destroyed");
}

/** The recorded nodes of a cluster dir, if any. */
export async function loadNodesState(dir: string): Promise<NodesState | undefined> {
  try {
    return JSON.parse(await readFile(nodesStateFile(dir), "utf8")) as NodesState;
  } catch {
    return undefined;
  }
}

/** The names of the network namespaces that start with prefix ("" for all). */
export async function listNetns(prefix = ""): Promise<string[]> {
  const out = await run("ip", ["netns", "list"]);
  return out
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name !== "" && name.startsWith(prefix));
}

export async function netnsExists(name: string): Promise<boolean> {
  return (await listNetns(name)).includes(name);
}

/**
 * Adds a netns, recorded before it is made so that a crash in between still leaves a trail; one
 * that already exists is someone else's (or a leftover): refused, never recorded, never removed.
 */
async function addNetns(state: NodesState, name: string): Promise<void> {
  if (await netnsExists(name)) throw new Error(`network namespace "${name}" already exists (a previous run not cleaned up? \`ip netns del ${name}\`)`);
  state.netns.push(name);
  await saveState(state);
  await ip("netns", "add", name);
}

async function registerNode(kube: KubeClient, node: LocalNode): Promise<void> {
  const body = {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: node.name,
      labels: { "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux", "membrane.io/local-node": "true" },
    },
    spec: { podCIDR: node.podCIDR, podCIDRs: [node.podCIDR] },
  };
  await kube.create(resourcePath(NODES), body);
  const now = new Date().toISOString();
  await kube.mergePatch(resourcePath(NODES, undefined, node.name, "status"), {
    status: {
      addresses: [
        { type: "InternalIP", address: node.internalIP },
        { type: "Hostname", address: node.name },
      ],
      conditions: [{ type: "Ready", status: "True", reason: "KubeletReady", message: "local node is ready", lastHeartbeatTime: now, lastTransitionTime: now }],
      nodeInfo: { operatingSystem: "linux", architecture: "amd64", kubeletVersion: "membrane-local" },
    },
  });
  // The API server gives every new Node the not-ready NoSchedule taint; the node lifecycle controller
  // takes it off once the node is Ready. That controller does not run here (no kubelet heartbeats), so
  // we do it for the Ready node we just reported: otherwise DaemonSets would give it no pod.
  const created = await kube.get<{ spec: { taints?: { key: string; effect: string }[] } }>(resourcePath(NODES, undefined, node.name));
  const taints = created.spec.taints ?? [];
  const kept = taints.filter((t) => !(t.key === "node.kubernetes.io/not-ready" && t.effect === "NoSchedule"));
  if (kept.length !== taints.length) await kube.mergePatch(resourcePath(NODES, undefined, node.name), { spec: { taints: kept } });
}

function startAgent(node: LocalNode, argv: string[], dir: string): number {
  const child = spawn("ip", ["netns", "exec", node.netns, ...argv], { detached: true, stdio: "ignore", cwd: dir });
  child.unref();
  if (child.pid === undefined) throw new Error(`agent for ${node.name}: could not start ${argv.join(" ")}`);
  log.info({ node: node.name, pid: child.pid }, "agent started");
  return child.pid;
}

/** SIGTERM, then SIGKILL after graceMs; resolves once pid is gone. The caller checks that pid is still its own. */
export async function terminateProcess(pid: number, graceMs: number): Promise<void> {
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return; // already gone
  }
  const until = Date.now() + graceMs;
  while (isProcessAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
  if (!isProcessAlive(pid)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  while (isProcessAlive(pid)) await new Promise((r) => setTimeout(r, 25));
}

async function saveState(state: NodesState): Promise<void> {
  const file = nodesStateFile(state.dir);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(`${file}.tmp`, JSON.stringify(state, null, 2) + "\n");
  await rename(`${file}.tmp`, file);
}

/** `ip` in the root namespace (only for `ip netns add/del/list`). */
function ip(...args: string[]): Promise<string> {
  return run("ip", args);
}

/** `ip -n NETNS …`: a command inside one of our namespaces. */
export function ipIn(netns: string, ...args: string[]): Promise<string> {
  return run("ip", ["-n", netns, ...args]);
}

export function run(cmd: string, args: string[], input?: string, env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { env: env ?? process.env, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(" ")}: ${stderr.trim() || stdout.trim() || err.message}`));
      else resolve(stdout);
    });
    // The command may exit without reading its stdin: that is not our error to raise.
    child.stdin?.on("error", () => undefined);
    if (input === undefined) child.stdin?.end();
    else child.stdin?.end(input);
  });
}
