// CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy specs → Policy values, with Cilium's semantic checks.
import { ICMP_TYPES } from "../icmp.ts";
import type { ICMPField, Peer, Policy, PolicyKind, PortRule, Rule, Selector, Verdict } from "../model.ts";
import { checkPrefix, cidrBlock } from "./cidr.ts";
import {
  Errors,
  type Obj,
  checkKnown,
  checkKnownKeys,
  dns1123SubdomainProblem,
  field,
  has,
  hasItems,
  isEmptyList,
  isRecord,
  join,
  objectItems,
  optBool,
  optList,
  optObject,
  optString,
  show,
  stringList,
  typeName,
} from "./fields.ts";
import { dnsNameProblem, dnsPatternProblem } from "./fqdn.ts";
import { type ParseOptions, toPorts } from "./ports.ts";
import { checkLabelSelector, checkedSelector } from "./selectors.ts";
import { ENTITIES, isEntity } from "../entities.ts";
import { RESERVED_INIT_KEY, selectorFrom, selectorHasKey } from "../selector.ts";
import { POD_NAMESPACE_LABEL } from "../labels.ts";

const SPEC_FIELDS = [
  "endpointSelector",
  "nodeSelector",
  "ingress",
  "ingressDeny",
  "egress",
  "egressDeny",
  "labels",
  "enableDefaultDeny",
  "description",
  "log",
];
const GROUPS_FIELDS = ["fromGroups", "toGroups"];
const INGRESS_L3 = [
  "fromEndpoints",
  "fromCIDR",
  "fromCIDRSet",
  "fromEntities",
  "fromNodes",
  "fromGroups",
] as const;
const EGRESS_L3 = [
  "toEndpoints",
  "toCIDR",
  "toCIDRSet",
  "toEntities",
  "toServices",
  "toFQDNs",
  "toNodes",
  "toGroups",
] as const;
const INGRESS_FIELDS = [...INGRESS_L3, "fromRequires", "toPorts", "icmps", "authentication"];
const EGRESS_FIELDS = [...EGRESS_L3, "toRequires", "toPorts", "icmps", "authentication"];
/** Deny rules take no authentication; toFQDNs is listed so that it gets its own, better error. */
const INGRESS_DENY_FIELDS = [...INGRESS_FIELDS.filter((k) => k !== "authentication"), "toFQDNs"];
const EGRESS_DENY_FIELDS = [...EGRESS_FIELDS.filter((k) => k !== "authentication"), "toFQDNs"];
const CIDR_SET_FIELDS = ["cidr", "except", "cidrGroupRef", "cidrGroupSelector"];
/** The fields of a CIDR set entry that say where its addresses come from: exactly one is set. */
const CIDR_SET_SOURCES = ["cidr", "cidrGroupRef", "cidrGroupSelector"];
const FQDN_FIELDS = ["matchName", "matchPattern"];
/** Every way a CNP names the pod namespace label in an endpointSelector. */
const NAMESPACE_LABEL_KEYS = [POD_NAMESPACE_LABEL, `k8s:${POD_NAMESPACE_LABEL}`, `any:${POD_NAMESPACE_LABEL}`];

interface Scope {
  readonly kind: PolicyKind;
  readonly namespace?: string; // undefined for cluster-wide policies
  readonly name: string;
  readonly hostPolicy: boolean;
  /** Initializing endpoints have no namespace label yet, so peers are then not namespace-defaulted. */
  readonly subjectSelectsInit: boolean;
  readonly enableExtendedIPProtocols: boolean;
}

type Section = "ingress" | "ingressDeny" | "egress" | "egressDeny";

