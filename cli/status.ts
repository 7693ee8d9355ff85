// `membrane status`: the operator's leader and replicas, every node's agent (its conditions and its heartbeat Lease), counts of identities, policies and endpoints, and warnings; exit 1 when unhealthy.
import { parseArgs } from "node:util";
import { parseDuration } from "../core/duration.ts";
import { cliKubeconfig, KUBECONFIG_DEFAULT } from "./kubeconfig.ts";
import type { Condition } from "../kube/conditions.ts";
import { KubeClient, type KubeObject, type ObjectList, type Resource, isNotFound, resourcePath } from "../kube/kube.ts";
import { AGENT_LEASE_NAMESPACE, agentLeaseName, leaseLiveness } from "../kube/heartbeat.ts";
import type { LeaseSpec } from "../kube/leader.ts";
import { IDENTITY_ANNOTATION, type PodObject } from "../kube/objects.ts";
import { CCNPS, CILIUM_NODES, CNPS, DEPLOYMENTS, IDENTITIES, LEASES, PODS } from "../kube/resources.ts";

const USAGE = `usage: membrane status [flags]

Shows the operator's leader, every node's agent, counts of identities, policies and endpoints, and
warnings. Exits 0 when everything is healthy, 1 when not, 2 on a usage error.

  --kubeconfig PATH        kubeconfig (default: ${KUBECONFIG_DEFAULT})
  -o, --output text|json   (default text)
  --wait                   block until healthy (exit 1 if not healthy within --wait-duration)
  --wait-duration DURATION how long --wait waits (default 5m; e.g. 30s, 2m, 1h)
  --lease-name NAME        the operator's Lease (default membrane-operator, as the operator's --lease-name)
  --lease-namespace NS     where the Lease is (default: found in any namespace)
  --agent-lease-namespace NS
                           where agents renew their heartbeat Leases membrane-agent-NODE (default ${AGENT_LEASE_NAMESPACE},
                           as the agent's --lease-namespace); an agent whose Lease is missing or expired is not ready
`;

/** The operator's flag defaults (controllers/main.ts) and the chart's labels (charts/membrane). */
const DEFAULT_LEASE_NAME = "membrane-operator";
const OPERATOR_LABELS: Readonly<Record<string, string>> = { "app.kubernetes.io/name": "membrane", "app.kubernetes.io/component": "operator" };
/** Our clock against the operator's renewTime: tolerate this much skew before calling a lease expired. */
const CLOCK_SKEW_MS = 5_000;
const WAIT_POLL_MS = 1_000;
/** Without --wait, a read that fails is tried this often: an API server answers "(re)initializing" or 503 for moments. */
const READ_ATTEMPTS = 3;
const AGENT_CONDITIONS = ["Ready", "DatapathLoaded", "PolicySynced"] as const;

export interface LeaseObject extends KubeObject {
  spec?: LeaseSpec;
}
export interface DeploymentObject extends KubeObject {
  spec?: { replicas?: number };
  status?: { replicas?: number; readyReplicas?: number };
}
export interface CiliumNodeObject extends KubeObject {
  status?: { conditions?: Condition[]; agent?: { version?: string; policyVersion?: number } };
}
export interface PolicyObject extends KubeObject {
  status?: { observedGeneration?: number; conditions?: Condition[] };
}

/** What `membrane status` reads from the API server, in one go. */
export interface ClusterSnapshot {
  readonly leases: readonly LeaseObject[];
  /** The operator's Deployments; undefined when they could not be read (replicas are then unknown). */
  readonly deployments: readonly DeploymentObject[] | undefined;
  readonly nodes: readonly CiliumNodeObject[];
  /** The agents' heartbeat Leases, read from this namespace (any name; those named membrane-agent-<node> count). */
  readonly agentLeases: readonly LeaseObject[];
  readonly agentLeaseNamespace: string;
  readonly identities: number;
  readonly policies: readonly { readonly kind: string; readonly obj: PolicyObject }[];
  readonly pods: readonly PodObject[];
}

export interface AgentRow {
  readonly node: string;
  /** Per condition type: "True", or "False"/"Unknown" with the reason; "missing" when not published. */
  readonly conditions: Record<(typeof AGENT_CONDITIONS)[number], string>;
  readonly version?: string;
  readonly policyVersion?: number;
  /** When its heartbeat Lease was last renewed; absent when it has none. */
  readonly lastSeenSecondsAgo?: number;
  readonly ready: boolean;
}

