// The local cluster's kubelet (one for all nodes): binds pending pods, wires them with the CNI plugin, points their resolver at the cluster DNS, runs the pod server (or the container's command), reports status, tears down on delete.
import { spawn } from "node:child_process";
import { openSync, closeSync, readFileSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { isIPv4 } from "node:net";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { pino, type Logger } from "pino";
import { Controller, type Reconciler, type ReconcileResult } from "../kube/controller.ts";
import { Informer } from "../kube/informer.ts";
import { KubeClient, isNotFound, resourcePath, type KubeObject } from "../kube/kube.ts";
import { OperatorMetrics } from "../kube/metrics.ts";
import { NODES, PODS } from "../kube/resources.ts";
import { isProcessAlive } from "./cluster.ts";
import { standaloneScript } from "./standalone.ts";
import { cniConfig, loadNodesState, netnsExists, run, terminateProcess, type LocalNode, type NodesState } from "./nodes.ts";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const cniPlugin = join(repoRoot, "bin", "membrane-cni");
const tsxLoader = join(repoRoot, "node_modules", "tsx", "dist", "esm", "index.mjs");
const podServerSource = fileURLToPath(new URL("./podserver.ts", import.meta.url));

/**
 * The node names a pod's required node affinity allows by `metadata.name` (how the DaemonSet
 * controller pins each of its pods to one node), or undefined when it names none. Terms are ORed; a
 * term without such a field allows any node. Other affinity expressions are not looked at.
 */
export function requiredNodeNames(pod: Pod): Set<string> | undefined {
  const terms = pod.spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? [];
  const names = new Set<string>();
  for (const term of terms) {
    const byName = (term.matchFields ?? []).filter((f) => f.key === "metadata.name" && f.operator === "In");
    if (byName.length === 0) return undefined;
    for (const f of byName) for (const v of f.values ?? []) names.add(v);
  }
  return terms.length === 0 ? undefined : names;
}

/** Where the compiled pod server of a cluster dir lives (see standalone.ts). */
function podServerScript(dir: string): string {
  return join(dir, "bin", "podserver.mjs");
}

interface ContainerPort {
  containerPort: number;
  protocol?: string;
}
export interface Pod extends KubeObject {
  spec: {
    nodeName?: string;
    nodeSelector?: Record<string, string>;
    affinity?: { nodeAffinity?: { requiredDuringSchedulingIgnoredDuringExecution?: { nodeSelectorTerms?: NodeSelectorTerm[] } } };
    /** ClusterFirst (the default) resolves through the cluster DNS; Default keeps the host's resolver. */
    dnsPolicy?: string;
    /** The first container's command and args, when it has a command, run in the pod's netns (the image is not looked at: host binaries). */
    containers: { name: string; image?: string; command?: string[]; args?: string[]; ports?: ContainerPort[] }[];
  };
  status?: {
    phase?: string;
    podIP?: string;
    hostIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; restartCount: number }[];
  };
}
interface NodeSelectorTerm {
  matchFields?: { key: string; operator: string; values?: string[] }[];
}
interface NodeObject extends KubeObject {
  metadata: KubeObject["metadata"];
}

/** What the kubelet made for one pod, so it (or `dev down` after a crash) can undo it. */
export interface PodRecord {
  namespace: string;
  name: string;
  uid: string;
  node: string;
  netns: string;
  /** The CNI container id (the pod's uid). */
  containerId: string;
  ip?: string;
  pid?: number;
  /** The command line of a container with a `command` (the pod server runs otherwise): how its pid is recognised. */
  command?: string[];
  startedAt?: string;
  restarts: number;
}

export interface PodRecords {
  version: 1;
  /** By "namespace/name". */
  pods: Record<string, PodRecord>;
}

export function podsStateFile(dir: string): string {
  return join(dir, "pods.json");
}

export async function loadPodRecords(dir: string): Promise<PodRecords> {
  try {
    return JSON.parse(await readFile(podsStateFile(dir), "utf8")) as PodRecords;
  } catch {
    return { version: 1, pods: {} };
  }
}

