// Map state: a subject's compiled entries per direction and peer, the delta of a change to them, and the datapath's lookup over them.
import {
  IDENTITY_WILDCARD,
  type Direction,
  type PolicyEntry,
  type PolicyEntryKey,
  type RuleHttpRules,
  type SubjectDns,
  type SubjectPolicy,
  type Verdict,
} from "../model.ts";
import { prefixContains } from "../portprefix.ts";
import { answeringClass } from "../identity.ts";
import { secondLookApplies, secondLookRuns } from "../node-peers.ts";
import type { IPFamily } from "../cidr.ts";

export interface LookupResult {
  readonly verdict: Verdict;
  /** The entry that decided; absent when no entry matched and the direction's default applied. */
  readonly entry?: PolicyEntry;
}

/** proto (8 bits) | port (16 bits) | prefix length (5 bits) as one number: an entry's place among one peer's entries. */
export function entrySlot(proto: number, port: number, prefixLen: number): number {
  return proto * 2 ** 21 + port * 32 + prefixLen;
}

/**
 * What changed for one subject. `added` entries are inserts or in-place updates of their key;
 * `removed` keys are deletes and never repeat a key in `added`. Apply `added` first, then
 * `removed`, so no packet sees a key missing in between.
 */
export interface Delta {
  readonly subject: number;
  readonly added: readonly PolicyEntry[];
  readonly removed: readonly PolicyEntry[];
  readonly ingressEnforced: boolean;
  readonly egressEnforced: boolean;
  /** The subject's DNS part as it is now (whole, like the flags); absent: none. */
  readonly dns?: SubjectDns;
  /** Its HTTP part as it is now (whole); absent: none. */
  readonly http?: readonly RuleHttpRules[];
}

/** One key's fate within a change: the entry it held before (undefined: absent) and the one it holds now. */
interface SlotChange {
  readonly before: PolicyEntry | undefined;
  after: PolicyEntry | undefined;
}

type SubjectChanges = Record<Direction, Map<number, Map<number, SlotChange>>>;

function sameValue(a: PolicyEntry, b: PolicyEntry): boolean {
  return a.verdict === b.verdict && a.proxyPort === b.proxyPort && a.ruleId === b.ruleId;
}

/**
 * Collects the entry writes of one change (an identity, a policy) and nets them per key: a key
 * written and taken back is no change; a key whose value changed is one update in `added`.
 * Callers remove a key's old entry before adding its new one.
 */
export class DeltaCollector {
  private readonly bySubject = new Map<number, SubjectChanges>();
  private readonly touched = new Set<number>();

  /** A disabled collector (a full compile) records nothing. */
  constructor(private readonly enabled = true) {}

  /** Whether it records: a disabled one needs no entries made for it. */
  get recording(): boolean {
    return this.enabled;
  }

  add(subject: number, e: PolicyEntry): void {
    if (!this.enabled) return;
    const slots = this.slotsOf(subject, e);
    const slot = entrySlot(e.proto, e.port, e.portPrefixLen);
    const c = slots.get(slot);
    if (c) c.after = e;
    else slots.set(slot, { before: undefined, after: e });
  }

  remove(subject: number, e: PolicyEntry): void {
    if (!this.enabled) return;
    const slots = this.slotsOf(subject, e);
    const slot = entrySlot(e.proto, e.port, e.portPrefixLen);
    const c = slots.get(slot);
    if (c) c.after = undefined;
    else slots.set(slot, { before: e, after: undefined });
  }

  /** Marks a subject whose enforcement may have changed: it gets a delta even with no entry change. */
  touch(subject: number): void {
    this.touched.add(subject);
  }

  deltas(enforcement: (subject: number) => { ingress: boolean; egress: boolean; dns?: SubjectDns; http?: readonly RuleHttpRules[] }): Delta[] {
    const subjects = new Set([...this.bySubject.keys(), ...this.touched]);
    const out: Delta[] = [];
    for (const subject of [...subjects].sort((a, b) => a - b)) {
      const added: PolicyEntry[] = [];
      const removed: PolicyEntry[] = [];
      const changes = this.bySubject.get(subject);
      for (const byPeer of changes ? [changes.ingress, changes.egress] : []) {
        for (const slots of byPeer.values()) {
          for (const { before, after } of slots.values()) {
            if (after !== undefined && (before === undefined || !sameValue(before, after))) added.push(after);
            else if (after === undefined && before !== undefined) removed.push(before);
          }
        }
      }
      if (added.length === 0 && removed.length === 0 && !this.touched.has(subject)) continue;
      const enf = enforcement(subject);
      out.push({ subject, added: added.sort(compareEntries), removed: removed.sort(compareEntries), ingressEnforced: enf.ingress, egressEnforced: enf.egress, ...(enf.dns ? { dns: enf.dns } : {}), ...(enf.http ? { http: enf.http } : {}) });
    }
    return out;
  }