/** A selector field (endpoints/requires) as a selector over identities, namespace-defaulted for CNPs. */
function endpointSelectors(errs: Errors, rule: Obj, key: string, path: string, scope: Scope): Selector[] {
  const out: Selector[] = [];
  const list = optList(errs, rule, key, path);
  if (list.length === 0) return out;
  const base = `${join(path, key)}[`;
  const opts = {
    role: "peer",
    namespace: scope.namespace,
    subjectSelectsInit: scope.subjectSelectsInit,
    requires: key.endsWith("Requires"),
  } as const;
  for (let i = 0; i < list.length; i++) {
    const selector = checkedSelector(errs, list[i], `${base}${i}]`, opts);
    if (selector) out.push(selector);
  }
  return out;
}

function cidrPeers(out: Peer[], errs: Errors, rule: Obj, key: string, path: string): void {
  const list = stringList(errs, rule, key, path);
  for (let i = 0; i < list.length; i++) {
    const checked = checkPrefix(list[i] ?? "", true);
    if (typeof checked === "string") errs.add(`${join(path, key)}[${i}]`, checked);
    else out.push({ kind: "cidr", cidr: checked.text, except: [] });
  }
}

function cidrSetPeers(out: Peer[], errs: Errors, rule: Obj, key: string, path: string): void {
  for (const { item, path: p } of objectItems(errs, rule, key, path)) {
    checkKnown(errs, p, item, CIDR_SET_FIELDS);
    const given = CIDR_SET_SOURCES.filter((k) => has(item, k));
    if (given.length === 0) {
      errs.add(p, "set one of cidr (such as 10.0.0.0/8), cidrGroupRef or cidrGroupSelector");
      continue;
    }
    if (given.length > 1) {
      errs.add(join(p, given[1] ?? ""), `set only one of ${given.join(", ")}`);
      continue;
    }
    if (given[0] === "cidrGroupRef" || given[0] === "cidrGroupSelector") {
      const group = cidrGroupPeer(errs, item, p, given[0]);
      if (group) out.push(group);
      continue;
    }
    const block = cidrBlock(errs, item, p, false);
    if (block) out.push({ kind: "cidr", ...block });
  }
}

/**
 * A CIDR set entry by CiliumCIDRGroup (name or label selector): the operator puts the groups' CIDRs in its
 * place (core/cidr-group.ts). Its excepts are checked as CIDRs only: which group CIDR each falls in is known then.
 */
function cidrGroupPeer(errs: Errors, item: Obj, path: string, key: "cidrGroupRef" | "cidrGroupSelector"): Peer | undefined {
  const before = errs.count;
  const except: string[] = [];
  const excepts = stringList(errs, item, "except", path);
  for (let i = 0; i < excepts.length; i++) {
    const checked = checkPrefix(excepts[i] ?? "", false);
    if (typeof checked === "string") errs.add(`${join(path, "except")}[${i}]`, checked);
    else except.push(checked.text);
  }
  if (key === "cidrGroupRef") {
    const name = optString(errs, item, key, path);
    const problem = name === undefined || name === "" ? "a CiliumCIDRGroup name is required" : dns1123SubdomainProblem(name);
    if (problem !== undefined && name !== undefined) errs.add(join(path, key), name === "" ? problem : `${show(name)} is not a CiliumCIDRGroup name: it ${problem}`);
    return errs.count === before && name ? { kind: "cidrGroup", name, except } : undefined;
  }
  const ls = checkLabelSelector(errs, field(item, key), join(path, key));
  return errs.count === before && ls ? { kind: "cidrGroup", selector: selectorFrom(ls), except } : undefined;
}

function entityPeers(out: Peer[], errs: Errors, rule: Obj, key: string, path: string): void {
  const list = stringList(errs, rule, key, path);
  for (let i = 0; i < list.length; i++) {
    const s = list[i] ?? "";
    if (isEntity(s)) out.push({ kind: "entity", entity: s });
    else errs.add(`${join(path, key)}[${i}]`, `${show(s)} is not an entity (${ENTITIES.join(", ")})`);
  }
}

