// `membrane dev exec` and `dev probe`: run a command, or a connectivity probe, inside a local pod's network namespace.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { parseFlags } from "../kube/flags.ts";
import { isProcessAlive } from "../localcluster/cluster.ts";
import { kubeletPaths, loadPodRecords, removeRecordedPods, startKubeletProcess, stopKubeletProcess, type PodRecord } from "../localcluster/kubelet.ts";
import { createNodes, destroyNodes, loadNodesState, netnsExists, planNodes, run, type AgentHook } from "../localcluster/nodes.ts";
import { type DevEncryption, WIREGUARD_ROUTINGS, type WireguardRouting, devAgentHook, devPodMtu, startAdmissionWebhook, startAgents, startOperator, stopDevCluster } from "../localcluster/devcluster.ts";
import type { CommandResult } from "../localcluster/cluster.ts";
import type { ProbeResult } from "../localcluster/probe.ts";
import { standaloneScript } from "../localcluster/standalone.ts";
import { removeClusterDns, startClusterDns } from "../localcluster/cluster-dns.ts";
import { OUTSIDE_CNAMES, createOutsideHosts, destroyOutsideHosts } from "../localcluster/outside.ts";

const probeSource = fileURLToPath(new URL("../localcluster/probe.ts", import.meta.url));

/** "NAMESPACE/POD" → parts, or an error naming the argument. */
export function parsePodRef(ref: string): { ok: true; namespace: string; pod: string } | { ok: false; error: string } {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/.exec(ref);
  if (!m) return { ok: false, error: `NAMESPACE/POD: "${ref}" is not of the form namespace/pod` };
  return { ok: true, namespace: m[1]!, pod: m[3]! };
}

/** The local pod's record (its netns), or an error for a user: not found, or not running here. */
async function findPod(dir: string, namespace: string, pod: string): Promise<{ ok: true; rec: PodRecord } | { ok: false; error: string }> {
  const rec = (await loadPodRecords(dir)).pods[`${namespace}/${pod}`];
  if (!rec) return { ok: false, error: `pod ${namespace}/${pod} is not running on a local node (state: ${dir})` };
  if (!(await netnsExists(rec.netns))) return { ok: false, error: `pod ${namespace}/${pod}: its network namespace ${rec.netns} is gone` };
  return { ok: true, rec };
}

/** Runs argv inside the pod's network namespace with our stdio; resolves to its exit code (like `kubectl exec`). */
export async function devExec(namespace: string, pod: string, argv: string[], dir: string): Promise<number> {
  if (argv.length === 0) {
    process.stderr.write("membrane dev exec: no command given (usage: dev exec NAMESPACE/POD -- COMMAND…)\n");
    return 2;
  }
  const found = await findPod(dir, namespace, pod);
  if (!found.ok) {
    process.stderr.write(`membrane dev exec: ${found.error}\n`);
    return 1;
  }
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "exec", found.rec.netns, ...argv], { stdio: "inherit" });
    child.on("error", (err) => {
      process.stderr.write(`membrane dev exec: ${err.message}\n`);
      resolve(1);
    });
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

export interface ProbeOptions {
  udp?: boolean;
  timeoutMs?: number;
}

/** Probes host:port from inside the pod without printing: the verdict and the peer's reply. */
export async function probeFromPod(namespace: string, pod: string, host: string, port: number, opts: ProbeOptions, dir: string): Promise<ProbeResult> {
  const found = await findPod(dir, namespace, pod);
  if (!found.ok) throw new Error(found.error);
  const script = await standaloneScript(probeSource, join(dir, "bin"));
  const args = ["netns", "exec", found.rec.netns, process.execPath, script, host, String(port), "--timeout-ms", String(opts.timeoutMs ?? 2_000)];
  if (opts.udp) args.push("--udp");
  return JSON.parse(await run("ip", args)) as ProbeResult;
}

/** `dev probe NAMESPACE/POD HOST PORT [--udp]`: prints connected, refused or timeout; exit 0 only when connected. */
export async function devProbe(namespace: string, pod: string, host: string, port: number, opts: ProbeOptions, dir: string): Promise<number> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    process.stderr.write(`membrane dev probe: PORT: must be 1-65535, got "${port}"\n`);
    return 2;
  }
  let result: ProbeResult;
  try {
    result = await probeFromPod(namespace, pod, host, port, opts, dir);
  } catch (err) {
    process.stderr.write(`membrane dev probe: ${(err as Error).message}\n`);
    return 2;
  }
  process.stdout.write(`${result.verdict}\n`);
  return result.verdict === "connected" ? 0 : 1;
}

