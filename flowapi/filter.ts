// Hubble-like flow filters of `membrane observe`: parsed from argv into a spec, then into a predicate (flowapi/hubble/request.ts makes Hubble's FlowFilters of it).
import { parseArgs } from "node:util";
import { parseDuration } from "../core/duration.ts";
import { parseLabel, parseSelectorLabel, LABEL_SOURCE } from "../core/labels.ts";
import { FLOW_TYPES, FLOW_VERDICTS, type Flow, type FlowEndpoint, type FlowType, type FlowVerdict } from "./flow.ts";
import { fqdnPattern, nodeLabelSelector } from "./hubble/filter.ts";

/** Values of one flag are alternatives (OR); different flags must all hold (AND). */
export interface FlowFilter {
  readonly namespace: readonly string[];
  readonly pod: readonly PodRef[];
  readonly fromPod: readonly PodRef[];
  readonly toPod: readonly PodRef[];
  readonly label: readonly string[];
  readonly identity: readonly number[];
  /** Node names: the source or destination is that node's host endpoint (reserved:host). */
  readonly host: readonly string[];
  /** The source or destination pod's workload: a name, and a kind when given (`Deployment/web`, `web`, `StatefulSet/`). */
  readonly workload: readonly WorkloadRef[];
  /** Patterns on the DNS names the node's proxy learned for an address (Hubble's: `*` spans labels, the whole name matches). */
  readonly fqdn: readonly string[];
  readonly fromFqdn: readonly string[];
  readonly toFqdn: readonly string[];
  /** Kubernetes label selectors on the observing node's labels (Hubble's node_labels); one of them must select it. */
  readonly nodeLabel: readonly string[];
  readonly verdict: readonly FlowVerdict[];
  readonly protocol: readonly string[];
  readonly port: readonly number[];
  readonly type: readonly FlowType[];
  /** L7 flows (a proxy's records), as Hubble's filters of the same names. */
  readonly httpMethod: readonly string[];
  readonly httpPath: readonly string[]; // regular expressions on the URL's path
  readonly httpStatus: readonly string[]; // "404" or a prefix "4+"
  readonly dnsQuery: readonly string[]; // regular expressions on the query
  readonly since?: string; // as given: a duration ("5m") or an RFC 3339 time
  readonly last?: number;
}

/** `NS/POD` names one pod; a bare `POD` is a pod-name prefix in any namespace, as in hubble. */
export interface PodRef {
  readonly namespace?: string;
  readonly pod: string;
}

/** A workload as `--workload` names it, as hubble's: an empty part matches any. */
export interface WorkloadRef {
  readonly kind: string;
  readonly name: string;
}

export type FilterParse = { readonly ok: true; readonly filter: FlowFilter; readonly rest: string[] } | { readonly ok: false; readonly error: string };

export const FILTER_FLAGS = [
  "namespace",
  "pod",
  "from-pod",
  "to-pod",
  "label",
  "identity",
  "host",
  "workload",
  "fqdn",
  "from-fqdn",
  "to-fqdn",
  "node-label",
  "verdict",
  "protocol",
  "port",
  "type",
  "http-method",
  "http-path",
  "http-status",
  "dns-query",
  "since",
  "last",
] as const;
type FilterFlag = (typeof FILTER_FLAGS)[number];
const FILTER_OPTIONS = Object.fromEntries(FILTER_FLAGS.map((f) => [f, { type: "string", multiple: true }])) as Record<FilterFlag, { type: "string"; multiple: true }>;

export const FILTER_USAGE = `filters (a repeated flag means any of its values; different flags must all hold):
  --namespace NS         source or destination namespace
  --pod [NS/]POD         source or destination pod (a bare name is a prefix, any namespace)
  --from-pod [NS/]POD    source pod
  --to-pod [NS/]POD      destination pod
  --label KEY[=VALUE]    a security label of source or destination (k8s:app=web, or app=web for any source)
  --identity N           source or destination identity
  --host NODE            source or destination is NODE's host endpoint (reserved:host; the host firewall)
  --workload [KIND/]NAME source or destination pod's workload (Deployment/web, web, or StatefulSet/ for any of a kind)
  --fqdn PATTERN          source or destination address has a DNS name the node's proxy learned matching PATTERN (*.example.com)
  --from-fqdn PATTERN    source address has such a name
  --to-fqdn PATTERN      destination address has such a name
  --node-label SELECTOR  flows seen on a node whose labels the selector selects (topology.kubernetes.io/zone=a, "zone in (a,b)")
  --verdict V            FORWARDED or DROPPED
  --protocol P           TCP, UDP, SCTP, ICMP, ICMPv6, or DNS, HTTP (the proxies' L7 flows)
  --port N               source or destination port
  --type T               policy-verdict, drop, trace or l7 (a DNS or HTTP proxy's request or response); dns: the DNS proxy's alone
  --http-method M        L7 flows of this HTTP method (any case)
  --http-path RE         L7 flows whose URL path matches this regular expression
  --http-status S        L7 responses with this status (404) or status prefix (4+, 40+)
  --dns-query RE         L7 DNS flows whose query matches this regular expression
  --since T              a duration (30s, 5m, 2h) or an RFC 3339 time
  --last N               only the N most recent matching flows
`;