/** toNodes/fromNodes: label selectors over the Node objects' labels (Cilium's node selector labels). */
function nodePeers(out: Peer[], errs: Errors, rule: Obj, key: string, path: string): void {
  const list = optList(errs, rule, key, path);
  for (let i = 0; i < list.length; i++) {
    const ls = checkLabelSelector(errs, list[i], `${join(path, key)}[${i}]`);
    if (ls) out.push({ kind: "nodes", selector: selectorFrom(ls) });
  }
}

function servicePeers(out: Peer[], errs: Errors, rule: Obj, key: string, path: string, scope: Scope): void {
  for (const { item, path: p } of objectItems(errs, rule, key, path)) {
    checkKnown(errs, p, item, ["k8sService", "k8sServiceSelector"]);
    const byName = optObject(errs, item, "k8sService", p);
    const bySelector = optObject(errs, item, "k8sServiceSelector", p);
    if (byName && bySelector) {
      errs.add(join(p, "k8sServiceSelector"), "set only one of k8sService or k8sServiceSelector");
      continue;
    }
    if (!byName && !bySelector) {
      // Cilium admits an entry that names no Service; it selects nothing, which the user should hear.
      if (!has(item, "k8sService") && !has(item, "k8sServiceSelector"))
        errs.warn(
          p,
          "names no Service, so it selects nothing: set k8sService (serviceName, namespace) or k8sServiceSelector (selector, namespace)",
        );
      continue;
    }
    if (byName) {
      const sp = join(p, "k8sService");
      checkKnown(errs, sp, byName, ["serviceName", "namespace"]);
      const name = optString(errs, byName, "serviceName", sp);
      const ns = optString(errs, byName, "namespace", sp);
      if (!name) {
        if (name === "" || !has(byName, "serviceName"))
          errs.add(join(sp, "serviceName"), "a service name is required");
        continue;
      }
      const namespace = ns || scope.namespace;
      out.push({ kind: "service", name, ...(namespace ? { namespace } : {}) });
    } else if (bySelector) {
      const sp = join(p, "k8sServiceSelector");
      checkKnown(errs, sp, bySelector, ["selector", "namespace"]);
      const ns = optString(errs, bySelector, "namespace", sp);
      if (!has(bySelector, "selector")) {
        errs.add(join(sp, "selector"), "a service label selector is required");
        continue;
      }
      const ls = checkLabelSelector(errs, field(bySelector, "selector"), join(sp, "selector"));
      if (!ls) continue;
      const namespace = ns || scope.namespace;
      out.push({ kind: "service", selector: selectorFrom(ls), ...(namespace ? { namespace } : {}) });
    }
  }
}

function fqdnPeers(out: Peer[], errs: Errors, rule: Obj, key: string, path: string): void {
  for (const { item, path: p } of objectItems(errs, rule, key, path)) {
    checkKnown(errs, p, item, FQDN_FIELDS);
    const matchName = optString(errs, item, "matchName", p);
    const matchPattern = optString(errs, item, "matchPattern", p);
    if (matchName !== undefined && matchPattern !== undefined) {
      errs.add(join(p, "matchPattern"), "set only one of matchName or matchPattern");
      continue;
    }
    if (matchName === undefined && matchPattern === undefined) {
      if (!has(item, "matchName") && !has(item, "matchPattern"))
        errs.add(p, "set one of matchName (a DNS name) or matchPattern (a name with * wildcards)");
      continue;
    }
    const problem =
      matchName !== undefined ? dnsNameProblem(matchName) : dnsPatternProblem(matchPattern ?? "");
    if (problem) errs.add(join(p, matchName !== undefined ? "matchName" : "matchPattern"), problem);
    else
      out.push(
        matchName !== undefined
          ? { kind: "fqdn", matchName }
          : { kind: "fqdn", matchPattern: matchPattern ?? "" },
      );
  }
}


