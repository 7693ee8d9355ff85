// The compiled entry set of a subject identity and the datapath's lookup over it (model.ts order).
import {
  IDENTITY_WILDCARD,
  type Direction,
  type PolicyEntry,
  type PolicyEntryKey,
  type SubjectPolicy,
  type Verdict,
} from "./model.ts";
import { prefixContains } from "./portprefix.ts";

export interface LookupResult {
  readonly verdict: Verdict;
  /** The entry that decided; absent when no entry matched and the direction's default applied. */
  readonly entry?: PolicyEntry;
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
 *   1. (peer, proto, port) longest port prefix, 2. (peer, ANY), 3. (0, proto, port) longest
 *   prefix, 4. (0, ANY); a miss falls back to deny when the direction is enforced, else allow.
 */
export function lookup(
  policy: SubjectPolicy,
  direction: Direction,
  peer: number,
  proto: number,
  port: number,
): LookupResult {
  const candidates = policy.entries.filter((e) => e.direction === direction);
  const levels: readonly [number, boolean][] = [
    [peer, true],
    [peer, false],
    [IDENTITY_WILDCARD, true],
    [IDENTITY_WILDCARD, false],
  ];
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
    if (best) return { verdict: best.verdict, entry: best };
  }
  const enforced = direction === "ingress" ? policy.ingressEnforced : policy.egressEnforced;
  return { verdict: enforced ? "deny" : "allow" };
}

/** A subject with no policy at all: allow-all both ways. */
export function emptySubjectPolicy(subject: number): SubjectPolicy {
  return { subject, ingressEnforced: false, egressEnforced: false, entries: [] };
}
