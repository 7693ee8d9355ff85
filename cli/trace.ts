// `membrane policy trace`: the verdict the cluster's policies give a connection between two pods, or to or from a node's host endpoint, and the rule that decides it.
import { securityLabels } from "../core/labels.ts";
import { parsePolicyObject } from "../core/parser/index.ts";
import { type CIDRGroup, expandCIDRGroups, parseCIDRGroup } from "../core/cidr-group.ts";
import { httpInspection, verdict, type DirectionVerdict, type VerdictAnswer } from "../core/evaluator.ts";
import { PROTO_NUMBER, type LabelSet, type Policy, type RuleOrigin } from "../core/model.ts";
import type { HttpRequest } from "../core/l7/http-request.ts";
import { httpRulePath, requestVerdict, type HttpRuleAt, type RequestVerdict } from "../core/l7/request-verdict.ts";
import { IDENTITY, MIN_CLUSTER_IDENTITY, reservedIdentityById } from "../core/identity.ts";
import { parseFlags } from "../kube/flags.ts";
import { cliKubeconfig } from "./kubeconfig.ts";
import { IDENTITY_ANNOTATION, type EndpointSliceObject, type ServiceObject } from "../kube/objects.ts";
import { serviceEndpoints } from "../kube/service-endpoints.ts";
import { serviceBackends } from "../core/compiler.ts";
import { canonicalPrefix, hostPrefix, parseIP } from "../core/cidr.ts";
import { nodeHostLabels } from "../core/host-endpoint.ts";
import { hostTrace, hostTraceText, traceGuard, type HostTraceAnswer, type TraceParty } from "../core/host-trace.ts";
import { KubeClient, isNotFound, listAll, type Resource } from "../kube/kube.ts";
import { CCNPS, CIDR_GROUPS, CNPS, ENDPOINT_SLICES, NAMESPACES, NETWORK_POLICIES, NODES, PODS, SERVICES } from "../kube/resources.ts";

const USAGE = `usage: membrane policy trace FROM TO --port P [--protocol TCP|UDP|SCTP] [--api-server-port P] [--allow-localhost always|policy] [--kubeconfig PATH] [-o text|json]
                              [--http-method M --http-path P [--http-host H] [--http-header 'Name: value']...]
  FROM: --from NS/POD | --from reserved:init | --from-node NODE | --from-ip ADDRESS
  TO:   --to NS/POD   | --to reserved:init   | --to-node NODE   | --to-ip ADDRESS
reserved:init: a pod whose identity is not known yet (Cilium's init identity: the policies selecting it, always
enforced both ways), traced against a pod.
With --http-method and --http-path (between two pods, TCP), the request after the L3/L4 verdict: on
each side, whether the L7 proxy inspects it, which HTTP rule allows it, or that it answers 403.
A node is its host endpoint (the host firewall: CCNPs with a nodeSelector); an address is a pod's or a
node's when one has it, else outside the cluster (a policy CIDR's identity, or world). With a node, every
program that judges the connection is listed in order with the peer it sees. --api-server-port: the
chart's hostFirewall.apiServerPort, which the lock-out guard passes (VXLAN and WireGuard between nodes
are always modelled). --allow-localhost: the chart's allowLocalhost (default always: a node reaches its own
pods before their ingress policy; policy: that policy judges it, peer reserved:host).
`;

/** The parts of Pod and Namespace objects trace reads (as the API server lists them). */
export interface TracePod {
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly labels?: Record<string, string>; readonly annotations?: Record<string, string> };
  readonly spec?: {
    readonly serviceAccountName?: string;
    /** The node it runs on: which node is "its own" for the host firewall. */
    readonly nodeName?: string;
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
  /** An HTTP request to judge after the L3/L4 verdict (`host` "" when none is sent). */
  readonly http?: HttpRequest;
}

/** The HTTP request's verdict: each side's, and the one the client sees. */
export interface HttpTraceAnswer {
  readonly verdict: "allow" | "deny" | "not-reached";
  readonly egress?: RequestVerdict;
  readonly ingress?: RequestVerdict;
}

