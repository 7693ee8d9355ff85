// Synthetic datapath traffic for load tests: event records laid out as the kernel writes them, sent at a target rate.
import { CONST, DROP_REASON_CODES, LAYOUT, directionCode, parseAddress } from "../bpf/layout.ts";
import { PROTO_NUMBER, type Direction } from "../../core/model.ts";
import type { NodeState } from "../../core/wire.ts";

/** What one synthetic event says; the record carries it exactly as bpf/lib/events.h lays it out. */
export interface SyntheticEvent {
  readonly verdict: "forwarded" | "dropped";
  readonly direction: Direction;
  readonly reasonCode: number;
  readonly proto: number;
  readonly srcIdentity: number;
  readonly dstIdentity: number;
  readonly ruleId?: number;
  readonly ifindex: number;
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
}

/** A record of LAYOUT.event.size bytes, as the datapath puts it in the ring (timestamp in CLOCK_MONOTONIC ns). */
export function encodeEventRecord(e: SyntheticEvent, timestampNs: bigint, into: Buffer = Buffer.alloc(LAYOUT.event.size)): Buffer {
  const L = LAYOUT.event.fields;
  into.fill(0);
  const src = parseAddress(e.src);
  const dst = parseAddress(e.dst);
  into.writeBigUInt64LE(timestampNs, L.timestamp_ns.offset);
  into.writeUInt8(e.verdict === "dropped" ? CONST.EVENT_DROPPED : CONST.EVENT_FORWARDED, L.verdict.offset);
  into.writeUInt8(directionCode(e.direction), L.direction.offset);
  into.writeUInt8(e.reasonCode, L.reason.offset);
  into.writeUInt8(e.proto, L.proto.offset);
  into.writeUInt8(src.family, L.family.offset);
  into.writeUInt32LE(e.srcIdentity, L.src_identity.offset);
  into.writeUInt32LE(e.dstIdentity, L.dst_identity.offset);
  into.writeUInt32LE(e.ruleId ?? CONST.RULE_ID_NONE, L.rule_id.offset);
  into.writeUInt32LE(e.ifindex, L.ifindex.offset);
  src.bytes.copy(into, L.saddr.offset);
  dst.bytes.copy(into, L.daddr.offset);
  into.writeUInt16BE(e.sport, L.sport.offset);
  into.writeUInt16BE(e.dport, L.dport.offset);
  return into;
}

export interface PacedRunResult {
  readonly generated: number;
  readonly drops: number;
  /** Drop events generated per reason code. */
  readonly dropsByCode: Readonly<Record<number, number>>;
  readonly elapsedMs: number;
  /** What the generator achieved, events per second. */
  readonly rate: number;
}

export interface PacedRunOptions {
  /** Events per second the generator tries to hold. */
  readonly rate: number;
  readonly durationMs: number;
  /**
   * The traffic's patterns: event i is `patterns[i % patterns.length]` with a fresh timestamp and
   * source port 1024 + (i % 64000), so consecutive events are new connections. Encoded once, so the
   * generator's own cost stays out of the agent's way.
   */
  readonly patterns: readonly SyntheticEvent[];
  /** Where records go: the observer's input path (decode + handle), one record at a time, synchronously. */
  readonly sink: (record: Buffer) => void;
  /** Called between slices, e.g. to sample memory. */
  readonly onTick?: (elapsedMs: number, generated: number) => void;
}

/**
 * Sends events at `rate` for `durationMs`, in slices of at most 5 ms of work so the event loop keeps
 * serving the agent's APIs (as it must between ring-buffer polls); when the sink is slower than the
 * rate, the backlog is not made up (the achieved rate says so).
 */
export async function pacedRun(o: PacedRunOptions): Promise<PacedRunResult> {
  const L = LAYOUT.event.fields;
  const pool = o.patterns.map((e) => encodeEventRecord(e, 0n));
  const dropCodes = o.patterns.map((e) => (e.verdict === "dropped" ? e.reasonCode : -1));
  const record = Buffer.alloc(LAYOUT.event.size);
  const dropsByCode: Record<number, number> = {};
  let next = 0; // the schedule: event `next` is due at next / rate seconds
  let sent = 0;
  let drops = 0;
  const t0 = performance.now();
  for (;;) {
    const now = performance.now() - t0;
    if (now >= o.durationMs) break;
    const due = Math.floor((now * o.rate) / 1000);
    // Behind by more than 100 ms of traffic: skip ahead rather than burst (the rate is a target).
    next = Math.max(next, due - Math.floor(o.rate / 10));
    const sliceEnd = performance.now() + 5;
    while (next < due && performance.now() < sliceEnd) {
      for (let k = 0; k < 64 && next < due; k++, next++) {
        const p = next % pool.length;
        pool[p]!.copy(record);
        record.writeBigUInt64LE(process.hrtime.bigint(), L.timestamp_ns.offset);
        record.writeUInt16BE(1024 + (next % 64000), L.sport.offset);
        o.sink(record);
        sent++;
        const code = dropCodes[p]!;
        if (code >= 0) {
          drops++;
          dropsByCode[code] = (dropsByCode[code] ?? 0) + 1;
        }
      }
    }
    o.onTick?.(now, sent);
    await new Promise((r) => setImmediate(r));
  }
  const elapsedMs = performance.now() - t0;
  return { generated: sent, drops, dropsByCode, elapsedMs, rate: Math.round((sent * 1000) / elapsedMs) };
}

