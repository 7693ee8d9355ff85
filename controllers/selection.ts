// Which endpoints a policy selects: pods grouped by equal security labels (one group per identity), matched by any of its subjects, and the nodes they run on.
import type { LabelSet, Policy } from "../core/model.ts";
import { matchesSelector } from "../core/selector.ts";

export interface Endpoint {
  readonly labels: LabelSet;
  readonly node?: string;
}

/** The endpoints that share one label set: how many, and the nodes they run on. */
export interface EndpointGroup {
  readonly labels: LabelSet;
  readonly count: number;
  readonly nodes: ReadonlySet<string>;
}

export interface Selection {
  readonly endpoints: number;
  /** Nodes hosting at least one selected endpoint (pods not yet scheduled count for none). */
  readonly nodes: ReadonlySet<string>;
}

/**
 * Groups endpoints by label set: done once per change of the pods, then every policy's selection
 * walks the groups (about one per identity) instead of every pod.
 */
export function groupEndpoints(endpoints: Iterable<Endpoint>): EndpointGroup[] {
  const groups = new Map<string, { labels: LabelSet; count: number; nodes: Set<string> }>();
  for (const ep of endpoints) {
    let g = groups.get(ep.labels.key);
    if (!g) groups.set(ep.labels.key, (g = { labels: ep.labels, count: 0, nodes: new Set() }));
    g.count++;
    if (ep.node) g.nodes.add(ep.node);
  }
  return [...groups.values()];
}

export function selectEndpoints(policies: readonly Policy[], groups: Iterable<EndpointGroup>): Selection {
  // Host policies (nodeSelector) select nodes, not pods.
  const subjects = policies.filter((p) => p.nodeSelector === undefined).map((p) => p.subject);
  let n = 0;
  const nodes = new Set<string>();
  for (const g of groups) {
    if (!subjects.some((s) => matchesSelector(s, g.labels))) continue;
    n += g.count;
    for (const node of g.nodes) nodes.add(node);
  }
  return { endpoints: n, nodes };
}
