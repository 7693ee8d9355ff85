// A request judged by every rule set its connection must pass: the proxy port's own, and, when both ends have HTTP rules on this node, then the destination's ingress rules (as two proxies across nodes would judge it, and as Cilium's one proxy does on one node); one flow per rule set.
import { decideHttp, type CompiledHttpRuleRef, type HttpDecision } from "../../core/l7/http-decision.ts";
import type { HttpRequest } from "../../core/l7/http-request.ts";
import type { OriginalDestination } from "../bpf/redirect.ts";
import type { HttpFlow } from "./http-proxy.ts";

/** One rule set a request passes: a proxy port's rules, whose they are, and the policy entry that named the port. */
export interface RuleSide {
  readonly port: number;
  readonly ingress: boolean;
  readonly ruleId: number;
  readonly rules: readonly CompiledHttpRuleRef[];
}

/** The rule sets of a connection that arrived on `port`: its own, then the destination's ingress port's when the datapath's record names one. */
export function sidesOf(port: number, ingress: boolean, orig: OriginalDestination, rulesOf: (port: number) => readonly CompiledHttpRuleRef[]): RuleSide[] {
  const own: RuleSide = { port, ingress, ruleId: orig.ruleId, rules: rulesOf(port) };
  return orig.ingress ? [own, { port: orig.ingress.proxyPort, ingress: true, ruleId: orig.ingress.ruleId, rules: rulesOf(orig.ingress.proxyPort) }] : [own];
}

export interface SidesDecision {
  /** deny when a side denied; allow with the first side's rule and every side's header actions, in order. */
  readonly decision: HttpDecision;
  /** The sides that judged the request, each with its decision (none after the first denial). */
  readonly judged: readonly { readonly side: RuleSide; readonly decision: HttpDecision }[];
}

/** Each side in turn judges the request as the previous one forwards it (its header actions applied); the first denial ends it. */
export function decideSides(request: HttpRequest, sides: readonly RuleSide[], apply: (headers: HttpRequest["headers"], d: HttpDecision & { verdict: "allow" }) => HttpRequest["headers"]): SidesDecision {
  // One side (the usual case): its decision as it is, nothing to combine.
  if (sides.length === 1) {
    const decision = decideHttp(request, sides[0]!.rules);
    return { decision, judged: [{ side: sides[0]!, decision }] };
  }
  const judged: { side: RuleSide; decision: HttpDecision }[] = [];
  let forwarded = request;
  for (const side of sides) {
    const decision = decideHttp(forwarded, side.rules);
    judged.push({ side, decision });
    if (decision.verdict === "deny") return { decision, judged };
    forwarded = { ...forwarded, headers: apply(forwarded.headers, decision) };
  }
  const allows = judged.map((j) => j.decision).filter((d): d is HttpDecision & { verdict: "allow" } => d.verdict === "allow");
  const first = allows[0]!;
  return { decision: { ...first, actions: allows.flatMap((d) => d.actions), mismatches: allows.flatMap((d) => d.mismatches) }, judged };
}

/** A flow's fields without the combined decision's rule and mismatches (each side reports its own). */
function withoutDecision(extra: Partial<HttpFlow>): Partial<HttpFlow> {
  const { rule: _rule, mismatches: _mismatches, ...rest } = extra;
  return rest;
}

type Report = (verdict: HttpFlow["verdict"], status: number, extra?: Partial<HttpFlow>) => void;

/**
 * A flow reporter that writes one flow per side that judged the request: a side that denied it says
 * `denied` with the client's status; a side that allowed it says what the client finally got, with its
 * own deciding rule, port and entry (so each side's flow reads as its own proxy's would).
 */
export function sideFlows(judged: SidesDecision["judged"], report: Report): Report {
  return (verdict, status, extra = {}) => {
    for (const { side, decision } of judged) {
      const own = { proxyPort: side.port, ingress: side.ingress, ruleId: side.ruleId };
      if (decision.verdict === "deny") report("denied", status, { ...withoutDecision(extra), ...own });
      // A later side's denial is this side's forwarded request answered 403, as its own proxy would see it.
      else report(verdict === "denied" ? "forwarded" : verdict, status, { ...withoutDecision(extra), ...own, rule: { ruleId: decision.ruleId, index: decision.index }, ...(decision.mismatches.length ? { mismatches: decision.mismatches } : {}) });
    }
  };
}
