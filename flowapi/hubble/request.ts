// Our filter flags (flowapi/filter.ts, `membrane observe`) as a Hubble GetFlows request, so the CLI reads Hubble's API.
import { sinceToMs, type FlowFilter, type PodRef } from "../filter.ts";
import { IDENTITY } from "../../core/identity.ts";
import { CILIUM_EVENT_TYPE, timestampOf, type GetFlowsRequest, type HubbleFlowFilter } from "./types.ts";

export interface ObserveRequest {
  readonly request: GetFlowsRequest;
  /**
   * Whether the request's filters select exactly what `filter` does. When not (an exact `NS/POD`, which Hubble
   * reads as a prefix, or two flags on one side of the flow), they select more: the client filters the answers
   * again with `flowPredicate`, and `request.number` is left out so that `--last` is applied after that.
   */
  readonly exact: boolean;
}

const HUBBLE_PROTOCOL: Readonly<Record<string, string>> = { TCP: "tcp", UDP: "udp", SCTP: "sctp", ICMP: "icmpv4", ICMPV6: "icmpv6" };

type Filter = Record<string, unknown[]>;

/**
 * The request for `filter` at `now`: each "source or destination" flag doubles the FlowFilters (the whitelist's
 * filters are alternatives), flags of one side go in one FlowFilter (they must all hold). A follow without
 * `--since` or `--last` replays the whole buffer first, as `membrane observe -f` always did (Hubble's own
 * follow replays nothing then).
 */
export function observeRequest(filter: FlowFilter, follow: boolean, now: number = Date.now()): ObserveRequest {
  let exact = true;
  let filters: Filter[] = [{}];
  const pod = (p: PodRef): string => {
    // Hubble reads NS/NAME as a name prefix in NS; "/NAME" is a prefix in any namespace, as our bare name.
    if (p.namespace !== undefined) exact = false;
    return `${p.namespace ?? ""}/${p.pod}`;
  };
  const both = (field: string, values: readonly unknown[]): void => {
    for (const f of filters) {
      if (f[field] !== undefined) exact = false; // a second flag on this side: keep the first, filter again later
      else f[field] = [...values];
    }
  };
  const either = (source: string, destination: string, values: readonly unknown[]): void => {
    if (values.length === 0) return;
    filters = filters.flatMap((f) => [{ ...f }, { ...f }]);
    filters.forEach((f, i) => {
      const field = i % 2 === 0 ? source : destination;
      if (f[field] !== undefined) exact = false;
      else f[field] = [...values];
    });
  };
  if (filter.fromPod.length) both("source_pod", filter.fromPod.map(pod));
  if (filter.toPod.length) both("destination_pod", filter.toPod.map(pod));
  either("source_pod", "destination_pod", filter.namespace.map((ns) => `${ns}/`));
  either("source_pod", "destination_pod", filter.pod.map(pod));
  either("source_label", "destination_label", filter.label);
  either("source_identity", "destination_identity", filter.identity);
  // A node's host endpoint is reserved:host in the flows that node observes (Hubble has no other field for it).
  if (filter.host.length) {
    either("source_identity", "destination_identity", [IDENTITY.host]);
    both("node_name", filter.host);
  }
  either("source_workload", "destination_workload", filter.workload.map((w) => ({ kind: w.kind, name: w.name })));
  // Our port 0 also matches flows without ports (ICMP, …), Hubble's port filter never does: filter again instead.
  if (filter.port.includes(0)) exact = false;
  else either("source_port", "destination_port", filter.port.map(String));
  if (filter.fromFqdn.length) both("source_fqdn", filter.fromFqdn);
  if (filter.toFqdn.length) both("destination_fqdn", filter.toFqdn);
  either("source_fqdn", "destination_fqdn", filter.fqdn);
  if (filter.nodeLabel.length) both("node_labels", filter.nodeLabel);
  if (filter.verdict.length) both("verdict", filter.verdict);
  if (filter.protocol.length) both("protocol", filter.protocol.map((p) => HUBBLE_PROTOCOL[p.toUpperCase()] ?? p.toLowerCase()));
  if (filter.type.length) both("event_type", filter.type.map((t) => ({ type: CILIUM_EVENT_TYPE[t] })));
  if (filter.httpMethod.length) both("http_method", filter.httpMethod);
  if (filter.httpPath.length) both("http_path", filter.httpPath);
  if (filter.httpStatus.length) both("http_status_code", filter.httpStatus);
  if (filter.dnsQuery.length) both("dns_query", filter.dnsQuery);
  const sinceMs = filter.since !== undefined ? sinceToMs(filter.since, now) : undefined;
  const whitelist: HubbleFlowFilter[] = filters.filter((f) => Object.keys(f).length > 0);
  return {
    exact,
    request: {
      ...(whitelist.length > 0 ? { whitelist } : {}),
      ...(filter.last !== undefined && (exact || follow) ? { number: filter.last } : {}),
      ...(sinceMs !== undefined ? { since: timestampOf(Math.max(0, sinceMs)) } : follow && filter.last === undefined ? { since: timestampOf(1000) } : {}),
      follow,
    },
  };
}