const PROTOCOLS = ["TCP", "UDP", "SCTP", "ICMP", "ICMPV6", "DNS", "HTTP"];

const HTTP_STATUS = /^([1-5][0-9]{2}|[1-5][0-9]?\+)$/;

function regexError(v: string): string | undefined {
  try {
    new RegExp(v);
    return undefined;
  } catch (err) {
    return `"${v}" is not a regular expression: ${(err as Error).message}`;
  }
}

function parsePod(v: string): PodRef | string {
  const parts = v.split("/");
  if (parts.length === 1 && parts[0] !== "") return { pod: v };
  if (parts.length === 2 && parts[0] !== "" && parts[1] !== "") return { namespace: parts[0]!, pod: parts[1]! };
  return `"${v}" is not NS/POD or POD`;
}

function parseIntIn(v: string, min: number, max: number): number | undefined {
  if (!/^\d+$/.test(v)) return undefined;
  const n = Number(v);
  return n >= min && n <= max ? n : undefined;
}


/** The earliest time `since` admits, relative to `now`; undefined when it does not parse. */
export function sinceToMs(since: string, now: number): number | undefined {
  const d = parseDuration(since, { days: true });
  if (d !== undefined) return now - d;
  if (!/^\d{4}-\d{2}-\d{2}T/.test(since)) return undefined;
  const t = Date.parse(since);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * Takes the filter flags out of argv (`--flag value` or `--flag=value`); other arguments are
 * returned in `rest` for the caller. A bad value is an error naming the flag.
 */
export function parseFilterArgs(argv: readonly string[]): FilterParse {
  const f = {
    namespace: [] as string[],
    pod: [] as PodRef[],
    fromPod: [] as PodRef[],
    toPod: [] as PodRef[],
    label: [] as string[],
    identity: [] as number[],
    host: [] as string[],
    workload: [] as WorkloadRef[],
    fqdn: [] as string[],
    fromFqdn: [] as string[],
    toFqdn: [] as string[],
    nodeLabel: [] as string[],
    verdict: [] as FlowVerdict[],
    protocol: [] as string[],
    port: [] as number[],
    type: [] as FlowType[],
    httpMethod: [] as string[],
    httpPath: [] as string[],
    httpStatus: [] as string[],
    dnsQuery: [] as string[],
    since: undefined as string | undefined,
    last: undefined as number | undefined,
  };
  const rest: string[] = [];
  // Not strict: flags that are not filters come back in `rest`, in order, for the caller's own parser.
  const { tokens } = parseArgs({ args: [...argv], options: FILTER_OPTIONS, strict: false, allowPositionals: true, tokens: true });
  for (const t of tokens) {
    if (t.kind === "positional") rest.push(t.value);
    if (t.kind !== "option") continue;
    if (!(FILTER_FLAGS as readonly string[]).includes(t.name)) {
      rest.push(t.inlineValue ? `${t.rawName}=${t.value ?? ""}` : t.rawName);
      continue;
    }
    const flag = t.name as FilterFlag;
    const v = t.value;
    if (v === undefined) return { ok: false, error: `--${flag}: needs a value` };
    const bad = (why: string): FilterParse => ({ ok: false, error: `--${flag}: ${why}` });
    switch (flag) {
      case "namespace":
        if (v === "") return bad("must not be empty");
        f.namespace.push(v);
        break;
      case "pod":
      case "from-pod":
      case "to-pod": {
        const p = parsePod(v);
        if (typeof p === "string") return bad(p);
        (flag === "pod" ? f.pod : flag === "from-pod" ? f.fromPod : f.toPod).push(p);
        break;
      }
      case "label":
        if (v === "" || v.startsWith("=")) return bad(`"${v}" is not KEY or KEY=VALUE`);
        f.label.push(v);
        break;
      case "identity": {
        const n = parseIntIn(v, 0, 0xffffffff);
        if (n === undefined) return bad(`"${v}" is not an identity number`);
        f.identity.push(n);
        break;
      }
      case "host":
        if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(v)) return bad(`"${v}" is not a node name`);
        f.host.push(v);
        break;
      case "workload": {
        const slash = v.indexOf("/");
        const w = slash < 0 ? { kind: "", name: v } : { kind: v.slice(0, slash), name: v.slice(slash + 1) };
        if ((w.kind === "" && w.name === "") || w.name.includes("/")) return bad(`"${v}" is not NAME, KIND/NAME or KIND/`);
        f.workload.push(w);
        break;
      }
      case "fqdn":
      case "from-fqdn":
      case "to-fqdn": {
        const c = fqdnPattern(v);
        if (!c.ok) return bad(c.error);
        (flag === "fqdn" ? f.fqdn : flag === "from-fqdn" ? f.fromFqdn : f.toFqdn).push(v);
        break;
      }
      case "node-label": {
        const c = nodeLabelSelector(v);
        if (!c.ok) return bad(c.error);
        f.nodeLabel.push(v);
        break;
      }
      case "verdict": {
        const up = v.toUpperCase();
        if (!(FLOW_VERDICTS as readonly string[]).includes(up)) return bad(`"${v}" is not ${FLOW_VERDICTS.join(" or ")}`);
        f.verdict.push(up as FlowVerdict);
        break;
      }
      case "protocol": {
        const up = v.toUpperCase();
        if (!PROTOCOLS.includes(up)) return bad(`"${v}" is not one of TCP, UDP, SCTP, ICMP, ICMPv6, DNS, HTTP`);
        f.protocol.push(up);
        break;
      }
      case "port": {
        const n = parseIntIn(v, 0, 65535);
        if (n === undefined) return bad(`"${v}" is not a port (0-65535)`);
        f.port.push(n);
        break;
      }
      case "type":
        if (!(FLOW_TYPES as readonly string[]).includes(v)) return bad(`"${v}" is not one of ${FLOW_TYPES.join(", ")}`);
        f.type.push(v as FlowType);
        break;
      case "http-method":
        if (!/^[A-Za-z]+$/.test(v)) return bad(`"${v}" is not an HTTP method`);
        f.httpMethod.push(v.toUpperCase());
        break;
      case "http-path":
      case "dns-query": {
        const err = regexError(v);
        if (err !== undefined) return bad(err);
        (flag === "http-path" ? f.httpPath : f.dnsQuery).push(v);
        break;
      }
      case "http-status":
        if (!HTTP_STATUS.test(v)) return bad(`"${v}" is not a status code (404) or a prefix of one (4+, 40+)`);
        f.httpStatus.push(v);
        break;
      case "since":
        if (sinceToMs(v, 0) === undefined) return bad(`"${v}" is not a duration (30s, 5m, 2h) or an RFC 3339 time`);
        f.since = v;
        break;
      case "last": {
        const n = parseIntIn(v, 1, Number.MAX_SAFE_INTEGER);
        if (n === undefined) return bad(`"${v}" is not a positive count`);
        f.last = n;
        break;
      }
    }
  }
  const { since, last, ...lists } = f;
  return { ok: true, filter: { ...lists, ...(since !== undefined ? { since } : {}), ...(last !== undefined ? { last } : {}) }, rest };
}

