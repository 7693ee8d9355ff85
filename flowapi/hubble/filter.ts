// Hubble's FlowFilter (flow.proto) as a predicate on Hubble-shaped flows, with Hubble's semantics; a field
// Membrane cannot honour is an error naming it, never a filter silently ignored.
import { isIP } from "node:net";
import { familyBits, parseIP, parsePrefix, prefixContains, type Prefix } from "../../core/cidr.ts";
import { parseLabel, parseSelectorLabel, LABEL_SOURCE } from "../../core/labels.ts";
import { CILIUM_EVENT_TYPE, type HubbleEndpoint, type HubbleFlow, type HubbleFlowFilter } from "./types.ts";

export type FlowMatch = (f: HubbleFlow) => boolean;
export type FilterCompile = { readonly ok: true; readonly match: FlowMatch } | { readonly ok: false; readonly field: string; readonly error: string };

/**
 * Fields whose data Membrane's flows do not carry (yet): a filter on them could only match nothing
 * or everything, so it is refused. The reason is part of the error.
 */
export const UNSUPPORTED_FIELDS: Readonly<Record<string, string>> = {
  uuid: "flows carry no UUID",
  source_ip_xlated: "there is no address translation",
  source_service: "flows carry no service",
  destination_service: "flows carry no service",
  ip_trace_id: "flows carry no IP trace id",
};

const VERDICTS = ["VERDICT_UNKNOWN", "FORWARDED", "DROPPED", "ERROR", "AUDIT", "REDIRECTED", "TRACED", "TRANSLATED"];
const DIRECTIONS = ["TRAFFIC_DIRECTION_UNKNOWN", "INGRESS", "EGRESS"];
const IP_VERSIONS = ["IP_NOT_USED", "IPv4", "IPv6"];
const L4 = ["icmp", "icmpv4", "icmpv6", "tcp", "udp", "sctp", "vrrp", "igmp"];
const L7 = ["dns", "http"];

class FilterError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

function list<T>(ff: HubbleFlowFilter, field: string): readonly T[] {
  const v = ff[field];
  return Array.isArray(v) ? (v as T[]) : [];
}

/** `ns/prefix`, `ns/` (any pod of ns), or a bare name (in namespace "default"), as Hubble reads them. */
function podMatcher(field: string, values: readonly string[]): (e: HubbleEndpoint | undefined) => boolean {
  const refs = values.map((v) => {
    if (v === "") throw new FilterError(field, `${field}: a name must not be empty`);
    const [ns, name] = v.includes("/") ? [v.slice(0, v.indexOf("/")), v.slice(v.indexOf("/") + 1).split("/")[0]!] : ["default", v];
    return { ns, prefix: name };
  });
  return (e) => {
    const ns = e?.namespace ?? "";
    const pod = e?.pod_name ?? "";
    if (ns === "" && pod === "") return false;
    return refs.some((r) => (r.prefix === "" || pod.startsWith(r.prefix)) && (r.ns === "" || r.ns === ns));
  };
}

/** Hubble's workload filter: an endpoint matches when one of its workloads has a filter's name and kind (an empty one matches any). */
function workloadMatcher(field: string, values: readonly unknown[]): (e: HubbleEndpoint | undefined) => boolean {
  const wanted = values.map((v, i) => {
    if (typeof v !== "object" || v === null) throw new FilterError(`${field}[${i}]`, `${field}[${i}]: must be a Workload ({kind, name})`);
    const { kind, name } = v as { kind?: unknown; name?: unknown };
    if ((kind !== undefined && typeof kind !== "string") || (name !== undefined && typeof name !== "string")) {
      throw new FilterError(`${field}[${i}]`, `${field}[${i}]: kind and name must be strings`);
    }
    return { kind: kind ?? "", name: name ?? "" };
  });
  return (e) => (e?.workloads ?? []).some((w) => wanted.some((f) => (f.name === "" || f.name === w.name) && (f.kind === "" || f.kind === w.kind)));
}

