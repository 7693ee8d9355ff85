// The local cluster's Membrane processes: certificates, CRDs, the operator, the admission webhook and one agent per node, recorded by pid so `dev down` stops exactly them.
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, statSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { hostname } from "node:os";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { BPFFS_ROOT } from "../node-agent/bpf/loader.ts";
import { OVERLAY_DEVICE } from "../node-agent/overlay-device.ts";
import { removeRuntimePins } from "../node-agent/runtime/pin-scopes.ts";
import { ALL_CONTROLLERS } from "../controllers/operator.ts";
import { KubeClient } from "../kube/kube.ts";
import { writeAgentPki } from "../kube/pki.ts";
import { DEFAULTS as WEBHOOK_DEFAULTS } from "../webhooks/main.ts";
import { WebhookRegistration } from "../webhooks/registration.ts";
import { isProcessAlive, type CommandResult } from "./cluster.ts";
import { terminateProcess, type AgentHook, type LocalNode } from "./nodes.ts";
import { wireguardIfname } from "../node-agent/encryption/wireguard.ts";
import { UNDERLAY_MTU, type WireguardRouting, podMtu } from "../node-agent/mtu.ts";
// `dev up --wireguard-routing` is checked against the agent's own list (the cli reaches the agent's modules only through here).
export { WIREGUARD_ROUTINGS, type WireguardRouting } from "../node-agent/mtu.ts";
import { wireguardGoBinary } from "./wireguard/binary.ts";

const log = pino({ name: "devcluster", level: process.env.MEMBRANE_LOG_LEVEL ?? "info" }, pino.destination({ fd: 2, sync: true }));

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const tsxLoader = join(repoRoot, "node_modules", "tsx", "dist", "esm", "index.mjs");
const cliMain = join(repoRoot, "cli", "main.ts");
const crdDir = join(repoRoot, "crds", "generated");

/** What `startOperator`/`startAgents` started, so `stopDevCluster` stops exactly that (by pid) and removes the pins. */
export interface DevClusterState {
  version: 1;
  operatorPid?: number;
  distributionPort?: number;
  webhookPid?: number;
  /** The kubeconfig the webhook was started with: part of its command line, so a reused pid is never taken for it. */
  webhookKubeconfig?: string;
  webhookUrl?: string;
  /** Hubble's relay in the operator (loopback, no TLS, as `cilium hubble port-forward` gives users): `hubble observe --server` it. */
  hubbleRelay?: string;
  agents: { node: string; pid: number; scope: string }[];
  /** Agents run with transparent encryption (kept for agents started again later). */
  encryption?: DevEncryption;
  /** Agents run with the host firewall on each node's underlay device (kept for agents started again later). */
  hostFirewall?: boolean;
  /** Agents run the runtime enforcer (TracingPolicies; one per kernel: the local cluster's nodes share it). */
  runtime?: boolean;
}

/** The node device the local cluster's host firewall judges: each node's underlay veth (its InternalIP). */
export const DEV_HOST_FIREWALL_DEVICE = "eth0";
/**
 * The one namespace the local operator reads TLS rules' Secrets from and the webhook warns against, as the chart's
 * default (tls.secretsNamespace.name): a policy written for the chart works unchanged here.
 */
export const DEV_POLICY_SECRETS_NAMESPACE = "membrane-secrets";

/** WireGuard between the nodes (wireguard-go built from its pinned module), strict or not; pod packets routed into it (default) or VXLAN inside it. */
export interface DevEncryption {
  mode: "wireguard";
  strict: boolean;
  routing?: WireguardRouting;
}

/** The MTU pods get on nodes whose agents run with `enc`: less WireGuard's overhead when on, so nothing is fragmented. */
export function devPodMtu(enc: DevEncryption | undefined): number {
  return podMtu(enc ? enc.mode : "disabled", UNDERLAY_MTU, enc?.routing ?? "routed");
}

export function devClusterPaths(dir: string) {
  const root = join(dir, "membrane");
  return {
    root,
    pki: join(root, "pki"),
    stateFile: join(root, "processes.json"),
    operatorLog: join(root, "operator.log"),
    webhookLog: join(root, "webhook.log"),
    agentDir: (node: string) => join(root, "agents", node),
  };
}

