// Shared setup for end-to-end tests with real packets: a control plane + `dev up` nodes with a unique prefix, pods, long-lived in-pod probers, and an enforcement barrier.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { devClusterUp, devNodesDown } from "../cli/dev-pods.ts";
import type { DevEncryption } from "../localcluster/devcluster.ts";
import { KubeClient, apiVersionOf, resourcePath, type KubeObject, type Resource } from "../kube/kube.ts";
import { CCNPS, CNPS, NAMESPACES, NETWORK_POLICIES, PODS as POD_RESOURCE } from "../kube/resources.ts";
import { traceVerdict, type TraceCluster, type TraceNamespace, type TracePod } from "../cli/trace.ts";
import { PODS, type ModelPod, type Probe } from "../core/conformance/model.ts";
import { isProcessAlive, startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { ensureDatapathObject } from "../localcluster/prerequisites.ts";
import { loadPodRecords } from "../localcluster/kubelet.ts";
import { listNetns, run, terminateProcess } from "../localcluster/nodes.ts";
import type { LookupResult, ProbeAnswer, ProbeRequest, ProbeResult } from "../localcluster/probe.ts";
import { standaloneScript } from "../localcluster/standalone.ts";

const probeSource = fileURLToPath(new URL("../localcluster/probe.ts", import.meta.url));

export interface TestPodSpec {
  namespace: string;
  name: string;
  /** Node index from 1 (the node is `${prefix}node-${node}`). */
  node: number;
  labels: Record<string, string>;
  ports: readonly { name?: string; port: number; protocol: "TCP" | "UDP" }[];
}

/**
 * A real control plane and `nodes` local nodes (operator, kubelet, one agent each), all named with
 * `prefix` so parallel runs never collide. `stop()` removes exactly what this made, even after a
 * failed or partial `start()`.
 */
export class TestCluster {
  cp: ControlPlane | undefined;
  dir = "";
  private readonly probers: PodProber[] = [];
  private client: KubeClient | undefined;

  constructor(readonly prefix: string) {}

  nodeName(i: number): string {
    return `${this.prefix}node-${i}`;
  }

  /** `clusterDns`: the outside hosts and kube-system/kube-dns (dnsmasq), as `membrane dev up` makes them; pods created afterwards resolve through it. */
  async start(nodes: number, opts: { encryption?: DevEncryption; hostFirewall?: boolean; clusterDns?: boolean; runtime?: boolean } = {}): Promise<void> {
    // As `dev up` does: agents load bpf/build/datapath.o, which must match bpf/ (a stale object refuses new maps).
    await ensureDatapathObject();
    this.dir = await mkdtemp(join(tmpdir(), `${this.prefix}dev-`));
    this.cp = await startControlPlane({ name: `${this.prefix}cp`, controllers: true });
    await devClusterUp(this.dir, this.cp.kubeconfig, this.cp.kubectl, nodes, { prefix: this.prefix, ...opts });
  }

  /** The API client (keep-alive connections: cheaper than a kubectl process for polling and bulk writes). */
  async kube(): Promise<KubeClient> {
    this.client ??= await KubeClient.fromKubeconfig(this.cp!.kubeconfig);
    return this.client;
  }

  /** Stops every prober started by `prober()` (before taking the pods down: they live in the pods' network namespaces). */
  async stopProbers(): Promise<void> {
    for (const p of this.probers.splice(0)) await p.stop().catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.client?.close();
    await this.stopProbers();
    if (this.dir) await devNodesDown(this.dir, this.cp?.kubeconfig).catch(() => undefined);
    for (const ns of await listNetns(this.prefix)) await run("ip", ["netns", "del", ns]).catch(() => undefined);
    await this.cp?.stop();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  /** kubectl that must succeed; its stdout. */
  async kubectl(args: string[], input?: string): Promise<string> {
    const res = await this.cp!.kubectl(args, input);
    assert.equal(res.code, 0, `kubectl ${args.join(" ")}: ${res.stderr}`);
    return res.stdout;
  }

  /**
   * Creates the namespaces (with their labels; the controller manager gives each its default
   * service account) and the pods, waits until every pod is Ready, and returns each pod's IP by
   * "namespace/name".
   */
  async createPods(namespaces: Record<string, Record<string, string>>, pods: readonly TestPodSpec[]): Promise<Map<string, string>> {
    const items: unknown[] = [];
    for (const [name, labels] of Object.entries(namespaces)) {
      if (name !== "default") items.push({ apiVersion: "v1", kind: "Namespace", metadata: { name, labels } });
    }
    for (const p of pods) {
      items.push({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: p.name, namespace: p.namespace, labels: p.labels },
        spec: {
          nodeName: this.nodeName(p.node),
          automountServiceAccountToken: false,
          containers: [{ name: "main", image: "any", ports: p.ports.map((c) => ({ ...(c.name ? { name: c.name } : {}), containerPort: c.port, protocol: c.protocol })) }],
        },
      });
    }
    await this.kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items }));
    for (const ns of new Set(pods.map((p) => p.namespace))) {
      await this.kubectl(["wait", "pod", "--all", "-n", ns, "--for=condition=Ready", "--timeout=120s"]);
    }
    const list = JSON.parse(await this.kubectl(["get", "pods", "-A", "-o", "json"])) as { items: { metadata: { name: string; namespace: string }; status: { podIP?: string } }[] };
    const ips = new Map<string, string>();
    for (const i of list.items) if (i.status.podIP) ips.set(`${i.metadata.namespace}/${i.metadata.name}`, i.status.podIP);
    const missing = pods.filter((p) => !ips.has(`${p.namespace}/${p.name}`)).map((p) => `${p.namespace}/${p.name}`);
    assert.deepEqual(missing, [], "every pod has an IP");
    return ips;
  }

  /** A prober inside the pod's network namespace, stopped by `stop()`. */
  async prober(namespace: string, pod: string): Promise<PodProber> {
    const p = await PodProber.start(this.dir, namespace, pod);
    this.probers.push(p);
    return p;
  }

  /** A prober inside any network namespace (a node's, a test host's), stopped by `stop()`. */
  async netnsProber(netns: string): Promise<PodProber> {
    const p = await PodProber.inNetns(this.dir, netns);
    this.probers.push(p);
    return p;
  }
}

