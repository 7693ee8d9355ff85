// Which endpoints a policy selects: pods grouped by equal security labels (one group per identity), matched by any of its subjects, and the nodes they run on.
import type { LabelSet, Policy, Selector } from "../core/model.ts";
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
  /** Its label set's number in the verdict memo, and the memo's epoch that number belongs to. */
  readonly ordinal: number;
  readonly epoch: number;
}

/**
 * Selector verdicts remembered per label set across pod changes: after a pod event every policy's
 * status asks again, and a label set keeps its verdict for a selector object (parsed selectors are
 * shared and kept while their policy's generation stays). A byte per (selector, label set), label
 * sets numbered; started afresh when the numbering outgrows MAX_LABEL_SETS (label sets of pods
 * long gone), so it stays bounded.
 */
const MAX_LABEL_SETS = 1 << 17;
const memo = { epoch: 0, ordinals: new Map<string, number>(), verdicts: new WeakMap<Selector, Uint8Array>() };

function matches(s: Selector, g: EndpointGroup): boolean {
  if (g.epoch !== memo.epoch) return matchesSelector(s, g.labels);
  let v = memo.verdicts.get(s);
  if (!v || v.length <= g.ordinal) {
    const grown = new Uint8Array(Math.max(memo.ordinals.size, g.ordinal + 1, 64));
    if (v) grown.set(v);
    memo.verdicts.set(s, (v = grown));
  }
  if (v[g.ordinal] === 0) v[g.ordinal] = matchesSelector(s, g.labels) ? 2 : 1;
  return v[g.ordinal] === 2;
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
  if (memo.ordinals.size > MAX_LABEL_SETS) {
    memo.epoch++;
    memo.ordinals = new Map();
    memo.verdicts = new WeakMap();
  }
  const groups = new Map<string, { labels: LabelSet; count: number; nodes: Set<string>; ordinal: number; epoch: number }>();
  for (const ep of endpoints) {
    let g = groups.get(ep.labels.key);
    if (!g) {
      let ordinal = memo.ordinals.get(ep.labels.key);
      if (ordinal === undefined) memo.ordinals.set(ep.labels.key, (ordinal = memo.ordinals.size));
      groups.set(ep.labels.key, (g = { labels: ep.labels, count: 0, nodes: new Set(), ordinal, epoch: memo.epoch }));
    }
    g.count++;
    if (ep.node) g.nodes.add(ep.node);
  }
  return [...groups.values()];
}

/** A node as host policies see it: its name and its host endpoint's labels (core/host-endpoint.ts nodeHostLabels). */
export interface HostEndpoint {
  readonly node: string;
  readonly labels: LabelSet;
}

/**
 * The endpoints the policies select: pods by their subjects, and (host policies, nodeSelector) the
 * nodes whose host endpoint labels match, each node one endpoint.
 */
export function selectEndpoints(policies: readonly Policy[], groups: Iterable<EndpointGroup>, hosts: Iterable<HostEndpoint> = []): Selection {
  const subjects = policies.filter((p) => p.nodeSelector === undefined).map((p) => p.subject);
  const nodeSelectors = policies.flatMap((p) => (p.nodeSelector === undefined ? [] : [p.nodeSelector]));
  let n = 0;
  const nodes = new Set<string>();
  if (nodeSelectors.length > 0) {
    for (const h of hosts) {
      if (!nodeSelectors.some((s) => matchesSelector(s, h.labels))) continue;
      n++;
      nodes.add(h.node);
    }
  }
  for (const g of groups) {
    if (!subjects.some((s) => matches(s, g))) continue;
    n += g.count;
    for (const node of g.nodes) nodes.add(node);
  }
  return { endpoints: n, nodes };
}
