// Cilium toPorts: ports, protocols, L7 rules (http, dns, l7proto; kafka refused) and TLS contexts, with Cilium's checks.
import {
  EXTENDED_PROTOCOL_NAMES,
  isExtendedProtocol,
  type DNSRule,
  type HTTPRule,
  type L7Rules,
  type PortProtocol,
  type PortRule,
  type Protocol,
  type TLSContext,
} from "../model.ts";
import {
  Errors,
  type Obj,
  checkKnown,
  checkKnownKeys,
  field,
  has,
  ianaServiceNameProblem,
  isEmptyList,
  isRecord,
  join,
  objectItems,
  optList,
  optObject,
  optString,
  show,
  stringList,
  typeName,
  type Writable,
} from "./fields.ts";
import { dnsNameProblem, dnsPatternProblem } from "./fqdn.ts";

/** An empty list shared by every port rule without serverNames (never written to). */
const NO_STRINGS: readonly string[] = [];
const MAX_PORTS = 40; // Cilium's limit per port rule
const PROTOCOLS: readonly Protocol[] = ["TCP", "UDP", "SCTP", "ANY"];

/** The option that admits the extended IP protocols, as the flags and the chart spell it. */
export const EXTENDED_IP_PROTOCOLS_FLAG = "--enable-extended-ip-protocols";

/** How the parser reads policies; every adapter that parses (webhook, operator, CLI) passes the same. */
export interface ParseOptions {
  /** Admit port-less rules for the extended IP protocols (VRRP, IGMP, GRE, ...); off by default, as in Cilium. */
  readonly enableExtendedIPProtocols?: boolean;
}
const PORT_FIELDS = ["port", "endPort", "protocol"];
const HTTP_FIELDS = ["method", "path", "host", "headers", "headerMatches"];
const DNS_FIELDS = ["matchName", "matchPattern"];
const L7_FIELDS = ["http", "kafka", "dns", "l7proto", "l7"];
const PORT_RULE_L7_FIELDS = ["rules", "terminatingTLS", "originatingTLS", "serverNames", "listener"];
const PORT_RULE_FIELDS = ["ports", ...PORT_RULE_L7_FIELDS];

export interface PortContext {
  readonly direction: "ingress" | "egress";
  readonly deny: boolean;
  readonly hostPolicy: boolean;
  readonly enableExtendedIPProtocols: boolean;
}

/** A Cilium port number or IANA service name given as a string; undefined after an error. */
function ciliumPort(errs: Errors, item: Obj, path: string): { port: number; name?: string } | undefined {
  // The field's path is built only for an error.
  const raw = field(item, "port");
  if (raw === undefined || raw === null) {
    errs.add(join(path, "port"), `a port is required (a number such as "80", a port name, or "0" for every port)`);
    return undefined;
  }
  if (typeof raw === "number") {
    errs.add(join(path, "port"), `must be a string: write "${String(raw)}" in quotes`);
    return undefined;
  }
  if (typeof raw !== "string") {
    errs.add(join(path, "port"), `must be a string (a port number or name), not ${typeName(raw)}`);
    return undefined;
  }
  if (raw === "") {
    errs.add(join(path, "port"), `must not be empty (a number such as "80", a port name, or "0" for every port)`);
    return undefined;
  }
  if (/^[0-9]+$/.test(raw)) {
    const n = raw.length > 6 ? Infinity : Number(raw);
    if (n > 65535) {
      errs.add(join(path, "port"), `${show(raw)} is not a port (1-65535)`);
      return undefined;
    }
    return { port: n };
  }
  if (/[a-zA-Z]/.test(raw)) {
    const problem = ianaServiceNameProblem(raw, false);
    if (problem) {
      errs.add(join(path, "port"), `${show(raw)} is neither a port number nor a port name: ${problem}`);
      return undefined;
    }
    return { port: 0, name: raw.toLowerCase() };
  }
  errs.add(join(path, "port"), `${show(raw)} is not a port (1-65535)`);
  return undefined;
}