/** The parts of a Node object trace reads: its labels (nodeSelector) and addresses. */
export interface TraceNode {
  readonly metadata: { readonly name: string; readonly labels?: Record<string, string> };
  readonly status?: { readonly addresses?: readonly { readonly type?: string; readonly address: string }[] };
}

export interface TraceCluster {
  readonly pods: readonly TracePod[];
  /** Nodes, for --to-node/--from-node and addresses that are a node's. */
  readonly nodes?: readonly TraceNode[];
  readonly namespaces: readonly TraceNamespace[];
  /** Policy API objects (NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy). */
  readonly policies: readonly unknown[];
  readonly clusterName?: string;
  /** Services and EndpointSlices, for toServices (without them toServices selects nothing). */
  readonly services?: readonly ServiceObject[];
  readonly endpointSlices?: readonly EndpointSliceObject[];
  /** CiliumCIDRGroup objects, for cidrGroupRef/cidrGroupSelector (without them those entries select nothing, as in the datapath). */
  readonly cidrGroups?: readonly unknown[];
}

export type TraceResult =
  | { readonly ok: true; readonly answer: VerdictAnswer; readonly http?: HttpTraceAnswer; readonly text: string }
  | { readonly ok: false; readonly error: string };

/** A pod at reserved:init (its identity late, or adopted before the agent's state): judged by the init policies. */
const INIT_REF = "reserved:init";

function podRef(s: string): { namespace: string; pod: string } | undefined {
  const m = /^([^/]+)\/([^/]+)$/.exec(s);
  return m ? { namespace: m[1]!, pod: m[2]! } : undefined;
}

function reasonText(v: DirectionVerdict): string {
  if (v.rule === "default-deny") return "default deny";
  if (v.rule === "no-policy") return "no policy selects it (allow-all)";
  return originText(v.rule);
}

function policyText(o: RuleOrigin): string {
  return `${o.policyKind} ${o.namespace !== undefined ? `${o.namespace}/` : ""}${o.name}`;
}

function originText(o: RuleOrigin): string {
  return `${policyText(o)} ${o.path}`;
}

const ruleAtText = (r: HttpRuleAt): string => `${policyText(r.origin)} ${httpRulePath(r)}`;

/** One side's verdict on the request, for the text. */
function requestText(v: RequestVerdict, flow: string): string {
  switch (v.kind) {
    case "not-inspected":
      return `not inspected (no HTTP rules for ${flow})`;
    case "every-request":
      return `every request allowed: ${originText(v.by)} allows ${flow} without L7 rules${v.lifted.length ? ` (so ${v.lifted.map(ruleAtText).join(", ")} ${v.lifted.length === 1 ? "has" : "have"} no effect)` : ""}`;
    case "allowed":
      return `allowed by ${ruleAtText(v.by)}${v.also.length ? ` (also matching: ${v.also.map(ruleAtText).join(", ")})` : ""}`;
    case "denied":
      return `denied: the L7 proxy answers 403 Forbidden (no HTTP rule matches: ${v.rules.map(ruleAtText).join(", ")})`;
  }
}

/** The cluster's policy objects parsed, or the error naming the first that does not parse. */
function parsePolicies(cluster: TraceCluster): Policy[] | string {
  const policies: Policy[] = [];
  for (const [i, obj] of cluster.policies.entries()) {
    const r = parsePolicyObject(obj);
    if (!r.ok) {
      const meta = (obj as { kind?: unknown; metadata?: { namespace?: unknown; name?: unknown } } | null) ?? {};
      const who = `${String(meta.kind ?? "object")} ${meta.metadata?.namespace !== undefined ? `${String(meta.metadata.namespace)}/` : ""}${String(meta.metadata?.name ?? `#${i}`)}`;
      const first = r.errors[0];
      return `cannot trace: ${who} does not parse (${first ? `${first.path}: ${first.message}` : "invalid"}), so its rules are unknown`;
    }
    policies.push(...r.value);
  }
  // The operator compiles CIDR group entries as the groups' CIDRs: so does the trace (an invalid group: as absent).
  const groups = new Map<string, CIDRGroup>();
  for (const obj of cluster.cidrGroups ?? []) {
    const g = parseCIDRGroup(obj);
    if (g.ok) groups.set(g.value.name, g.value);
  }
  return [...expandCIDRGroups(policies, groups)];
}