/**
 * One long-lived `probe.ts --serve` process inside a pod's network namespace: each probe is a
 * request line and costs a socket, not a process start, so a test can run hundreds in parallel.
 */
export class PodProber {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: ProbeResult | LookupResult) => void; reject: (e: Error) => void }>();
  private exited = false;
  private stderr = "";

  private constructor(
    readonly pod: string,
    private readonly child: ChildProcess,
  ) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const a = JSON.parse(line) as ProbeAnswer;
      const waiter = this.pending.get(a.id);
      if (!waiter) return;
      this.pending.delete(a.id);
      if (a.verdict === "error") waiter.reject(new Error(`prober in ${pod}: ${a.error}`));
      else waiter.resolve(a);
    });
    child.stderr!.on("data", (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)));
    child.on("exit", () => {
      this.exited = true;
      for (const [id, w] of this.pending) {
        this.pending.delete(id);
        w.reject(new Error(`prober in ${pod} exited: ${this.stderr}`));
      }
    });
  }

  static async start(dir: string, namespace: string, pod: string): Promise<PodProber> {
    const rec = (await loadPodRecords(dir)).pods[`${namespace}/${pod}`];
    if (!rec) throw new Error(`pod ${namespace}/${pod} is not running on a local node`);
    return PodProber.inNetns(dir, rec.netns, `${namespace}/${pod}`);
  }

  /** A prober in any network namespace (a node's, a test host's); the caller stops it. */
  static async inNetns(dir: string, netns: string, label = netns): Promise<PodProber> {
    const script = await standaloneScript(probeSource, join(dir, "bin"));
    // `ip netns exec` execs the command, so the child's pid is the node process itself.
    const child = spawn("ip", ["netns", "exec", netns, process.execPath, script, "--serve"], { stdio: ["pipe", "pipe", "pipe"] });
    return new PodProber(label, child);
  }

  /**
   * A prober in the network namespace at `path` (a process's `/proc/PID/ns/net`: a real pod's, entered from the host
   * through its container's process); only the network namespace changes. The caller stops it.
   */
  static async inNetnsPath(dir: string, path: string, label: string): Promise<PodProber> {
    const script = await standaloneScript(probeSource, join(dir, "bin"));
    // nsenter execs the command, so the child's pid is the node process itself.
    const child = spawn("nsenter", [`--net=${path}`, "--", process.execPath, script, "--serve"], { stdio: ["pipe", "pipe", "pipe"] });
    return new PodProber(label, child);
  }

  probe(host: string, port: number, opts: { udp?: boolean; timeoutMs: number }): Promise<ProbeResult> {
    return this.ask({ id: this.nextId++, host, port, timeoutMs: opts.timeoutMs, ...(opts.udp ? { udp: true } : {}) }, `${host}:${port}`) as Promise<ProbeResult>;
  }

  /**
   * An A lookup through the pod's resolv.conf (the cluster DNS), or `server` ("ip:port"); `name.` with a trailing dot skips the search list.
   * With `tcp`, one query over TCP to the first nameserver (or `server`), the name as given.
   */
  lookup(name: string, opts: { timeoutMs: number; server?: string; tcp?: boolean }): Promise<LookupResult> {
    const answer = this.ask({ id: this.nextId++, lookup: name, timeoutMs: opts.timeoutMs, ...(opts.server !== undefined ? { server: opts.server } : {}), ...(opts.tcp ? { tcp: true } : {}) }, `lookup ${name}`) as Promise<LookupResult>;
    return answer.then(({ verdict, rcode, addresses }) => ({ verdict, rcode, addresses }));
  }

  private ask(req: ProbeRequest, what: string): Promise<ProbeResult | LookupResult> {
    if (this.exited) return Promise.reject(new Error(`prober in ${this.pod} exited: ${this.stderr}`));
    return new Promise((resolve, reject) => {
      const guard = setTimeout(() => {
        this.pending.delete(req.id);
        reject(new Error(`prober in ${this.pod} gave no answer to ${what} within ${req.timeoutMs + 10_000} ms: ${this.stderr}`));
      }, req.timeoutMs + 10_000);
      this.pending.set(req.id, {
        resolve: (r) => {
          clearTimeout(guard);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(guard);
          reject(e);
        },
      });
      this.child.stdin!.write(JSON.stringify(req) + "\n");
    });
  }

  /** Ends its input (it exits once in-flight probes answer), then terminates it by pid if it lingers. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((r) => this.child.once("exit", () => r()));
    this.child.stdin!.end();
    const timer = new Promise<void>((r) => setTimeout(r, 3_000).unref());
    await Promise.race([exited, timer]);
    if (!this.exited && this.child.pid !== undefined && isProcessAlive(this.child.pid)) await terminateProcess(this.child.pid, 2_000);
  }
}

/**
 * One probe of the conformance model as a 9×9 table in the model's notation ('.' connected, 'X' blocked, '-' self;
 * '?' connected to the wrong pod), every pair at once, each from a PodProber in the source pod (so a UDP cell is '.'
 * only when a reply datagram came back). The process-based cluster's and the real pods' conformance tests both measure
 * through it; `replyOf` is what the destination's server answers with.
 */