/** The argument parsing for both subcommands, so `cli/dev.ts` wires each in one line. */
export async function runDevExec(args: string[], dir: string): Promise<number> {
  const sep = args.indexOf("--");
  const ref = parsePodRef(args[0] ?? "");
  if (!ref.ok || sep !== 1) {
    process.stderr.write(`membrane dev exec: ${ref.ok ? "expected -- after NAMESPACE/POD" : ref.error}\nusage: membrane dev exec NAMESPACE/POD -- COMMAND…\n`);
    return 2;
  }
  return devExec(ref.namespace, ref.pod, args.slice(sep + 1), dir);
}

export async function runDevProbe(args: string[], dir: string): Promise<number> {
  const usage = "usage: membrane dev probe NAMESPACE/POD HOST PORT [--udp]\n";
  const flags = parseFlags({ args, options: { udp: { type: "boolean" } }, allowPositionals: true });
  if (!flags.ok) {
    process.stderr.write(`membrane dev probe: ${flags.error}\n${usage}`);
    return 2;
  }
  const udp = flags.parsed.values.udp === true;
  const positional = flags.parsed.positionals;
  const ref = parsePodRef(positional[0] ?? "");
  if (!ref.ok || positional.length !== 3) {
    process.stderr.write(`membrane dev probe: ${ref.ok ? "expected HOST and PORT" : ref.error}\n${usage}`);
    return 2;
  }
  const port = Number(positional[2]);
  return devProbe(ref.namespace, ref.pod, positional[1]!, port, { udp }, dir);
}

/** `dev up --nodes N`: N local nodes (`node-1`…) and the kubelet process; idempotent. Call after the control plane is ready. */
export async function devNodesUp(dir: string, kubeconfig: string, count: number, opts: { prefix?: string; agent?: AgentHook; podMtu?: number } = {}): Promise<string> {
  const existing = await loadNodesState(dir);
  if (existing) {
    if (!(await kubeletRunning(dir))) await startKubeletProcess(dir, kubeconfig);
    return `${existing.nodes.length} nodes already up: ${existing.nodes.map((n) => n.name).join(", ")}`;
  }
  const state = await createNodes({ prefix: opts.prefix ?? "", count, dir, kubeconfig, agent: opts.agent, ...(opts.podMtu !== undefined ? { podMtu: opts.podMtu } : {}) });
  try {
    await startKubeletProcess(dir, kubeconfig);
  } catch (err) {
    await destroyNodes(state, kubeconfig);
    throw err;
  }
  return `${count} nodes up: ${state.nodes.map((n) => `${n.name} (${n.internalIP}, pods ${n.podCIDR})`).join(", ")}`;
}

/**
 * `dev up [--nodes N] [--host-firewall]`: the operator (CRDs applied, its distribution stream on loopback), the
 * admission webhook (registered with the API server) and, with a count, the nodes, the kubelet and
 * one agent per node (root netns, attaching inside the node's); with `clusterDns`, the "outside" hosts
 * and the cluster DNS (dnsmasq as kube-system/kube-dns on the first node) that pods created from then
 * on resolve through; idempotent.
 */
export async function devClusterUp(dir: string, kubeconfig: string, kubectl: (args: string[], input?: string) => Promise<CommandResult>, count: number | undefined, opts: { prefix?: string; encryption?: DevEncryption; hostFirewall?: boolean; clusterDns?: boolean; runtime?: boolean } = {}): Promise<string> {
  const prefix = opts.prefix ?? "";
  const existing = await loadNodesState(dir);
  let names: string[] = existing?.nodes.map((n) => n.name) ?? [];
  if (!existing && count !== undefined) {
    const plan = planNodes({ prefix, count });
    if (!plan.ok) throw new Error(plan.errors.join("; "));
    names = plan.nodes.map((n) => n.name);
  }
  const op = await startOperator(dir, kubeconfig, kubectl, names);
  let out = `operator running (pid ${op.operatorPid}, agent stream 127.0.0.1:${op.distributionPort})\n`;
  const wh = await startAdmissionWebhook(dir, kubeconfig, kubectl);
  out += `webhook running (pid ${wh.webhookPid}, ${wh.webhookUrl}), registered as ValidatingWebhookConfiguration membrane-policy-validation\n`;
  if (count === undefined && !existing) return out;
  out += (await devNodesUp(dir, kubeconfig, count ?? existing!.nodes.length, { prefix, agent: devAgentHook(dir), podMtu: devPodMtu(opts.encryption) })) + "\n";
  const state = await loadNodesState(dir);
  const agents = await startAgents(dir, state!.nodes, kubeconfig, { ...(opts.encryption ? { encryption: opts.encryption } : {}), ...(opts.hostFirewall ? { hostFirewall: true } : {}), ...(opts.runtime ? { runtime: true } : {}) });
  out += `agents running: ${agents.agents.map((a) => `${a.node} (pid ${a.pid})`).join(", ")}\n`;
  if (!opts.clusterDns) return out;
  const hosts = await createOutsideHosts(dir, state!);
  const dnsIP = await startClusterDns(dir, kubeconfig, state!.nodes[0]!.name, hosts, OUTSIDE_CNAMES);
  out += `outside hosts: ${hosts.map((h) => `${h.names.join("/")} ${h.ip}`).join(", ")}\n`;
  return out + `cluster DNS: kube-system/kube-dns (dnsmasq) at ${dnsIP}; new pods resolve through it\n`;
}

