// The service map's model: flows aggregated into pods and edges, services attached by selector, laid out by namespace (pure, no I/O).
import { labelSetFromStrings, parseLabel, LABEL_SOURCE, POD_NAMESPACE_LABEL } from "../../core/labels.ts";
import { matchesSelector, selectorFrom } from "../../core/selector.ts";
import { decisionText, type Flow, type FlowEndpoint } from "../../flowapi/flow.ts";

/** A Service as the map needs it: pods whose labels match `selector` in `namespace` are behind it. */
export interface ServiceRef {
  readonly namespace: string;
  readonly name: string;
  /** spec.selector; a Service without one (or with an empty one) has no pods behind it, as in Kubernetes. */
  readonly selector: Readonly<Record<string, string>>;
}

/** `allowed`: forwarded by a policy rule; `unenforced`: forwarded with no policy applying; `denied`: dropped. */
export type EdgeVerdict = "allowed" | "denied" | "unenforced";

/** `pod`: a named pod; `identity`: a pod known only by its identity (remote, no name on the wire); `external`: reserved identities and bare addresses. */
export type MapNodeKind = "pod" | "identity" | "external";

/** Who a flow endpoint is on the map; flows with equal ids meet in one node. */
export interface MapEndpoint {
  readonly id: string;
  readonly kind: MapNodeKind;
  /** "" for nodes outside any namespace (world, host, bare addresses). */
  readonly namespace: string;
  readonly label: string;
  readonly identity: number;
  readonly ip: string;
}

export interface MapNode extends MapEndpoint {
  /** `namespace/name` of every Service whose selector matches this endpoint. */
  readonly services: readonly string[];
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

export interface MapService {
  readonly id: string; // "svc:namespace/name"
  readonly namespace: string;
  readonly name: string;
  /** Node ids of the pods behind it that flows have shown. */
  readonly pods: readonly string[];
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

export interface MapEdge {
  readonly id: string;
  readonly from: string;
  readonly to: string;
  readonly protocol: string;
  /** Destination port; 0 for protocols without ports (ICMP). */
  readonly port: number;
  /** The verdict of the most recent flow: a policy change shows at once. */
  readonly verdict: EdgeVerdict;
  readonly forwarded: number;
  readonly dropped: number;
  readonly lastSeen: string;
  /** The most recent flow's drop reason and deciding rule, as `observe` prints them. */
  readonly dropReason?: string;
  readonly decidedBy?: string;
  /** SVG path data from the source's side to the destination's side, through (mx, my), where the port is labelled. */
  readonly path: string;
  readonly mx: number;
  readonly my: number;
}

export interface NamespaceGroup {
  /** "" holds what is outside any namespace. */
  readonly name: string;
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

export interface ServiceGraph {
  /** Changes whenever anything shown changes (ETag of graph.json). */
  readonly version: string;
  readonly namespaces: readonly NamespaceGroup[];
  readonly services: readonly MapService[];
  readonly nodes: readonly MapNode[];
  readonly edges: readonly MapEdge[];
  readonly width: number;
  readonly height: number;
}

export const OUTSIDE_NAMESPACE_TITLE = "outside any namespace";

/** The Service objects' fields the map reads; anything else in the object is ignored. */
export interface ServiceObject {
  readonly metadata: { readonly name: string; readonly namespace?: string };
  readonly spec?: { readonly selector?: Readonly<Record<string, string>> | null };
}

export function serviceRefOf(obj: ServiceObject): ServiceRef {
  return { namespace: obj.metadata.namespace ?? "default", name: obj.metadata.name, selector: obj.spec?.selector ?? {} };
}

interface EndpointInfo extends MapEndpoint {
  readonly labels: readonly string[];
}

interface EdgeState {
  readonly from: string;
  readonly to: string;
  readonly protocol: string;
  readonly port: number;
  verdict: EdgeVerdict;
  forwarded: number;
  dropped: number;
  lastSeen: string;
  dropReason?: string;
  decidedBy?: string;
}

function labelValue(labels: readonly string[], key: string): string | undefined {
  for (const s of labels) {
    const l = parseLabel(s);
    if (l.key === key && l.source === LABEL_SOURCE.k8s) return l.value;
  }
  return undefined;
}

/** Which map node a flow endpoint is: its pod, else its identity (when it has a namespace), else a reserved entity or address. */
export function endpointInfo(e: FlowEndpoint): EndpointInfo {
  const base = { identity: e.identity, ip: e.ip, labels: e.labels };
  if (e.pod !== undefined) {
    const namespace = e.namespace ?? "";
    return { ...base, id: `pod:${namespace}/${e.pod}`, kind: "pod", namespace, label: e.pod };
  }
  const reserved = e.labels.map(parseLabel).find((l) => l.source === LABEL_SOURCE.reserved);
  if (reserved !== undefined) return { ...base, id: `reserved:${reserved.key}`, kind: "external", namespace: "", label: reserved.key };
  const namespace = e.namespace ?? labelValue(e.labels, POD_NAMESPACE_LABEL);
  if (namespace !== undefined) {
    const app = labelValue(e.labels, "app") ?? labelValue(e.labels, "app.kubernetes.io/name");
    return { ...base, id: `identity:${e.identity}`, kind: "identity", namespace, label: app !== undefined ? `${app} (identity ${e.identity})` : `identity ${e.identity}` };
  }
  return { ...base, id: `ip:${e.ip}`, kind: "external", namespace: "", label: e.ip };
}

function edgeVerdict(f: Flow): EdgeVerdict {
  if (f.verdict === "DROPPED") return "denied";
  return f.type === "policy-verdict" ? "allowed" : "unenforced";
}

export interface FlowGraphOptions {
  /** Edges kept; beyond it the least recently seen edge is forgotten (default 5000). */
  readonly maxEdges?: number;
}

/**
 * Flows aggregated into edges (source → destination, protocol, destination port), bounded by
 * `maxEdges`. `add` is cheap; `graph` derives the laid-out map for the current services.
 */
export class FlowGraph {
  private readonly endpoints = new Map<string, EndpointInfo>();
  /** How many kept edges name each endpoint: an endpoint goes with its last edge. */
  private readonly refs = new Map<string, number>();
  // Map order is recency order: an updated edge is moved to the end, the first is the stalest.
  private readonly edges = new Map<string, EdgeState>();
  private readonly maxEdges: number;
  private flowGeneration = 0;

