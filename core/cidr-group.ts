// CiliumCIDRGroup: parsing a group object, and replacing policies' cidrGroupRef/cidrGroupSelector peers with the groups' CIDRs.
import { parsePrefix, prefixContains } from "./cidr.ts";
import { label, labelSetFrom } from "./labels.ts";
import type { LabelSet, Peer, Policy, Result, Rule } from "./model.ts";
import { checkPrefix } from "./parser/cidr.ts";
import { Errors, checkKnown, dns1123SubdomainProblem, field, isRecord, optObject, show, stringList, typeName } from "./parser/fields.ts";
import { matchesSelector } from "./selector.ts";

export const CIDR_GROUP_KIND = "CiliumCIDRGroup";
/** The versions Cilium serves the kind under (v2alpha1 since 1.14, v2 in newer releases); the schema is the same. */
export const CIDR_GROUP_API_VERSIONS: readonly string[] = ["cilium.io/v2", "cilium.io/v2alpha1"];
/** The label source a group's labels carry when a cidrGroupSelector matches them (Cilium's `cidrgroup:` labels). */
const GROUP_LABEL_SOURCE = "cidrgroup";

/** One CiliumCIDRGroup as policies see it: its name, its labels (for cidrGroupSelector) and its CIDRs, canonical. */
export interface CIDRGroup {
  readonly name: string;
  readonly labels: LabelSet;
  readonly cidrs: readonly string[];
}

/** Parses a CiliumCIDRGroup object; every error names its field. A group with an error is never used in part. */
export function parseCIDRGroup(obj: unknown): Result<CIDRGroup> {
  const errs = new Errors();
  if (!isRecord(obj)) return { ok: false, errors: [{ path: "<root>", message: `must be a ${CIDR_GROUP_KIND} object, not ${typeName(obj)}` }] };
  checkKnown(errs, "", obj, ["apiVersion", "kind", "metadata", "spec", "status"]);
  const apiVersion = field(obj, "apiVersion");
  if (typeof apiVersion !== "string" || !CIDR_GROUP_API_VERSIONS.includes(apiVersion))
    errs.add("apiVersion", `${show(apiVersion)} is not an apiVersion of ${CIDR_GROUP_KIND} (${CIDR_GROUP_API_VERSIONS.join(" or ")})`);
  const metadata = optObject(errs, obj, "metadata", "");
  const name = metadata ? field(metadata, "name") : undefined;
  if (typeof name !== "string" || name === "") errs.add("metadata.name", "a name is required");
  else {
    const problem = dns1123SubdomainProblem(name);
    if (problem) errs.add("metadata.name", `${show(name)} is not a valid name: it ${problem}`);
  }
  const labels = metadata ? optObject(errs, metadata, "labels", "metadata") : undefined;
  const spec = optObject(errs, obj, "spec", "");
  if (!spec) errs.add("spec", "a spec with externalCIDRs is required");
  const cidrs = new Set<string>();
  if (spec) {
    checkKnown(errs, "spec", spec, ["externalCIDRs"]);
    const list = stringList(errs, spec, "externalCIDRs", "spec");
    for (let i = 0; i < list.length; i++) {
      const checked = checkPrefix(list[i] ?? "", false);
      if (typeof checked === "string") errs.add(`spec.externalCIDRs[${i}]`, checked);
      else cidrs.add(checked.text);
    }
  }
  if (errs.count > 0 || typeof name !== "string") return { ok: false, errors: errs.list };
  const groupLabels = Object.entries(labels ?? {}).flatMap(([k, v]) => (typeof v === "string" ? [label(GROUP_LABEL_SOURCE, k, v)] : []));
  return { ok: true, value: { name, labels: labelSetFrom(groupLabels), cidrs: [...cidrs].sort() } };
}

/** Whether a policy names any CIDR group (only those need expanding, and recompiling when a group moves). */
export function usesCIDRGroups(policies: readonly Policy[]): boolean {
  return policies.some((p) => p.rules.some((r) => r.peers.some((peer) => peer.kind === "cidrGroup")));
}

/** The group names policies' cidrGroupRef entries name that `groups` does not hold, sorted. */
export function missingCIDRGroups(policies: readonly Policy[], groups: ReadonlyMap<string, CIDRGroup>): string[] {
  const missing = new Set<string>();
  for (const p of policies)
    for (const r of p.rules) for (const peer of r.peers) if (peer.kind === "cidrGroup" && peer.name !== undefined && !groups.has(peer.name)) missing.add(peer.name);
  return [...missing].sort();
}

/**
 * The policies with every cidrGroup peer replaced by `cidr` peers: one per CIDR of the groups it names
 * (a missing group: none, so the entry selects nothing), each with the entry's `except` prefixes that
 * fall inside it; a CIDR that an except covers entirely is left out. Policies without group peers are
 * returned as they are.
 */
export function expandCIDRGroups(policies: readonly Policy[], groups: ReadonlyMap<string, CIDRGroup>): readonly Policy[] {
  if (!usesCIDRGroups(policies)) return policies;
  return policies.map((p) => (p.rules.some(hasGroupPeer) ? { ...p, rules: p.rules.map((r) => (hasGroupPeer(r) ? { ...r, peers: r.peers.flatMap((peer) => expandPeer(peer, groups)) } : r)) } : p));
}

const hasGroupPeer = (r: Rule): boolean => r.peers.some((peer) => peer.kind === "cidrGroup");

function expandPeer(peer: Peer, groups: ReadonlyMap<string, CIDRGroup>): Peer[] {
  if (peer.kind !== "cidrGroup") return [peer];
  const cidrs = new Set<string>();
  for (const g of selectedGroups(peer, groups)) for (const c of g.cidrs) cidrs.add(c);
  const out: Peer[] = [];
  for (const cidr of [...cidrs].sort()) {
    const block = withExcept(cidr, peer.except);
    if (block) out.push({ kind: "cidr", ...block });
  }
  return out;
}

function selectedGroups(peer: Extract<Peer, { kind: "cidrGroup" }>, groups: ReadonlyMap<string, CIDRGroup>): CIDRGroup[] {
  if (peer.name !== undefined) {
    const g = groups.get(peer.name);
    return g ? [g] : [];
  }
  const selector = peer.selector;
  if (selector === undefined) return [];
  return [...groups.values()].filter((g) => matchesSelector(selector, g.labels));
}

/** `cidr` minus the excepts inside it; undefined when an except covers all of it. */
function withExcept(cidr: string, except: readonly string[]): { cidr: string; except: string[] } | undefined {
  const outer = parsePrefix(cidr);
  if (!outer) return undefined;
  const inside: string[] = [];
  for (const e of except) {
    const inner = parsePrefix(e);
    if (!inner || inner.family !== outer.family) continue;
    if (prefixContains(inner, outer)) return undefined;
    if (prefixContains(outer, inner)) inside.push(e);
  }
  return { cidr, except: inside };
}