export interface StatusReport {
  readonly healthy: boolean;
  readonly operator: {
    readonly leader?: string;
    readonly lease?: string;
    readonly renewedSecondsAgo?: number;
    readonly replicas?: { readonly desired: number; readonly ready: number };
  };
  readonly agents: readonly AgentRow[];
  readonly identities: number;
  readonly policies: { readonly total: number; readonly valid: number; readonly invalid: number; readonly enforced: number; readonly notEnforced: number; readonly pending: number };
  readonly endpoints: { readonly withIdentity: number; readonly pods: number };
  readonly warnings: readonly string[];
}

const condition = (cs: readonly Condition[] | undefined, type: string): Condition | undefined => cs?.find((c) => c.type === type);
const objectName = (kind: string, o: KubeObject): string => `${kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ""}${o.metadata.name}`;

/** The live leader among the leases: a holder whose last renewal is within its lease duration (plus skew). */
function liveLeader(leases: readonly LeaseObject[], now: Date): { lease: LeaseObject; holder: string; renewedMs: number } | undefined {
  for (const lease of leases) {
    const holder = lease.spec?.holderIdentity ?? "";
    const renew = Date.parse(lease.spec?.renewTime ?? lease.spec?.acquireTime ?? "");
    if (holder === "" || Number.isNaN(renew)) continue;
    const renewedMs = now.getTime() - renew;
    if (renewedMs <= (lease.spec?.leaseDurationSeconds ?? 15) * 1000 + CLOCK_SKEW_MS) return { lease, holder, renewedMs };
  }
  return undefined;
}

function operatorDeployment(deployments: readonly DeploymentObject[], namespace: string | undefined): DeploymentObject | undefined {
  const ours = deployments.filter((d) => Object.entries(OPERATOR_LABELS).every(([k, v]) => d.metadata.labels?.[k] === v));
  return ours.find((d) => d.metadata.namespace === namespace) ?? (ours.length === 1 ? ours[0] : undefined);
}

/** An agent's heartbeat: alive, expired (with when it was last seen) or missing; the Lease is named in the warning. */
interface Heartbeat {
  readonly lease: string;
  readonly alive: boolean;
  readonly lastSeenMs?: number;
}

function heartbeatOf(node: string, s: ClusterSnapshot, now: Date): Heartbeat {
  const l = s.agentLeases.find((x) => x.metadata.name === agentLeaseName(node));
  const lease = `${s.agentLeaseNamespace}/${agentLeaseName(node)}`;
  return l ? { lease, ...leaseLiveness(l.spec, now, CLOCK_SKEW_MS) } : { lease, alive: false };
}

