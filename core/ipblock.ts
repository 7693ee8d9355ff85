// NetworkPolicy ipBlocks as pod addresses: the local identities that stand for an ipBlock's prefixes inside the cluster, and which one an address has.
//
// Kubernetes says an ipBlock matches a pod whose address is in it (and outside its excepts);
// Cilium's CIDR identities stand for addresses outside the cluster only, because a pod's address
// carries its pod identity. So each prefix a NetworkPolicy ipBlock names (its cidr and its excepts)
// gets a second local identity, labelled `ipblock:<prefix>`, that only NetworkPolicy ipBlock peers
// select. The agent keeps these prefixes in an LPM map of their own; when the policy lookup for a
// pod peer ends in default deny, the datapath looks the pod's address up there and tries the
// peer's keys once more with that identity. As with CIDR identities, the longest ipBlock prefix
// holding an address decides: it lies inside a block's cidr and outside its excepts exactly when
// the address does.
import type { LabelSet, Policy } from "./model.ts";
import { LABEL_SOURCE, label, labelSetFrom } from "./labels.ts";
import { cidrLabelKey, identityScope, prefixOfLabelKey } from "./identity.ts";
import { parsePrefix, prefixContains, type Prefix } from "./cidr.ts";

/** The labels of the ipBlock identity of a prefix: one `ipblock:` label (no world label: it stands for pods). Empty for a malformed prefix. */
export function ipBlockLabels(prefix: string | Prefix): LabelSet {
  const p = typeof prefix === "string" ? parsePrefix(prefix) : prefix;
  return labelSetFrom(p === undefined ? [] : [label(LABEL_SOURCE.ipblock, cidrLabelKey(p))]);
}

const prefixCache = new WeakMap<LabelSet, Prefix | null>();

/** The prefix an ipBlock identity stands for; undefined for every other identity. */
export function ipBlockPrefixOf(labels: LabelSet): Prefix | undefined {
  const cached = prefixCache.get(labels);
  if (cached !== undefined) return cached ?? undefined;
  const l = labels.labels.find((x) => x.source === LABEL_SOURCE.ipblock);
  const p = l === undefined ? undefined : prefixOfLabelKey(l.key);
  prefixCache.set(labels, p ?? null);
  return p;
}

/** Whether an identity is an ipBlock identity: only NetworkPolicy ipBlock peers may select it. */
export function isIPBlockIdentity(labels: LabelSet): boolean {
  return labels.labels.some((l) => l.source === LABEL_SOURCE.ipblock);
}

/** Whether a peer identity is a pod's, the only kind the datapath looks up by address in the ipBlock map. */
export function isPodIdentity(id: number): boolean {
  return identityScope(id) === "cluster";
}

/** The prefixes NetworkPolicy ipBlocks name (cidrs and excepts): each needs an ipBlock identity. */
export function ipBlockPrefixes(policies: readonly Policy[]): string[] {
  const out = new Set<string>();
  for (const p of policies) {
    for (const r of p.rules) {
      for (const peer of r.peers) {
        if (peer.kind !== "cidr" || peer.podAddresses !== true) continue;
        out.add(peer.cidr);
        for (const e of peer.except) out.add(e);
      }
    }
  }
  return [...out].sort();
}

/** Whether `address` lies in `cidr` and outside every `except` (the ipBlock's meaning for a pod address). */
export function addressInBlock(address: string, cidr: string, except: readonly string[]): boolean {
  const a = parsePrefix(address);
  const c = parsePrefix(cidr);
  if (a === undefined || c === undefined || !prefixContains(c, a)) return false;
  return !except.some((e) => {
    const ep = parsePrefix(e);
    return ep !== undefined && prefixContains(ep, a);
  });
}

/** The value of the longest prefix in `blocks` that holds `address` (what the datapath's LPM answers), or undefined. */
export function longestBlock<T>(address: string, blocks: Iterable<readonly [string, T]>): T | undefined {
  const a = parsePrefix(address);
  if (a === undefined) return undefined;
  let best: { bits: number; value: T } | undefined;
  for (const [text, value] of blocks) {
    const p = parsePrefix(text);
    if (p !== undefined && prefixContains(p, a) && (best === undefined || p.bits > best.bits)) best = { bits: p.bits, value };
  }
  return best?.value;
}