/** The network namespace of a pod: by uid, so a pod re-created under the same name never meets the old one's. */
export function podNetnsName(prefix: string, uid: string): string {
  return `${prefix}pod-${uid}`;
}

/** True when the record's pid is alive and is the process we started for it (the pod server or the container's command), not a recycled pid. */
function isPodProcess(rec: PodRecord, dir: string): boolean {
  if (rec.pid === undefined || !isProcessAlive(rec.pid)) return false;
  try {
    const argv = readFileSync(`/proc/${rec.pid}/cmdline`, "utf8").split("\0").slice(0, -1);
    return rec.command ? argv.join("\0") === rec.command.join("\0") : argv.includes(podServerScript(dir));
  } catch {
    return false;
  }
}

/** The label and namespace of the cluster DNS pods (as kube-dns and CoreDNS are labelled). */
export const CLUSTER_DNS = { namespace: "kube-system", label: "k8s-app", value: "kube-dns" } as const;

/** Where `ip netns exec` finds a namespace's own resolv.conf (it bind-mounts /etc/netns/NAME/* over /etc). */
export function netnsEtcDir(netns: string): string {
  return join("/etc/netns", netns);
}

/** A pod's resolv.conf as a kubelet writes it for dnsPolicy ClusterFirst. */
export function clusterFirstResolvConf(nameservers: readonly string[], namespace: string, clusterDomain = "cluster.local"): string {
  return [...nameservers.map((n) => `nameserver ${n}`), `search ${namespace}.svc.${clusterDomain} svc.${clusterDomain} ${clusterDomain}`, "options ndots:5", ""].join("\n");
}

export interface KubeletOptions {
  nodes: NodesState;
  kubeconfig: string;
  log?: Logger;
}

export class LocalKubelet implements Reconciler {
  readonly name = "local-kubelet";
  private readonly log: Logger;
  private kube!: KubeClient;
  private pods!: Informer<Pod>;
  private nodeObjects!: Informer<NodeObject>;
  private controller!: Controller;
  private records: PodRecords = { version: 1, pods: {} };
  private nextNode = 0;
  private saving: Promise<void> = Promise.resolve();

  constructor(private readonly opts: KubeletOptions) {
    this.log = opts.log ?? pino({ name: "kubelet", level: process.env.MEMBRANE_LOG_LEVEL ?? "info" }, pino.destination({ fd: 2, sync: true }));
  }

  private get ourNodes(): LocalNode[] {
    return this.opts.nodes.nodes;
  }

  async start(): Promise<void> {
    this.records = await loadPodRecords(this.opts.nodes.dir);
    this.kube = await KubeClient.fromKubeconfig(this.opts.kubeconfig);
    this.pods = new Informer<Pod>(this.kube, PODS, this.log);
    this.nodeObjects = new Informer<NodeObject>(this.kube, NODES, this.log);
    this.controller = new Controller(this, this.log, new OperatorMetrics(), { workers: 2 });
    this.controller.watch(this.pods);
    // Pods that vanished while the kubelet was down are known only from the records.
    this.controller.beforeStart(() => Object.keys(this.records.pods).forEach((k) => this.controller.enqueue(k)));
    this.pods.start();
    this.nodeObjects.start();
    await this.nodeObjects.waitForSync();
    await this.controller.start();
    this.log.info({ nodes: this.ourNodes.map((n) => n.name) }, "kubelet started");
  }

  /** Stops watching; with `removePods`, also tears down every pod it runs (netns, process, CNI) without touching the API. */
  async stop(opts: { removePods?: boolean } = {}): Promise<void> {
    await this.controller?.stop();
    await this.pods?.stop();
    await this.nodeObjects?.stop();
    this.kube?.close();
    if (opts.removePods) {
      for (const key of Object.keys(this.records.pods)) await this.teardown(key);
    }
    await this.saving;
    if (opts.removePods) await removeKubeletFiles(this.opts.nodes.dir);
  }