type Kubectl = (args: string[], input?: string) => Promise<CommandResult>;

export async function loadDevClusterState(dir: string): Promise<DevClusterState> {
  try {
    return JSON.parse(await readFile(devClusterPaths(dir).stateFile, "utf8")) as DevClusterState;
  } catch {
    return { version: 1, agents: [] };
  }
}

async function saveState(dir: string, s: DevClusterState): Promise<void> {
  await mkdir(devClusterPaths(dir).root, { recursive: true });
  await writeFile(devClusterPaths(dir).stateFile, JSON.stringify(s, null, 2) + "\n");
}

/** The agent hook for createNodes/devNodesUp: only the socket; the agent process runs in the root netns (startAgents). */
export function devAgentHook(dir: string): AgentHook {
  return { socket: (n) => join(devClusterPaths(dir).agentDir(n.name), "agent.sock") };
}

/** Is pid still the process we started (its command line holds every marker), not a reused pid? */
function readFileSyncOr(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

function isOurs(pid: number, ...markers: string[]): boolean {
  if (!isProcessAlive(pid)) return false;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return markers.every((m) => argv.includes(m));
  } catch {
    return false;
  }
}

function spawnMembrane(args: string[], logFile: string): number {
  const fd = openSync(logFile, "a");
  const child = spawn(process.execPath, ["--import", tsxLoader, cliMain, ...args], { detached: true, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start membrane ${args[0]}; log ${logFile}`);
  return child.pid;
}

/** `from`: the log's size when the process was started (logs are appended to: an earlier run's line must not count). */
async function waitForLog(pid: number, logFile: string, msg: string, timeoutMs: number, also: (l: Record<string, unknown>) => boolean = () => true, from = 0): Promise<Record<string, unknown>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(logFile).then((b) => b.subarray(from).toString("utf8"), () => "");
    for (const line of text.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const l = JSON.parse(line) as Record<string, unknown>;
        if (l.msg === msg && also(l)) return l;
      } catch {
        // a partial line
      }
    }
    if (!isProcessAlive(pid)) throw new Error(`process ${pid} exited before logging "${msg}"; log ${logFile}:\n${text.slice(-2000)}`);
    if (Date.now() > until) throw new Error(`no "${msg}" from pid ${pid} within ${timeoutMs} ms; log ${logFile}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Applies the CRDs, makes the certificates for `nodeNames`, and starts `membrane operator` (detached)
 * with its distribution stream on a free loopback port; idempotent while it runs.
 */
export async function startOperator(dir: string, kubeconfig: string, kubectl: Kubectl, nodeNames: readonly string[]): Promise<DevClusterState> {
  const p = devClusterPaths(dir);
  const state = await loadDevClusterState(dir);
  await mkdir(p.pki, { recursive: true, mode: 0o700 });
  await writeAgentPki(p.pki, nodeNames, { caName: "membrane-dev-ca", days: 30 });
  if (state.operatorPid !== undefined && isOurs(state.operatorPid, "operator", join(p.pki, "operator.crt"))) return state;
  for (const f of (await readdir(crdDir)).filter((f) => f.endsWith(".yaml")).sort()) {
    const res = await kubectl(["apply", "-f", join(crdDir, f)]);
    if (res.code !== 0) throw new Error(`applying ${f}: ${res.stderr.trim()}`);
  }
  for (const f of (await readdir(crdDir)).filter((f) => f.endsWith(".yaml"))) {
    const res = await kubectl(["wait", "--for=condition=Established", "--timeout=60s", "-f", join(crdDir, f)]);
    if (res.code !== 0) throw new Error(`CRD ${f} not established: ${res.stderr.trim()}`);
  }
  // TLS rules' Secrets live there: created as the chart does (kept by `dev down`, which destroys the whole control plane).
  const ns = await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: DEV_POLICY_SECRETS_NAMESPACE } }));
  if (ns.code !== 0) throw new Error(`creating namespace ${DEV_POLICY_SECRETS_NAMESPACE}: ${ns.stderr.trim()}`);
  const pid = spawnMembrane(
    [
      "operator", "--kubeconfig", kubeconfig, "--health-port", "0", "--leader-elect", "false", "--identity-gc-grace", "1m",
      "--distribution-port", "0", "--tls-ca", join(p.pki, "ca.crt"), "--tls-cert", join(p.pki, "operator.crt"), "--tls-key", join(p.pki, "operator.key"),
      "--hubble-relay-address", "127.0.0.1:0", "--policy-secrets-namespace", DEV_POLICY_SECRETS_NAMESPACE,
      // The local nodes' Node objects carry the pod CIDRs their pods are given and routed by (nodes.ts plays the
      // controller-manager): the CiliumNodes take those, as Cilium's ipam.mode=kubernetes does.
      "--ipam", "kubernetes",
      // The default controllers and tracing: the TracingPolicy CRDs are applied above.
      "--controllers", `${ALL_CONTROLLERS.join(",")},tracing`,
    ],
    p.operatorLog,
  );
  state.operatorPid = pid;
  await saveState(dir, state);
  const line = await waitForLog(pid, p.operatorLog, "distribution stream listening", 60_000);
  state.distributionPort = line.port as number;
  // The log is appended to across runs: this process's line, by its lease identity (hostname_pid by default).
  const relay = await waitForLog(pid, p.operatorLog, "hubble relay listening", 60_000, (l) => l.id === `${hostname()}_${pid}`);
  state.hubbleRelay = relay.address as string;
  await saveState(dir, state);
  log.info({ pid, port: state.distributionPort, hubbleRelay: state.hubbleRelay }, "operator started");
  return state;
}

