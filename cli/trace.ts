// `membrane policy trace`: the verdict the cluster's policies give a connection between two pods, and the rule that decides it.
import { securityLabels } from "../core/labels.ts";
import { parsePolicyObject } from "../core/parser/index.ts";
import { verdict, type DirectionVerdict, type VerdictAnswer } from "../core/evaluator.ts";
import { PROTO_NUMBER, type LabelSet, type Policy } from "../core/model.ts";
import { MIN_CLUSTER_IDENTITY } from "../core/identity.ts";
import { parseFlags } from "../kube/flags.ts";
import { cliKubeconfig } from "./kubeconfig.ts";
import { IDENTITY_ANNOTATION, type EndpointSliceObject, type ServiceObject } from "../kube/objects.ts";
import { serviceEndpoints } from "../kube/service-endpoints.ts";
import { serviceBackends } from "../core/compiler.ts";
import { canonicalPrefix, hostPrefix } from "../core/cidr.ts";
import { KubeClient, isNotFound, listAll, type Resource } from "../kube/kube.ts";
import { CCNPS, CNPS, ENDPOINT_SLICES, NAMESPACES, NETWORK_POLICIES, PODS, SERVICES } from "../kube/resources.ts";

const USAGE = `usage: membrane policy trace --from NS/POD --to NS/POD --port P [--protocol TCP|UDP|SCTP] [--kubeconfig PATH] [-o text|json]
`;

/** The parts of Pod and Namespace objects trace reads (as the API server lists them). */
export interface TracePod {
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly labels?: Record<string, string>; readonly annotations?: Record<string, string> };
  readonly spec?: {
    readonly serviceAccountName?: string;
    readonly containers?: readonly { readonly ports?: readonly { readonly name?: string; readonly containerPort: number; readonly protocol?: string }[] }[];
  };
  /** The pod's addresses: NetworkPolicy ipBlocks match pods by address; toServices backends are addresses. */
  readonly status?: { readonly podIP?: string; readonly podIPs?: readonly { readonly ip: string }[] };
}
export interface TraceNamespace {
  readonly metadata: { readonly name: string; readonly labels?: Record<string, string> };
}

export interface TraceQuery {
  readonly from: string; // NS/POD
  readonly to: string; // NS/POD
  readonly port: number;
  readonly protocol: "TCP" | "UDP" | "SCTP";
}

export interface TraceCluster {
  readonly pods: readonly TracePod[];
  readonly namespaces: readonly TraceNamespace[];
  /** Policy API objects (NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy). */
  readonly policies: readonly unknown[];
  readonly clusterName?: string;
  /** Services and EndpointSlices, for toServices (without them toServices selects nothing). */
  readonly services?: readonly ServiceObject[];
  readonly endpointSlices?: readonly EndpointSliceObject[];
}

export type TraceResult =
  | { readonly ok: true; readonly answer: VerdictAnswer; readonly text: string }
  | { readonly ok: false; readonly error: string };

function podRef(s: string): { namespace: string; pod: string } | undefined {
  const m = /^([^/]+)\/([^/]+)$/.exec(s);
  return m ? { namespace: m[1]!, pod: m[2]! } : undefined;
}

function reasonText(v: DirectionVerdict): string {
  if (v.rule === "default-deny") return "default deny";
  if (v.rule === "no-policy") return "no policy selects it (allow-all)";
  const o = v.rule;
  return `${o.policyKind} ${o.namespace !== undefined ? `${o.namespace}/` : ""}${o.name} ${o.path}`;
}

/**
 * The pure part of trace: cluster objects and a query → the evaluator's verdict and its text. A
 * pod's identity number is its identity annotation when it has one, otherwise a stand-in that is
 * equal for equal labels (numbers only matter for reserved identities here).
 */