  constructor(opts: FlowGraphOptions = {}) {
    this.maxEdges = opts.maxEdges ?? 5000;
  }

  get generation(): number {
    return this.flowGeneration;
  }

  get edgeCount(): number {
    return this.edges.size;
  }

  add(f: Flow): void {
    const src = endpointInfo(f.source);
    const dst = endpointInfo(f.destination);
    this.endpoints.set(src.id, src);
    this.endpoints.set(dst.id, dst);
    const key = `${src.id}>${dst.id}|${f.protocol}|${f.destination.port}`;
    let e = this.edges.get(key);
    if (e === undefined) {
      e = { from: src.id, to: dst.id, protocol: f.protocol, port: f.destination.port, verdict: edgeVerdict(f), forwarded: 0, dropped: 0, lastSeen: f.time };
      this.ref(src.id, 1);
      this.ref(dst.id, 1);
    }
    this.edges.delete(key);
    // Flows from several agents arrive out of order: the newest flow decides the colour.
    if (f.time >= e.lastSeen) {
      e.verdict = edgeVerdict(f);
      e.lastSeen = f.time;
      e.dropReason = f.dropReason;
      e.decidedBy = f.decidedBy !== undefined ? decisionText(f.decidedBy) : undefined;
    }
    if (f.verdict === "DROPPED") e.dropped++;
    else e.forwarded++;
    this.edges.set(key, e);
    while (this.edges.size > this.maxEdges) {
      const [stalest, gone] = this.edges.entries().next().value as [string, EdgeState];
      this.edges.delete(stalest);
      this.ref(gone.from, -1);
      this.ref(gone.to, -1);
    }
    this.flowGeneration++;
  }

