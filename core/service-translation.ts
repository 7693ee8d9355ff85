// The ClusterIP → backend table a node translates pods' sockets with (socket-level load balancing): each Service
// port's ClusterIP frontends (and NodePort ones, for any node's address) and the ready endpoints its EndpointSlices
// list for that port. Pure: parses the API objects (errors name the field) and joins them; node-agent/services/ writes
// the result into the kernel.
import { isIP } from "node:net";
import { parseIP } from "./cidr.ts";

export type TranslatedProtocol = "TCP" | "UDP";

export interface ServicePort {
  /** The Service port's name ("" when it has none): its EndpointSlices' ports carry the same name. */
  readonly name: string;
  readonly port: number;
  readonly protocol: TranslatedProtocol;
  /** A NodePort or LoadBalancer Service's node port for this port (Services only, when the API allocated one). */
  readonly nodePort?: number;
}

/** A Service as translation reads it: its ClusterIPs (IPv4 and IPv6) and its TCP/UDP ports. */
export interface TranslatedService {
  readonly namespace: string;
  readonly name: string;
  readonly clusterIPs: readonly string[];
  readonly ports: readonly ServicePort[];
}

export interface SliceEndpoint {
  readonly addresses: readonly string[];
  /** conditions.ready; absent (unknown) counts as ready, as the API asks consumers to read it. */
  readonly ready: boolean;
}

/** An EndpointSlice of a Service (IPv4 or IPv6 addresses): its ports (targetPort already resolved per pod by the EndpointSlice controller) and endpoints. */
export interface ServiceSlice {
  readonly namespace: string;
  readonly name: string;
  /** The Service it belongs to (label kubernetes.io/service-name). */
  readonly service: string;
  readonly family: 4 | 6;
  readonly ports: readonly ServicePort[];
  readonly endpoints: readonly SliceEndpoint[];
}

export interface Backend {
  readonly address: string;
  readonly port: number;
}

/**
 * One ClusterIP:port/protocol and where it leads (backends of the ClusterIP's own family): no backend means the connect
 * is refused. A NodePort frontend has the family's wildcard address (NODE_PORT_ADDRESS): it stands for every node's
 * address (the node-address table), as Cilium's socket LB translates a connect to any cluster node's IP:NodePort.
 */
export interface Frontend {
  readonly namespace: string;
  readonly service: string;
  readonly portName: string;
  readonly address: string;
  readonly port: number;
  readonly protocol: TranslatedProtocol;
  /** Ready backends, sorted by address then port, without duplicates. */
  readonly backends: readonly Backend[];
}

export interface FieldError {
  readonly path: string;
  readonly message: string;
}

export type Parsed<T> = { readonly ok: true; readonly value: T | undefined } | { readonly ok: false; readonly errors: readonly FieldError[] };

/** A NodePort frontend's address per family: matched for a destination that is a node's address. */
export const NODE_PORT_ADDRESS = { 4: "0.0.0.0", 6: "::" } as const;

const SERVICE_NAME_LABEL = "kubernetes.io/service-name";

type Json = Record<string, unknown>;
const isRecord = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const isPort = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 65535;

function metaOf(obj: Json, errors: FieldError[]): { namespace: string; name: string; labels: Json } | undefined {
  const m = obj["metadata"];
  if (!isRecord(m) || typeof m["name"] !== "string" || typeof m["namespace"] !== "string") {
    errors.push({ path: "metadata", message: "must carry a name and a namespace" });
    return undefined;
  }
  return { namespace: m["namespace"], name: m["name"], labels: isRecord(m["labels"]) ? m["labels"] : {} };
}

/** A protocol translation handles (TCP when absent, as the API defaults it), or undefined for SCTP and others. */
function protocolOf(v: unknown): TranslatedProtocol | undefined {
  if (v === undefined || v === null || v === "TCP") return "TCP";
  if (v === "UDP") return "UDP";
  return undefined;
}

/**
 * A v1 Service as translation reads it; undefined for those it leaves alone (ExternalName, headless). Its ClusterIPs
 * and, for a NodePort or LoadBalancer Service, its node ports are translated; external IPs, load balancer addresses,
 * session affinity and traffic policies stay kube-proxy's.
 */