function icmps(errs: Errors, rule: Obj, path: string): ICMPField[] {
  const out: ICMPField[] = [];
  for (const { item, path: p } of objectItems(errs, rule, "icmps", path)) {
    checkKnown(errs, p, item, ["fields"]);
    const fields = objectItems(errs, item, "fields", p);
    if (isEmptyList(item, "fields"))
      errs.add(
        join(p, "fields"),
        "an empty list selects no ICMP type; list fields such as {family: IPv4, type: EchoRequest}, or remove this ICMP rule",
      );
    if (fields.length > 40)
      errs.add(join(p, "fields"), `${fields.length} ICMP fields; the most Cilium allows is 40`);
    for (const { item: f, path: fp } of fields) {
      checkKnown(errs, fp, f, ["family", "type"]);
      const fam = optString(errs, f, "family", fp) ?? "IPv4";
      if (fam !== "IPv4" && fam !== "IPv6") {
        errs.add(join(fp, "family"), `${show(fam)} is not an ICMP family (IPv4 or IPv6)`);
        continue;
      }
      const t = field(f, "type");
      if (typeof t === "number" && Number.isInteger(t) && t >= 0 && t <= 255)
        out.push({ family: fam, type: t });
      else if (typeof t === "string" && /^[0-9]{1,3}$/.test(t) && Number(t) <= 255)
        out.push({ family: fam, type: Number(t) });
      else if (typeof t === "string" && ICMP_TYPES[fam].includes(t)) out.push({ family: fam, type: t });
      else if (t === undefined || t === null)
        errs.add(join(fp, "type"), "an ICMP type is required (0-255 or a name such as EchoRequest)");
      else
        errs.add(
          join(fp, "type"),
          `${show(t)} is not an ${fam === "IPv4" ? "ICMP" : "ICMPv6"} type (0-255 or a name such as EchoRequest)`,
        );
    }
  }
  return out;
}

/** For each peer list, how to say what was meant instead of an empty list. */
const EMPTY_PEER_LIST_FIX: Readonly<Record<string, string>> = {
  fromEndpoints: "list selectors such as {matchLabels: {app: web}}",
  toEndpoints: "list selectors such as {matchLabels: {app: db}}",
  fromCIDR: "list CIDRs such as 10.0.0.0/8",
  toCIDR: "list CIDRs such as 10.0.0.0/8",
  fromCIDRSet: "list blocks such as {cidr: 10.0.0.0/8}",
  toCIDRSet: "list blocks such as {cidr: 10.0.0.0/8}",
  fromEntities: "list entities such as cluster or world",
  toEntities: "list entities such as cluster or world",
  toFQDNs: "list names such as {matchName: example.com}",
  fromNodes: "list node selectors such as {matchLabels: {node-role.kubernetes.io/control-plane: \"\"}}",
  toNodes: "list node selectors such as {matchLabels: {node-role.kubernetes.io/control-plane: \"\"}}",
};

/**
 * What an explicitly empty peer list means, said as a warning: since Cilium 1.15
 * (cilium/cilium#29608) it selects no peer, so the rule allows or denies nothing, while its
 * endpoints still count as selected for default deny.
 */
function emptyPeerListMeaning(key: string, scope: Scope, verdict: Verdict, direction: "ingress" | "egress"): string {
  const everyEndpoint = `every endpoint${scope.namespace !== undefined ? ` in namespace ${show(scope.namespace)}` : ""}`;
  const fix = key.endsWith("Endpoints") ? `${EMPTY_PEER_LIST_FIX[key] ?? "list the peers"} ([{}] is ${everyEndpoint})` : (EMPTY_PEER_LIST_FIX[key] ?? "list the peers");
  const effect = verdict === "allow" ? `allows nothing, while the endpoints it selects are still in ${direction} default deny` : "denies nothing";
  return `an empty list selects no peer, so this rule ${effect} (as in Cilium 1.15 and later); ${fix}, or remove the field`;
}