/** "2m10s" for a user reading how long an agent has been silent. */
function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${s % 60 ? `${s % 60}s` : ""}`;
  const h = Math.floor(m / 60);
  return `${h}h${m % 60 ? `${m % 60}m` : ""}`;
}

function agentRow(cn: CiliumNodeObject, heartbeat: Heartbeat): AgentRow {
  const cs = cn.status?.conditions;
  const show = (type: string): string => {
    const c = condition(cs, type);
    if (!c) return "missing";
    return c.status === "True" ? "True" : `${c.status} (${c.reason})`;
  };
  // As the node lifecycle controller marks a node whose kubelet stopped renewing: its last conditions are stale, Ready is Unknown.
  const readyShown = heartbeat.alive ? show("Ready") : `Unknown (${heartbeat.lastSeenMs === undefined ? "NoHeartbeat" : "HeartbeatExpired"})`;
  const conditions = { Ready: readyShown, DatapathLoaded: show("DatapathLoaded"), PolicySynced: show("PolicySynced") };
  const agent = cn.status?.agent;
  return {
    node: cn.metadata.name,
    conditions,
    ...(agent?.version !== undefined ? { version: agent.version } : {}),
    ...(agent?.policyVersion !== undefined ? { policyVersion: agent.policyVersion } : {}),
    ...(heartbeat.lastSeenMs !== undefined ? { lastSeenSecondsAgo: Math.max(0, Math.round(heartbeat.lastSeenMs / 1000)) } : {}),
    ready: heartbeat.alive && AGENT_CONDITIONS.every((t) => conditions[t] === "True"),
  };
}

type PolicyState = "invalid" | "enforced" | "notEnforced" | "pending";

/** A policy's state from the conditions the operator wrote for its current generation; older or absent ones are pending. */
function policyState(obj: PolicyObject): { state: PolicyState; why?: Condition } {
  const cs = obj.status?.conditions;
  const current = obj.status?.observedGeneration === undefined || obj.status.observedGeneration === obj.metadata.generation;
  if (!current || !cs) return { state: "pending" };
  const valid = condition(cs, "Valid");
  if (valid?.status === "False") return { state: "invalid", why: valid };
  const enforced = condition(cs, "Enforced");
  if (enforced?.status === "True") return { state: "enforced" };
  if (enforced?.status === "False") return { state: "notEnforced", why: enforced };
  return { state: "pending" };
}

/** Judges a snapshot: healthy when an operator leads, every agent is alive (heartbeat) and ready, and no policy is invalid or not enforced. */
export function statusReport(s: ClusterSnapshot, now: Date): StatusReport {
  const warnings: string[] = [];
  const leader = liveLeader(s.leases, now);
  if (!leader) {
    const held = s.leases.map((l) => `${l.metadata.namespace}/${l.metadata.name}${l.spec?.holderIdentity ? ` (last held by ${l.spec.holderIdentity}, expired)` : " (released)"}`);
    warnings.push(s.leases.length === 0 ? "no operator leader: no operator Lease found" : `no operator leader: ${held.join(", ")}`);
  }
  const deployment = s.deployments && operatorDeployment(s.deployments, leader?.lease.metadata.namespace);
  const replicas = deployment ? { desired: deployment.spec?.replicas ?? 1, ready: deployment.status?.readyReplicas ?? 0 } : undefined;
  if (replicas && replicas.ready < replicas.desired) warnings.push(`operator: ${replicas.ready}/${replicas.desired} replicas ready`);

  const nodes = [...s.nodes].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  const heartbeats = new Map(nodes.map((n) => [n.metadata.name, heartbeatOf(n.metadata.name, s, now)]));
  const agents = nodes.map((n) => agentRow(n, heartbeats.get(n.metadata.name)!));
  if (agents.length === 0) warnings.push("no agent has registered: no CiliumNode exists");
  for (const a of agents) {
    if (a.ready) continue;
    const hb = heartbeats.get(a.node)!;
    if (!hb.alive) {
      warnings.push(
        hb.lastSeenMs === undefined
          ? `agent on node ${a.node} is not ready: no heartbeat Lease ${hb.lease} (the agent has not started, or cannot reach the API server)`
          : `agent on node ${a.node} is not ready: last seen ${ago(hb.lastSeenMs)} ago (heartbeat Lease ${hb.lease} expired; its conditions are stale)`,
      );
      continue;
    }
    const cs = s.nodes.find((n) => n.metadata.name === a.node)?.status?.conditions;
    const failing = AGENT_CONDITIONS.map((t) => condition(cs, t)).find((c) => c !== undefined && c.status !== "True");
    const why = failing ? `${failing.type}=${failing.status} (${failing.reason}): ${failing.message}` : "it has not published its conditions";
    warnings.push(`agent on node ${a.node} is not ready: ${why}`);
  }
  // The host firewall's own condition (only agents running it publish one): not enforcing where it should is worth a warning.
  for (const n of nodes) {
    const hf = condition(n.status?.conditions, "HostFirewall");
    if (hf && hf.status !== "True") warnings.push(`host firewall on node ${n.metadata.name}: HostFirewall=${hf.status} (${hf.reason}): ${hf.message}`);
  }

  const counts = { total: s.policies.length, valid: 0, invalid: 0, enforced: 0, notEnforced: 0, pending: 0 };
  for (const { kind, obj } of s.policies) {
    const { state, why } = policyState(obj);
    counts[state]++;
    if (state !== "invalid" && condition(obj.status?.conditions, "Valid")?.status === "True") counts.valid++;
    if (state === "invalid") warnings.push(`${objectName(kind, obj)} is invalid: ${why?.message ?? ""}`);
    if (state === "notEnforced") warnings.push(`${objectName(kind, obj)} is not enforced (${why?.reason ?? ""}): ${why?.message ?? ""}`);
  }

  const managed = s.pods.filter((p) => !p.spec?.hostNetwork);
  const withIdentity = managed.filter((p) => p.metadata.annotations?.[IDENTITY_ANNOTATION] !== undefined).length;
  return {
    healthy: warnings.length === 0,
    operator: {
      ...(leader ? { leader: leader.holder, lease: `${leader.lease.metadata.namespace}/${leader.lease.metadata.name}`, renewedSecondsAgo: Math.max(0, Math.round(leader.renewedMs / 1000)) } : {}),
      ...(replicas ? { replicas } : {}),
    },
    agents,
    identities: s.identities,
    policies: counts,
    endpoints: { withIdentity, pods: managed.length },
    warnings,
  };
}

function table(rows: readonly (readonly string[])[]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("   ").trimEnd());
}

/** The human view, in `cilium status`'s spirit: one line per component, the agents as a table, then the warnings. */
export function formatStatus(r: StatusReport): string {
  const o = r.operator;
  const leader = o.leader ? `leader ${o.leader} (lease ${o.lease}, renewed ${o.renewedSecondsAgo}s ago)` : "NO LEADER";
  const replicas = o.replicas ? `${o.replicas.ready}/${o.replicas.desired} replicas ready` : "replicas unknown";
  const ready = r.agents.filter((a) => a.ready).length;
  const p = r.policies;
  const lines = [
    `Operator:     ${leader}; ${replicas}`,
    `Agents:       ${ready}/${r.agents.length} ready`,
    ...table([
      ["NODE", "READY", "DATAPATH-LOADED", "POLICY-SYNCED", "VERSION", "ACKED-POLICY-VERSION"],
      ...r.agents.map((a) => [a.node, a.conditions.Ready, a.conditions.DatapathLoaded, a.conditions.PolicySynced, a.version ?? "-", a.policyVersion === undefined ? "-" : String(a.policyVersion)]),
    ]).map((l) => `  ${l}`),
    `Identities:   ${r.identities}`,
    `Policies:     ${p.total} (${p.valid} valid, ${p.invalid} invalid; ${p.enforced} enforced, ${p.notEnforced} not enforced, ${p.pending} pending)`,
    `Endpoints:    ${r.endpoints.withIdentity} pods with an identity (of ${r.endpoints.pods})`,
  ];
  if (r.warnings.length > 0) lines.push(`Warnings:`, ...r.warnings.map((w) => `  ! ${w}`));
  lines.push(`Status:       ${r.healthy ? "healthy" : `unhealthy (${r.warnings.length} warning${r.warnings.length === 1 ? "" : "s"})`}`);
  return lines.join("\n") + "\n";
}

async function list<T>(client: KubeClient, resource: Resource): Promise<T[]> {
  try {
    return (await client.get<ObjectList<T>>(resourcePath(resource))).items;
  } catch (e) {
    if (isNotFound(e)) throw new Error(`the API server does not serve ${resource.plural} (${resource.group || "core"}/${resource.version}): are Membrane's CRDs installed?`, { cause: e });
    throw e;
  }
}