export function traceVerdict(cluster: TraceCluster, q: TraceQuery): TraceResult {
  const policies: Policy[] = [];
  for (const [i, obj] of cluster.policies.entries()) {
    const r = parsePolicyObject(obj);
    if (!r.ok) {
      const meta = (obj as { kind?: unknown; metadata?: { namespace?: unknown; name?: unknown } } | null) ?? {};
      const who = `${String(meta.kind ?? "object")} ${meta.metadata?.namespace !== undefined ? `${String(meta.metadata.namespace)}/` : ""}${String(meta.metadata?.name ?? `#${i}`)}`;
      const first = r.errors[0];
      return { ok: false, error: `cannot trace: ${who} does not parse (${first ? `${first.path}: ${first.message}` : "invalid"}), so its rules are unknown` };
    }
    policies.push(...r.value);
  }
  const stand = new Map<string, number>();
  const identityOf = (pod: TracePod, namespace: string, nsLabels: Record<string, string>): { id: number; labels: LabelSet } => {
    const labels = securityLabels({
      podLabels: pod.metadata.labels ?? {},
      namespace,
      namespaceLabels: nsLabels,
      ...(pod.spec?.serviceAccountName !== undefined ? { serviceAccount: pod.spec.serviceAccountName } : {}),
      ...(cluster.clusterName !== undefined ? { clusterName: cluster.clusterName } : {}),
    });
    const annotated = Number(pod.metadata.annotations?.[IDENTITY_ANNOTATION]);
    if (Number.isInteger(annotated) && annotated >= MIN_CLUSTER_IDENTITY) return { id: annotated, labels };
    if (!stand.has(labels.key)) stand.set(labels.key, MIN_CLUSTER_IDENTITY + stand.size);
    return { id: stand.get(labels.key)!, labels };
  };
  const endpointOf = (flag: string, ref: string): { id: number; labels: LabelSet; pod: TracePod; address?: string } | string => {
    const r = podRef(ref);
    if (!r) return `--${flag}: "${ref}" is not NS/POD`;
    const pod = cluster.pods.find((p) => p.metadata.name === r.pod && (p.metadata.namespace ?? "default") === r.namespace);
    if (!pod) return `--${flag}: pod ${ref} not found`;
    const ns = cluster.namespaces.find((n) => n.metadata.name === r.namespace);
    if (!ns) return `--${flag}: namespace ${r.namespace} not found`;
    const address = pod.status?.podIP ? { address: pod.status.podIP } : {};
    return { ...identityOf(pod, r.namespace, ns.metadata.labels ?? {}), pod, ...address };
  };
  const src = endpointOf("from", q.from);
  if (typeof src === "string") return { ok: false, error: src };
  const dst = endpointOf("to", q.to);
  if (typeof dst === "string") return { ok: false, error: dst };
  // A named port (`port: http`) means the destination pod's containerPort of that name and protocol.
  const namedPorts = (identity: number, name: string, protocol: string): number[] =>
    identity !== dst.id
      ? []
      : (dst.pod.spec?.containers ?? []).flatMap((c) => c.ports ?? []).filter((p) => p.name === name && (p.protocol ?? "TCP") === protocol).map((p) => p.containerPort);
  // toServices: each Service's EndpointSlice addresses, a pod's address standing for the pod's identity (as the operator resolves them).
  const podIdentityByIP = new Map<string, number>();
  for (const pod of cluster.services?.length ? cluster.pods : []) {
    const namespace = pod.metadata.namespace ?? "default";
    const nsLabels = cluster.namespaces.find((n) => n.metadata.name === namespace)?.metadata.labels ?? {};
    const ips = (pod.status?.podIPs ?? []).map((p) => p.ip);
    if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
    for (const ip of ips) {
      const canonical = canonicalPrefix(hostPrefix(ip));
      if (canonical !== undefined) podIdentityByIP.set(canonical.slice(0, canonical.indexOf("/")), identityOf(pod, namespace, nsLabels).id);
    }
  }
  const services = serviceEndpoints(cluster.services ?? [], cluster.endpointSlices ?? []).map((e) => serviceBackends(e, (ip) => podIdentityByIP.get(ip)));
  const endpoint = (e: { id: number; labels: LabelSet; address?: string }) => ({ id: e.id, labels: e.labels, ...(e.address !== undefined ? { address: e.address } : {}) });
  const answer = verdict({ policies, src: endpoint(src), dst: endpoint(dst), protocol: PROTO_NUMBER[q.protocol], port: q.port, namedPorts, services });
  const decided = answer.direction === "egress" ? answer.egress : answer.ingress;
  const text =
    `${q.from} -> ${q.to} ${q.protocol}/${q.port}: ${answer.verdict === "allow" ? "ALLOWED" : "DENIED"}\n` +
    `decided by: ${reasonText(decided)} (${answer.direction} of ${answer.direction === "egress" ? q.from : q.to})\n` +
    `  egress of ${q.from}: ${answer.egress.verdict} by ${reasonText(answer.egress)}\n` +
    `  ingress of ${q.to}: ${answer.ingress.verdict} by ${reasonText(answer.ingress)}\n`;
  return { ok: true, answer, text };
}