/** A policy only the webhook rejects (the CRD schema cannot compare an except with its cidr): sent with --dry-run=server to see that the API server calls us. */
const WEBHOOK_PROBE = JSON.stringify({
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "membrane-dev-webhook-probe", namespace: "default" },
  spec: { endpointSelector: {}, egress: [{ toCIDRSet: [{ cidr: "10.0.0.0/8", except: ["11.0.0.0/16"] }] }] },
});

const webhookMarkers = (kubeconfig: string): string[] => ["webhook", kubeconfig];

/**
 * Starts `membrane webhook` (detached) on a free loopback port: it issues its certificates (kept in
 * its Secret) and registers its ValidatingWebhookConfiguration by URL, since the local cluster has no
 * Service routing. Resolves once the API server sends it policies; idempotent while it runs.
 */
export async function startAdmissionWebhook(dir: string, kubeconfig: string, kubectl: Kubectl): Promise<DevClusterState> {
  const p = devClusterPaths(dir);
  const state = await loadDevClusterState(dir);
  if (state.webhookPid !== undefined && isOurs(state.webhookPid, ...webhookMarkers(kubeconfig))) return state;
  await mkdir(p.root, { recursive: true });
  const pid = spawnMembrane(["webhook", "--listen", "127.0.0.1:0", "--kubeconfig", kubeconfig, "--policy-secrets-namespace", DEV_POLICY_SECRETS_NAMESPACE], p.webhookLog);
  state.webhookPid = pid;
  state.webhookKubeconfig = kubeconfig;
  await saveState(dir, state);
  const line = await waitForLog(pid, p.webhookLog, "webhook registered", 60_000);
  state.webhookUrl = line.url as string;
  await saveState(dir, state);
  // The API server learns of the configuration through its own watch: wait until denials come from us.
  const denial = `admission webhook "${WEBHOOK_DEFAULTS.webhookName}" denied the request`;
  const until = Date.now() + 60_000;
  for (;;) {
    const r = await kubectl(["apply", "--dry-run=server", "-f", "-"], WEBHOOK_PROBE);
    if (r.stderr.includes(denial)) break;
    if (!isProcessAlive(pid)) throw new Error(`the webhook (pid ${pid}) exited; log ${p.webhookLog}`);
    if (Date.now() > until) throw new Error(`the API server does not call the webhook after 60 s: ${r.stdout}${r.stderr}`);
    await new Promise((res) => setTimeout(res, 250));
  }
  log.info({ pid, url: state.webhookUrl }, "webhook started and registered");
  return state;
}