export interface StatusOptions {
  readonly leaseName: string;
  readonly leaseNamespace?: string;
  /** Default AGENT_LEASE_NAMESPACE. */
  readonly agentLeaseNamespace?: string;
}

/** Reads everything the report needs; the operator's Deployment is optional (a user may not see it). */
export async function readSnapshot(client: KubeClient, o: StatusOptions): Promise<ClusterSnapshot> {
  const leases = async (): Promise<LeaseObject[]> => {
    if (o.leaseNamespace === undefined) return (await list<LeaseObject>(client, LEASES)).filter((l) => l.metadata.name === o.leaseName);
    try {
      return [await client.get<LeaseObject>(resourcePath(LEASES, o.leaseNamespace, o.leaseName))];
    } catch (e) {
      if (isNotFound(e)) return [];
      throw e;
    }
  };
  const agentLeaseNamespace = o.agentLeaseNamespace ?? AGENT_LEASE_NAMESPACE;
  const agentLeases = async (): Promise<LeaseObject[]> => (await client.get<ObjectList<LeaseObject>>(resourcePath(LEASES, agentLeaseNamespace))).items;
  const [l, agentLeaseList, deployments, nodes, identities, cnps, ccnps, pods] = await Promise.all([
    leases(),
    agentLeases(),
    list<DeploymentObject>(client, DEPLOYMENTS).catch(() => undefined),
    list<CiliumNodeObject>(client, CILIUM_NODES),
    list<KubeObject>(client, IDENTITIES),
    list<PolicyObject>(client, CNPS),
    list<PolicyObject>(client, CCNPS),
    list<PodObject>(client, PODS),
  ]);
  return {
    leases: l,
    deployments,
    nodes,
    agentLeases: agentLeaseList,
    agentLeaseNamespace,
    identities: identities.length,
    policies: [...cnps.map((obj) => ({ kind: CNPS.kind, obj })), ...ccnps.map((obj) => ({ kind: CCNPS.kind, obj }))],
    pods,
  };
}