/** Why an explicitly empty list that Membrane does not read as "no peer" is refused. */
function emptyListProblem(key: string): string {
  return `an empty list selects nothing; ${EMPTY_PEER_LIST_FIX[key] ?? "list the peers"}, or remove the field`;
}

/** How to write what an empty toPorts/icmps list was probably meant to say. */
const EMPTY_L4_EXAMPLE = { toPorts: `{ports: [{port: "443", protocol: TCP}]}`, icmps: "{fields: [{family: IPv4, type: EchoRequest}]}" } as const;

/** An explicitly empty toPorts/icmps: `readAsEveryPort` when the rule has peers and no other L4 field. */
function emptyL4List(errs: Errors, path: string, key: "toPorts" | "icmps", readAsEveryPort: boolean, verdict: Verdict): void {
  const example = EMPTY_L4_EXAMPLE[key];
  errs.add(
    join(path, key),
    readAsEveryPort
      ? `an empty list is read as "not set", so this rule would ${verdict} every port; list rules such as ${example}, or remove the field if every port is meant`
      : `an empty list selects nothing; list rules such as ${example}, or remove the field`,
  );
}

/** One rule of ingress/ingressDeny/egress/egressDeny. */
function parseRule(
  errs: Errors,
  rule: Obj,
  path: string,
  index: number,
  section: Section,
  scope: Scope,
): Rule | undefined {
  const before = errs.count;
  const direction = section.startsWith("ingress") ? "ingress" : "egress";
  const deny = section.endsWith("Deny");
  const verdict: Verdict = deny ? "deny" : "allow";
  const l3 = direction === "ingress" ? INGRESS_L3 : EGRESS_L3;
  const known = direction === "ingress" ? INGRESS_FIELDS : EGRESS_FIELDS;
  // The rule's own keys, read once: most of the fields looked at below are absent, and a look-up in
  // this short list is cheaper than one in the object (every reader returns nothing for an absent field).
  const keys = Object.keys(rule);
  checkKnownKeys(errs, path, keys, deny ? (direction === "ingress" ? INGRESS_DENY_FIELDS : EGRESS_DENY_FIELDS) : known);

  // Cilium allows one kind of L3 peer per rule; the error sits on the later field, where an editor underlines it.
  const present: (typeof l3)[number][] = [];
  for (const k of l3) if (keys.includes(k) && hasItems(rule, k)) present.push(k);
  for (let i = 0; i < present.length; i++) {
    for (let j = i + 1; j < present.length; j++) {
      errs.add(
        join(path, present[j] ?? ""),
        `${present[i]} and ${present[j]} cannot be combined in one rule: write them as separate rules`,
      );
    }
  }
  if (deny && keys.includes("toFQDNs") && has(rule, "toFQDNs"))
    errs.add(
      join(path, "toFQDNs"),
      "toFQDNs is not allowed in egressDeny: deny by toCIDRSet or toEndpoints instead",
    );
  for (const k of GROUPS_FIELDS) {
    if (keys.includes(k) && has(rule, k))
      errs.add(
        join(path, k),
        `${k} (cloud provider groups) is not supported by Membrane: list the CIDRs instead`,
      );
  }
  const auth = keys.includes("authentication") ? optObject(errs, rule, "authentication", path) : undefined;
  if (auth) {
    const ap = join(path, "authentication");
    checkKnown(errs, ap, auth, ["mode"]);
    const mode = optString(errs, auth, "mode", ap);
    if (mode === "required" || mode === "test-always-fail") {
      // Admitting it would allow the traffic without the authentication the user asked for.
      errs.add(
        join(ap, "mode"),
        `mutual authentication (mode ${show(mode)}) is not supported by Membrane: remove authentication or set mode: disabled`,
      );
    } else if (mode !== undefined && mode !== "disabled") {
      errs.add(
        join(ap, "mode"),
        `${show(mode)} is not an authentication mode (disabled, required or test-always-fail)`,
      );
    }
  }

  const peers: Peer[] = [];
  if (direction === "ingress") {
    if (keys.includes("fromEndpoints"))
      for (const s of endpointSelectors(errs, rule, "fromEndpoints", path, scope))
        peers.push({ kind: "selector", selector: s });
    if (keys.includes("fromCIDR")) cidrPeers(peers, errs, rule, "fromCIDR", path);
    if (keys.includes("fromCIDRSet")) cidrSetPeers(peers, errs, rule, "fromCIDRSet", path);
    if (keys.includes("fromEntities")) entityPeers(peers, errs, rule, "fromEntities", path);
    if (keys.includes("fromNodes")) nodePeers(peers, errs, rule, "fromNodes", path);
  } else {
    if (keys.includes("toEndpoints"))
      for (const s of endpointSelectors(errs, rule, "toEndpoints", path, scope))
        peers.push({ kind: "selector", selector: s });
    if (keys.includes("toCIDR")) cidrPeers(peers, errs, rule, "toCIDR", path);
    if (keys.includes("toCIDRSet")) cidrSetPeers(peers, errs, rule, "toCIDRSet", path);
    if (keys.includes("toEntities")) entityPeers(peers, errs, rule, "toEntities", path);
    if (keys.includes("toServices")) servicePeers(peers, errs, rule, "toServices", path, scope);
    if (!deny && keys.includes("toFQDNs")) fqdnPeers(peers, errs, rule, "toFQDNs", path);
    if (keys.includes("toNodes")) nodePeers(peers, errs, rule, "toNodes", path);
  }
  const requiresKey = direction === "ingress" ? "fromRequires" : "toRequires";
  const requires = keys.includes(requiresKey) ? endpointSelectors(errs, rule, requiresKey, path, scope) : [];

  let ports: PortRule[] = [];
  if (keys.includes("toPorts")) {
    const ctx = {
      direction,
      deny,
      hostPolicy: scope.hostPolicy,
      enableExtendedIPProtocols: scope.enableExtendedIPProtocols,
    } as const;
    ports = toPorts(errs, rule, path, ctx) ?? [];
  }
  const icmpFields = keys.includes("icmps") ? icmps(errs, rule, path) : [];
  const hasPorts = keys.includes("toPorts") && hasItems(rule, "toPorts");
  const hasIcmps = keys.includes("icmps") && hasItems(rule, "icmps");
  // Cilium admits `toServices: []`; it selects no Service, so the rule allows (or denies) nothing.
  const emptyServices = direction === "egress" && keys.includes("toServices") && isEmptyList(rule, "toServices");
  if (emptyServices)
    errs.warn(
      join(path, "toServices"),
      "an empty list selects no Service, so this rule matches nothing: list services such as {k8sService: {serviceName: db}}, or remove the field",
    );
  // An explicitly empty endpoint, CIDR or entity list selects no peer (Cilium 1.15+): admitted, said.
  let emptyPeerList = false;
  for (const k of l3) {
    // Fields Membrane refuses outright already have their error.
    if (!keys.includes(k) || !isEmptyList(rule, k) || !(k in EMPTY_PEER_LIST_FIX) || (deny && k === "toFQDNs")) continue;
    if (k === "toFQDNs") {
      errs.add(join(path, k), emptyListProblem(k));
      continue;
    }
    emptyPeerList = true;
    errs.warn(join(path, k), emptyPeerListMeaning(k, scope, verdict, direction));
  }
  if (keys.includes("toPorts") && isEmptyList(rule, "toPorts")) emptyL4List(errs, path, "toPorts", present.length > 0 && !hasIcmps, verdict);
  if (keys.includes("icmps") && isEmptyList(rule, "icmps")) emptyL4List(errs, path, "icmps", present.length > 0 && !hasPorts, verdict);
  if (hasPorts && hasIcmps)
    errs.add(
      join(path, "icmps"),
      "icmps cannot be combined with toPorts in one rule: write a separate rule for ICMP",
    );
  if (hasPorts && present.includes("toServices"))
    errs.add(
      join(path, "toPorts"),
      "toServices cannot be combined with toPorts in one rule (Cilium does not support it)",
    );

  if (errs.count !== before) return undefined;
  // No L3 field but L4 fields: Cilium applies the ports to every peer. An empty rule, or one whose
  // peer list is explicitly empty, selects no peer.
  const l3Given = present.length > 0 || emptyServices || emptyPeerList;
  const finalPeers: Peer[] = l3Given ? peers : hasPorts || hasIcmps ? [{ kind: "any" }] : [];
  return {
    direction,
    verdict,
    peers: finalPeers,
    ports,
    icmps: icmpFields,
    requires,
    origin:
      scope.namespace !== undefined
        ? { policyKind: scope.kind, namespace: scope.namespace, name: scope.name, ruleIndex: index, path }
        : { policyKind: scope.kind, name: scope.name, ruleIndex: index, path },
  };
}