function podMatches(ref: PodRef, e: FlowEndpoint): boolean {
  if (e.pod === undefined) return false;
  if (ref.namespace !== undefined) return e.namespace === ref.namespace && e.pod === ref.pod;
  return e.pod.startsWith(ref.pod);
}

function labelMatches(want: string, e: FlowEndpoint): boolean {
  const w = parseSelectorLabel(want);
  const hasValue = want.includes("="); // neither a source nor a key may contain "="
  return e.labels.some((s) => {
    const l = parseLabel(s);
    return (w.source === LABEL_SOURCE.any || w.source === l.source) && w.key === l.key && (!hasValue || w.value === l.value);
  });
}

const either = (f: Flow, p: (e: FlowEndpoint) => boolean): boolean => p(f.source) || p(f.destination);

/** The L7 flags as Hubble's filters read them (flowapi/hubble/filter.ts): only L7 records of that protocol match. */
function l7Checks(f: FlowFilter): ((x: Flow) => boolean)[] {
  const checks: ((x: Flow) => boolean)[] = [];
  if (f.httpMethod.length) checks.push((x) => x.l7?.http !== undefined && f.httpMethod.includes(x.l7.http.method.toUpperCase()));
  if (f.httpPath.length) {
    const res = f.httpPath.map((p) => new RegExp(p));
    checks.push((x) => {
      const url = x.l7?.http?.url;
      if (url === undefined) return false;
      let path: string;
      try {
        path = url.startsWith("/") ? new URL(url, "http://x").pathname : new URL(url).pathname;
      } catch {
        return false;
      }
      return res.some((r) => r.test(path));
    });
  }
  if (f.httpStatus.length)
    checks.push((x) => {
      const code = x.l7?.http?.code;
      if (code === undefined || code === 0) return false;
      const text = String(code).padStart(3, "0");
      return f.httpStatus.some((s) => (s.endsWith("+") ? text.startsWith(s.slice(0, -1)) : text === s));
    });
  if (f.dnsQuery.length) {
    const res = f.dnsQuery.map((q) => new RegExp(q));
    checks.push((x) => x.l7?.dns !== undefined && res.some((r) => r.test(x.l7!.dns!.query)));
  }
  return checks;
}