  /** Level-triggered: make the pod's local state match the API object (or its absence). */
  async reconcile(key: string): Promise<ReconcileResult | void> {
    const pod = this.pods.get(key);
    const record = this.records.pods[key];
    if (record && (!pod || pod.metadata.uid !== record.uid)) await this.teardown(key);
    if (!pod) return;

    if (!pod.spec.nodeName) {
      if (!pod.metadata.deletionTimestamp) await this.bind(pod);
      return;
    }
    const node = this.ourNodes.find((n) => n.name === pod.spec.nodeName);
    if (!node) return; // another kubelet's pod

    if (pod.metadata.deletionTimestamp) {
      await this.teardown(key);
      await this.finalize(pod);
      return;
    }
    let rec = this.records.pods[key];
    if (!rec || rec.ip === undefined) {
      // No record, or a setup that failed before the CNI ADD completed: start over from nothing.
      if (rec) await this.teardown(key);
      rec = await this.setup(pod, node);
    } else if (!isPodProcess(rec, this.opts.nodes.dir)) {
      // restartPolicy Always, as far as this stand-in goes
      this.log.warn({ pod: key, pid: rec.pid }, "pod process gone, restarting it");
      rec.restarts++;
      await this.startServer(pod, rec);
    }
    await this.writeStatus(pod, node, rec);
    // No event tells us a pod server died: look again now and then, as a kubelet's PLEG does.
    return { requeueAfter: 10_000 };
  }

  /** Chooses a node (nodeSelector and a DaemonSet pod's node honoured, then round-robin) and binds through pods/binding. */
  private async bind(pod: Pod): Promise<void> {
    const selector = pod.spec.nodeSelector ?? {};
    const named = requiredNodeNames(pod);
    const fits = this.ourNodes.filter((n) => {
      const labels = this.nodeObjects.get(n.name)?.metadata.labels ?? {};
      return Object.entries(selector).every(([k, v]) => labels[k] === v) && (named === undefined || named.has(n.name));
    });
    if (fits.length === 0) {
      this.log.warn({ pod: `${pod.metadata.namespace}/${pod.metadata.name}`, nodeSelector: selector }, "no node matches the nodeSelector; pod stays pending");
      return;
    }
    const node = fits[this.nextNode++ % fits.length]!;
    const { namespace, name, uid } = pod.metadata;
    await this.kube.create(`${resourcePath(PODS, namespace, name)}/binding`, {
      apiVersion: "v1",
      kind: "Binding",
      metadata: { name, namespace, uid },
      target: { apiVersion: "v1", kind: "Node", name: node.name },
    });
    this.log.info({ pod: `${namespace}/${name}`, node: node.name }, "pod bound");
  }

  private async setup(pod: Pod, node: LocalNode): Promise<PodRecord> {
    const { namespace = "default", name, uid = "" } = pod.metadata;
    const key = `${namespace}/${name}`;
    const rec: PodRecord = { namespace, name, uid, node: node.name, netns: podNetnsName(this.opts.nodes.prefix, uid), containerId: uid, restarts: 0 };
    // Recorded first: a crash from here on leaves a trail that teardown follows.
    this.records.pods[key] = rec;
    await this.save();
    if (!(await netnsExists(rec.netns))) await run("ip", ["netns", "add", rec.netns]);
    await run("ip", ["-n", rec.netns, "link", "set", "lo", "up"]);
    const result = JSON.parse(await this.cni("ADD", rec, node)) as { ips?: { address: string }[] };
    const address = result.ips?.[0]?.address;
    if (!address) throw new Error(`CNI ADD for ${key} returned no address`);
    rec.ip = address.split("/")[0];
    await this.save();
    await this.writeResolvConf(pod, rec);
    await this.startServer(pod, rec);
    this.log.info({ pod: key, node: node.name, ip: rec.ip, netns: rec.netns, pid: rec.pid }, "pod started");
    return rec;
  }