function readProtocol(
  errs: Errors,
  item: Obj,
  path: string,
  fallback: Protocol,
  extended: boolean,
): Protocol | undefined {
  const raw = field(item, "protocol");
  if (raw === undefined || raw === null) return fallback;
  if (typeof raw === "string" && (PROTOCOLS as readonly string[]).includes(raw)) return raw as Protocol;
  if (typeof raw === "string" && isExtendedProtocol(raw)) {
    if (extended) return raw;
    errs.add(
      join(path, "protocol"),
      `${show(raw)} is an extended IP protocol, which is refused unless extended IP protocols are enabled (${EXTENDED_IP_PROTOCOLS_FLAG} on the webhook and the operator; chart value extendedIPProtocols.enabled)`,
    );
    return undefined;
  }
  const names = extended ? [...PROTOCOLS, ...EXTENDED_PROTOCOL_NAMES] : PROTOCOLS;
  const hint =
    typeof raw === "string" && (names as readonly string[]).includes(raw.toUpperCase())
      ? ` (write it in capitals: ${raw.toUpperCase()})`
      : typeof raw === "string" && /^icmp(v6)?$/i.test(raw)
        ? " (use icmps for ICMP)"
        : "";
  errs.add(
    join(path, "protocol"),
    `${show(raw)} is not a protocol: use ${names.slice(0, -1).join(", ")} or ${names[names.length - 1] ?? ""}${hint}`,
  );
  return undefined;
}

/**
 * An entry for an extended IP protocol: matched by protocol number alone, so a port other than
 * "0" (or absent) and an endPort are errors rather than silently ignored.
 */
function extendedPortProtocol(errs: Errors, item: Obj, path: string, protocol: Protocol): PortProtocol | undefined {
  const before = errs.count;
  const raw = field(item, "port");
  if (raw !== undefined && raw !== null && raw !== "0")
    errs.add(
      join(path, "port"),
      `${protocol} has no ports: remove port (or write "0"), the rule matches every ${protocol} packet`,
    );
  const rawEnd = field(item, "endPort");
  if (rawEnd !== undefined && rawEnd !== null && rawEnd !== 0)
    errs.add(join(path, "endPort"), `${protocol} has no ports: remove endPort`);
  return errs.count === before ? { port: 0, endPort: 0, protocol } : undefined;
}

/** One entry of `ports`: port, endPort, protocol (Cilium's default protocol is ANY). */
function portProtocol(errs: Errors, item: Obj, path: string, extended: boolean): PortProtocol | undefined {
  checkKnown(errs, path, item, PORT_FIELDS);
  const before = errs.count;
  const rawProtocol = field(item, "protocol");
  if (typeof rawProtocol === "string" && isExtendedProtocol(rawProtocol)) {
    // Refused (option off) it has its one error: "a port is required" beside it would mislead.
    const protocol = readProtocol(errs, item, path, "ANY", extended);
    return protocol === undefined ? undefined : extendedPortProtocol(errs, item, path, protocol);
  }
  const port = ciliumPort(errs, item, path);
  const protocol = readProtocol(errs, item, path, "ANY", extended);
  let endPort = port?.port ?? 0;
  const rawEnd = field(item, "endPort");
  if (rawEnd !== undefined && rawEnd !== null) {
    const ep = join(path, "endPort");
    if (typeof rawEnd !== "number" || !Number.isInteger(rawEnd))
      errs.add(ep, `must be a whole number, not ${show(rawEnd)}`);
    else if (rawEnd < 0 || rawEnd > 65535) errs.add(ep, `${rawEnd} is not a port (1-65535)`);
    else if (port?.name !== undefined)
      errs.add(ep, `endPort needs a numeric port, not the port name ${show(port.name)}`);
    else if (port !== undefined && port.port === 0 && rawEnd !== 0)
      errs.add(ep, `endPort needs a start port other than "0" (port "0" already means every port)`);
    else if (port !== undefined && rawEnd !== 0 && rawEnd < port.port)
      errs.add(ep, `endPort ${rawEnd} is less than port ${port.port}`);
    else if (rawEnd !== 0) endPort = rawEnd;
  }
  if (errs.count !== before || port === undefined || protocol === undefined) return undefined;
  return port.name !== undefined
    ? { port: 0, endPort: 0, name: port.name, protocol }
    : { port: port.port, endPort, protocol };
}

/** Why a regular expression cannot be handed to Envoy (RE2), or undefined; memoised by text (see checkRegex). */
function regexProblem(re: string): string | undefined {
  if (/\(\?<?[=!]/.test(re)) return `${show(re)} uses a lookaround, which Cilium's regular expressions (RE2) do not support`;
  if (/\\[1-9]/.test(re)) return `${show(re)} uses a backreference, which Cilium's regular expressions (RE2) do not support`;
  try {
    new RegExp(re);
  } catch (e) {
    const reason =
      e instanceof Error
        ? e.message.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, "")
        : "it does not compile";
    return `${show(re)} is not a valid regular expression: ${reason}`;
  }
  return undefined;
}