/** The traffic: 40 local pods talking to 40 remote ones on ever new source ports; half the events are drops of four kinds. */
export const LOAD_TRAFFIC = {
  localPod: (i: number): string => `10.210.1.${(i % 40) + 1}`,
  remotePod: (i: number): string => `10.210.2.${(i % 40) + 1}`,
  localIdentity: 1300,
  remoteIdentity: 1400,
  allowRule: 501,
  denyRule: 502,
};

const DROP_KINDS = [
  { code: DROP_REASON_CODES.DROP_POLICY_DENY!, ruleId: LOAD_TRAFFIC.denyRule },
  { code: DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY!, ruleId: undefined },
  { code: DROP_REASON_CODES.DROP_SPOOFED_SOURCE!, ruleId: undefined },
  { code: DROP_REASON_CODES.DROP_UNKNOWN_ENDPOINT!, ruleId: undefined },
];

function loadEvent(i: number): SyntheticEvent {
  const ingress = i % 3 === 0;
  const local = LOAD_TRAFFIC.localPod(i >> 2);
  const remote = LOAD_TRAFFIC.remotePod(i >> 3);
  const base = {
    direction: ingress ? ("ingress" as const) : ("egress" as const),
    proto: PROTO_NUMBER.TCP,
    srcIdentity: ingress ? LOAD_TRAFFIC.remoteIdentity : LOAD_TRAFFIC.localIdentity,
    dstIdentity: ingress ? LOAD_TRAFFIC.localIdentity : LOAD_TRAFFIC.remoteIdentity,
    ifindex: 7,
    src: ingress ? remote : local,
    dst: ingress ? local : remote,
    sport: 0, // set per event by pacedRun: a new connection each time
    dport: 8080,
  };
  if (i % 2 === 1) return { ...base, verdict: "forwarded", reasonCode: 0, ruleId: LOAD_TRAFFIC.allowRule };
  const k = DROP_KINDS[(i >> 1) % DROP_KINDS.length]!;
  return { ...base, verdict: "dropped", reasonCode: k.code, ...(k.ruleId !== undefined ? { ruleId: k.ruleId } : {}) };
}

/** One cycle of the load traffic (every combination of pods, direction and verdict kind). */
export const LOAD_PATTERNS: readonly SyntheticEvent[] = Array.from({ length: 960 }, (_, i) => loadEvent(i));

/** The agent's state: local and remote pods (named), their identities and the rules the events cite. */
export function loadState(): NodeState {
  const pods = (ip: (i: number) => string, ns: string, node: string | undefined, identity: number) =>
    Array.from({ length: 40 }, (_, i) => ({ prefix: `${ip(i)}/32`, identity, ...(node ? { node } : {}), pod: `${ns}/pod-${i}` }));
  return {
    policies: [
      {
        subject: LOAD_TRAFFIC.localIdentity,
        ingressEnforced: true,
        egressEnforced: true,
        entries: [
          { subject: LOAD_TRAFFIC.localIdentity, direction: "egress", peer: LOAD_TRAFFIC.remoteIdentity, proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: LOAD_TRAFFIC.allowRule },
          { subject: LOAD_TRAFFIC.localIdentity, direction: "ingress", peer: LOAD_TRAFFIC.remoteIdentity, proto: PROTO_NUMBER.TCP, port: 9090, portPrefixLen: 16, verdict: "deny", proxyPort: 0, ruleId: LOAD_TRAFFIC.denyRule },
        ],
      },
    ],
    ipcache: [...pods(LOAD_TRAFFIC.localPod, "shop", undefined, LOAD_TRAFFIC.localIdentity), ...pods(LOAD_TRAFFIC.remotePod, "default", "192.0.2.2", LOAD_TRAFFIC.remoteIdentity)],
    identities: [
      { id: LOAD_TRAFFIC.localIdentity, labels: ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"] },
      { id: LOAD_TRAFFIC.remoteIdentity, labels: ["k8s:app=client", "k8s:io.kubernetes.pod.namespace=default"] },
    ],
    rules: [
      { id: LOAD_TRAFFIC.allowRule, origin: { policyKind: "CiliumNetworkPolicy", namespace: "shop", name: "web", ruleIndex: 0, path: "spec.egress[0]" } },
      { id: LOAD_TRAFFIC.denyRule, origin: { policyKind: "CiliumNetworkPolicy", namespace: "shop", name: "web", ruleIndex: 0, path: "spec.ingressDeny[0]" } },
    ],
    policyGenerations: [{ key: "CiliumNetworkPolicy/shop/web", uid: "u1", generation: 1 }],
  };
}