/**
 * A pod's identity: its identity annotation when it has one, otherwise a stand-in that is equal for
 * equal labels (numbers only matter for reserved identities here).
 */
function podIdentities(cluster: TraceCluster): (pod: TracePod, namespace: string, nsLabels: Record<string, string>) => { id: number; labels: LabelSet } {
  const stand = new Map<string, number>();
  return (pod, namespace, nsLabels) => {
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
}

/**
 * The pure part of trace: cluster objects and a query → the evaluator's verdict and its text.
 */
export function traceVerdict(cluster: TraceCluster, q: TraceQuery): TraceResult {
  const policies = parsePolicies(cluster);
  if (typeof policies === "string") return { ok: false, error: policies };
  const identityOf = podIdentities(cluster);
  const endpointOf = (flag: string, ref: string): { id: number; labels: LabelSet; pod: TracePod; address?: string } | string => {
    if (ref === INIT_REF) return { id: IDENTITY.init, labels: reservedIdentityById(IDENTITY.init)!.labels, pod: { metadata: { name: INIT_REF } } };
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
  let text =
    `${q.from} -> ${q.to} ${q.protocol}/${q.port}: ${answer.verdict === "allow" ? "ALLOWED" : "DENIED"}\n` +
    `decided by: ${reasonText(decided)} (${answer.direction} of ${answer.direction === "egress" ? q.from : q.to})\n` +
    `  egress of ${q.from}: ${answer.egress.verdict} by ${reasonText(answer.egress)}\n` +
    `  ingress of ${q.to}: ${answer.ingress.verdict} by ${reasonText(answer.ingress)}\n`;
  if (!q.http) return { ok: true, answer, text };
  const req = q.http;
  const request = `HTTP ${req.method} ${req.path}${req.host !== "" ? ` (Host: ${req.host})` : ""}`;
  if (answer.verdict === "deny") return { ok: true, answer, http: { verdict: "not-reached" }, text: text + `${request}: not reached (the connection is dropped)\n` };
  const proto = PROTO_NUMBER[q.protocol];
  const egress = requestVerdict(httpInspection({ policies, direction: "egress", subject: endpoint(src), peer: endpoint(dst), protocol: proto, port: q.port, namedPorts, services }), req);
  const ingress = requestVerdict(httpInspection({ policies, direction: "ingress", subject: endpoint(dst), peer: endpoint(src), protocol: proto, port: q.port, namedPorts, services }), req);
  const http: HttpTraceAnswer = { verdict: egress.kind === "denied" || ingress.kind === "denied" ? "deny" : "allow", egress, ingress };
  const flow = `${q.protocol}/${q.port}`;
  text +=
    `${request}: ${http.verdict === "allow" ? "ALLOWED" : "DENIED (403 Forbidden)"}\n` +
    `  egress of ${q.from}: ${requestText(egress, flow)}\n` +
    `  ingress of ${q.to}: ${requestText(ingress, flow)}\n`;
  const proxied = (v: RequestVerdict): boolean => v.kind === "allowed" || v.kind === "denied";
  if (proxied(egress) && proxied(ingress)) {
    // Across nodes each node's proxy applies its own side (the egress proxy's connection carries the client's identity to the other node's ingress proxy); on one node its proxy applies both.
    const nodes = [src.pod.spec?.nodeName, dst.pod.spec?.nodeName];
    text +=
      nodes[0] !== undefined && nodes[1] !== undefined && nodes[0] !== nodes[1] ?
        `  note: both ends have HTTP rules for this flow: the request passes ${q.from}'s egress proxy on ${nodes[0]}, then ${q.to}'s ingress proxy on ${nodes[1]}\n`
      : `  note: both ends have HTTP rules for this flow: on one node its proxy applies ${q.from}'s egress rules, then ${q.to}'s ingress rules\n`;
  }
  return { ok: true, answer, http, text };
}

/** One end of a host trace as the flags name it. */
export type PartyRef = { readonly kind: "pod"; readonly ref: string } | { readonly kind: "node"; readonly name: string } | { readonly kind: "ip"; readonly address: string };

export interface HostTraceArgs {
  readonly src: PartyRef;
  readonly dst: PartyRef;
  readonly port: number;
  readonly protocol: "TCP" | "UDP" | "SCTP";
  readonly apiServerPort?: number;
  readonly allowLocalhost?: "always" | "policy";
}

export type HostTraceResult = { readonly ok: true; readonly answer: HostTraceAnswer; readonly text: string } | { readonly ok: false; readonly error: string };

/**
 * The pure part of a trace with a node (or an outside address) at one end: core/host-trace.ts on the
 * cluster's objects. An address is a pod's or a node's when one of them has it.
 */
export function traceHostVerdict(cluster: TraceCluster, q: HostTraceArgs): HostTraceResult {
  const policies = parsePolicies(cluster);
  if (typeof policies === "string") return { ok: false, error: policies };
  const identityOf = podIdentities(cluster);
  const podParty = (pod: TracePod): TraceParty | string => {
    const namespace = pod.metadata.namespace ?? "default";
    const ns = cluster.namespaces.find((n) => n.metadata.name === namespace);
    if (!ns) return `namespace ${namespace} not found`;
    return {
      kind: "pod",
      name: `${namespace}/${pod.metadata.name}`,
      ...identityOf(pod, namespace, ns.metadata.labels ?? {}),
      ...(pod.status?.podIP ? { address: pod.status.podIP } : {}),
      ...(pod.spec?.nodeName ? { node: pod.spec.nodeName } : {}),
    };
  };
  const nodeParty = (n: TraceNode): TraceParty => ({ kind: "node", name: n.metadata.name, labels: nodeHostLabels(n.metadata.labels) });
  const resolve = (flag: string, r: PartyRef): TraceParty | string => {
    switch (r.kind) {
      case "pod": {
        const ref = podRef(r.ref)!;
        const pod = cluster.pods.find((p) => p.metadata.name === ref.pod && (p.metadata.namespace ?? "default") === ref.namespace);
        if (!pod) return `--${flag}: pod ${r.ref} not found`;
        const party = podParty(pod);
        return typeof party === "string" ? `--${flag}: ${party}` : party;
      }
      case "node": {
        const n = (cluster.nodes ?? []).find((x) => x.metadata.name === r.name);
        return n ? nodeParty(n) : `--${flag}-node: node ${r.name} not found`;
      }
      case "ip": {
        const same = (a: string): boolean => canonicalPrefix(hostPrefix(a)) === canonicalPrefix(hostPrefix(r.address));
        const pod = cluster.pods.find((p) => [p.status?.podIP, ...(p.status?.podIPs ?? []).map((x) => x.ip)].some((a) => a !== undefined && same(a)));
        if (pod) {
          const party = podParty(pod);
          return typeof party === "string" ? `--${flag}-ip: ${party}` : party;
        }
        const node = (cluster.nodes ?? []).find((n) => (n.status?.addresses ?? []).some((a) => a.type !== "Hostname" && same(a.address)));
        return node ? nodeParty(node) : { kind: "address", address: r.address };
      }
    }
  };
  const src = resolve("from", q.src);
  if (typeof src === "string") return { ok: false, error: src };
  const dst = resolve("to", q.dst);
  if (typeof dst === "string") return { ok: false, error: dst };
  const answer = hostTrace({ policies, src, dst, protocol: PROTO_NUMBER[q.protocol], port: q.port, guard: traceGuard(q.apiServerPort), ...(q.allowLocalhost ? { allowLocalhost: q.allowLocalhost } : {}) });
  const name = (p: TraceParty): string => (p.kind === "pod" ? p.name : p.kind === "node" ? `node ${p.name}` : p.address);
  return { ok: true, answer, text: hostTraceText(name(src), name(dst), q.protocol, q.port, answer) };
}

/** Pods at both ends (TraceQuery), or a node or an address at one end at least (host). */
export type TraceArgs = (TraceQuery | ({ readonly host: HostTraceArgs } & Pick<TraceQuery, "port" | "protocol">)) & {
  readonly kubeconfig?: string;
  readonly output: "text" | "json";
};

export function parseTraceArgs(args: readonly string[]): { ok: true; value: TraceArgs } | { ok: false; error: string } {
  const flags = parseFlags({
    args: [...args],
    options: {
      from: { type: "string" },
      to: { type: "string" },
      "from-node": { type: "string" },
      "to-node": { type: "string" },
      "from-ip": { type: "string" },
      "to-ip": { type: "string" },
      port: { type: "string" },
      protocol: { type: "string" },
      "api-server-port": { type: "string" },
      "allow-localhost": { type: "string" },
      "http-method": { type: "string" },
      "http-path": { type: "string" },
      "http-host": { type: "string" },
      "http-header": { type: "string", multiple: true },
      kubeconfig: { type: "string" },
      output: { type: "string", short: "o" },
    },
  });
  if (!flags.ok) return { ok: false, error: flags.error };
  const { "http-header": headerFlags, ...single } = flags.parsed.values;
  const v: Readonly<Record<string, string | undefined>> = single;
  const ends: Partial<Record<"from" | "to", PartyRef>> = {};
  for (const side of ["from", "to"] as const) {
    const given = [side, `${side}-node`, `${side}-ip`].filter((f) => v[f] !== undefined);
    if (given.length === 0) return { ok: false, error: `--${side}: required (or --${side}-node, --${side}-ip)` };
    if (given.length > 1) return { ok: false, error: `--${given[1]}: only one of --${side}, --${side}-node, --${side}-ip` };
    const val = v[given[0]!]!;
    if (given[0] === side) {
      if (!podRef(val) && val !== INIT_REF) return { ok: false, error: `--${side}: "${val}" is not NS/POD or ${INIT_REF}` };
      ends[side] = { kind: "pod", ref: val };
    } else if (given[0] === `${side}-node`) {
      if (val === "") return { ok: false, error: `--${side}-node: must not be empty` };
      ends[side] = { kind: "node", name: val };
    } else {
      if (parseIP(val) === undefined) return { ok: false, error: `--${side}-ip: "${val}" is not an IP address` };
      ends[side] = { kind: "ip", address: val };
    }
  }
  if (v.port === undefined) return { ok: false, error: "--port: required" };
  const isPort = (x: string): boolean => /^\d+$/.test(x) && Number(x) >= 1 && Number(x) <= 65535;
  if (!isPort(v.port)) return { ok: false, error: `--port: "${v.port}" is not a port (1-65535)` };
  const port = Number(v.port);
  const protocol = (v.protocol ?? "TCP").toUpperCase();
  if (protocol !== "TCP" && protocol !== "UDP" && protocol !== "SCTP") return { ok: false, error: `--protocol: "${v.protocol}" is not TCP, UDP or SCTP` };
  const api = v["api-server-port"];
  if (api !== undefined && !isPort(api)) return { ok: false, error: `--api-server-port: "${api}" is not a port (1-65535)` };
  const localhost = v["allow-localhost"];
  if (localhost !== undefined && localhost !== "always" && localhost !== "policy") return { ok: false, error: `--allow-localhost: "${localhost}" is not always or policy` };
  const output = v.output ?? "text";
  if (output !== "text" && output !== "json") return { ok: false, error: `-o: "${output}" is not text or json` };
  const common = { port, protocol, output, ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}) } as const;
  const [src, dst] = [ends.from!, ends.to!];
  const http = httpFlags(v, headerFlags ?? [], protocol);
  if (typeof http === "string") return { ok: false, error: http };
  if (src.kind === "pod" && dst.kind === "pod") return { ok: true, value: { from: src.ref, to: dst.ref, ...common, ...(http ? { http } : {}) } };
  if ([src, dst].some((e) => e.kind === "pod" && e.ref === INIT_REF)) return { ok: false, error: `--from/--to ${INIT_REF}: traced against a pod (NS/POD)` };
  if (http) return { ok: false, error: "--http-method: an HTTP request is traced between two pods (--from NS/POD --to NS/POD)" };
  return { ok: true, value: { host: { src, dst, port, protocol, ...(api !== undefined ? { apiServerPort: Number(api) } : {}), ...(localhost !== undefined ? { allowLocalhost: localhost } : {}) }, ...common } };
}