  /**
   * dnsPolicy ClusterFirst (the default): the pod resolves through the cluster DNS pods' addresses, as
   * a kubelet's clusterDNS does (here the pods' own addresses: the local cluster has no Service
   * routing of its own). No cluster DNS running yet, or dnsPolicy Default: the host's resolver.
   */
  private async writeResolvConf(pod: Pod, rec: PodRecord): Promise<void> {
    if ((pod.spec.dnsPolicy ?? "ClusterFirst") !== "ClusterFirst") return;
    const servers = this.pods
      .list()
      .filter((p) => p.metadata.namespace === CLUSTER_DNS.namespace && p.metadata.labels?.[CLUSTER_DNS.label] === CLUSTER_DNS.value)
      .filter((p) => p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") && p.status.podIP !== undefined && isIPv4(p.status.podIP))
      .map((p) => p.status!.podIP!)
      .sort();
    if (servers.length === 0) return;
    const etc = netnsEtcDir(rec.netns);
    await mkdir(etc, { recursive: true });
    await writeFile(join(etc, "resolv.conf"), clusterFirstResolvConf(servers, rec.namespace));
  }

  private async startServer(pod: Pod, rec: PodRecord): Promise<void> {
    const logFile = join(this.opts.nodes.dir, "pods", `${rec.namespace}_${rec.name}.log`);
    await mkdir(dirname(logFile), { recursive: true });
    const main = pod.spec.containers[0];
    if (main?.command && main.command.length > 0) return this.startCommand(rec, [...main.command, ...(main.args ?? [])], pod.spec.containers.flatMap((c) => c.ports ?? []), logFile);
    const ports = pod.spec.containers.flatMap((c) => c.ports ?? []);
    const tcp = ports.filter((p) => (p.protocol ?? "TCP") === "TCP").map((p) => p.containerPort);
    const udp = ports.filter((p) => p.protocol === "UDP").map((p) => p.containerPort);
    const errFd = openSync(logFile, "a");
    const script = await standaloneScript(podServerSource, dirname(podServerScript(this.opts.nodes.dir)));
    const argv = ["netns", "exec", rec.netns, process.execPath, script, "--name", rec.name, "--tcp", tcp.join(","), "--udp", udp.join(",")];
    // `ip netns exec` execs in place: the pid is the server's. Its own process group: a Ctrl-C to us is not one to it.
    const child = spawn("ip", argv, { detached: true, stdio: ["ignore", "pipe", errFd] });
    closeSync(errFd);
    child.unref();
    rec.pid = child.pid;
    rec.startedAt = new Date().toISOString();
    await this.save();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`pod server for ${rec.namespace}/${rec.name} not ready after 60 s; log ${logFile}`)), 60_000);
      const lines = createInterface({ input: child.stdout! });
      lines.on("line", (line) => {
        if (line === "ready") {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`pod server for ${rec.namespace}/${rec.name} exited with ${code}; log ${logFile}`));
      });
    });
    (child.stdout as NodeJS.ReadableStream & { unref?: () => void }).unref?.();
  }

  /** A container's command in the pod's netns (output to the pod's log); ready once every declared port listens. */
  private async startCommand(rec: PodRecord, command: string[], ports: ContainerPort[], logFile: string): Promise<void> {
    const fd = openSync(logFile, "a");
    const child = spawn("ip", ["netns", "exec", rec.netns, ...command], { detached: true, stdio: ["ignore", fd, fd] });
    closeSync(fd);
    child.unref();
    let exited: number | null | undefined;
    child.once("exit", (code) => (exited = code));
    rec.pid = child.pid;
    rec.command = command;
    rec.startedAt = new Date().toISOString();
    await this.save();
    const wanted = ports.map((p) => `${(p.protocol ?? "TCP").toLowerCase()}/${p.containerPort}`);
    const until = Date.now() + 60_000;
    for (;;) {
      if (exited !== undefined) throw new Error(`${command[0]} for ${rec.namespace}/${rec.name} exited with ${exited}; log ${logFile}`);
      const listening = await run("ip", ["netns", "exec", rec.netns, "ss", "-Hlntu"]).catch(() => "");
      const bound = new Set(listening.split("\n").flatMap((l) => {
        const f = l.trim().split(/\s+/);
        const port = f[4]?.split(":").pop();
        return f[0] && port ? [`${f[0]}/${port}`] : [];
      }));
      if (wanted.every((w) => bound.has(w))) return;
      if (Date.now() > until) throw new Error(`${command[0]} for ${rec.namespace}/${rec.name} does not listen on ${wanted.filter((w) => !bound.has(w)).join(", ")} after 60 s; log ${logFile}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Undoes setup in reverse: process (by pid), CNI DEL, netns; then forgets the record. Idempotent. */
  private async teardown(key: string): Promise<void> {
    const rec = this.records.pods[key];
    if (!rec) return;
    if (isPodProcess(rec, this.opts.nodes.dir)) await terminateProcess(rec.pid!, 5_000);
    const node = this.ourNodes.find((n) => n.name === rec.node);
    if (node && (await netnsExists(node.netns))) await this.cni("DEL", rec, node);
    if (await netnsExists(rec.netns)) await run("ip", ["netns", "del", rec.netns]);
    await rm(netnsEtcDir(rec.netns), { recursive: true, force: true });
    delete this.records.pods[key];
    await this.save();
    this.log.info({ pod: key, netns: rec.netns }, "pod torn down");
  }

  /** The API server keeps a bound pod with a deletionTimestamp until its kubelet confirms with grace period 0. */
  private async finalize(pod: Pod): Promise<void> {
    const { namespace, name, uid } = pod.metadata;
    try {
      await this.kube.request("DELETE", resourcePath(PODS, namespace, name), {
        kind: "DeleteOptions",
        apiVersion: "v1",
        gracePeriodSeconds: 0,
        preconditions: { uid },
      });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  private async writeStatus(pod: Pod, node: LocalNode, rec: PodRecord): Promise<void> {
    const st = pod.status ?? {};
    const ready = st.conditions?.find((c) => c.type === "Ready")?.status === "True";
    const restarts = st.containerStatuses?.[0]?.restartCount ?? 0;
    if (st.phase === "Running" && st.podIP === rec.ip && st.hostIP === node.internalIP && ready && restarts === rec.restarts) return;
    const now = new Date().toISOString();
    const cond = (type: string) => ({ type, status: "True", lastProbeTime: null, lastTransitionTime: now });
    await this.kube.mergePatch(`${resourcePath(PODS, rec.namespace, rec.name)}/status`, {
      status: {
        phase: "Running",
        hostIP: node.internalIP,
        hostIPs: [{ ip: node.internalIP }],
        podIP: rec.ip,
        podIPs: [{ ip: rec.ip }],
        startTime: rec.startedAt ?? now,
        conditions: [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
        containerStatuses: pod.spec.containers.map((c) => ({
          name: c.name,
          image: c.image ?? "",
          imageID: "",
          containerID: `membrane-local://${rec.uid}`,
          ready: true,
          started: true,
          restartCount: rec.restarts,
          state: { running: { startedAt: rec.startedAt ?? now } },
        })),
      },
    });
  }

  /** Runs the CNI plugin in the node's netns exactly as a runtime would: CNI_* env, config on stdin. */
  private async cni(command: "ADD" | "DEL", rec: PodRecord, node: LocalNode): Promise<string> {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CNI_COMMAND: command,
      CNI_CONTAINERID: rec.containerId,
      CNI_NETNS: `/run/netns/${rec.netns}`,
      CNI_IFNAME: "eth0",
      CNI_PATH: dirname(cniPlugin),
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${rec.namespace};K8S_POD_NAME=${rec.name};K8S_POD_INFRA_CONTAINER_ID=${rec.containerId};K8S_POD_UID=${rec.uid}`,
    };
    return run("ip", ["netns", "exec", node.netns, cniPlugin], JSON.stringify(cniConfig(this.opts.nodes, node)), env);
  }

  private save(): Promise<void> {
    const file = podsStateFile(this.opts.nodes.dir);
    const text = JSON.stringify(this.records, null, 2) + "\n";
    this.saving = this.saving.then(async () => {
      await writeFile(`${file}.tmp`, text);
      await rename(`${file}.tmp`, file);
    });
    return this.saving;
  }
}

/**
 * After a crash (no kubelet running): kills recorded pod servers, deletes pod netns (their veths go
 * with them; the node netns is removed by destroyNodes anyway) and the record file.
 */
export async function removeRecordedPods(dir: string): Promise<void> {
  const records = await loadPodRecords(dir);
  for (const rec of Object.values(records.pods)) {
    if (isPodProcess(rec, dir)) process.kill(rec.pid!, "SIGKILL");
    if (await netnsExists(rec.netns)) await run("ip", ["netns", "del", rec.netns]);
    await rm(netnsEtcDir(rec.netns), { recursive: true, force: true });
  }
  await removeKubeletFiles(dir);
}

/** The record file, pod server logs and compiled scripts (pod server, probe) in a cluster dir. */
async function removeKubeletFiles(dir: string): Promise<void> {
  await rm(podsStateFile(dir), { force: true });
  await rm(join(dir, "pods"), { recursive: true, force: true });
  await rm(dirname(podServerScript(dir)), { recursive: true, force: true });
}

/** `node --import tsx localcluster/kubelet.ts DIR KUBECONFIG`: the kubelet of `membrane dev`, until SIGTERM (which leaves pods running). */
async function main(): Promise<void> {
  const [dir, kubeconfig] = process.argv.slice(2);
  if (!dir || !kubeconfig) throw new Error("usage: kubelet.ts DIR KUBECONFIG");
  const nodes = await loadNodesState(dir);
  if (!nodes) throw new Error(`no nodes recorded in ${dir}`);
  const kubelet = new LocalKubelet({ nodes, kubeconfig });
  await kubelet.start();
  const stop = (): void => {
    void kubelet.stop().then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    process.stderr.write(`kubelet: ${(err as Error).message}\n`);
    process.exit(1);
  });
}

/** The kubelet process of `membrane dev`: its pid and log in the cluster dir. */
export function kubeletPaths(dir: string): { pidFile: string; logFile: string } {
  return { pidFile: join(dir, "kubelet.pid"), logFile: join(dir, "kubelet.log") };
}

const kubeletScript = fileURLToPath(import.meta.url);

function isKubeletProcess(pid: number, dir: string): boolean {
  if (!isProcessAlive(pid)) return false;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return argv.includes(kubeletScript) && argv.includes(dir);
  } catch {
    return false;
  }
}

/** Starts the kubelet as a detached process (it outlives the CLI) and waits until it watches pods. */
export async function startKubeletProcess(dir: string, kubeconfig: string, timeoutMs = 60_000): Promise<number> {
  const { pidFile, logFile } = kubeletPaths(dir);
  const logFd = openSync(logFile, "a");
  const child = spawn(process.execPath, ["--import", tsxLoader, kubeletScript, dir, kubeconfig], { detached: true, stdio: ["ignore", logFd, logFd] });
  closeSync(logFd);
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start the kubelet; log ${logFile}`);
  await writeFile(pidFile, `${child.pid}\n`);
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (!isProcessAlive(child.pid)) throw new Error(`the kubelet exited during start; log ${logFile}`);
    if ((await readFile(logFile, "utf8").catch(() => "")).includes('"msg":"kubelet started"')) return child.pid;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the kubelet did not start within ${timeoutMs} ms; log ${logFile}`);
}

/** Stops the recorded kubelet process (by pid, only if it is still ours); its pods keep running. */
export async function stopKubeletProcess(dir: string): Promise<void> {
  const { pidFile, logFile } = kubeletPaths(dir);
  const pid = Number.parseInt(await readFile(pidFile, "utf8").catch(() => ""), 10);
  if (Number.isInteger(pid) && pid > 0 && isKubeletProcess(pid, dir)) await terminateProcess(pid, 10_000);
  await rm(pidFile, { force: true });
  await rm(logFile, { force: true });
}
