// The Membrane datapath as the agent sees it: the loaded object, typed map writes, attach, events, counters.
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { PolicyEntry, SubjectPolicy } from "../../core/model.ts";
import { BpfObject, RingBufferReader, attachTc, detachTc, type TcTarget } from "./loader.ts";
import {
  CONST,
  DROP_REASONS,
  LAYOUT,
  decodeEvent,
  encodeConfig,
  encodeEndpointKey,
  encodeEndpointValue,
  encodeIpcacheKey,
  encodeIpcacheValue,
  encodePolicyKey,
  encodePolicyValue,
  endpointFor,
  type DatapathConfig,
  type DropReasonCode,
  type EndpointEntry,
  type IpcacheEntry,
  type VerdictEvent,
} from "./layout.ts";

export const DATAPATH_OBJECT = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../bpf/build/datapath.o");

export const MAPS = {
  policy: "membrane_policy",
  ipcache: "membrane_ipcache",
  endpoints: "membrane_endpoints",
  conntrack: "membrane_conntrack",
  events: "membrane_events",
  drops: "membrane_drops",
  config: "membrane_config",
} as const;

export const PROGRAMS = { fromContainer: "from_container", toContainer: "to_container", fromOverlay: "from_overlay" } as const;

export class Datapath {
  /** The entries last written per subject, so an update knows what to remove. */
  private readonly written = new Map<number, readonly PolicyEntry[]>();
  private reader: RingBufferReader | null = null;

  private constructor(readonly object: BpfObject) {}

  /** Loads the object, reusing the maps pinned under /sys/fs/bpf/membrane/<scope>/. */
  static load(scope: string, opts: { objectPath?: string; pinRoot?: string } = {}): Datapath {
    return new Datapath(
      BpfObject.load(opts.objectPath ?? DATAPATH_OBJECT, { scope, ...(opts.pinRoot ? { pinRoot: opts.pinRoot } : {}) }),
    );
  }

  programFd(name: (typeof PROGRAMS)[keyof typeof PROGRAMS]): number {
    return this.object.programFd(name);
  }

  /** Attaches from-container on the host veth's ingress and to-container on its egress. */
  attachEndpoint(ifindex: number, netns?: string): void {
    const base = { ifindex, ...(netns ? { netns } : {}) };
    attachTc(this.programFd(PROGRAMS.fromContainer), { ...base, direction: "ingress" });
    attachTc(this.programFd(PROGRAMS.toContainer), { ...base, direction: "egress" });
  }

  detachEndpoint(ifindex: number, netns?: string): void {
    const base = { ifindex, ...(netns ? { netns } : {}) };
    for (const direction of ["ingress", "egress"] as const) detachTc({ ...base, direction } satisfies TcTarget);
  }

  /** Attaches from-overlay on the VXLAN (collect-metadata) device and records it as the tunnel. */
  attachOverlay(vxlanIfindex: number, netns?: string, eventsForwarded = true): void {
    this.setConfig({ vxlanIfindex, eventsForwarded });
    attachTc(this.programFd(PROGRAMS.fromOverlay), { ifindex: vxlanIfindex, direction: "ingress", ...(netns ? { netns } : {}) });
  }

  setConfig(cfg: DatapathConfig): void {
    this.object.map(MAPS.config).update(Buffer.alloc(4), encodeConfig(cfg));
  }

  setEndpoint(e: EndpointEntry): void {
    this.object.map(MAPS.endpoints).update(encodeEndpointKey(e.ip), encodeEndpointValue(e));
  }

  deleteEndpoint(ip: string): void {
    this.object.map(MAPS.endpoints).delete(encodeEndpointKey(ip));
  }

  setIpcache(e: IpcacheEntry): void {
    this.object.map(MAPS.ipcache).update(encodeIpcacheKey(e.cidr), encodeIpcacheValue(e));
  }

  deleteIpcache(cidr: string): void {
    this.object.map(MAPS.ipcache).delete(encodeIpcacheKey(cidr));
  }

  /**
   * Installs a subject's compiled policy: new and changed entries first, then removals, then the
   * endpoints' enforcement flags (when given); a failure rolls the policy map back and throws.
   */
  setSubjectPolicy(policy: SubjectPolicy, endpoints: readonly { ip: string; ifindex: number }[] = []): void {
    const keep = new Set(policy.entries.map((e) => encodePolicyKey(e).toString("hex")));
    const previous = this.written.has(policy.subject)
      ? this.written.get(policy.subject)!.map(encodePolicyKey)
      : this.pinnedKeysOf(policy.subject); // first write since this process started: read the pinned map
    this.object.map(MAPS.policy).applyBatch({
      upserts: policy.entries.map((e) => ({ key: encodePolicyKey(e), value: encodePolicyValue(e) })),
      deletes: previous.filter((k) => !keep.has(k.toString("hex"))),
    });
    this.written.set(policy.subject, policy.entries);
    for (const ep of endpoints) this.setEndpoint(endpointFor(ep.ip, ep.ifindex, policy));
  }

  /** The policy-map keys of a subject as the kernel has them (e.g. written before an agent restart). */
  private pinnedKeysOf(subject: number): Buffer[] {
    const offset = LAYOUT.policy_key.fields.subject.offset;
    return this.object.map(MAPS.policy).keys().filter((k) => k.readUInt32LE(offset) === subject);
  }

  /** Drops counted per reason (never loses a count), plus events lost to a full ring. */
  dropCounters(): { byReason: Record<string, bigint>; lostEvents: bigint } {
    const m = this.object.map(MAPS.drops);
    const key = (i: number): Buffer => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(i);
      return k;
    };
    const byReason: Record<string, bigint> = {};
    for (const [code, name] of Object.entries(DROP_REASONS)) {
      const n = m.lookupPerCpuSum(key(Number(code)));
      if (n > 0n) byReason[name] = n;
    }
    return { byReason, lostEvents: m.lookupPerCpuSum(key(0)) };
  }

  dropCount(code: DropReasonCode): bigint {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(code);
    return this.object.map(MAPS.drops).lookupPerCpuSum(k);
  }

  /** Starts delivering verdict events; returns a function that drains the ring synchronously. */
  onEvents(handler: (e: VerdictEvent) => void): () => number {
    this.reader?.stop();
    this.reader = new RingBufferReader(this.object.map(MAPS.events), (rec) => handler(decodeEvent(rec)));
    this.reader.start();
    const reader = this.reader;
    return () => reader.drain();
  }

  clearConntrack(): void {
    this.object.map(MAPS.conntrack).clear();
  }

  /** Forgets every policy entry, endpoint and ipcache entry (tests and benchmarks). */
  clearAll(): void {
    for (const m of [MAPS.policy, MAPS.ipcache, MAPS.endpoints, MAPS.conntrack]) this.object.map(m).clear();
    this.written.clear();
  }

  close(): void {
    this.reader?.stop();
    this.reader = null;
    this.object.close();
  }

  unpin(): void {
    this.object.unpin();
  }
}

export { CONST };