export function parseService(obj: unknown): Parsed<TranslatedService> {
  const errors: FieldError[] = [];
  if (!isRecord(obj)) return { ok: false, errors: [{ path: "", message: "must be an object" }] };
  const meta = metaOf(obj, errors);
  const spec = obj["spec"];
  if (!isRecord(spec)) errors.push({ path: "spec", message: "must be an object" });
  if (!meta || !isRecord(spec)) return { ok: false, errors };
  if (spec["type"] === "ExternalName") return { ok: true, value: undefined };
  const ips = Array.isArray(spec["clusterIPs"]) ? spec["clusterIPs"] : spec["clusterIP"] !== undefined ? [spec["clusterIP"]] : [];
  const clusterIPs: string[] = [];
  ips.forEach((ip, i) => {
    if (ip === "None" || ip === "") return;
    if (typeof ip !== "string" || isIP(ip) === 0) errors.push({ path: `spec.clusterIPs[${i}]`, message: `must be an IP address, not ${JSON.stringify(ip)}` });
    else clusterIPs.push(ip);
  });
  const ports: ServicePort[] = [];
  const hasNodePorts = spec["type"] === "NodePort" || spec["type"] === "LoadBalancer";
  const rawPorts = spec["ports"] ?? [];
  if (!Array.isArray(rawPorts)) errors.push({ path: "spec.ports", message: "must be a list" });
  else
    rawPorts.forEach((p: unknown, i) => {
      if (!isRecord(p)) return void errors.push({ path: `spec.ports[${i}]`, message: "must be an object" });
      if (!isPort(p["port"])) return void errors.push({ path: `spec.ports[${i}].port`, message: `must be a port number 1-65535, not ${JSON.stringify(p["port"])}` });
      // A LoadBalancer Service with allocateLoadBalancerNodePorts: false has none.
      const nodePort = hasNodePorts && p["nodePort"] !== undefined && p["nodePort"] !== null ? p["nodePort"] : undefined;
      if (nodePort !== undefined && !isPort(nodePort)) return void errors.push({ path: `spec.ports[${i}].nodePort`, message: `must be a port number 1-65535, not ${JSON.stringify(nodePort)}` });
      const protocol = protocolOf(p["protocol"]);
      if (protocol) ports.push({ name: typeof p["name"] === "string" ? p["name"] : "", port: p["port"], protocol, ...(nodePort !== undefined ? { nodePort } : {}) });
    });
  if (errors.length > 0) return { ok: false, errors };
  if (clusterIPs.length === 0) return { ok: true, value: undefined };
  return { ok: true, value: { namespace: meta.namespace, name: meta.name, clusterIPs, ports } };
}

/** A discovery.k8s.io/v1 EndpointSlice; undefined for one of addressType FQDN or that names no Service. */
export function parseEndpointSlice(obj: unknown): Parsed<ServiceSlice> {
  const errors: FieldError[] = [];
  if (!isRecord(obj)) return { ok: false, errors: [{ path: "", message: "must be an object" }] };
  const meta = metaOf(obj, errors);
  if (!meta) return { ok: false, errors };
  const service = meta.labels[SERVICE_NAME_LABEL];
  const family = obj["addressType"] === "IPv4" ? 4 : obj["addressType"] === "IPv6" ? 6 : undefined;
  if (family === undefined || typeof service !== "string" || service === "") return { ok: true, value: undefined };
  const ports: ServicePort[] = [];
  const rawPorts = obj["ports"] ?? [];
  if (!Array.isArray(rawPorts)) errors.push({ path: "ports", message: "must be a list" });
  else
    rawPorts.forEach((p: unknown, i) => {
      if (!isRecord(p)) return void errors.push({ path: `ports[${i}]`, message: "must be an object" });
      // A port without a number means "every port" (a Service without a selector): nothing to translate to.
      if (p["port"] === undefined || p["port"] === null) return;
      if (!isPort(p["port"])) return void errors.push({ path: `ports[${i}].port`, message: `must be a port number 1-65535, not ${JSON.stringify(p["port"])}` });
      const protocol = protocolOf(p["protocol"]);
      if (protocol) ports.push({ name: typeof p["name"] === "string" ? p["name"] : "", port: p["port"], protocol });
    });
  const endpoints: SliceEndpoint[] = [];
  const rawEndpoints = obj["endpoints"] ?? [];
  if (!Array.isArray(rawEndpoints)) errors.push({ path: "endpoints", message: "must be a list" });
  else
    rawEndpoints.forEach((e: unknown, i) => {
      if (!isRecord(e)) return void errors.push({ path: `endpoints[${i}]`, message: "must be an object" });
      const addrs = e["addresses"];
      if (!Array.isArray(addrs) || addrs.some((a) => typeof a !== "string" || isIP(a) !== family))
        return void errors.push({ path: `endpoints[${i}].addresses`, message: `must be a list of IPv${family} addresses (the slice's addressType)` });
      const ready = isRecord(e["conditions"]) ? e["conditions"]["ready"] : undefined;
      endpoints.push({ addresses: addrs as string[], ready: ready !== false });
    });
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: { namespace: meta.namespace, name: meta.name, service, family, ports, endpoints } };
}