// Compiled once per text, not once per request: the same method and path patterns come back with
// every update of a policy. Bounded like the selector memo, so that no request can grow it without limit.
const REGEX_MEMO_MAX_ENTRIES = 1024;
const REGEX_MEMO_MAX_CHARS = 256;
const checkedRegexes = new Map<string, string | undefined>();

/** A regular expression (field `key` of the object at `path`) as Cilium hands it to Envoy (RE2): it must compile, without RE2-unsupported syntax. */
function checkRegex(errs: Errors, path: string, key: string, re: string): void {
  let problem: string | undefined;
  if (checkedRegexes.has(re)) problem = checkedRegexes.get(re);
  else {
    problem = regexProblem(re);
    if (re.length <= REGEX_MEMO_MAX_CHARS) {
      if (checkedRegexes.size >= REGEX_MEMO_MAX_ENTRIES) checkedRegexes.clear();
      checkedRegexes.set(re, problem);
    }
  }
  if (problem !== undefined) errs.add(join(path, key), problem);
}

function secretRef(errs: Errors, obj: Obj, path: string): { namespace?: string; name: string } | undefined {
  const secret = optObject(errs, obj, "secret", path);
  if (!secret) return undefined;
  const sp = join(path, "secret");
  checkKnown(errs, sp, secret, ["name", "namespace"]);
  const name = optString(errs, secret, "name", sp);
  const namespace = optString(errs, secret, "namespace", sp);
  if (name === undefined || name === "") {
    if (!has(secret, "name") || name === "") errs.add(join(sp, "name"), "the secret needs a name");
    return undefined;
  }
  return namespace ? { namespace, name } : { name };
}

function httpRules(errs: Errors, obj: Obj, path: string): HTTPRule[] {
  const out: HTTPRule[] = [];
  for (const { item, path: p } of objectItems(errs, obj, "http", path)) {
    checkKnown(errs, p, item, HTTP_FIELDS);
    const method = optString(errs, item, "method", p);
    const pathRe = optString(errs, item, "path", p);
    const host = optString(errs, item, "host", p);
    // The field's path is built only for an error.
    if (method !== undefined) checkRegex(errs, p, "method", method);
    if (pathRe !== undefined) checkRegex(errs, p, "path", pathRe);
    if (host !== undefined) checkRegex(errs, p, "host", host);
    // Most HTTP rules have neither headers nor headerMatches: no list is read or built for them.
    const headers = field(item, "headers") !== undefined ? stringList(errs, item, "headers", p) : NO_STRINGS;
    const headerMatches: NonNullable<HTTPRule["headerMatches"]>[number][] = [];
    const headerMatchItems = field(item, "headerMatches") !== undefined ? objectItems(errs, item, "headerMatches", p) : [];
    for (const { item: hm, path: hp } of headerMatchItems) {
      checkKnown(errs, hp, hm, ["name", "value", "mismatch", "secret"]);
      const name = optString(errs, hm, "name", hp);
      if (!name) errs.add(join(hp, "name"), "a header name is required");
      const value = optString(errs, hm, "value", hp);
      const mismatch = optString(errs, hm, "mismatch", hp);
      if (mismatch !== undefined && !["LOG", "ADD", "DELETE", "REPLACE"].includes(mismatch)) {
        errs.add(
          join(hp, "mismatch"),
          `${show(mismatch)} is not a mismatch action (LOG, ADD, DELETE or REPLACE)`,
        );
      }
      const secret = has(hm, "secret") ? secretRef(errs, hm, hp) : undefined;
      if (name) {
        headerMatches.push({
          name,
          ...(value !== undefined ? { value } : {}),
          ...(mismatch !== undefined ? { mismatch: mismatch as "LOG" } : {}),
          ...(secret ? { secret } : {}),
        });
      }
    }
    // Assigned one by one (not spread): this runs for every HTTP rule of every request.
    const rule: Writable<HTTPRule> = {};
    if (method !== undefined) rule.method = method;
    if (pathRe !== undefined) rule.path = pathRe;
    if (host !== undefined) rule.host = host;
    if (headers.length) rule.headers = headers;
    if (headerMatches.length) rule.headerMatches = headerMatches;
    out.push(rule);
  }
  return out;
}