export async function measureModelTable(probe: Probe, opts: { proberOf: (pod: ModelPod) => PodProber; addressOf: (pod: ModelPod) => string; replyOf: (pod: ModelPod) => string; timeoutMs: number }): Promise<string[]> {
  return Promise.all(
    PODS.map(async (src) => {
      const cells = await Promise.all(
        PODS.map(async (dst) => {
          if (src === dst) return "-";
          const r = await opts.proberOf(src).probe(opts.addressOf(dst), probe.port, { udp: probe.protocol === "UDP", timeoutMs: opts.timeoutMs });
          if (r.verdict !== "connected") return "X";
          return r.reply === opts.replyOf(dst) ? "." : "?";
        }),
      );
      return cells.join("");
    }),
  );
}

/**
 * What `membrane policy trace` says for every pair of the model's pods on one probe's port and protocol, from the
 * cluster's objects as the API server returns them, as a table in the same notation ('.' allowed, 'X' denied, '-'
 * self). The process-based cluster's WireGuard variant and the real pods' conformance test compare it with the packets.
 */
export async function tracedModelTable(kube: KubeClient, probe: Probe): Promise<string[]> {
  // List items lack apiVersion and kind, which the trace's parser needs.
  const listAll = async (r: Resource): Promise<KubeObject[]> => (await kube.get<{ items: KubeObject[] }>(resourcePath(r))).items.map((o) => ({ ...o, apiVersion: apiVersionOf(r), kind: r.kind }));
  const [pods, namespaces, ...policies] = await Promise.all([POD_RESOURCE, NAMESPACES, NETWORK_POLICIES, CNPS, CCNPS].map(listAll));
  const cluster: TraceCluster = { pods: pods as TracePod[], namespaces: namespaces as TraceNamespace[], policies: policies.flat() };
  return PODS.map((src) =>
    PODS.map((dst) => {
      if (src === dst) return "-";
      const r = traceVerdict(cluster, { from: src.id, to: dst.id, port: probe.port, protocol: probe.protocol });
      if (!r.ok) assert.fail(`policy trace ${src.id} -> ${dst.id} ${probe.protocol}/${probe.port}: ${r.error}`);
      return r.answer.verdict === "allow" ? "." : "X";
    }).join(""),
  );
}