  private ref(id: string, delta: number): void {
    const n = (this.refs.get(id) ?? 0) + delta;
    if (n > 0) {
      this.refs.set(id, n);
    } else {
      this.refs.delete(id);
      this.endpoints.delete(id);
    }
  }

  /** Endpoints currently held (each named by at least one kept edge). */
  get endpointCount(): number {
    return this.endpoints.size;
  }

  /** The map for these services; `servicesVersion` goes into the graph's version. */
  graph(services: readonly ServiceRef[], servicesVersion: number | string = 0): ServiceGraph {
    const edges = [...this.edges.entries()].map(([id, e]) => ({ id, ...e }));
    return layoutGraph([...this.endpoints.values()], edges, services, `${this.flowGeneration}.${servicesVersion}`);
  }
}

// Layout: one column per namespace (sorted, the outside column last); in a column each service is a
// box around the pods behind it, then the pods behind no service.
export const LAYOUT = {
  margin: 20,
  columnWidth: 240,
  columnGap: 130,
  headerHeight: 34,
  nodeWidth: 200,
  nodeHeight: 34,
  nodeGap: 12,
  serviceHeader: 26,
  servicePad: 10,
  serviceGap: 16,
  labelSpacing: 20,
} as const;

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

type EdgeInput = { id: string } & EdgeState;

function servicesOf(ep: EndpointInfo, services: readonly ServiceRef[]): string[] {
  if (ep.kind === "external") return [];
  const labels = labelSetFromStrings(ep.labels);
  return services
    .filter((s) => s.namespace === ep.namespace && Object.keys(s.selector).length > 0)
    .filter((s) => matchesSelector(selectorFrom({ matchLabels: s.selector }, { kubernetesKeys: true }), labels))
    .map((s) => `${s.namespace}/${s.name}`)
    .sort(compareStrings);
}

function layoutGraph(endpoints: readonly EndpointInfo[], edges: readonly EdgeInput[], services: readonly ServiceRef[], version: string): ServiceGraph {
  const L = LAYOUT;
  const memberships = new Map(endpoints.map((ep) => [ep.id, servicesOf(ep, services)]));
  const namespaceNames = new Set<string>([...endpoints.map((e) => e.namespace), ...services.map((s) => s.namespace)]);
  const columns = [...namespaceNames].filter((n) => n !== "").sort(compareStrings);
  if (namespaceNames.has("")) columns.push("");

  const nodes: MapNode[] = [];
  const mapServices: MapService[] = [];
  const groups: NamespaceGroup[] = [];
  let height = 0;
  columns.forEach((ns, col) => {
    const x = L.margin + col * (L.columnWidth + L.columnGap);
    const nodeX = x + (L.columnWidth - L.nodeWidth) / 2;
    let y = L.margin + L.headerHeight;
    const inColumn = endpoints.filter((e) => e.namespace === ns).sort((a, b) => compareStrings(a.label, b.label) || compareStrings(a.id, b.id));
    const placed = new Set<string>();
    const place = (ep: EndpointInfo): void => {
      nodes.push({ id: ep.id, kind: ep.kind, namespace: ep.namespace, label: ep.label, identity: ep.identity, ip: ep.ip, services: memberships.get(ep.id) ?? [], x: nodeX, y, width: L.nodeWidth, height: L.nodeHeight });
      placed.add(ep.id);
      y += L.nodeHeight + L.nodeGap;
    };
    for (const svc of services.filter((s) => s.namespace === ns).sort((a, b) => compareStrings(a.name, b.name))) {
      const key = `${svc.namespace}/${svc.name}`;
      const members = inColumn.filter((ep) => memberships.get(ep.id)?.includes(key));
      const top = y;
      y += L.serviceHeader + L.servicePad;
      // A pod behind several services is drawn once, in the first; the others list it.
      for (const ep of members) if (!placed.has(ep.id)) place(ep);
      if (y === top + L.serviceHeader + L.servicePad) y += L.nodeHeight / 2; // an empty service still has a body
      y += L.servicePad - L.nodeGap;
      mapServices.push({ id: `svc:${key}`, namespace: svc.namespace, name: svc.name, pods: members.map((m) => m.id), x: x + 4, y: top, width: L.columnWidth - 8, height: y - top });
      y += L.serviceGap;
    }
    for (const ep of inColumn) if (!placed.has(ep.id)) place(ep);
    const bottom = y + L.margin / 2;
    groups.push({ name: ns, x, y: L.margin, width: L.columnWidth, height: bottom - L.margin });
    height = Math.max(height, bottom + L.margin);
  });

  const byId = new Map(nodes.map((n) => [n.id, n]));
  const column = (n: MapNode): number => Math.round((n.x - L.margin) / (L.columnWidth + L.columnGap));
  // Every edge's midpoint (where its port is labelled) sits in the gap beside its destination, on
  // the side it enters from; the edges entering one node on one side are spread out vertically, so
  // that each label stays readable and never lies on a pod.
  type Placed = { e: EdgeInput; a: MapNode; b: MapNode; side: "left" | "right" };
  const entering = new Map<string, Placed[]>();
  for (const e of [...edges].sort((p, q) => compareStrings(p.id, q.id))) {
    const a = byId.get(e.from);
    const b = byId.get(e.to);
    if (a === undefined || b === undefined) continue;
    const side = column(a) < column(b) ? "left" : "right";
    const k = `${b.id}|${side}`;
    entering.set(k, [...(entering.get(k) ?? []), { e, a, b, side }]);
  }
  const mapEdges: MapEdge[] = [];
  for (const group of entering.values()) {
    group.sort((p, q) => p.a.y - q.a.y || compareStrings(p.e.id, q.e.id));
    group.forEach(({ e, a, b, side }, i) => {
      const spread = (i - (group.length - 1) / 2) * L.labelSpacing;
      const x2 = side === "left" ? b.x : b.x + b.width;
      // Arrows into one side of a pod spread over its height too, so that each arrowhead shows.
      const reach = b.height / 2 - 6;
      const y2 = b.y + b.height / 2 + Math.max(-reach, Math.min(reach, group.length > 1 ? spread / 2 : a.id === b.id ? 8 : 0));
      const y1 = a.y + a.height / 2 - (a.id === b.id ? 8 : 0);
      const gapLeft = L.margin + column(b) * (L.columnWidth + L.columnGap) - L.columnGap / 2;
      const mx = side === "left" ? gapLeft : gapLeft + L.columnWidth + L.columnGap;
      const my = b.y + b.height / 2 + spread;
      // Leave on the side facing the destination (the right within one column). Two cubic pieces
      // with horizontal tangents, through (mx, my): arrows meet the pods head-on, from the side.
      const x1 = column(a) > column(b) ? a.x : a.x + a.width;
      const h1 = (x1 + mx) / 2;
      const h2 = (mx + x2) / 2;
      const d = `M ${r(x1)} ${r(y1)} C ${r(h1)} ${r(y1)} ${r(h1)} ${r(my)} ${r(mx)} ${r(my)} C ${r(h2)} ${r(my)} ${r(h2)} ${r(y2)} ${r(x2)} ${r(y2)}`;
      mapEdges.push({
        id: e.id,
        from: e.from,
        to: e.to,
        protocol: e.protocol,
        port: e.port,
        verdict: e.verdict,
        forwarded: e.forwarded,
        dropped: e.dropped,
        lastSeen: e.lastSeen,
        ...(e.dropReason !== undefined ? { dropReason: e.dropReason } : {}),
        ...(e.decidedBy !== undefined ? { decidedBy: e.decidedBy } : {}),
        path: d,
        mx: r(mx),
        my: r(my),
      });
    });
  }
  mapEdges.sort((a, b) => compareStrings(a.id, b.id));
  const width = columns.length === 0 ? 2 * L.margin : L.margin + columns.length * (L.columnWidth + L.columnGap);
  const maxCurve = Math.max(0, ...mapEdges.map((e) => e.mx + L.columnGap / 2));
  return { version, namespaces: groups, services: mapServices, nodes, edges: mapEdges, width: Math.ceil(Math.max(width, maxCurve)), height: Math.max(height, 2 * L.margin) };
}

function r(n: number): number {
  return Math.round(n * 10) / 10;
}