function dnsRules(errs: Errors, obj: Obj, path: string): DNSRule[] {
  const out: DNSRule[] = [];
  for (const { item, path: p } of objectItems(errs, obj, "dns", path)) {
    checkKnown(errs, p, item, DNS_FIELDS);
    const matchName = optString(errs, item, "matchName", p);
    const matchPattern = optString(errs, item, "matchPattern", p);
    if (matchName !== undefined && matchPattern !== undefined)
      errs.add(join(p, "matchPattern"), "set only one of matchName or matchPattern");
    else if (
      matchName === undefined &&
      matchPattern === undefined &&
      !has(item, "matchName") &&
      !has(item, "matchPattern")
    ) {
      errs.add(p, "set one of matchName or matchPattern");
    }
    if (matchName !== undefined) {
      const prob = dnsNameProblem(matchName);
      if (prob) errs.add(join(p, "matchName"), prob);
    }
    if (matchPattern !== undefined) {
      const prob = dnsPatternProblem(matchPattern);
      if (prob) errs.add(join(p, "matchPattern"), prob);
    }
    out.push(matchName !== undefined ? { matchName } : { matchPattern: matchPattern ?? "" });
  }
  return out;
}

/** Whether field `k` of `this` is set (not absent or null); a `some` callback without a closure per call. */
function isSetIn(this: Obj, k: string): boolean {
  return has(this, k);
}

function l7Rules(errs: Errors, rules: Obj, path: string): L7Rules | undefined {
  checkKnown(errs, path, rules, L7_FIELDS);
  const kinds: string[] = [];
  let result: L7Rules | undefined;
  const http = httpRules(errs, rules, path);
  if (http.length) {
    kinds.push("http");
    result = { kind: "http", http };
  }
  if (has(rules, "kafka"))
    errs.add(
      join(path, "kafka"),
      "Kafka rules are not supported by Membrane (Cilium removed them in 1.20): allow the Kafka port without L7 rules, or enforce topics in the broker's ACLs",
    );
  const dns = dnsRules(errs, rules, path);
  if (dns.length) {
    kinds.push("dns");
    result = { kind: "dns", dns };
  }
  const l7proto = optString(errs, rules, "l7proto", path);
  const l7: Record<string, string>[] = [];
  const l7List = optList(errs, rules, "l7", path);
  for (let i = 0; i < l7List.length; i++) {
    const x = l7List[i];
    const p = `${join(path, "l7")}[${i}]`;
    if (!isRecord(x)) {
      errs.add(p, `must be a map of strings, not ${typeName(x)}`);
      continue;
    }
    const m: Record<string, string> = {};
    for (const k of Object.keys(x)) {
      const v = x[k];
      if (typeof v === "string") m[k] = v;
      else errs.add(`${p}[${JSON.stringify(k)}]`, `must be a string, not ${typeName(v)}`);
    }
    l7.push(m);
  }
  if (l7.length && !l7proto)
    errs.add(join(path, "l7"), "l7 rules need l7proto to say which protocol parser applies them");
  if (l7proto !== undefined) {
    if (l7proto === "") errs.add(join(path, "l7proto"), "must not be empty");
    else {
      kinds.push("l7proto");
      result = { kind: "l7", l7proto, l7 };
    }
  }
  // The CRD's oneOf refused an empty `rules` before the webhook saw it; refuse it here, with a reason.
  if (!L7_FIELDS.some(isSetIn, rules))
    errs.add(path, "rules has no L7 rule: set http, dns or l7proto, or remove rules to allow the ports without L7 rules");
  if (kinds.length > 1) {
    errs.add(
      path,
      `only one kind of L7 rule per port rule, found ${kinds.join(" and ")}: write separate toPorts entries`,
    );
    return undefined;
  }
  return result;
}

function tlsContext(errs: Errors, obj: Obj, key: string, path: string): TLSContext | undefined {
  const tls = optObject(errs, obj, key, path);
  if (!tls) return undefined;
  const p = join(path, key);
  checkKnown(errs, p, tls, ["secret", "trustedCA", "certificate", "privateKey"]);
  const trustedCA = optString(errs, tls, "trustedCA", p);
  const certificate = optString(errs, tls, "certificate", p);
  const privateKey = optString(errs, tls, "privateKey", p);
  if (!has(tls, "secret")) {
    errs.add(
      join(p, "secret"),
      `${key} needs a secret (name and optional namespace) holding the TLS material`,
    );
    return undefined;
  }
  const secret = secretRef(errs, tls, p);
  if (!secret) return undefined;
  return {
    secret,
    ...(trustedCA !== undefined ? { trustedCA } : {}),
    ...(certificate !== undefined ? { certificate } : {}),
    ...(privateKey !== undefined ? { privateKey } : {}),
  };
}

