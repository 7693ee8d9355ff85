// What a DNS answer teaches: every A/AAAA address reachable from the question's name through its CNAME chain, with the names that lead to it.
import { normalizeDnsName } from "./name-pattern.ts";

/** One answer record as the wire-format library decodes it (only what learning needs). */
export interface AnswerRecord {
  readonly name: string;
  readonly type: string;
  readonly ttl?: number;
  readonly data?: unknown;
}

/** An address the answer gave, the names it answers for (the question and every CNAME on the way), and its TTL. */
export interface LearnedAddress {
  readonly ip: string;
  readonly names: readonly string[];
  readonly ttl: number;
}

/**
 * Follows the CNAME chain from `question` (at most 16 hops, loops cut) and returns each address
 * record owned by a name on it. The address is learned for every name from the question up to its
 * owner, so a toFQDNs selector of the question's name and one of the CNAME target both match; its
 * TTL is the smallest along that part of the chain (when a CNAME expires the address does too).
 * Records off the chain (additional data a resolver sent unasked) teach nothing.
 */
export function learnedAddresses(question: string, answers: readonly AnswerRecord[]): LearnedAddress[] {
  const asked = normalizeDnsName(question);
  // A record owned by the question's own name (the usual answer: the same string) is not normalized again.
  const ownerOf = (rr: AnswerRecord): string => (rr.name === question ? asked : normalizeDnsName(rr.name));
  let cnames: Map<string, { target: string; ttl: number }> | undefined;
  for (const rr of answers) {
    if (rr.type === "CNAME" && typeof rr.data === "string") (cnames ??= new Map()).set(ownerOf(rr), { target: normalizeDnsName(rr.data), ttl: rr.ttl ?? 0 });
  }
  if (!cnames) {
    // No CNAME: the chain is the question alone.
    const names = [asked];
    const out: LearnedAddress[] = [];
    for (const rr of answers) {
      if ((rr.type !== "A" && rr.type !== "AAAA") || typeof rr.data !== "string" || ownerOf(rr) !== asked) continue;
      out.push({ ip: rr.data, names, ttl: rr.ttl ?? 0 });
    }
    return out;
  }
  // The chain: each name with the names before it and the smallest TTL so far.
  const chain = new Map<string, { names: string[]; ttl: number }>();
  let name = asked;
  let names = [name];
  let ttl = Infinity;
  for (let hop = 0; hop <= 16 && !chain.has(name); hop++) {
    chain.set(name, { names, ttl });
    const next = cnames.get(name);
    if (!next) break;
    ttl = Math.min(ttl, next.ttl);
    name = next.target;
    names = [...names, name];
  }
  const out: LearnedAddress[] = [];
  for (const rr of answers) {
    if ((rr.type !== "A" && rr.type !== "AAAA") || typeof rr.data !== "string") continue;
    const at = chain.get(ownerOf(rr));
    if (!at) continue;
    out.push({ ip: rr.data, names: at.names, ttl: Math.min(at.ttl, rr.ttl ?? 0) });
  }
  return out;
}