/** Deletes the webhook's ValidatingWebhookConfiguration, so that policy writes no longer fail closed on a webhook that is gone. */
async function unregisterWebhook(kubeconfig: string): Promise<void> {
  const kube = await KubeClient.fromKubeconfig(kubeconfig);
  try {
    await new WebhookRegistration(kube, { ...WEBHOOK_DEFAULTS, target: { url: "" } }, log).unregister();
  } finally {
    kube.close();
  }
}

/** The pin scope of a node's datapath maps. */
export const agentScope = (node: LocalNode): string => node.name;

/** The pin scope of a node's runtime enforcer (beside its agent's): a cluster's runtime never adopts or removes another's pins. */
export const runtimeScope = (agentScopeName: string): string => `${agentScopeName}-runtime`;

/**
 * Starts `membrane agent` for each node in the root netns (so it reaches the operator on 127.0.0.1),
 * attaching inside the node's netns; each makes (or, restarted, adopts) the node's VXLAN overlay device there, as
 * the chart's agents do (--tunnel-device; the nodes have no other VXLAN device on its port to collide with).
 */
export async function startAgents(dir: string, nodes: readonly LocalNode[], kubeconfig?: string, opts: { encryption?: DevEncryption | null; hostFirewall?: boolean; runtime?: boolean } = {}): Promise<DevClusterState> {
  const p = devClusterPaths(dir);
  const state = await loadDevClusterState(dir);
  // null switches encryption off for the agents started from now on; undefined keeps what was chosen before.
  if (opts.encryption !== undefined) {
    if (opts.encryption === null) delete state.encryption;
    else state.encryption = opts.encryption;
  }
  if (opts.hostFirewall !== undefined) {
    if (opts.hostFirewall) state.hostFirewall = true;
    else delete state.hostFirewall;
  }
  // The agent stream (loopback in the root netns) and the API server never cross a node's eth0 here.
  if (opts.runtime !== undefined) {
    if (opts.runtime) state.runtime = true;
    else delete state.runtime;
  }
  const runtimeArgs = (node: LocalNode): string[] => (state.runtime ? ["--enable-runtime", "--runtime-bpf-scope", runtimeScope(agentScope(node))] : []);
  const hostFirewallArgs = state.hostFirewall ? ["--host-firewall-device", DEV_HOST_FIREWALL_DEVICE] : [];
  const enc = state.encryption;
  const encryptionArgs = enc ? ["--encryption", "wireguard", "--wireguard-go", wireguardGoBinary(), ...(enc.strict ? ["--encryption-strict"] : []), ...(enc.routing ? ["--wireguard-routing", enc.routing] : [])] : [];
  if (state.distributionPort === undefined) throw new Error("startAgents: the operator is not running (no distribution port recorded)");
  const started: { node: LocalNode; pid: number; logFile: string; logStart: number }[] = [];
  for (const node of nodes) {
    const existing = state.agents.find((a) => a.node === node.name);
    if (existing && isOurs(existing.pid, "agent", join(p.agentDir(node.name), "agent.sock"))) continue;
    const adir = p.agentDir(node.name);
    await mkdir(adir, { recursive: true });
    const logFile = join(adir, "agent.log");
    const logStart = existsSync(logFile) ? statSync(logFile).size : 0;
    const pid = spawnMembrane(
      [
        "agent", "--node-name", node.name, "--operator", `127.0.0.1:${state.distributionPort}`,
        "--tls-cert", join(p.pki, `${node.name}.crt`), "--tls-key", join(p.pki, `${node.name}.key`), "--tls-ca", join(p.pki, "ca.crt"),
        "--netns", node.netns, "--node-ip", node.internalIP, "--bpf-scope", agentScope(node),
        "--cni-socket", join(adir, "agent.sock"), "--state-dir", join(adir, "state"),
        // Every node's agent runs in the root netns: each needs its own observer socket and metrics port.
        "--hubble-socket", join(adir, "hubble.sock"), "--metrics-address", "127.0.0.1:0",
        "--tunnel-device", OVERLAY_DEVICE,
        // API access: the agent publishes its health and observer address on its CiliumNode.
        ...(kubeconfig !== undefined ? ["--kubeconfig", kubeconfig] : []),
        ...encryptionArgs,
        ...hostFirewallArgs,
        ...runtimeArgs(node),
      ],
      logFile,
    );
    state.agents = state.agents.filter((a) => a.node !== node.name).concat({ node: node.name, pid, scope: agentScope(node) });
    await saveState(dir, state);
    started.push({ node, pid, logFile, logStart });
  }
  for (const s of started) {
    // Started: its overlay device made and attached, the node device's programs on eth0 (it holds --node-ip) too.
    await waitForLog(s.pid, s.logFile, "agent started", 60_000, undefined, s.logStart);
    log.info({ node: s.node.name, pid: s.pid }, "agent started");
  }
  return state;
}