/** The predicate of a filter, evaluated at `now` (for --since). `last` is applied by the caller over the matches. */
export function flowPredicate(f: FlowFilter, now: number = Date.now()): (flow: Flow) => boolean {
  const sinceMs = f.since !== undefined ? sinceToMs(f.since, now) : undefined;
  const checks: ((x: Flow) => boolean)[] = [];
  if (f.namespace.length) checks.push((x) => either(x, (e) => e.namespace !== undefined && f.namespace.includes(e.namespace)));
  if (f.pod.length) checks.push((x) => f.pod.some((r) => either(x, (e) => podMatches(r, e))));
  if (f.fromPod.length) checks.push((x) => f.fromPod.some((r) => podMatches(r, x.source)));
  if (f.toPod.length) checks.push((x) => f.toPod.some((r) => podMatches(r, x.destination)));
  if (f.label.length) checks.push((x) => f.label.some((l) => either(x, (e) => labelMatches(l, e))));
  if (f.identity.length) checks.push((x) => either(x, (e) => f.identity.includes(e.identity)));
  if (f.host.length) checks.push((x) => either(x, (e) => e.host !== undefined && f.host.includes(e.host)));
  if (f.workload.length) {
    const has = (e: FlowEndpoint): boolean => (e.workloads ?? []).some((w) => f.workload.some((r) => (r.name === "" || r.name === w.name) && (r.kind === "" || r.kind === w.kind)));
    checks.push((x) => either(x, has));
  }
  const fqdn = (patterns: readonly string[]): ((e: FlowEndpoint) => boolean) => {
    const res = patterns.flatMap((p) => {
      const c = fqdnPattern(p);
      return c.ok ? [c.re] : []; // parseFilterArgs refused the others
    });
    return (e) => (e.names ?? []).some((n) => res.some((r) => r.test(n)));
  };
  if (f.fqdn.length) {
    const has = fqdn(f.fqdn);
    checks.push((x) => either(x, has));
  }
  if (f.fromFqdn.length) {
    const has = fqdn(f.fromFqdn);
    checks.push((x) => has(x.source));
  }
  if (f.toFqdn.length) {
    const has = fqdn(f.toFqdn);
    checks.push((x) => has(x.destination));
  }
  if (f.nodeLabel.length) {
    const sels = f.nodeLabel.flatMap((s) => {
      const c = nodeLabelSelector(s);
      return c.ok ? [c.matches] : []; // parseFilterArgs refused the others
    });
    checks.push((x) => sels.some((m) => m(x.nodeLabels ?? [])));
  }
  if (f.verdict.length) checks.push((x) => f.verdict.includes(x.verdict));
  if (f.protocol.length) checks.push((x) => f.protocol.some((p) => (p === "DNS" ? x.l7?.dns !== undefined : p === "HTTP" ? x.l7?.http !== undefined : p === x.protocol.toUpperCase())));
  if (f.port.length) checks.push((x) => either(x, (e) => f.port.includes(e.port)));
  if (f.type.length) checks.push((x) => f.type.includes(x.type));
  checks.push(...l7Checks(f));
  if (sinceMs !== undefined) checks.push((x) => Date.parse(x.time) >= sinceMs);
  return (x) => checks.every((c) => c(x));
}