interface PolicyObjectView {
  metadata: { generation: number };
  status?: { observedGeneration?: number; enforced?: string; conditions?: { type: string; status: string; observedGeneration?: number }[] };
}

/**
 * Waits until the operator reports the current generation of a CNP/CCNP enforced by all `nodes`
 * nodes (status.observedGeneration = metadata.generation, Enforced=True, enforced "n/n").
 */
export async function waitEnforced(tc: Pick<TestCluster, "kube">, resource: Resource, namespace: string | undefined, name: string, nodes: number, timeoutMs = 60_000): Promise<void> {
  const kube = await tc.kube();
  const end = Date.now() + timeoutMs;
  for (;;) {
    const obj = await kube.get<PolicyObjectView>(resourcePath(resource, namespace, name));
    const st = obj.status;
    const enforced = st?.conditions?.find((c) => c.type === "Enforced");
    if (st?.observedGeneration === obj.metadata.generation && enforced?.status === "True" && enforced.observedGeneration === obj.metadata.generation && st.enforced === `${nodes}/${nodes}`) return;
    if (Date.now() > end) assert.fail(`${resource.kind} ${namespace ? `${namespace}/` : ""}${name} not enforced on ${nodes}/${nodes} nodes within ${timeoutMs} ms: ${JSON.stringify({ generation: obj.metadata.generation, status: st })}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A barrier for policies that have no status (Kubernetes NetworkPolicy) and for deletions: a CNP
 * selecting one `sentinel` pod per node. Each `pass()` edits its spec and waits until every node's
 * agent acknowledged that generation. Each node gets whole states computed from the operator's
 * caches, so an acknowledged state holding the newer sentinel also holds every policy change the
 * operator saw before it; changes made before the edit are seen first in practice (separate watches
 * promise no strict order, so a rare miss shows up as a table mismatch, never as a false pass).
 * It selects only the sentinel pods, so it changes no verdict of any other pod.
 */
export class EnforcementBarrier {
  static readonly NAMESPACE = "membrane-sentinel";
  private round = 0;

  constructor(
    private readonly tc: TestCluster,
    private readonly nodes: number,
  ) {}

  /** The namespace and pods to add to `createPods`. */
  pods(): { namespaces: Record<string, Record<string, string>>; pods: TestPodSpec[] } {
    return {
      namespaces: { [EnforcementBarrier.NAMESPACE]: { purpose: "sentinel" } },
      pods: Array.from({ length: this.nodes }, (_, i) => ({ namespace: EnforcementBarrier.NAMESPACE, name: `sentinel-${i + 1}`, node: i + 1, labels: { role: "sentinel" }, ports: [] })),
    };
  }

  async pass(): Promise<void> {
    this.round++;
    const cnp = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "sentinel", namespace: EnforcementBarrier.NAMESPACE },
      spec: { endpointSelector: { matchLabels: { role: "sentinel" } }, ingress: [{ fromEndpoints: [{ matchLabels: { role: "sentinel", round: String(this.round) } }] }] },
    };
    const kube = await this.tc.kube();
    const path = resourcePath(CNPS, EnforcementBarrier.NAMESPACE, "sentinel");
    if (this.round === 1) await kube.create(resourcePath(CNPS, EnforcementBarrier.NAMESPACE), cnp);
    else await kube.mergePatch(path, { spec: cnp.spec });
    await waitEnforced(this.tc, CNPS, EnforcementBarrier.NAMESPACE, "sentinel", this.nodes);
  }
}