/** `dev down`: the kubelet, every pod netns and server, the cluster DNS objects, the outside hosts, the nodes and their Node objects, the agents, their pinned maps, the webhook and its configuration, and the operator; works after a crash (files only). Call before the control plane is destroyed. */
export async function devNodesDown(dir: string, kubeconfig?: string): Promise<void> {
  await stopKubeletProcess(dir);
  await removeRecordedPods(dir);
  await removeClusterDns(dir, kubeconfig);
  await destroyOutsideHosts(dir);
  const state = await loadNodesState(dir);
  if (state) await destroyNodes(state, kubeconfig);
  await stopDevCluster(dir, kubeconfig);
}

async function kubeletRunning(dir: string): Promise<boolean> {
  const pid = Number.parseInt(await readFile(kubeletPaths(dir).pidFile, "utf8").catch(() => ""), 10);
  return Number.isInteger(pid) && pid > 0 && isProcessAlive(pid);
}

/** `--nodes N` out of `dev up`'s arguments: the count (undefined when absent), the rest, or an error. */
export function parseNodesFlag(args: string[]): { ok: true; nodes?: number; hostFirewall?: boolean; rest: string[] } | { ok: false; error: string } {
  // Not strict: whatever is not --nodes or --host-firewall comes back in `rest`, for the caller to reject by name.
  const { values, tokens } = parseArgs({ args, options: { nodes: { type: "string" }, "host-firewall": { type: "boolean" } }, strict: false, allowPositionals: true, tokens: true });
  const rest = tokens.flatMap((t) => (t.kind === "positional" ? [t.value] : t.kind === "option" && t.name !== "nodes" && t.name !== "host-firewall" ? [t.rawName + (t.inlineValue ? `=${t.value ?? ""}` : "")] : []));
  if (values["host-firewall"] !== undefined && typeof values["host-firewall"] !== "boolean") return { ok: false, error: "--host-firewall: takes no value" };
  const hostFirewall = values["host-firewall"] === true ? { hostFirewall: true } : {};
  if (values.nodes === undefined) return { ok: true, ...hostFirewall, rest };
  const raw = values.nodes;
  const n = typeof raw === "string" ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 200) return { ok: false, error: `--nodes: must be an integer from 1 to 200, got "${typeof raw === "string" ? raw : ""}"` };
  return { ok: true, nodes: n, ...hostFirewall, rest };
}

/**
 * `--encryption wireguard [--encryption-strict] [--wireguard-routing routed|vxlan]` out of `dev up`'s arguments: the
 * agents' encryption (undefined when absent), the rest, or an error naming the flag. Without --wireguard-routing the
 * agents keep their own default (routed).
 */
export function parseEncryptionFlag(args: readonly string[]): { ok: true; encryption?: DevEncryption; rest: string[] } | { ok: false; error: string } {
  const rest: string[] = [];
  let mode: string | undefined;
  let routing: string | undefined;
  let strict = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--encryption-strict") strict = true;
    else if (a === "--encryption") {
      mode = args[++i];
      if (mode === undefined) return { ok: false, error: "--encryption: needs a value: wireguard" };
    } else if (a.startsWith("--encryption=")) mode = a.slice("--encryption=".length);
    else if (a === "--wireguard-routing") {
      routing = args[++i];
      if (routing === undefined) return { ok: false, error: `--wireguard-routing: needs a value: ${WIREGUARD_ROUTINGS.join(" or ")}` };
    } else if (a.startsWith("--wireguard-routing=")) routing = a.slice("--wireguard-routing=".length);
    else rest.push(a);
  }
  if (mode === undefined) {
    if (strict) return { ok: false, error: "--encryption-strict: needs --encryption wireguard" };
    if (routing !== undefined) return { ok: false, error: "--wireguard-routing: needs --encryption wireguard" };
    return { ok: true, rest };
  }
  if (mode !== "wireguard") return { ok: false, error: `--encryption: must be "wireguard" (this kernel has no ESP, so ipsec carries no traffic here), got "${mode}"` };
  if (routing === undefined) return { ok: true, encryption: { mode: "wireguard", strict }, rest };
  if (!isWireguardRouting(routing)) return { ok: false, error: `--wireguard-routing: must be one of ${WIREGUARD_ROUTINGS.join(", ")}, got ${JSON.stringify(routing)}` };
  return { ok: true, encryption: { mode: "wireguard", strict, routing }, rest };
}

function isWireguardRouting(s: string): s is WireguardRouting {
  return (WIREGUARD_ROUTINGS as readonly string[]).includes(s);
}