interface Flags {
  readonly kubeconfig?: string;
  readonly output: "text" | "json";
  readonly waitMs?: number;
  readonly lease: StatusOptions;
}

/** The flags, or the error naming the flag at fault. */
const OPTIONS = {
  kubeconfig: { type: "string" },
  output: { type: "string", short: "o", default: "text" },
  wait: { type: "boolean", default: false },
  "wait-duration": { type: "string" },
  "lease-name": { type: "string", default: DEFAULT_LEASE_NAME },
  "lease-namespace": { type: "string" },
  "agent-lease-namespace": { type: "string" },
  help: { type: "boolean", short: "h", default: false },
} as const;

export function parseFlags(args: string[]): Flags | { error: string } | { help: true } {
  let v: ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>["values"];
  try {
    v = parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    return { error: (e as Error).message };
  }
  if (v.help) return { help: true };
  if (v.output !== "text" && v.output !== "json") return { error: `--output: "${v.output}" is not text or json` };
  const duration = v["wait-duration"];
  if (duration !== undefined && !v.wait) return { error: "--wait-duration: only with --wait" };
  const waitMs = v.wait ? parseDuration(duration ?? "5m") : undefined;
  if (v.wait && (waitMs === undefined || waitMs <= 0)) return { error: `--wait-duration: "${duration}" is not a positive duration (e.g. 30s, 5m, 1h)` };
  if (v["lease-name"] === "") return { error: "--lease-name: must not be empty" };
  if (v["lease-namespace"] === "") return { error: "--lease-namespace: must not be empty" };
  if (v["agent-lease-namespace"] === "") return { error: "--agent-lease-namespace: must not be empty" };
  return {
    ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}),
    output: v.output,
    ...(waitMs !== undefined ? { waitMs } : {}),
    lease: {
      leaseName: v["lease-name"] ?? DEFAULT_LEASE_NAME,
      ...(v["lease-namespace"] !== undefined ? { leaseNamespace: v["lease-namespace"] } : {}),
      ...(v["agent-lease-namespace"] !== undefined ? { agentLeaseNamespace: v["agent-lease-namespace"] } : {}),
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One reading of the cluster, tried READ_ATTEMPTS times before its failure is reported. */
async function readReport(client: KubeClient, lease: StatusOptions): Promise<{ report?: StatusReport; failure?: string }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return { report: statusReport(await readSnapshot(client, lease), new Date()) };
    } catch (e) {
      if (attempt >= READ_ATTEMPTS) return { failure: (e as Error).message };
      await sleep(WAIT_POLL_MS);
    }
  }
}

export async function run(args: string[]): Promise<number> {
  const flags = parseFlags(args);
  if ("help" in flags) {
    process.stdout.write(USAGE);
    return 0;
  }
  if ("error" in flags) {
    process.stderr.write(`membrane status: ${flags.error}\n\n${USAGE}`);
    return 2;
  }
  let client: KubeClient;
  try {
    client = await KubeClient.fromKubeconfig(await cliKubeconfig(flags.kubeconfig));
  } catch (e) {
    process.stderr.write(`membrane status: cannot load the kubeconfig: ${(e as Error).message}\n`);
    return 1;
  }
  const deadline = Date.now() + (flags.waitMs ?? 0);
  let lastWaiting = "";
  try {
    for (;;) {
      const { report, failure } = await readReport(client, flags.lease);
      if (report?.healthy || flags.waitMs === undefined || Date.now() >= deadline) {
        if (!report) {
          process.stderr.write(`membrane status: cannot read the cluster's state: ${failure}\n`);
          return 1;
        }
        process.stdout.write(flags.output === "json" ? JSON.stringify(report, null, 2) + "\n" : formatStatus(report));
        if (!report.healthy && flags.waitMs !== undefined) process.stderr.write(`membrane status: not healthy after waiting ${Math.round(flags.waitMs / 1000)}s\n`);
        return report.healthy ? 0 : 1;
      }
      // While waiting, say what is still wrong each time it changes (on stderr: stdout stays the final report).
      const waiting = failure ?? report?.warnings.join("; ") ?? "";
      if (waiting !== lastWaiting) process.stderr.write(`waiting: ${waiting}\n`);
      lastWaiting = waiting;
      await sleep(Math.min(WAIT_POLL_MS, Math.max(0, deadline - Date.now())));
    }
  } finally {
    client.close();
  }
}
