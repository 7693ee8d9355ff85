// Which endpoints a policy selects: pods grouped by equal security labels (one group per identity), matched by any of its subjects, and the nodes they run on.
import type { LabelSet, Policy, Selector } from "../core/model.ts";
import { matchesSelector } from "../core/selector.ts";
import { IDENTITY, reservedIdentityById } from "../core/identity.ts";

export interface Endpoint {
  readonly labels: LabelSet;
  readonly node?: string;
}

/** The endpoints that share one label set: how many, and the nodes they run on. */
export interface EndpointGroup {
  readonly labels: LabelSet;
  readonly count: number;
  /** Each node hosting some of them, with how many. */
  readonly nodes: ReadonlyMap<string, number>;
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

/** The memo's number for a label set (numbered on first sight). */
function ordinalOf(key: string): number {
  let ordinal = memo.ordinals.get(key);
  if (ordinal === undefined) memo.ordinals.set(key, (ordinal = memo.ordinals.size));
  return ordinal;
}

/** Starts the memo afresh when its numbering has outgrown its bound; groups numbered before are renumbered when next listed. */
function boundMemo(): void {
  if (memo.ordinals.size <= MAX_LABEL_SETS) return;
  memo.epoch++;
  memo.ordinals = new Map();
  memo.verdicts = new WeakMap();
}

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

interface MutableGroup {
  labels: LabelSet;
  count: number;
  nodes: Map<string, number>;
  ordinal: number;
  epoch: number;
}

/**
 * The endpoints grouped by label set, kept per endpoint change (O(the change)): every policy's selection
 * walks the groups (about one per identity) instead of every pod, and a change of one pod does not group
 * every pod again (at 50,000 pods that walk ran on nearly every policy status reconcile; issue #21).
 */
export class EndpointIndex {
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly byLabels = new Map<string, MutableGroup>();
  private list: EndpointGroup[] | undefined;

  /** Sets the endpoint of `key` (a pod), or removes it (undefined); returns whether any group moved. */
  set(key: string, ep: Endpoint | undefined): boolean {
    const old = this.endpoints.get(key);
    if (old?.labels.key === ep?.labels.key && old?.node === ep?.node) return false;
    if (old) {
      this.count(old, -1);
      this.endpoints.delete(key);
    }
    if (ep) {
      this.count(ep, +1);
      this.endpoints.set(key, ep);
    }
    this.list = undefined;
    return true;
  }

  /** The groups as they are now (read them before the next set: their counts move with it). */
  groups(): readonly EndpointGroup[] {
    if (this.list) return this.list;
    boundMemo();
    for (const [key, g] of this.byLabels) {
      if (g.epoch === memo.epoch) continue;
      g.ordinal = ordinalOf(key);
      g.epoch = memo.epoch;
    }
    return (this.list = [...this.byLabels.values()]);
  }

  private count(ep: Endpoint, by: number): void {
    let g = this.byLabels.get(ep.labels.key);
    if (!g) this.byLabels.set(ep.labels.key, (g = { labels: ep.labels, count: 0, nodes: new Map(), ordinal: ordinalOf(ep.labels.key), epoch: memo.epoch }));
    g.count += by;
    if (ep.node) {
      const n = (g.nodes.get(ep.node) ?? 0) + by;
      if (n > 0) g.nodes.set(ep.node, n);
      else g.nodes.delete(ep.node);
    }
    if (g.count === 0) this.byLabels.delete(ep.labels.key);
  }
}

/** Groups endpoints by label set at once (EndpointIndex keeps the same groups across changes). */
export function groupEndpoints(endpoints: Iterable<Endpoint>): readonly EndpointGroup[] {
  const index = new EndpointIndex();
  let i = 0;
  for (const ep of endpoints) index.set(String(i++), ep);
  return index.groups();
}

/** A node as host policies see it: its name and its host endpoint's labels (core/host-endpoint.ts nodeHostLabels). */
export interface HostEndpoint {
  readonly node: string;
  readonly labels: LabelSet;
}

const INIT_LABELS = reservedIdentityById(IDENTITY.init)!.labels;

/**
 * The endpoints the policies select: pods by their subjects, and (host policies, nodeSelector) the
 * nodes whose host endpoint labels match, each node one endpoint. A subject selecting reserved:init
 * (an init policy) concerns every node, as every node enforces it; the endpoints at reserved:init
 * are the agents' and not counted.
 */
export function selectEndpoints(policies: readonly Policy[], groups: Iterable<EndpointGroup>, hosts: Iterable<HostEndpoint> = []): Selection {
  const subjects = policies.filter((p) => p.nodeSelector === undefined).map((p) => p.subject);
  const nodeSelectors = policies.flatMap((p) => (p.nodeSelector === undefined ? [] : [p.nodeSelector]));
  let n = 0;
  const nodes = new Set<string>();
  if (subjects.some((s) => matchesSelector(s, INIT_LABELS))) for (const h of hosts) nodes.add(h.node);
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
    for (const node of g.nodes.keys()) nodes.add(node);
  }
  return { endpoints: n, nodes };
}