/** Whether `this` (a spec) has rules in section `k`, or something other than a list there (which has its own error). */
function saysSomething(this: Obj, k: string): boolean {
  return hasItems(this, k) || (has(this, k) && !Array.isArray(field(this, k)));
}

/** One Cilium rule spec (`spec` or `specs[i]`) → one Policy. */
export function parseCiliumSpec(
  errs: Errors,
  spec: unknown,
  path: string,
  meta: { kind: PolicyKind; namespace?: string; name: string; uid?: string; generation?: number },
  options: ParseOptions = {},
): Policy | undefined {
  if (!isRecord(spec)) {
    errs.add(path, `must be an object (a policy rule), not ${typeName(spec)}`);
    return undefined;
  }
  const before = errs.count;
  const warningsBefore = errs.warnings.length;
  checkKnown(errs, path, spec, SPEC_FIELDS);
  const namespaced = meta.kind === "CiliumNetworkPolicy";
  const hasEndpoint = has(spec, "endpointSelector");
  const hasNode = has(spec, "nodeSelector");
  if (hasEndpoint && hasNode) errs.add(join(path, "nodeSelector"), "set only one of endpointSelector or nodeSelector");
  if (!hasEndpoint && !hasNode)
    errs.add(
      join(path, "endpointSelector"),
      "a rule needs an endpointSelector (or, in a CiliumClusterwideNetworkPolicy, a nodeSelector) saying which endpoints it applies to",
    );
  if (hasNode && namespaced)
    errs.add(
      join(path, "nodeSelector"),
      "a CiliumNetworkPolicy cannot have a nodeSelector: host policies must be CiliumClusterwideNetworkPolicy",
    );

  let subject: Selector | undefined;
  let nodeSelector: Selector | undefined;
  const namespace = namespaced ? meta.namespace : undefined;
  if (hasEndpoint) {
    const sp = join(path, "endpointSelector");
    const raw = field(spec, "endpointSelector");
    subject = checkedSelector(errs, raw, sp, { role: "subject", namespace });
    // A valid selector's matchLabels are the written ones, every value a string.
    const matchLabels = subject !== undefined && isRecord(raw) ? field(raw, "matchLabels") : undefined;
    if (isRecord(matchLabels)) {
      for (const key of NAMESPACE_LABEL_KEYS) {
        const v = field(matchLabels, key);
        if (namespace !== undefined && v !== undefined && v !== namespace) {
          errs.add(
            `${join(sp, "matchLabels")}[${JSON.stringify(key)}]`,
            `a CiliumNetworkPolicy applies only in its own namespace ${show(namespace)}, not ${show(v)}: remove this label or use a CiliumClusterwideNetworkPolicy`,
          );
        }
      }
    }
  } else if (hasNode) {
    const ls = checkLabelSelector(errs, field(spec, "nodeSelector"), join(path, "nodeSelector"));
    if (ls) {
      nodeSelector = selectorFrom(ls);
      subject = nodeSelector;
    }
  }
  const scope: Scope = {
    kind: meta.kind,
    ...(namespace !== undefined ? { namespace } : {}),
    name: meta.name,
    hostPolicy: hasNode && !hasEndpoint,
    subjectSelectsInit: subject !== undefined && selectorHasKey(subject, RESERVED_INIT_KEY),
    enableExtendedIPProtocols: options.enableExtendedIPProtocols === true,
  };

  const description = optString(errs, spec, "description", path);
  const edd = optObject(errs, spec, "enableDefaultDeny", path);
  let ddIngress: boolean | undefined;
  let ddEgress: boolean | undefined;
  if (edd) {
    checkKnown(errs, join(path, "enableDefaultDeny"), edd, ["ingress", "egress"]);
    ddIngress = optBool(errs, edd, "ingress", join(path, "enableDefaultDeny"));
    ddEgress = optBool(errs, edd, "egress", join(path, "enableDefaultDeny"));
  }
  for (const { item, path: lp } of objectItems(errs, spec, "labels", path)) {
    checkKnown(errs, lp, item, ["key", "value", "source"]);
    if (!optString(errs, item, "key", lp) && !has(item, "key"))
      errs.add(join(lp, "key"), "a label key is required");
    optString(errs, item, "value", lp);
    optString(errs, item, "source", lp);
  }
  const log = optObject(errs, spec, "log", path);
  if (log) {
    checkKnown(errs, join(path, "log"), log, ["value"]);
    optString(errs, log, "value", join(path, "log"));
  }

  const rules: Rule[] = [];
  const sections = ["ingress", "ingressDeny", "egress", "egressDeny"] as const;
  // A section of the wrong type already has its own error.
  if (!sections.some(saysSomething, spec)) {
    // Cilium 1.19+ refuses a rule that says nothing (enableDefaultDeny alone included); name the
    // empty list when there is one, since that is where the user thought a rule was.
    const empty = sections.find((k) => isEmptyList(spec, k));
    errs.add(
      empty !== undefined ? join(path, empty) : path,
      `a rule needs at least one of ${sections.join(", ")}${empty !== undefined ? ` (${empty} is an empty list)` : ""}: add a rule such as ${empty === undefined || empty.startsWith("ingress") ? "ingress: [{}] to deny all ingress" : "egress: [{}] to deny all egress"}`,
    );
  }
  const counts: Record<Section, number> = { ingress: 0, ingressDeny: 0, egress: 0, egressDeny: 0 };
  for (const section of sections) {
    const items = objectItems(errs, spec, section, path);
    counts[section] = hasItems(spec, section) ? 1 : 0;
    for (const { item, path: rp, index } of items) {
      const r = parseRule(errs, item, rp, index, section, scope);
      if (r) rules.push(r);
    }
  }
  if (errs.count !== before || subject === undefined) return undefined;
  const parseWarnings = errs.warnings.slice(warningsBefore);
  return {
    kind: meta.kind,
    ...(namespaced && meta.namespace !== undefined ? { namespace: meta.namespace } : {}),
    name: meta.name,
    ...(meta.uid !== undefined ? { uid: meta.uid } : {}),
    ...(meta.generation !== undefined ? { generation: meta.generation } : {}),
    ...(description !== undefined ? { description } : {}),
    subject,
    ...(nodeSelector ? { nodeSelector } : {}),
    rules,
    // Cilium: a direction is enforced when the rule has any entry in it, unless enableDefaultDeny says otherwise.
    defaultDeny: {
      ingress: ddIngress ?? counts.ingress + counts.ingressDeny > 0,
      egress: ddEgress ?? counts.egress + counts.egressDeny > 0,
    },
    ...(parseWarnings.length > 0 ? { parseWarnings } : {}),
  };
}
