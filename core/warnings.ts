// Warnings for legal but risky policies, computed over the parsed model (shared by the webhook and `membrane policy validate`).
import { parsePrefix, prefixContains, prefixLength } from "./cidr.ts";
import { enforcementGaps } from "./enforcement-gaps.ts";
import { ENTITIES } from "./entities.ts";
import { outsideSecretsNamespace } from "./policy-secrets.ts";
import { reservedIdentityByName } from "./identity.ts";
import { CLUSTER_LABEL, LABEL_SOURCE, POD_NAMESPACE_LABEL, SERVICE_ACCOUNT_LABEL } from "./labels.ts";
import type { Entity, LabelRequirement, Peer, Policy, PortProtocol, Rule, Selector, TlsSecretUse } from "./model.ts";

/** A warning names the field path it is about, then says what the risk is. */
export interface PolicyWarning {
  readonly path: string;
  readonly message: string;
}

export function formatWarning(w: PolicyWarning): string {
  return w.path === "" ? w.message : `${w.path}: ${w.message}`;
}

/** What admission knows of the cluster beyond the policy. */
export interface WarningOptions {
  /**
   * The one namespace the operator reads TLS rules' Secrets from (its --policy-secrets-namespace):
   * a Secret named elsewhere is warned about. Absent: not known, and nothing is said about Secrets.
   */
  readonly policySecretsNamespace?: string | undefined;
}