/** Hubble's interface filter: a flow seen on a device whose index and name are those of an entry (an unset part matches any). */
function interfaceMatcher(field: string, values: readonly unknown[]): FlowMatch {
  const wanted = values.map((v, i) => {
    if (typeof v !== "object" || v === null) throw new FilterError(`${field}[${i}]`, `${field}[${i}]: must be a NetworkInterface ({index, name})`);
    const { index, name } = v as { index?: unknown; name?: unknown };
    if ((index !== undefined && !(typeof index === "number" && Number.isInteger(index) && index >= 0)) || (name !== undefined && typeof name !== "string")) {
      throw new FilterError(`${field}[${i}]`, `${field}[${i}]: index must be a whole number, name a string`);
    }
    return { index: index ?? 0, name: name ?? "" };
  });
  return (f) => {
    const seen = f.interface;
    if (seen === undefined) return false;
    return wanted.some((w) => (w.index === 0 || w.index === Number(seen.index ?? 0)) && (w.name === "" || w.name === (seen.name ?? "")));
  };
}

const TCP_FLAG_NAMES = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"] as const;

/** Hubble's tcp_flags filter: a TCP flow matches when it has every flag one of the filter's entries sets. */
function tcpFlagsMatcher(field: string, values: readonly unknown[]): FlowMatch {
  const wanted = values.map((v, i) => {
    if (typeof v !== "object" || v === null) throw new FilterError(`${field}[${i}]`, `${field}[${i}]: must be TCPFlags ({SYN: true, …})`);
    for (const [k, b] of Object.entries(v)) {
      if (!(TCP_FLAG_NAMES as readonly string[]).includes(k)) throw new FilterError(`${field}[${i}].${k}`, `${field}[${i}].${k}: not a TCP flag (${TCP_FLAG_NAMES.join(", ")})`);
      if (typeof b !== "boolean") throw new FilterError(`${field}[${i}].${k}`, `${field}[${i}].${k}: must be true or false`);
    }
    return TCP_FLAG_NAMES.filter((n) => (v as Record<string, boolean>)[n] === true);
  });
  return (f) => {
    const flags = f.l4?.TCP?.flags;
    return flags !== undefined && wanted.some((names) => names.every((n) => flags[n] === true));
  };
}

function ipMatcher(field: string, values: readonly string[]): (ip: string | undefined) => boolean {
  const exact: string[] = [];
  const prefixes: Prefix[] = [];
  for (const v of values) {
    if (v.includes("/")) {
      const p = parsePrefix(v);
      if (p === undefined) throw new FilterError(field, `${field}: "${v}" is not an IP prefix`);
      prefixes.push(p);
    } else {
      if (isIP(v) === 0) throw new FilterError(field, `${field}: "${v}" is not an IP address`);
      exact.push(v);
    }
  }
  return (ip) => {
    if (ip === undefined || ip === "") return false;
    if (exact.includes(ip)) return true;
    if (prefixes.length === 0) return false;
    const a = parseIP(ip);
    return a !== undefined && prefixes.some((p) => prefixContains(p, { ...a, bits: familyBits(a.family) }));
  };
}

function portMatcher(field: string, values: readonly string[], side: "source_port" | "destination_port"): FlowMatch {
  const ports = values.map((v) => {
    if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new FilterError(field, `${field}: "${v}" is not a port (0-65535)`);
    return Number(v);
  });
  return (f) => {
    const l4 = f.l4?.TCP ?? f.l4?.UDP ?? f.l4?.SCTP;
    return l4 !== undefined && ports.includes(l4[side]);
  };
}

type Requirement = (labels: readonly { source: string; key: string; value: string }[]) => boolean;