  private slotsOf(subject: number, e: PolicyEntry): Map<number, SlotChange> {
    let s = this.bySubject.get(subject);
    if (!s) this.bySubject.set(subject, (s = { ingress: new Map(), egress: new Map() }));
    const byPeer = s[e.direction];
    let slots = byPeer.get(e.peer);
    if (!slots) byPeer.set(e.peer, (slots = new Map()));
    return slots;
  }
}

/** A stable string for an entry key, unique per (subject, direction, peer, proto, port/len). */
export function entryKeyString(k: PolicyEntryKey): string {
  return `${k.subject}|${k.direction}|${k.peer}|${k.proto}|${k.port}/${k.portPrefixLen}`;
}

/** Total order used for every entry list Membrane emits, so equal inputs give equal output. */
export function compareEntries(a: PolicyEntryKey, b: PolicyEntryKey): number {
  return (
    a.subject - b.subject ||
    (a.direction === b.direction ? 0 : a.direction === "ingress" ? -1 : 1) ||
    a.peer - b.peer ||
    a.proto - b.proto ||
    a.port - b.port ||
    a.portPrefixLen - b.portPrefixLen
  );
}

/**
 * The verdict the datapath gives a packet. The first level with a hit decides:
 *   1. (peer, proto, port) longest port prefix, 2. (peer, ANY), then levels 1 and 2 of the class that
 *   answers for the peer (core/identity.ts answeringClass: its family's world class or the world's for a world peer, every pod's, else the cluster's), 3. (0, proto, port) longest
 *   prefix, 4. (0, ANY); a miss falls back to deny when the direction is enforced, else allow.
 * `ipBlockPeer`: the ipBlock map's answer for the peer's address: a pod peer's ipBlock identity (core/ipblock.ts) or a
 * node peer's node identity (core/node-peers.ts), tried on levels 1–2 before that default deny (a node peer's also
 * after an allow, whose deny there wins). `family`: the packet's address family, which picks a world peer's family class
 * (world-ipv4/-ipv6 know their own; without it a CIDR or FQDN peer gets the world class's, as in no packet).
 */
export function lookup(
  policy: SubjectPolicy,
  direction: Direction,
  peer: number,
  proto: number,
  port: number,
  ipBlockPeer?: number,
  family?: IPFamily,
): LookupResult {
  const candidates = policy.entries.filter((e) => e.direction === direction);
  const enforced = direction === "ingress" ? policy.ingressEnforced : policy.egressEnforced;
  const cls = peer === IDENTITY_WILDCARD ? undefined : answeringClass(peer, (c) => candidates.some((e) => e.peer === c), family);
  const hit = probe(candidates, cls !== undefined ? [peer, cls, IDENTITY_WILDCARD] : [peer, IDENTITY_WILDCARD], proto, port);
  // The datapath's second look (bpf/lib/ipblock.h): a pod peer that would meet default deny, or a node peer that would
  // not meet a deny, tries the ipBlock (or node) identity of its address, on that identity's own keys only; after an
  // allow only its deny counts (core/node-peers.ts secondLookRuns).
  if (ipBlockPeer !== undefined && secondLookApplies(peer, ipBlockPeer) && secondLookRuns(peer, hit?.verdict, enforced)) {
    const again = probe(candidates, [ipBlockPeer], proto, port);
    if (again && (hit === undefined || again.verdict === "deny")) return { verdict: again.verdict, entry: again };
  }
  if (hit) return { verdict: hit.verdict, entry: hit };
  return { verdict: enforced ? "deny" : "allow" };
}

/** The first entry of the lookup order over `peers` (each: its port-specific keys, then its any-protocol key). */
function probe(candidates: readonly PolicyEntry[], peers: readonly number[], proto: number, port: number): PolicyEntry | undefined {
  const levels: readonly [number, boolean][] = peers.flatMap((p): [number, boolean][] => [
    [p, true],
    [p, false],
  ]);
  for (const [levelPeer, withProto] of levels) {
    if (withProto && proto === 0) continue;
    let best: PolicyEntry | undefined;
    for (const e of candidates) {
      if (e.peer !== levelPeer) continue;
      if (withProto) {
        if (e.proto !== proto || !prefixContains({ port: e.port, prefixLen: e.portPrefixLen }, port))
          continue;
        if (!best || e.portPrefixLen > best.portPrefixLen) best = e;
      } else if (e.proto === 0) {
        best = e;
      }
    }
    if (best) return best;
  }
  return undefined;
}

/** A subject with no policy at all: allow-all both ways. */
export function emptySubjectPolicy(subject: number): SubjectPolicy {
  return { subject, ingressEnforced: false, egressEnforced: false, entries: [] };
}