/** Numeric order of two addresses of one family (parsed by core/cidr.ts). */
function addressOrder(a: string, b: string): number {
  const x = parseIP(a)?.addr ?? 0n;
  const y = parseIP(b)?.addr ?? 0n;
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Every frontend of the Services that have EndpointSlices: each ClusterIP × port, with the ready endpoints of the
 * Service's slices of the ClusterIP's family whose port has the Service port's name and protocol (the slice's number is the pod's resolved
 * targetPort, named or numeric); and a port's node port once per ClusterIP family (NODE_PORT_ADDRESS), to the same
 * backends: from inside the cluster every ready endpoint serves it, whatever externalTrafficPolicy says (as Cilium's socket LB).
 */
export function frontends(services: Iterable<TranslatedService>, slices: Iterable<ServiceSlice>): Frontend[] {
  const byService = new Map<string, ServiceSlice[]>();
  for (const s of slices) {
    const key = `${s.namespace}/${s.service}`;
    const list = byService.get(key);
    if (list) list.push(s);
    else byService.set(key, [s]);
  }
  const out: Frontend[] = [];
  for (const svc of services) {
    const own = byService.get(`${svc.namespace}/${svc.name}`);
    // No slice at all: the Service's endpoints are kept elsewhere (a selector-less Service such as a local cluster's
    // `kubernetes`, routed by the node itself): left to kube-proxy rather than refused. A slice listing no ready
    // endpoint is a known empty Service and is refused.
    if (own === undefined) continue;
    for (const address of svc.clusterIPs) {
      const family = isIP(address);
      // Same rule per family: a dual-stack Service whose IPv6 slices do not exist yet keeps its IPv6 ClusterIP untranslated.
      if (!own.some((slice) => slice.family === family)) continue;
      for (const sp of svc.ports) {
        const seen = new Map<string, Backend>();
        for (const slice of own) {
          if (slice.family !== family) continue;
          const target = slice.ports.find((p) => p.name === sp.name && p.protocol === sp.protocol);
          if (!target) continue;
          for (const e of slice.endpoints) {
            if (!e.ready) continue;
            for (const a of e.addresses) seen.set(`${a}|${target.port}`, { address: a, port: target.port });
          }
        }
        const backends = [...seen.values()].sort((a, b) => addressOrder(a.address, b.address) || a.port - b.port);
        const frontend = { namespace: svc.namespace, service: svc.name, portName: sp.name, protocol: sp.protocol, backends };
        out.push({ ...frontend, address, port: sp.port });
        if (sp.nodePort !== undefined) out.push({ ...frontend, address: NODE_PORT_ADDRESS[family as 4 | 6], port: sp.nodePort });
      }
    }
  }
  return out;
}

/**
 * A v1 Node's addresses a NodePort is dialled at (status.addresses of type InternalIP and ExternalIP, both families);
 * undefined for a Node that lists none yet.
 */
export function parseNodeAddresses(obj: unknown): Parsed<readonly string[]> {
  if (!isRecord(obj)) return { ok: false, errors: [{ path: "", message: "must be an object" }] };
  const status = obj["status"];
  const raw = isRecord(status) ? (status["addresses"] ?? []) : [];
  if (!Array.isArray(raw)) return { ok: false, errors: [{ path: "status.addresses", message: "must be a list" }] };
  const errors: FieldError[] = [];
  const addresses: string[] = [];
  raw.forEach((a: unknown, i) => {
    if (!isRecord(a)) return void errors.push({ path: `status.addresses[${i}]`, message: "must be an object" });
    if (a["type"] !== "InternalIP" && a["type"] !== "ExternalIP") return;
    if (typeof a["address"] !== "string" || isIP(a["address"]) === 0) return void errors.push({ path: `status.addresses[${i}].address`, message: `must be an IP address, not ${JSON.stringify(a["address"])}` });
    addresses.push(a["address"]);
  });
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: addresses.length > 0 ? addresses : undefined };
}
