// Which endpoints a policy selects: pods (grouped by equal security labels) matched by any of its subjects, and the nodes they run on.
import type { LabelSet, Policy } from "../core/model.ts";
import { matchesSelector } from "../core/selector.ts";

export interface Endpoint {
  readonly labels: LabelSet;
  readonly node?: string;
}

export interface Selection {
  readonly endpoints: number;
  /** Nodes hosting at least one selected endpoint (pods not yet scheduled count for none). */
  readonly nodes: ReadonlySet<string>;
}

export function selectEndpoints(policies: readonly Policy[], endpoints: Iterable<Endpoint>): Selection {
  // Host policies (nodeSelector) select nodes, not pods.
  const subjects = policies.filter((p) => p.nodeSelector === undefined).map((p) => p.subject);
  const verdict = new Map<string, boolean>(); // one selector evaluation per distinct label set
  let n = 0;
  const nodes = new Set<string>();
  for (const ep of endpoints) {
    let hit = verdict.get(ep.labels.key);
    if (hit === undefined) {
      hit = subjects.some((s) => matchesSelector(s, ep.labels));
      verdict.set(ep.labels.key, hit);
    }
    if (!hit) continue;
    n++;
    if (ep.node) nodes.add(ep.node);
  }
  return { endpoints: n, nodes };
}