/** The field of `rules` each kind of L7 rule is written in. */
const L7_FIELD: Record<L7Rules["kind"], string> = { http: "http", dns: "dns", l7: "l7proto" };

const L7_NAMES: Record<L7Rules["kind"], string> = {
  http: "HTTP",
  dns: "DNS",
  l7: "L7 (l7proto)",
};

/** One entry of a rule's `toPorts`. Deny rules take ports only (Cilium's PortDenyRule). */
export function portRule(errs: Errors, item: Obj, path: string, ctx: PortContext): PortRule | undefined {
  const before = errs.count;
  // Read once: most port rules have only ports (and rules), and the readers below return nothing for an absent field.
  const keys = Object.keys(item);
  if (ctx.deny) {
    for (const k of PORT_RULE_L7_FIELDS) {
      if (keys.includes(k) && has(item, k)) {
        errs.add(
          join(path, k),
          k === "rules"
            ? "L7 rules are not allowed in deny rules: a deny applies to whole ports"
            : `${k} is not allowed in deny rules: a deny applies to whole ports`,
        );
      }
    }
    checkKnownKeys(errs, path, keys, PORT_RULE_FIELDS);
  } else {
    checkKnownKeys(errs, path, keys, PORT_RULE_FIELDS);
    if (keys.includes("listener") && has(item, "listener"))
      errs.add(
        join(path, "listener"),
        "listener (a redirect to a CiliumEnvoyConfig listener) is not supported by Membrane: it runs no Envoy that a CiliumEnvoyConfig could configure; use L7 rules (rules.http) instead",
      );
  }

  const rawPorts = optList(errs, item, "ports", path);
  if (isEmptyList(item, "ports")) {
    // L7 rules cannot take port "0", so suggest it only where it would be accepted.
    const l7 = field(item, "rules");
    const example =
      isRecord(l7) && has(l7, "dns") ? `{port: "53", protocol: ANY}` : `{port: "443", protocol: TCP}`;
    errs.add(
      join(path, "ports"),
      `an empty list selects no port; list ports such as ${example}${has(item, "rules") ? "" : `, or use port "0" for every port`}`,
    );
  }
  if (rawPorts.length > MAX_PORTS)
    errs.add(
      join(path, "ports"),
      `${rawPorts.length} ports in one port rule; the most Cilium allows is ${MAX_PORTS}`,
    );
  const ports: PortProtocol[] = [];
  const portPaths: string[] = [];
  for (const { item: pp, path: p } of objectItems(errs, item, "ports", path)) {
    const parsed = portProtocol(errs, pp, p, ctx.enableExtendedIPProtocols);
    if (parsed) {
      ports.push(parsed);
      portPaths.push(p);
    }
  }
  if (ctx.deny) return errs.count === before ? { ports } : undefined;

  const rulesObj = keys.includes("rules") ? optObject(errs, item, "rules", path) : undefined;
  const rules = rulesObj ? l7Rules(errs, rulesObj, join(path, "rules")) : undefined;
  const terminatingTLS = keys.includes("terminatingTLS") ? tlsContext(errs, item, "terminatingTLS", path) : undefined;
  const originatingTLS = keys.includes("originatingTLS") ? tlsContext(errs, item, "originatingTLS", path) : undefined;
  const serverNames = keys.includes("serverNames") ? stringList(errs, item, "serverNames", path) : NO_STRINGS;
  for (let i = 0; i < serverNames.length; i++) {
    if (serverNames[i] === "") errs.add(`${join(path, "serverNames")}[${i}]`, "a server name must not be empty");
  }
  if (serverNames.length && rules && !has(item, "terminatingTLS")) {
    errs.add(
      join(path, "serverNames"),
      "serverNames with L7 rules need terminatingTLS: the proxy must terminate TLS to see the requests",
    );
  }

  if (rules) {
    const name = L7_NAMES[rules.kind];
    const rp = join(path, "rules");
    if (ctx.hostPolicy)
      errs.add(join(rp, L7_FIELD[rules.kind]), "host policies (nodeSelector) do not support L7 rules");
    if (rules.kind === "dns") {
      if (ctx.direction === "ingress")
        errs.add(
          join(rp, "dns"),
          "DNS rules are only allowed in egress rules (they inspect lookups the endpoint makes)",
        );
      if (rawPorts.length === 0 && !isEmptyList(item, "ports"))
        errs.add(join(path, "ports"), `DNS rules need their port listed: add { port: "53", protocol: ANY }`);
      for (let i = 0; i < ports.length; i++) {
        const pp = ports[i];
        if (pp !== undefined && pp.name === undefined && pp.endPort > pp.port)
          errs.add(join(portPaths[i] ?? path, "endPort"), "DNS rules do not support port ranges");
      }
    } else {
      for (let i = 0; i < ports.length; i++) {
        const pp = ports[i];
        if (pp !== undefined && pp.protocol !== "TCP") {
          errs.add(
            join(portPaths[i] ?? path, "protocol"),
            `${name} rules apply to TCP only: set protocol: TCP (it is ${pp.protocol}${pp.protocol === "ANY" && !has(isRecord(rawPorts[i]) ? (rawPorts[i] as Obj) : {}, "protocol") ? ", Cilium's default" : ""})`,
          );
        }
      }
    }
    for (let i = 0; i < ports.length; i++) {
      const pp = ports[i];
      if (pp !== undefined && pp.name === undefined && pp.port === 0)
        errs.add(
          join(portPaths[i] ?? path, "port"),
          `${name} rules cannot be used on port "0" (every port): name the port`,
        );
    }
  }

  if (errs.count !== before) return undefined;
  const out: Writable<PortRule> = { ports };
  if (rules) out.rules = rules;
  if (terminatingTLS) out.terminatingTLS = terminatingTLS;
  if (originatingTLS) out.originatingTLS = originatingTLS;
  if (serverNames.length) out.serverNames = serverNames;
  return out;
}