// An HTTP method is a token (RFC 9110 §5.6.2); a header name too.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The HTTP request the --http-* flags describe, undefined without them, or the error naming the flag. */
function httpFlags(v: Readonly<Record<string, string | undefined>>, headers: readonly string[], protocol: string): HttpRequest | undefined | string {
  const method = v["http-method"];
  const reqPath = v["http-path"];
  const host = v["http-host"];
  if (method === undefined && reqPath === undefined && host === undefined && headers.length === 0) return undefined;
  if (method === undefined) return "--http-method: required with --http-path, --http-host or --http-header";
  if (!TOKEN.test(method)) return `--http-method: "${method}" is not an HTTP method (a token such as GET)`;
  if (reqPath === undefined) return "--http-path: required with --http-method";
  if (!reqPath.startsWith("/") || /\s/.test(reqPath)) return `--http-path: "${reqPath}" is not a request path (it starts with / and has no spaces)`;
  if (host !== undefined && (host === "" || /\s/.test(host))) return `--http-host: "${host}" is not a host (non-empty, no spaces)`;
  if (protocol !== "TCP") return `--http-method: HTTP runs over TCP, not ${protocol}`;
  const parsed: { name: string; value: string }[] = [];
  for (const h of headers) {
    const colon = h.indexOf(":");
    const name = colon < 0 ? "" : h.slice(0, colon).trim();
    if (!TOKEN.test(name)) return `--http-header: "${h}" is not 'Name: value'`;
    parsed.push({ name: name.toLowerCase(), value: h.slice(colon + 1).trim() });
  }
  // The Host header counts as the host when --http-host is not given (as the proxy reads it).
  const hostHeader = parsed.find((h) => h.name === "host")?.value;
  const headerList = host !== undefined && hostHeader === undefined ? [{ name: "host", value: host }, ...parsed] : parsed;
  return { method, path: reqPath, host: host ?? hostHeader ?? "", headers: headerList };
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
    const [pods, namespaces, knps, cnps, ccnps, services, endpointSlices, cidrGroups, nodes] = await Promise.all([
      itemsOf(c, PODS), itemsOf(c, NAMESPACES), itemsOf(c, NETWORK_POLICIES), itemsOf(c, CNPS), itemsOf(c, CCNPS), itemsOf(c, SERVICES), itemsOf(c, ENDPOINT_SLICES), itemsOf(c, CIDR_GROUPS),
      "host" in a ? itemsOf(c, NODES) : Promise.resolve([]),
    ]);
    cluster = {
      pods: pods as TracePod[],
      nodes: nodes as TraceNode[],
      namespaces: namespaces as TraceNamespace[],
      services: services as ServiceObject[],
      endpointSlices: endpointSlices as EndpointSliceObject[],
      cidrGroups: withKind(cidrGroups, "cilium.io/v2", "CiliumCIDRGroup"),
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
  if ("host" in a) {
    const h = traceHostVerdict(cluster, a.host);
    if (!h.ok) {
      process.stderr.write(`membrane policy trace: ${h.error}\n`);
      return 1;
    }
    process.stdout.write(a.output === "json" ? JSON.stringify(h.answer, null, 2) + "\n" : h.text);
    return 0;
  }
  const r = traceVerdict(cluster, a);
  if (!r.ok) {
    process.stderr.write(`membrane policy trace: ${r.error}\n`);
    return 1;
  }
  process.stdout.write(a.output === "json" ? JSON.stringify({ verdict: r.answer.verdict, direction: r.answer.direction, egress: r.answer.egress, ingress: r.answer.ingress, ...(r.http ? { http: r.http } : {}) }, null, 2) + "\n" : r.text);
  return 0;
}