/**
 * Stops the agents, the webhook and the operator by their recorded pids, removes the webhook's
 * configuration (with a kubeconfig: the API server is up), the agents' pinned maps and every file
 * made here. Call after the nodes are gone (their links take the attached programs along).
 */
export async function stopDevCluster(dir: string, kubeconfig?: string): Promise<void> {
  const p = devClusterPaths(dir);
  const state = await loadDevClusterState(dir);
  if (state.webhookPid !== undefined && kubeconfig !== undefined) {
    await unregisterWebhook(kubeconfig).catch((err: unknown) => log.warn({ err: (err as Error).message }, "could not delete the webhook configuration (API server down?)"));
  }
  if (state.webhookPid !== undefined && state.webhookKubeconfig !== undefined && isOurs(state.webhookPid, ...webhookMarkers(state.webhookKubeconfig))) {
    await terminateProcess(state.webhookPid, 5_000);
  }
  for (const a of state.agents) {
    if (isOurs(a.pid, "agent", join(p.agentDir(a.node), "agent.sock"))) await terminateProcess(a.pid, 5_000);
    // The WireGuard device outlives its agent by design: stopped here, by the pid the agent recorded.
    const wgPid = Number.parseInt(readFileSyncOr(join(p.agentDir(a.node), "state", "wireguard-go.pid")), 10);
    if (Number.isInteger(wgPid) && wgPid > 0 && isOurs(wgPid, "-f", wireguardIfname(a.node))) await terminateProcess(wgPid, 5_000);
    // So does the L7 proxy (membrane l7proxy, started by the agent with its configuration in the state directory).
    const l7Pid = Number.parseInt(readFileSyncOr(join(p.agentDir(a.node), "state", "l7proxy.pid")), 10);
    if (Number.isInteger(l7Pid) && l7Pid > 0 && isOurs(l7Pid, "l7proxy", join(p.agentDir(a.node), "state", "l7proxy.json"))) await terminateProcess(l7Pid, 5_000);
    // So does the runtime enforcer (membrane runtime, with its policy file in the state directory); at SIGTERM it removes its programs and pins.
    const rtPid = Number.parseInt(readFileSyncOr(join(p.agentDir(a.node), "state", "runtime.pid")), 10);
    if (Number.isInteger(rtPid) && rtPid > 0 && isOurs(rtPid, "runtime", join(p.agentDir(a.node), "state", "runtime-policies.yaml"))) await terminateProcess(rtPid, 10_000);
  }
  if (state.operatorPid !== undefined && isOurs(state.operatorPid, "operator", join(p.pki, "operator.crt"))) await terminateProcess(state.operatorPid, 10_000);
  for (const a of state.agents) {
    if (/^[A-Za-z0-9._-]+$/.test(a.scope) && existsSync(join(BPFFS_ROOT, a.scope))) await rm(join(BPFFS_ROOT, a.scope), { recursive: true, force: true });
    // What its runtime left pinned when it was killed (stopped, it removed them).
    if (/^[A-Za-z0-9._-]+$/.test(a.scope)) removeRuntimePins(runtimeScope(a.scope));
  }
  await rm(p.root, { recursive: true, force: true });
  log.info({ operator: state.operatorPid, webhook: state.webhookPid, agents: state.agents.map((a) => a.pid) }, "membrane processes stopped");
}
