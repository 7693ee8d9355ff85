// Cilium's serverNames (toPorts[].serverNames): which TLS SNI values a port admits, with wildcards as in matchPattern.
import { patternMatches } from "../dns/name-pattern.ts";
import type { PortRule } from "../model.ts";

/**
 * A toPorts entry judged by the client's SNI alone: `serverNames` without L7 rules and without terminating or
 * originating TLS. Its port goes to the node's L7 proxy, which reads the ClientHello without terminating it.
 */
export function serverNamesOnly(pr: PortRule): boolean {
  return pr.rules === undefined && (pr.serverNames?.length ?? 0) > 0 && pr.terminatingTLS === undefined && pr.originatingTLS === undefined;
}

/**
 * Whether a TLS handshake naming `sni` may go on: any name when `serverNames` is empty; otherwise the
 * handshake must name one of them (Cilium: "TLS must be present and one of the provided SNIs must be
 * indicated"), so a handshake without SNI is refused. `*` stands for one label's characters, a first
 * label `**` for one or more labels; case and a trailing dot do not matter.
 */
export function serverNameAllowed(sni: string | undefined, serverNames: readonly string[]): boolean {
  if (serverNames.length === 0) return true;
  if (sni === undefined || sni === "") return false;
  return serverNames.some((pattern) => patternMatches(sni, pattern));
}
