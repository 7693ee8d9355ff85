// Which part of a rule matched a connection (Hubble's policy_match_type): found again from the applied entries of the
// rule that decided, since the datapath's event names the rule, not the key it hit.
import type { Direction, PolicyEntry, SubjectPolicy } from "../../core/model.ts";
import { prefixContains } from "../../core/portprefix.ts";
import { CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER, answeringClass } from "../../core/identity.ts";
import type { IPFamily } from "../../core/cidr.ts";
import type { PolicyMatch } from "../../flowapi/flow.ts";

/** What kind of key an entry is: a peer identity (or a peer class, an L3 match as well) or any, a protocol or any, a port block or any port. */
export function entryMatch(e: Pick<PolicyEntry, "peer" | "proto" | "portPrefixLen">): PolicyMatch {
  if (e.peer !== 0) return e.proto === 0 ? "L3-Only" : e.portPrefixLen === 0 ? "L3-Proto" : "L3-L4";
  return e.proto === 0 ? "all" : e.portPrefixLen === 0 ? "Proto-Only" : "L4-Only";
}

/** `family`: the packet's address family, which picks a world peer's world-ipv4/-ipv6 class as the datapath does. */
export type PolicyMatchLookup = (ruleId: number, subject: number, direction: Direction, peer: number, proto: number, port: number, family?: IPFamily) => PolicyMatch | undefined;

/**
 * The lookup over a node's applied policies: the entries of the deciding rule for that subject and direction that
 * hold the connection's key, taken in the datapath's order (this peer before any peer, a protocol's port block —
 * the longest — before any protocol). Undefined when none does (a rule the state no longer has).
 */
export function policyMatchIndex(policies: readonly SubjectPolicy[]): PolicyMatchLookup {
  const byRule = new Map<number, Map<number, PolicyEntry[]>>();
  // Which classes each subject direction has entries of: the class that answers for a peer is the subject's, whatever the rule.
  const classes = new Map<number, Record<Direction, Set<number>>>();
  for (const p of policies) {
    for (const e of p.entries) {
      if (e.peer === CLUSTER_CLASS_PEER || e.peer === EVERY_POD_CLASS_PEER || e.peer === WORLD_CLASS_PEER || e.peer === WORLD_IPV4_CLASS_PEER || e.peer === WORLD_IPV6_CLASS_PEER) {
        let c = classes.get(p.subject);
        if (c === undefined) classes.set(p.subject, (c = { ingress: new Set(), egress: new Set() }));
        c[e.direction].add(e.peer);
      }
      let subjects = byRule.get(e.ruleId);
      if (subjects === undefined) byRule.set(e.ruleId, (subjects = new Map()));
      let list = subjects.get(p.subject);
      if (list === undefined) subjects.set(p.subject, (list = []));
      list.push(e);
    }
  }
  return (ruleId, subject, direction, peer, proto, port, family) => {
    const entries = byRule.get(ruleId)?.get(subject);
    if (entries === undefined) return undefined;
    const has = classes.get(subject)?.[direction];
    const answering = peer === 0 || has === undefined ? undefined : answeringClass(peer, (c) => has.has(c), family);
    let best: PolicyEntry | undefined;
    let bestRank = -1;
    for (const e of entries) {
      const classEntry = answering !== undefined && e.peer === answering;
      if (e.direction !== direction || (e.peer !== peer && e.peer !== 0 && !classEntry)) continue;
      let rank: number;
      if (e.proto === 0) rank = 0;
      else if (e.proto === proto && prefixContains({ port: e.port, prefixLen: e.portPrefixLen }, port)) rank = 1 + e.portPrefixLen;
      else continue;
      if (classEntry) rank += 50; // the answering class's keys: after this peer's own, before any peer's
      else if (e.peer !== 0) rank += 100; // this peer's keys come before any peer's
      if (rank > bestRank) {
        best = e;
        bestRank = rank;
      }
    }
    return best !== undefined ? entryMatch(best) : undefined;
  };
}
