// GetFlows' request semantics, shared by the agent and the relay: the time window, first/last N, follow, field masks.
import { compileFlowFilters, type FlowMatch } from "./filter.ts";
import { msOf, type GetFlowsRequest, type HubbleFlow } from "./types.ts";

/** A GetFlows request read at the edge: what to replay, whether to follow, and how to trim each flow. */
export interface FlowsQuery {
  readonly match: FlowMatch;
  readonly sinceMs?: number;
  readonly untilMs?: number;
  /** 0: no limit. */
  readonly number: number;
  readonly first: boolean;
  readonly follow: boolean;
  /** Replay nothing, only follow: `follow` with neither a number nor `since`, as Hubble does. */
  readonly newOnly: boolean;
  readonly mask?: (f: HubbleFlow) => HubbleFlow;
}

export type QueryParse = { readonly ok: true; readonly query: FlowsQuery } | { readonly ok: false; readonly field: string; readonly error: string };

/** Parses a GetFlows request; an error names the field (a filter field, `first`, `field_mask.paths`, …). */
export function parseFlowsRequest(req: GetFlowsRequest): QueryParse {
  const filters = compileFlowFilters(req.whitelist ?? [], req.blacklist ?? []);
  if (!filters.ok) return filters;
  const number = Number(req.number ?? 0);
  const first = req.first === true;
  const follow = req.follow === true;
  if (first && follow) return { ok: false, field: "first", error: "first: not together with follow" };
  const sinceMs = msOf(req.since);
  const untilMs = msOf(req.until);
  if (sinceMs !== undefined && untilMs !== undefined && untilMs < sinceMs) return { ok: false, field: "until", error: "until: before since" };
  const paths = req.field_mask?.paths ?? [];
  for (const p of paths) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(p)) return { ok: false, field: "field_mask.paths", error: `field_mask.paths: "${p}" is not a field path` };
  }
  return {
    ok: true,
    query: {
      match: filters.match,
      ...(sinceMs !== undefined ? { sinceMs } : {}),
      ...(untilMs !== undefined ? { untilMs } : {}),
      number,
      first,
      follow,
      newOnly: follow && number === 0 && sinceMs === undefined,
      ...(paths.length > 0 ? { mask: fieldMask(paths) } : {}),
    },
  };
}

/** Whether a flow's time is inside the query's window. */
export function inWindow(q: FlowsQuery, f: HubbleFlow): boolean {
  const t = msOf(f.time)!;
  return (q.sinceMs === undefined || t >= q.sinceMs) && (q.untilMs === undefined || t <= q.untilMs);
}

/** The replayed part of an answer from matching flows in time order: all, the first N or the last N (of items holding a flow). */
export function replay<T = HubbleFlow>(q: FlowsQuery, flows: readonly T[], flowOf: (t: T) => HubbleFlow = (t) => t as unknown as HubbleFlow): T[] {
  if (q.newOnly) return [];
  const picked = flows.filter((t) => {
    const f = flowOf(t);
    return q.match(f) && inWindow(q, f);
  });
  if (q.number === 0) return picked;
  return q.first ? picked.slice(0, q.number) : picked.slice(Math.max(0, picked.length - q.number));
}

type Tree = { [k: string]: Tree | true };

/** A protobuf FieldMask on a plain message: keeps only the listed paths (`source.identity`, `l4`). */
export function fieldMask(paths: readonly string[]): (f: HubbleFlow) => HubbleFlow {
  const tree: Tree = {};
  for (const p of paths) {
    let node = tree;
    const parts = p.split(".");
    parts.forEach((part, i) => {
      if (node[part] === true) return;
      if (i === parts.length - 1) node[part] = true;
      else node = (node[part] ??= {}) as Tree;
    });
  }
  const pick = (obj: Record<string, unknown>, t: Tree): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const [k, sub] of Object.entries(t)) {
      const v = obj[k];
      if (v === undefined) continue;
      if (sub === true || typeof v !== "object" || v === null || Array.isArray(v)) out[k] = v;
      else out[k] = pick(v as Record<string, unknown>, sub);
    }
    return out;
  };
  return (f) => pick(f as unknown as Record<string, unknown>, tree) as unknown as HubbleFlow;
}