/** Splits a selector at commas outside parentheses. */
function splitSelector(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = "";
  for (const c of s) {
    if (c === "(") depth++;
    if (c === ")") depth--;
    if (c === "," && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += c;
  }
  out.push(cur);
  return out.map((x) => x.trim());
}

/** A Kubernetes label selector whose keys may carry a Cilium source (`k8s:app`); a bare key matches any source. */
function labelSelector(field: string, selector: string): Requirement {
  const bad = (why: string): never => {
    throw new FilterError(field, `${field}: "${selector}": ${why}`);
  };
  if (selector.trim() === "") bad("an empty selector");
  const reqs = splitSelector(selector).map((term): Requirement => {
    if (term === "") bad("an empty requirement");
    const keyMatches = (key: string): ((l: { source: string; key: string }) => boolean) => {
      if (!/^[A-Za-z0-9_.:/-]+$/.test(key)) bad(`"${key}" is not a label key`);
      const k = parseSelectorLabel(key);
      return (l) => (k.source === LABEL_SOURCE.any || k.source === l.source) && k.key === l.key;
    };
    let m: RegExpExecArray | null;
    if ((m = /^!\s*(\S+)$/.exec(term))) {
      const km = keyMatches(m[1]!);
      return (ls) => !ls.some(km);
    }
    if ((m = /^(\S+?)\s*(==|=|!=)\s*(\S*)$/.exec(term))) {
      const km = keyMatches(m[1]!);
      const value = m[3]!;
      if (m[2] === "!=") return (ls) => !ls.some((l) => km(l) && l.value === value);
      return (ls) => ls.some((l) => km(l) && l.value === value);
    }
    if ((m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(term))) {
      const km = keyMatches(m[1]!);
      const values = m[3]!.split(",").map((v) => v.trim());
      if (m[2] === "in") return (ls) => ls.some((l) => km(l) && values.includes(l.value));
      return (ls) => !ls.some((l) => km(l) && values.includes(l.value));
    }
    if (/^\S+$/.test(term)) {
      const km = keyMatches(term);
      return (ls) => ls.some(km);
    }
    return bad(`"${term}" is not KEY, !KEY, KEY=VALUE, KEY!=VALUE, KEY in (…) or KEY notin (…)`);
  });
  return (ls) => reqs.every((r) => r(ls));
}

/**
 * A node-label selector as Hubble's node_labels filter reads it, on labels in `key=value` form (a Node's); the error
 * says what is wrong with it.
 */
export function nodeLabelSelector(selector: string): { readonly ok: true; readonly matches: (labels: readonly string[]) => boolean } | { readonly ok: false; readonly error: string } {
  try {
    const req = labelSelector("", selector);
    return { ok: true, matches: (labels) => req(labels.map((l) => parseLabel(l))) };
  } catch (err) {
    if (err instanceof FilterError) return { ok: false, error: err.message.replace(/^: /, "") };
    throw err;
  }
}

function labelMatcher(field: string, selectors: readonly string[]): (e: HubbleEndpoint | undefined) => boolean {
  const sels = selectors.map((s) => labelSelector(field, s));
  return (e) => {
    const ls = (e?.labels ?? []).map((l) => parseLabel(l));
    return sels.some((s) => s(ls));
  };
}

function enumValues(field: string, values: readonly unknown[], allowed: readonly string[]): string[] {
  return values.map((v) => {
    const name = typeof v === "number" ? allowed[v] : v;
    if (typeof name !== "string" || !allowed.includes(name)) throw new FilterError(field, `${field}: "${String(v)}" is not one of ${allowed.join(", ")}`);
    return name;
  });
}

/** `cluster/node` or `node` patterns with `*` inside a name part, as Hubble's node_name filter. */
function nodeNameMatcher(field: string, patterns: readonly string[]): FlowMatch {
  const part = (p: string): string => (p === "" ? "[-a-z0-9_.]*" : p.toLowerCase().replace(/[.]/g, "\\.").replace(/\*/g, "[-a-z0-9_]*"));
  const res = patterns.map((p) => {
    if (p === "") throw new FilterError(field, `${field}: a pattern must not be empty`);
    if (!/^[-A-Za-z0-9_.*/]+$/.test(p)) throw new FilterError(field, `${field}: "${p}" has characters a node name cannot have`);
    const parts = p.split("/");
    if (parts.length > 2) throw new FilterError(field, `${field}: "${p}" has more than one "/"`);
    const [cluster, node] = parts.length === 2 ? parts : ["", parts[0]!];
    return new RegExp(`^${part(cluster!)}/${part(node!)}$`);
  });
  // Membrane's flows name no cluster: Cilium's default cluster name stands in, as Hubble does.
  return (f) => f.node_name !== "" && res.some((r) => r.test((f.node_name.includes("/") ? f.node_name : `default/${f.node_name}`).toLowerCase()));
}

/** A Go (RE2) regular expression as Hubble compiles it: unanchored; one JavaScript cannot read is an error naming the field. */
function regexps(field: string, values: readonly string[]): RegExp[] {
  return values.map((v) => {
    try {
      return new RegExp(v);
    } catch (err) {
      throw new FilterError(field, `${field}: "${v}" is not a regular expression: ${(err as Error).message}`);
    }
  });
}

/**
 * A pattern of Hubble's FQDN filters: any case, an optional trailing dot, `*` standing for any run of name
 * characters (dots included: `*.example.com` matches `a.b.example.com`), the whole name matched. The error
 * says which characters a pattern may have.
 */
export function fqdnPattern(pattern: string): { readonly ok: true; readonly re: RegExp } | { readonly ok: false; readonly error: string } {
  const p = pattern.toLowerCase().trim().replace(/\.$/, "");
  if (!/^[-a-z0-9_.*]+$/.test(p)) return { ok: false, error: `"${pattern}" is not an FQDN pattern: only letters, digits, "-", "_", "." and "*" are allowed` };
  return { ok: true, re: new RegExp(`^${p.replace(/\./g, "[.]").replace(/\*/g, "[-a-z0-9_.]*")}$`, "i") };
}

/** Hubble's source_fqdn / destination_fqdn: one of the address's names (source_names / destination_names) matches one of the patterns. */
function fqdnMatcher(field: string, patterns: readonly string[]): (names: readonly string[] | undefined) => boolean {
  const res = patterns.map((p) => {
    const c = fqdnPattern(p);
    if (!c.ok) throw new FilterError(field, `${field}: ${c.error}`);
    return c.re;
  });
  return (names) => (names ?? []).some((n) => res.some((r) => r.test(n)));
}

const HTTP_STATUS_FULL = /^[1-5][0-9]{2}$/;
const HTTP_STATUS_PREFIX = /^([1-5][0-9]?)\+$/;

/** The path of an HTTP record's URL (Go's url.ParseRequestURI: absolute URL or absolute path); undefined when it has none. */
function urlPath(url: string): string | undefined {
  if (url.startsWith("/")) return url.split("?")[0]!.split("#")[0]!;
  try {
    return new URL(url).pathname;
  } catch {
    return undefined;
  }
}

/**
 * The L7 fields of a FlowFilter, as Hubble reads them: `http_status_code` (`404`, or a prefix `4+` / `40+`) matches
 * a response's status, `http_method` the method (any case), `http_path` / `http_url` regular expressions on the
 * URL's path / the whole URL, `http_header` a header's exact key and value, `dns_query` regular expressions on the
 * query. The HTTP ones require an event type filter that admits L7 (or none), as Hubble's do.
 */
function l7Checks(ff: HubbleFlowFilter, field: (name: string) => string): FlowMatch[] {
  const checks: FlowMatch[] = [];
  const strs = (name: string): readonly string[] => list<string>(ff, name);
  const types = list<{ type?: number }>(ff, "event_type");
  const l7Admitted = types.length === 0 || types.some((t) => Number(t.type ?? 0) === CILIUM_EVENT_TYPE.l7);
  const needsL7 = (name: string): void => {
    if (!l7Admitted) throw new FilterError(field(name), `${field(name)}: filtering by ${name.replace(/_/g, " ")} requires the event type filter to match 'l7' events`);
  };
  const http = (f: HubbleFlow) => f.l7?.http;
  if (strs("http_status_code").length) {
    needsL7("http_status_code");
    const full: string[] = [];
    const prefixes: string[] = [];
    for (const v of strs("http_status_code")) {
      if (HTTP_STATUS_FULL.test(v)) full.push(v);
      else if (HTTP_STATUS_PREFIX.test(v)) prefixes.push(v.slice(0, -1));
      else throw new FilterError(field("http_status_code"), `${field("http_status_code")}: "${v}" is not a status code (404) or a prefix of one (4+, 40+)`);
    }
    checks.push((f) => {
      const code = Number(http(f)?.code ?? 0);
      if (code === 0) return false; // not a response
      const text = String(code).padStart(3, "0");
      return full.includes(text) || prefixes.some((p) => text.startsWith(p));
    });
  }
  if (strs("http_method").length) {
    needsL7("http_method");
    const methods = strs("http_method").map((m) => m.toUpperCase());
    checks.push((f) => {
      const m = http(f)?.method;
      return m !== undefined && m !== "" && methods.includes(m.toUpperCase());
    });
  }
  if (strs("http_path").length) {
    needsL7("http_path");
    const res = regexps(field("http_path"), strs("http_path"));
    checks.push((f) => {
      const p = urlPath(http(f)?.url ?? "");
      return p !== undefined && res.some((r) => r.test(p));
    });
  }
  if (strs("http_url").length) {
    needsL7("http_url");
    const res = regexps(field("http_url"), strs("http_url"));
    checks.push((f) => {
      const u = http(f)?.url;
      return u !== undefined && u !== "" && res.some((r) => r.test(u));
    });
  }
  if (list(ff, "http_header").length) {
    needsL7("http_header");
    const want = list<{ key?: string; value?: string }>(ff, "http_header").map((h) => ({ key: String(h.key ?? ""), value: String(h.value ?? "") }));
    checks.push((f) => (http(f)?.headers ?? []).some((h) => want.some((w) => w.key === h.key && w.value === h.value)));
  }
  if (strs("dns_query").length) {
    const res = regexps(field("dns_query"), strs("dns_query"));
    checks.push((f) => {
      const q = f.l7?.dns?.query;
      return q !== undefined && res.some((r) => r.test(q));
    });
  }
  return checks;
}

/** The predicate of one FlowFilter: every field given must hold (values of one field are alternatives). */
function compileOne(ff: HubbleFlowFilter, at: string): FlowMatch {
  const checks: FlowMatch[] = [];
  for (const [field, why] of Object.entries(UNSUPPORTED_FIELDS)) {
    if (list(ff, field).length > 0) throw new FilterError(`${at}.${field}`, `${at}.${field}: not supported: ${why}`);
  }
  const exp = ff.experimental as { cel_expression?: unknown[] } | undefined;
  if (exp?.cel_expression !== undefined && exp.cel_expression.length > 0) {
    throw new FilterError(`${at}.experimental.cel_expression`, `${at}.experimental.cel_expression: not supported: CEL expressions are not evaluated`);
  }
  const field = (name: string): string => `${at}.${name}`;
  const strs = (name: string): readonly string[] => list<string>(ff, name);
  if (strs("source_ip").length) {
    const m = ipMatcher(field("source_ip"), strs("source_ip"));
    checks.push((f) => m(f.IP?.source));
  }
  if (strs("destination_ip").length) {
    const m = ipMatcher(field("destination_ip"), strs("destination_ip"));
    checks.push((f) => m(f.IP?.destination));
  }
  if (strs("source_pod").length) {
    const m = podMatcher(field("source_pod"), strs("source_pod"));
    checks.push((f) => m(f.source));
  }
  if (strs("destination_pod").length) {
    const m = podMatcher(field("destination_pod"), strs("destination_pod"));
    checks.push((f) => m(f.destination));
  }
  if (strs("source_label").length) {
    const m = labelMatcher(field("source_label"), strs("source_label"));
    checks.push((f) => m(f.source));
  }
  if (strs("destination_label").length) {
    const m = labelMatcher(field("destination_label"), strs("destination_label"));
    checks.push((f) => m(f.destination));
  }
  if (strs("source_fqdn").length) {
    const m = fqdnMatcher(field("source_fqdn"), strs("source_fqdn"));
    checks.push((f) => m(f.source_names));
  }
  if (strs("destination_fqdn").length) {
    const m = fqdnMatcher(field("destination_fqdn"), strs("destination_fqdn"));
    checks.push((f) => m(f.destination_names));
  }
  if (list(ff, "source_workload").length) {
    const m = workloadMatcher(field("source_workload"), list(ff, "source_workload"));
    checks.push((f) => m(f.source));
  }
  if (list(ff, "destination_workload").length) {
    const m = workloadMatcher(field("destination_workload"), list(ff, "destination_workload"));
    checks.push((f) => m(f.destination));
  }
  for (const side of ["source", "destination"] as const) {
    const names = strs(`${side}_cluster_name`);
    if (names.length === 0) continue;
    if (names.includes("")) throw new FilterError(field(`${side}_cluster_name`), `${field(`${side}_cluster_name`)}: a name must not be empty`);
    checks.push((f) => names.includes(f[side].cluster_name ?? ""));
  }
  if (list(ff, "tcp_flags").length) checks.push(tcpFlagsMatcher(field("tcp_flags"), list(ff, "tcp_flags")));
  if (list(ff, "traffic_direction").length) {
    const want = enumValues(field("traffic_direction"), list(ff, "traffic_direction"), DIRECTIONS);
    checks.push((f) => want.includes(f.traffic_direction));
  }
  if (list(ff, "verdict").length) {
    const want = enumValues(field("verdict"), list(ff, "verdict"), VERDICTS);
    checks.push((f) => want.includes(f.verdict));
  }
  if (list(ff, "drop_reason_desc").length) {
    const want = list<unknown>(ff, "drop_reason_desc").map((v) => String(v));
    checks.push((f) => f.drop_reason_desc !== undefined && want.includes(f.drop_reason_desc));
  }
  if (list(ff, "event_type").length) {
    const types = list<{ type?: number; match_sub_type?: boolean; sub_type?: number }>(ff, "event_type");
    checks.push((f) => types.some((t) => (!t.type || t.type === f.event_type.type) && (!t.match_sub_type || (t.sub_type ?? 0) === f.event_type.sub_type)));
  }
  if (strs("protocol").length) {
    const protos = strs("protocol").map((p) => {
      const l = p.toLowerCase();
      if (!L4.includes(l) && !L7.includes(l)) throw new FilterError(field("protocol"), `${field("protocol")}: "${p}" is not one of ${[...L4, ...L7].join(", ")}`);
      return l;
    });
    checks.push((f) =>
      protos.some((p) => {
        const l4 = f.l4 ?? {};
        switch (p) {
          case "icmp":
            return l4.ICMPv4 !== undefined || l4.ICMPv6 !== undefined;
          case "icmpv4":
            return l4.ICMPv4 !== undefined;
          case "icmpv6":
            return l4.ICMPv6 !== undefined;
          case "tcp":
            return l4.TCP !== undefined;
          case "udp":
            return l4.UDP !== undefined;
          case "sctp":
            return l4.SCTP !== undefined;
          case "vrrp":
            return l4.VRRP !== undefined;
          case "igmp":
            return l4.IGMP !== undefined;
          case "dns":
            return f.l7?.dns !== undefined;
          case "http":
            return f.l7?.http !== undefined;
          default:
            return false;
        }
      }),
    );
  }
  if (strs("source_port").length) checks.push(portMatcher(field("source_port"), strs("source_port"), "source_port"));
  if (strs("destination_port").length) checks.push(portMatcher(field("destination_port"), strs("destination_port"), "destination_port"));
  if (list(ff, "reply").length) {
    const want = list<boolean>(ff, "reply");
    // As Hubble: a drop whose reply-ness is unknown counts as not a reply.
    checks.push((f) => (f.is_reply === undefined && f.verdict !== "DROPPED" ? false : want.includes(f.is_reply?.value ?? false)));
  }
  if (list(ff, "source_identity").length) {
    const ids = list<number>(ff, "source_identity").map(Number);
    checks.push((f) => ids.includes(f.source.identity ?? 0));
  }
  if (list(ff, "destination_identity").length) {
    const ids = list<number>(ff, "destination_identity").map(Number);
    checks.push((f) => ids.includes(f.destination.identity ?? 0));
  }
  if (strs("node_name").length) checks.push(nodeNameMatcher(field("node_name"), strs("node_name")));
  if (strs("node_labels").length) {
    // The node's Kubernetes labels (`key=value`, no source): a selector's bare key matches them, as Hubble's.
    const sels = strs("node_labels").map((s) => labelSelector(field("node_labels"), s));
    checks.push((f) => {
      const ls = (f.node_labels ?? []).map((l) => parseLabel(l));
      return sels.some((s) => s(ls));
    });
  }
  checks.push(...l7Checks(ff, field));
  if (list(ff, "interface").length) checks.push(interfaceMatcher(field("interface"), list(ff, "interface")));
  if (strs("trace_id").length) {
    const ids = strs("trace_id");
    checks.push((f) => ids.includes(f.trace_context?.parent?.trace_id ?? ""));
  }
  if (list(ff, "encrypted").length) {
    const want = list<unknown>(ff, "encrypted").map((v, i) => {
      if (typeof v !== "boolean") throw new FilterError(`${field("encrypted")}[${i}]`, `${field("encrypted")}[${i}]: must be true or false`);
      return v;
    });
    checks.push((f) => want.includes(f.IP?.encrypted === true));
  }
  if (list(ff, "ip_version").length) {
    const want = enumValues(field("ip_version"), list(ff, "ip_version"), IP_VERSIONS);
    checks.push((f) => want.includes(f.IP?.ipVersion ?? "IP_NOT_USED"));
  }
  return (f) => checks.every((c) => c(f));
}

/**
 * The predicate of a GetFlows request's filters: a flow passes when it matches any whitelist filter (or
 * there is none) and no blacklist filter. An error names the field (`whitelist[0].source_fqdn`).
 */
export function compileFlowFilters(whitelist: readonly HubbleFlowFilter[] = [], blacklist: readonly HubbleFlowFilter[] = []): FilterCompile {
  try {
    const allow = whitelist.map((ff, i) => compileOne(ff, `whitelist[${i}]`));
    const deny = blacklist.map((ff, i) => compileOne(ff, `blacklist[${i}]`));
    return { ok: true, match: (f) => (allow.length === 0 || allow.some((m) => m(f))) && !deny.some((m) => m(f)) };
  } catch (err) {
    if (err instanceof FilterError) return { ok: false, field: err.field, error: err.message };
    throw err;
  }
}