export interface TraceArgs extends TraceQuery {
  readonly kubeconfig?: string;
  readonly output: "text" | "json";
}

export function parseTraceArgs(args: readonly string[]): { ok: true; value: TraceArgs } | { ok: false; error: string } {
  const flags = parseFlags({
    args: [...args],
    options: {
      from: { type: "string" },
      to: { type: "string" },
      port: { type: "string" },
      protocol: { type: "string" },
      kubeconfig: { type: "string" },
      output: { type: "string", short: "o" },
    },
  });
  if (!flags.ok) return { ok: false, error: flags.error };
  const v: Readonly<Record<string, string | undefined>> = flags.parsed.values;
  for (const req of ["from", "to", "port"]) if (v[req] === undefined) return { ok: false, error: `--${req}: required` };
  for (const f of ["from", "to"]) if (!podRef(v[f]!)) return { ok: false, error: `--${f}: "${v[f]}" is not NS/POD` };
  const port = /^\d+$/.test(v.port!) ? Number(v.port) : NaN;
  if (!(port >= 1 && port <= 65535)) return { ok: false, error: `--port: "${v.port}" is not a port (1-65535)` };
  const protocol = (v.protocol ?? "TCP").toUpperCase();
  if (protocol !== "TCP" && protocol !== "UDP" && protocol !== "SCTP") return { ok: false, error: `--protocol: "${v.protocol}" is not TCP, UDP or SCTP` };
  const output = v.output ?? "text";
  if (output !== "text" && output !== "json") return { ok: false, error: `-o: "${output}" is not text or json` };
  return {
    ok: true,
    value: { from: v.from!, to: v.to!, port, protocol, output, ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}) },
  };
}

/** Every object of a resource type in all namespaces; a type the server does not have (its CRD is not installed) yields none. */
async function itemsOf(client: KubeClient, r: Resource): Promise<unknown[]> {
  try {
    return await listAll<unknown>(client, r);
  } catch (err) {
    if (isNotFound(err)) return [];
    throw new Error(`listing ${r.plural}.${r.group || "core"}: ${(err as Error).message}`, { cause: err });
  }
}

/** Items of a list carry no apiVersion and kind; the parser needs them, so fill them in. */
function withKind(items: unknown[], apiVersion: string, kind: string): unknown[] {
  return items.map((o) => (o !== null && typeof o === "object" ? { apiVersion, kind, ...(o as object) } : o));
}

export async function runTrace(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(USAGE);
    return 0;
  }
  const parsed = parseTraceArgs(args);
  if (!parsed.ok) {
    process.stderr.write(`membrane policy trace: ${parsed.error}\n${USAGE}`);
    return 2;
  }
  const a = parsed.value;
  let cluster: TraceCluster;
  let client: KubeClient | undefined;
  try {
    const c = (client = await KubeClient.fromKubeconfig(await cliKubeconfig(a.kubeconfig)));
    const [pods, namespaces, knps, cnps, ccnps, services, endpointSlices] = await Promise.all([
      itemsOf(c, PODS), itemsOf(c, NAMESPACES), itemsOf(c, NETWORK_POLICIES), itemsOf(c, CNPS), itemsOf(c, CCNPS), itemsOf(c, SERVICES), itemsOf(c, ENDPOINT_SLICES),
    ]);
    cluster = {
      pods: pods as TracePod[],
      namespaces: namespaces as TraceNamespace[],
      services: services as ServiceObject[],
      endpointSlices: endpointSlices as EndpointSliceObject[],
      policies: [
        ...withKind(knps, "networking.k8s.io/v1", "NetworkPolicy"),
        ...withKind(cnps, "cilium.io/v2", "CiliumNetworkPolicy"),
        ...withKind(ccnps, "cilium.io/v2", "CiliumClusterwideNetworkPolicy"),
      ],
    };
  } catch (err) {
    process.stderr.write(`membrane policy trace: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    client?.close();
  }
  const r = traceVerdict(cluster, a);
  if (!r.ok) {
    process.stderr.write(`membrane policy trace: ${r.error}\n`);
    return 1;
  }
  process.stdout.write(a.output === "json" ? JSON.stringify({ verdict: r.answer.verdict, direction: r.answer.direction, egress: r.answer.egress, ingress: r.answer.ingress }, null, 2) + "\n" : r.text);
  return 0;
}