/** Reads `toPorts` of a rule; on any error returns undefined (errors are in `errs`). */
export function toPorts(errs: Errors, rule: Obj, path: string, ctx: PortContext): PortRule[] | undefined {
  const before = errs.count;
  const out: PortRule[] = [];
  const http: { readonly pr: PortRule; readonly path: string }[] = [];
  for (const { item, path: p } of objectItems(errs, rule, "toPorts", path)) {
    const pr = portRule(errs, item, p, ctx);
    if (!pr) continue;
    out.push(pr);
    if (pr.rules?.kind !== "http") continue;
    // Entries whose ports meet are judged together on those ports (Cilium refuses to merge their TLS too).
    const clash = http.find((o) => !sameTls(o.pr, pr) && portsMeet(o.pr, pr));
    if (clash)
      errs.add(p, `its TLS (terminatingTLS, originatingTLS, serverNames) differs from ${clash.path}'s on ports both allow: a connection to such a port cannot be inspected with both; give them separate ports or the same TLS`);
    http.push({ pr, path: p });
  }
  return errs.count === before ? out : undefined;
}

/** Whether two toPorts entries can allow one port (a named port may be any number; no ports is every port). */
function portsMeet(a: PortRule, b: PortRule): boolean {
  if (a.ports.length === 0 || b.ports.length === 0) return true;
  return a.ports.some((x) =>
    b.ports.some((y) => {
      if (x.protocol !== "ANY" && y.protocol !== "ANY" && x.protocol !== y.protocol) return false;
      if (x.name !== undefined || y.name !== undefined || x.port === 0 || y.port === 0) return true;
      return x.port <= Math.max(y.port, y.endPort) && y.port <= Math.max(x.port, x.endPort);
    }),
  );
}

function sameTls(a: PortRule, b: PortRule): boolean {
  const ctx = (x: TLSContext | undefined, y: TLSContext | undefined): boolean =>
    x === y ||
    (x !== undefined && y !== undefined && x.secret.name === y.secret.name && x.secret.namespace === y.secret.namespace && x.certificate === y.certificate && x.privateKey === y.privateKey && x.trustedCA === y.trustedCA);
  const names = (x: readonly string[] = [], y: readonly string[] = []): boolean => x.length === y.length && x.every((n, i) => n === y[i]);
  return ctx(a.terminatingTLS, b.terminatingTLS) && ctx(a.originatingTLS, b.originatingTLS) && names(a.serverNames, b.serverNames);
}