/** Every warning for a parsed object (a CNP with `specs` gives several Policy values; each is checked on its own). */
export function policyWarnings(policies: readonly Policy[], options: WarningOptions = {}): PolicyWarning[] {
  // Each check appends to one list: this runs for every admitted policy.
  const found: PolicyWarning[] = [];
  const secretsNamespace = options.policySecretsNamespace;
  const tlsSecretProblem = secretsNamespace === undefined ? undefined : (use: TlsSecretUse) => outsideSecretsNamespace(use, secretsNamespace);
  for (const policy of policies) {
    if (policy.parseWarnings) for (const w of policy.parseWarnings) found.push(w);
    for (const rule of policy.rules) {
      if (rule.verdict === "allow") openToWorld(found, rule);
      if (rule.ports.length > 0) dnsOffPort53(found, rule);
      if (rule.requires.length > 0) found.push(deprecatedRequires(rule));
    }
    unreachableAllows(found, policy);
    unknownLabelKeys(found, policy);
    if (policy.nodeSelector !== undefined) hostLockOut(found, policy);
    // Accepted but not enforced as written: the user must hear it at apply time, not only from the status.
    // DNS rules and toFQDNs are enforced by the agents' DNS proxy, HTTP rules by their L7 proxy (both on by
    // default): admission cannot see the nodes, so only generic L7 rules are named here, and the status names
    // the nodes that run no proxy. A TLS rule's Secret outside the policy secrets namespace is never read: said here too.
    for (const gap of enforcementGaps([policy], { withoutDnsProxy: [], withoutL7Proxy: [], tlsSecretProblem })) found.push({ path: gap.path, message: gap.effect });
    if (!hasDnsRule(policies)) fqdnWithoutDnsRules(found, policy);
  }
  if (found.length < 2) return found;
  // The same warning can come from several specs of one object: say it once.
  const out: PolicyWarning[] = [];
  const seen = new Set<string>();
  for (const w of found) {
    const key = formatWarning(w);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(w);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// toFQDNs without any DNS rule: the proxy never sees the subject's lookups, so no address is learned

function hasDnsRule(policies: readonly Policy[]): boolean {
  return policies.some((p) => p.rules.some((r) => r.verdict === "allow" && r.ports.some((pr) => pr.rules?.kind === "dns")));
}

function fqdnWithoutDnsRules(out: PolicyWarning[], policy: Policy): void {
  for (const rule of policy.rules) {
    if (!rule.peers.some((p) => p.kind === "fqdn")) continue;
    out.push({
      path: `${rule.origin.path}.toFQDNs`,
      message:
        "no DNS rule (toPorts[].rules.dns, e.g. to kube-dns on port 53) in this policy: toFQDNs learns addresses only from lookups the DNS proxy sees, so unless another policy selecting the same pods has one, these names never allow an address",
    });
  }
}

// ---------------------------------------------------------------------------------------------
// allow to entity all/world on every port

const WIDE_ENTITIES: ReadonlySet<Entity> = new Set<Entity>(["all", "world", "world-ipv4", "world-ipv6"]);

function wideOpenPeer(peer: Peer): string | undefined {
  if (peer.kind === "entity" && WIDE_ENTITIES.has(peer.entity)) return `entity "${peer.entity}"`;
  if (peer.kind === "cidr" && peer.except.length === 0 && (peer.cidr === "0.0.0.0/0" || peer.cidr === "::/0")) {
    return `CIDR ${peer.cidr}`;
  }
  return undefined;
}

function openToWorld(out: PolicyWarning[], rule: Rule): void {
  if (rule.verdict !== "allow") return;
  // The peers first: most rules have no wide-open peer, and then the ports need no look.
  let coversAll: boolean | undefined;
  for (const peer of rule.peers) {
    const what = wideOpenPeer(peer);
    if (what === undefined) continue;
    coversAll ??= coversAllTraffic(rule);
    if (!coversAll) return;
    const dir = rule.direction === "ingress" ? "from" : "to";
    out.push({
      path: rule.origin.path,
      message: `allows every port and protocol ${dir} ${what}; restrict it with toPorts if that is not intended`,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// fromRequires/toRequires, removed from Cilium 1.19 (still enforced here for migrating users)

function deprecatedRequires(rule: Rule): PolicyWarning {
  const field = rule.direction === "ingress" ? "fromRequires" : "toRequires";
  return {
    path: `${rule.origin.path}.${field}`,
    message: `${field} is deprecated: Cilium 1.19 removed it (cilium/cilium#42615); Membrane still enforces it, but add its labels to the peer selectors of the policy's ${rule.direction} rules instead`,
  };
}

// ---------------------------------------------------------------------------------------------
// DNS rules on a port other than 53

function dnsOffPort53(out: PolicyWarning[], rule: Rule): void {
  for (let i = 0; i < rule.ports.length; i++) {
    const portRule = rule.ports[i] as Rule["ports"][number];
    if (portRule.rules?.kind !== "dns") continue;
    const where = `${rule.origin.path}.toPorts[${i}]`;
    // Numbered ports first, then named ones, as the user reads them.
    for (const p of portRule.ports) {
      if ((p.port === 53 && p.endPort === 53) || p.name !== undefined) continue;
      const what = p.port === 0 ? "every port" : p.endPort !== p.port ? `ports ${p.port}-${p.endPort}` : `port ${p.port}`;
      out.push({
        path: where,
        message: `DNS rules on ${what}, not 53: DNS is only inspected on the listed port, so it must be the port your DNS server listens on`,
      });
    }
    for (const p of portRule.ports) {
      if (p.name === undefined) continue;
      out.push({ path: where, message: `DNS rules on named port "${p.name}": make sure it resolves to your DNS server's port (usually 53)` });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// an allow rule that a deny rule of the same policy makes unreachable

function unreachableAllows(out: PolicyWarning[], policy: Policy): void {
  let denies: Rule[] | undefined;
  for (const r of policy.rules) if (r.verdict === "deny" && r.requires.length === 0) (denies ??= []).push(r);
  if (denies === undefined) return;
  for (const allow of policy.rules) {
    if (allow.verdict !== "allow" || allow.peers.length === 0) continue;
    const deny = denies.find((d) => d.direction === allow.direction && ruleCovers(d, allow));
    if (deny === undefined) continue;
    out.push({
      path: allow.origin.path,
      message: `never takes effect: ${deny.origin.path} denies every peer and port it allows (deny wins)`,
    });
  }
}

function ruleCovers(deny: Rule, allow: Rule): boolean {
  return allow.peers.every((a) => deny.peers.some((d) => peerCovers(d, a))) && portsCover(deny, allow);
}


const WORLD_ENTITIES: ReadonlySet<Entity> = new Set<Entity>(["world", "world-ipv4", "world-ipv6"]);
/** Entities inside the cluster, all of which the `cluster` entity covers. */
const CLUSTER_ENTITIES: ReadonlySet<Entity> = new Set(ENTITIES.filter((e) => e !== "all" && e !== "none" && !WORLD_ENTITIES.has(e)));

/** Whether every identity `inner` can match is also matched by `outer` (conservative: false when unsure). */
function peerCovers(outer: Peer, inner: Peer): boolean {
  switch (outer.kind) {
    case "any":
      return true;
    case "entity":
      if (outer.entity === "all") return true;
      if (inner.kind === "entity" && inner.entity === outer.entity) return true;
      if (outer.entity === "world") {
        return (inner.kind === "entity" && WORLD_ENTITIES.has(inner.entity)) || inner.kind === "cidr" || inner.kind === "cidrGroup" || inner.kind === "fqdn";
      }
      if (outer.entity === "cluster") {
        return (inner.kind === "entity" && CLUSTER_ENTITIES.has(inner.entity)) || inner.kind === "selector" || inner.kind === "nodes";
      }
      return false;
    case "selector":
      return inner.kind === "selector" && selectorCovers(outer.selector, inner.selector);
    case "cidr":
      return inner.kind === "cidr" && cidrCovers(outer, inner);
    case "cidrGroup":
      return false; // what a group holds is not known here
    case "fqdn":
      return inner.kind === "fqdn" && inner.matchName === outer.matchName && inner.matchPattern === outer.matchPattern;
    case "nodes":
      return inner.kind === "nodes" && selectorCovers(outer.selector, inner.selector);
    case "service":
      return inner.kind === "service" && JSON.stringify(inner) === JSON.stringify(outer);
  }
}

/** A selector whose requirements are a subset of another's selects a superset of identities. */
function selectorCovers(outer: Selector, inner: Selector): boolean {
  if (outer.canonical === inner.canonical) return true;
  const innerReqs = new Set(inner.requirements.map(requirementKey));
  return outer.requirements.every((r) => innerReqs.has(requirementKey(r)));
}

function requirementKey(r: LabelRequirement): string {
  return `${r.key}\u0000${r.operator}\u0000${[...r.values].sort().join("\u0000")}`;
}

// ---------------------------------------------------------------------------------------------
// ports

interface PortSpan {
  readonly protocol: string; // "TCP" | "UDP" | "SCTP" | "ANY"
  readonly from: number;
  readonly to: number;
}

const ALL_TRAFFIC: readonly PortSpan[] = [{ protocol: "ANY", from: 0, to: 65535 }];

/** The (protocol, port range) spans a rule matches; named ports count as every port of their protocol. */
function spans(rule: Rule): readonly PortSpan[] {
  if (rule.ports.length === 0) return rule.icmps.length === 0 ? ALL_TRAFFIC : [{ protocol: "ICMP", from: 0, to: 65535 }];
  const out: PortSpan[] = [];
  for (const pr of rule.ports) {
    if (pr.ports.length === 0) return ALL_TRAFFIC;
    for (const p of pr.ports) out.push(span(p));
  }
  return out;
}

function span(p: PortProtocol): PortSpan {
  if (p.port === 0 || p.name !== undefined) return { protocol: p.protocol, from: 0, to: 65535 };
  return { protocol: p.protocol, from: p.port, to: Math.max(p.port, p.endPort) };
}

function coversAllTraffic(rule: Rule): boolean {
  return spans(rule).some((s) => s.protocol === "ANY" && s.from === 0 && s.to === 65535);
}

function portsCover(deny: Rule, allow: Rule): boolean {
  const outer = spans(deny);
  return spans(allow).every((a) =>
    outer.some((d) => (d.protocol === "ANY" || d.protocol === a.protocol) && d.from <= a.from && d.to >= a.to),
  );
}

// ---------------------------------------------------------------------------------------------
// CIDR containment (both already validated by the parser; anything unparsable counts as "not covered")

/** The prefix length written in a CIDR text (`address/length`), or -1. */
const writtenLength = (cidr: string): number => prefixLength(cidr, cidr.indexOf("/") + 1);

function cidrCovers(outer: { cidr: string; except: readonly string[] }, inner: { cidr: string }): boolean {
  // A longer outer prefix, or the other family, covers nothing: known from the texts without parsing the addresses.
  const outerLength = writtenLength(outer.cidr);
  const innerLength = writtenLength(inner.cidr);
  if (outerLength >= 0 && innerLength >= 0 && (outerLength > innerLength || outer.cidr.includes(":") !== inner.cidr.includes(":"))) return false;
  const o = parsePrefix(outer.cidr);
  const i = parsePrefix(inner.cidr);
  if (o === undefined || i === undefined || !prefixContains(o, i)) return false;
  return outer.except.every((e) => {
    const x = parsePrefix(e);
    return x !== undefined && !prefixContains(x, i) && !prefixContains(i, x);
  });
}

// ---------------------------------------------------------------------------------------------
// selector label keys that no Cilium label source produces

/** Label sources Cilium assigns (pkg/labels); a selector on any other source matches nothing. */
const LABEL_SOURCES: ReadonlySet<string> = new Set([...Object.values(LABEL_SOURCE), "cni", "cidrgroup", "node", "cilium-generated"]);

/** Keys under Cilium's own prefix that the agent actually sets on endpoints. */
const CILIUM_POLICY_KEYS: ReadonlySet<string> = new Set([
  CLUSTER_LABEL,
  SERVICE_ACCOUNT_LABEL,
  "io.cilium.k8s.policy.name",
  "io.cilium.k8s.policy.namespace",
  "io.cilium.k8s.policy.uid",
  "io.cilium.k8s.policy.derived-from",
]);

function unknownLabelKey(fullKey: string): string | undefined {
  const colon = fullKey.indexOf(":");
  const source = colon < 0 ? "any" : fullKey.slice(0, colon);
  const key = colon < 0 ? fullKey : fullKey.slice(colon + 1);
  if (!LABEL_SOURCES.has(source)) {
    return `label source "${source}" (in "${fullKey}") is not one Cilium assigns (${[...LABEL_SOURCES].join(", ")}): the selector matches nothing`;
  }
  if (source === "reserved" && reservedIdentityByName(key) === undefined) {
    return `"reserved:${key}" is not a reserved identity label: the selector matches nothing`;
  }
  if (key.startsWith("io.cilium.k8s.policy.") && !CILIUM_POLICY_KEYS.has(key)) {
    return `label key "${key}" is not one Cilium sets (${[...CILIUM_POLICY_KEYS].join(", ")}): the selector matches nothing`;
  }
  if (key.startsWith("io.kubernetes.pod.") && key !== POD_NAMESPACE_LABEL) {
    return `label key "${key}" is not one Cilium sets (did you mean "${POD_NAMESPACE_LABEL}"?): the selector matches nothing`;
  }
  return undefined;
}

// Selectors are immutable (and built once per canonical form), so what their keys say is worked out once each.
const unknownKeyMessages = new WeakMap<Selector, readonly string[]>();

function unknownKeysOf(selector: Selector): readonly string[] {
  let messages = unknownKeyMessages.get(selector);
  if (messages !== undefined) return messages;
  const found: string[] = [];
  for (const req of selector.requirements) {
    if (req.operator === "NotIn" || req.operator === "DoesNotExist") continue; // negations of a missing key are legal
    const message = unknownLabelKey(req.key);
    if (message !== undefined) found.push(message);
  }
  messages = found;
  unknownKeyMessages.set(selector, messages);
  return messages;
}

/** Adds a warning at `path` to `out` for every key of `selector` that no label source produces. */
function checkSelectorKeys(out: PolicyWarning[], selector: Selector | undefined, path: string): void {
  if (selector === undefined) return;
  const messages = unknownKeysOf(selector);
  for (let i = 0; i < messages.length; i++) out.push({ path, message: messages[i] as string });
}

/** The path of a policy's own spec, from its first rule's (only needed for a warning: most policies have none). */
// ---------------------------------------------------------------------------------------------
// a host policy that would cut what the cluster needs (the agent's lock-out guard keeps it open)

/** What the agent's lock-out guard keeps open between nodes (node-agent/hostfw.ts lockOutGuard; the chart's README lists it). */
export const HOST_LOCK_OUT_NEEDS: readonly { readonly what: string; readonly protocol: "TCP" | "UDP" | "ICMP"; readonly port: number }[] = [
  { what: "the overlay (VXLAN, UDP 8472)", protocol: "UDP", port: 8472 },
  { what: "encryption (WireGuard, UDP 51871)", protocol: "UDP", port: 51871 },
  { what: "health checks (ICMP echo)", protocol: "ICMP", port: 8 },
  { what: "the API server (TCP 6443)", protocol: "TCP", port: 6443 },
];

const NODE_PEERS: ReadonlySet<Entity> = new Set<Entity>(["all", "cluster", "remote-node"]);

/** Whether an allow rule lets another node reach (or be reached by) the host on this protocol and port. */
function allowsNodes(rule: Rule, need: (typeof HOST_LOCK_OUT_NEEDS)[number]): boolean {
  if (rule.verdict !== "allow" || !rule.peers.some((p) => p.kind === "any" || (p.kind === "entity" && NODE_PEERS.has(p.entity)))) return false;
  if (need.protocol === "ICMP") return rule.ports.length === 0 && (rule.icmps.length === 0 || rule.icmps.some((i) => i.family === "IPv4" && (i.type === 8 || i.type === "EchoRequest")));
  if (rule.icmps.length > 0 && rule.ports.length === 0) return false;
  if (rule.ports.length === 0) return true;
  return rule.ports.some((pr) => pr.ports.length === 0 || pr.ports.some((p) => (p.protocol === need.protocol || p.protocol === "ANY") && (p.port === 0 || (p.port <= need.port && need.port <= p.endPort))));
}

function hostLockOut(out: PolicyWarning[], policy: Policy): void {
  for (const direction of ["ingress", "egress"] as const) {
    if (!policy.defaultDeny[direction]) continue;
    const rules = policy.rules.filter((r) => r.direction === direction);
    const cut = HOST_LOCK_OUT_NEEDS.filter((need) => !rules.some((r) => allowsNodes(r, need)));
    if (cut.length === 0) continue;
    out.push({
      path: `${specPathOf(policy)}.${direction}`,
      message:
        `this host policy makes the node default-deny in ${direction} without allowing ${cut.map((c) => c.what).join(", ")} between nodes; ` +
        "Membrane's lock-out guard keeps these open anyway (with the agent's stream to the operator), so they are not cut, but other traffic the node needs (e.g. DNS, the kubelet from the control plane, SSH) is",
    });
  }
}

function specPathOf(policy: Policy): string {
  return policy.rules[0]?.origin.path.replace(/\.(ingress|egress)(Deny)?\[\d+\]$/, "") ?? "spec";
}

function unknownLabelKeys(out: PolicyWarning[], policy: Policy): void {
  if (unknownKeysOf(policy.subject).length > 0)
    checkSelectorKeys(out, policy.subject, `${specPathOf(policy)}.${policy.kind === "NetworkPolicy" ? "podSelector" : "endpointSelector"}`);
  if (policy.nodeSelector !== undefined && unknownKeysOf(policy.nodeSelector).length > 0)
    checkSelectorKeys(out, policy.nodeSelector, `${specPathOf(policy)}.nodeSelector`);
  for (const rule of policy.rules) {
    for (const peer of rule.peers) {
      if (peer.kind === "selector" || peer.kind === "service") checkSelectorKeys(out, peer.selector, rule.origin.path);
    }
    for (const req of rule.requires) checkSelectorKeys(out, req, rule.origin.path);
  }
}
