// A stray peer's entries: an identity in a class by its number that the class's selector does not select keeps the class's entries on for everyone else.
import type { Verdict } from "../model.ts";
import { prefixContains } from "../portprefix.ts";
import type { EntryTemplate } from "./resolution.ts";

/** The rule id of an entry that stands for the direction's default (no rule decided: RULE_ID_DEFAULT_DENY). */
const NO_RULE = 0;

/** Whether every packet `inner`'s key matches reaches `outer`'s key too (a protocol-0 entry is the any-protocol level: all of them). */
function covers(outer: EntryTemplate, inner: EntryTemplate): boolean {
  if (outer.proto === 0) return true;
  return inner.proto === outer.proto && outer.portPrefixLen <= inner.portPrefixLen && prefixContains({ port: outer.port, prefixLen: outer.portPrefixLen }, inner.port);
}

/** The entry the lookup of `entries` alone decides a whole block by: the longest port prefix holding it, then the any-protocol one. */
function decidingEntry(entries: readonly EntryTemplate[], block: EntryTemplate): EntryTemplate | undefined {
  let best: EntryTemplate | undefined;
  for (const e of entries) {
    if (e.proto === 0 || !covers(e, block)) continue;
    if (!best || e.portPrefixLen > best.portPrefixLen) best = e;
  }
  return best ?? entries.find((e) => e.proto === 0);
}

/**
 * The entries a stray peer holds so that the lookup (its own keys, then its answering class's, then the wildcard's)
 * gives every packet what its own keys and then the wildcard's give without the class: `own`, plus, on each key of the
 * class's that none of `own` holds, what the wildcard (or, where it has no entry, the direction's default) decides
 * there, and a copy of each wildcard entry inside such a key that `own` does not hold (the peer's key would hide it).
 * `defaultVerdict`: the direction's, where neither the peer nor the wildcard has an entry (deny when enforced).
 * The one difference left: where that default decides, the lookup finds an entry (rule 0, as a default drop names),
 * so the datapath's second look (a pod's ipBlock identity) is not tried for the stray peer there.
 */
export function strayPeerTemplates(own: readonly EntryTemplate[], cls: readonly EntryTemplate[], wildcard: readonly EntryTemplate[], defaultVerdict: Verdict): readonly EntryTemplate[] {
  if (cls.length === 0 || own.some((t) => t.proto === 0)) return own; // its any-protocol key answers all the class could
  const out = new Map<number, EntryTemplate>(own.map((t) => [t.slot, t]));
  const ownHolds = (t: EntryTemplate): boolean => own.some((o) => covers(o, t));
  for (const c of cls) {
    if (ownHolds(c)) continue;
    const w = decidingEntry(wildcard, c);
    const at = { slot: c.slot, proto: c.proto, port: c.port, portPrefixLen: c.portPrefixLen };
    if (!out.has(c.slot)) out.set(c.slot, w ? { ...w, ...at } : { ...at, verdict: defaultVerdict, proxyPort: 0, ruleId: NO_RULE, http: false });
    for (const inner of wildcard) if (covers(c, inner) && !ownHolds(inner) && !out.has(inner.slot)) out.set(inner.slot, inner);
  }
  return out.size === own.length ? own : [...out.values()];
}

