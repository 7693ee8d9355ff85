// Primitive predicates over an identity: the DNS names it was learned for, and whether policies can select it as a subject.
import type { LabelSet } from "./model.ts";
import { IDENTITY, identityScope } from "./identity.ts";
import { LABEL_SOURCE } from "./labels.ts";
import { selectorMatches } from "./dns/name-pattern.ts";

/** Whether a DNS name (as learned from a DNS answer) matches a toFQDNs matchName or matchPattern. */
export function fqdnMatches(name: string, matchName?: string, matchPattern?: string): boolean {
  return selectorMatches(name, { ...(matchName !== undefined ? { matchName } : {}), ...(matchPattern !== undefined ? { matchPattern } : {}) });
}

/** The DNS names an identity was learned for: its `fqdn:` labels. */
export function identityNames(labels: LabelSet): string[] {
  return labels.labels.filter((l) => l.source === LABEL_SOURCE.fqdn).map((l) => l.key);
}

function hasReserved(labels: LabelSet, name: string): boolean {
  return labels.labels.some((l) => l.source === LABEL_SOURCE.reserved && l.key === name);
}

/**
 * Whether an identity can be the subject of a policy: endpoints (cluster identities and the
 * endpoint-like reserved ones), the host only for host policies (nodeSelector); never world or
 * CIDR identities.
 */
export function isPolicySubject(id: number, labels: LabelSet, hostPolicy: boolean): boolean {
  if (hostPolicy) return id === IDENTITY.host || hasReserved(labels, "host");
  const scope = identityScope(id);
  if (scope === "cluster") return true;
  return (
    scope === "reserved" &&
    [IDENTITY.health, IDENTITY.init, IDENTITY.ingress, IDENTITY.unmanaged].some((r) => r === id)
  );
}
