// The Membrane datapath as the agent sees it: the loaded object, typed map writes, attach, events, counters.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Direction, PolicyEntry, SubjectPolicy } from "../../core/model.ts";
import type { IPFamily } from "../../core/cidr.ts";
import { unknownAddressIdentity } from "../../core/identity.ts";
import pino from "pino";
import { BPFFS_ROOT, BpfError, BpfObject, RingBufferReader, attachTcx, closePinnedMap, detachTcx, openPinnedMap, tcxLinkLive, type TcTarget } from "./loader.ts";
import {
  CONST,
  DEFAULT_POLICY_MAP_ENTRIES,
  DROP_REASONS,
  LAYOUT,
  decodeEvent,
  formatAddress,
  encodeConfig,
  MONITOR_AGGREGATION_FLAGS,
  encodeEndpointKey,
  encodeEndpointValue,
  hostKeyOfTrieKey,
  ipcacheKeyId,
  ipcacheKeys,
  encodeIpcacheValue,
  writeIpcacheKeys,
  writeIpcacheValue,
  encodeIPBlockValue,
  encodeHostGuardKey,
  encodeHostGuardValue,
  type HostGuardEntry,
  encodePolicyKey,
  encodePolicyLensKey,
  encodePolicyLensValue,
  encodePolicyValue,
  parseAddress,
  decodePolicyLensValue,
  decodePolicyKey,
  endpointFor,
  policyLensOf,
  unionLens,
  NO_LENS,
  type PolicyLens,
  type DatapathConfig,
  type DropReasonCode,
  type EndpointEntry,
  type IpcacheEntry,
  type IPBlockEntry,
  type VerdictEvent,
} from "./layout.ts";
import type { MonitorAggregation } from "../monitor-aggregation.ts";
import { ProxyRedirect, REDIRECT_MAPS } from "./redirect.ts";

export const DATAPATH_OBJECT = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../bpf/build/datapath.o");

export const MAPS = {
  policy: "membrane_policy",
  policyLens: "membrane_policy_lens",
  ipcache: "membrane_ipcache",
  ipcacheHosts: "membrane_ipcache_hosts",
  ipBlocks: "membrane_ipblocks",
  endpoints: "membrane_endpoints",
  conntrack: "membrane_conntrack",
  events: "membrane_events",
  drops: "membrane_drops",
  audits: "membrane_audits",
  config: "membrane_config",
  encryption: "membrane_encryption",
  encryptedNodes: "membrane_encrypted_nodes",
  strictCidrs: "membrane_strict_cidrs",
  hostAddrs: "membrane_host_addrs",
  hostGuard: "membrane_host_guard",
  tailCalls: "membrane_tail_calls",
} as const;

export const PROGRAMS = { fromContainer: "from_container", toContainer: "to_container", fromOverlay: "from_overlay", fromWireguard: "from_wireguard", toHost: "to_host", fromHost: "from_host", podToHost: "pod_to_host" } as const;

/** Slots of membrane_tail_calls (bpf/lib/hostfw.h), each the program from-container hands a packet to. */
const TAIL_CALLS: readonly { readonly slot: number; readonly program: (typeof PROGRAMS)[keyof typeof PROGRAMS] }[] = [{ slot: 0, program: PROGRAMS.podToHost }];

const log = pino({ name: "datapath", level: process.env.LOG_LEVEL ?? "info" });

/** The errnos of a map that has no room (hash: E2BIG; LPM trie: ENOSPC; no-prealloc allocation: ENOMEM). */
const CAPACITY_ERRNOS = new Set([28, 7, 12]);

/** Whether a subject's compiled policy is in the map, or why not (then its endpoints drop everything). */
export type PolicyInstall = { readonly installed: true } | { readonly installed: false; readonly reason: string };

export class Datapath {
  private encrypted: ReadonlySet<string> = new Set();
  private dualStack = false;
  /** The entries last written per subject, so an update knows what to remove. */
  private readonly written = new Map<number, readonly PolicyEntry[]>();
  /** Subjects this process wrote to the policy map: their keys there are no longer the ones it found. */
  private readonly touched = new Set<number>();
  /**
   * The policy map's keys per subject as found, from one walk: a snapshot writes each of a node's subjects for the
   * first time one after the other, and a walk per subject allocated the whole map's keys each time. Dropped once
   * the synchronous write that built it is done (a later first write walks again).
   */
  private pinnedBySubject: Map<number, Buffer[]> | undefined;
  /** Subjects whose policy did not fit the policy map (their endpoints fail closed). */
  private readonly failed = new Set<number>();
  private reader: RingBufferReader | null = null;

  /** The redirect maps' view, made on first use. */
  private redirectMaps: ProxyRedirect | undefined;

  private constructor(readonly object: BpfObject) {}

  /**
   * Loads the object, reusing the maps pinned under /sys/fs/bpf/membrane/<scope>/, and its programs when the
   * last load pinned them for the same object and sizes (object.reused: the kernel does not verify them again).
   * policyMapEntries sizes the policy map (default: the object's 262,144), e.g. small to test overflow.
   */
  static load(scope: string, opts: { objectPath?: string; pinRoot?: string; policyMapEntries?: number } = {}): Datapath {
    // The object's own size is given as none: the same program pins (their digest names the sizes given) as a load without it.
    const policyMapEntries = opts.policyMapEntries === DEFAULT_POLICY_MAP_ENTRIES ? undefined : opts.policyMapEntries;
    refuseSmallerThanPinned(path.join(opts.pinRoot ?? BPFFS_ROOT, scope, MAPS.policy), policyMapEntries ?? DEFAULT_POLICY_MAP_ENTRIES);
    const dp = new Datapath(
      BpfObject.load(opts.objectPath ?? DATAPATH_OBJECT, {
        scope,
        reusePrograms: true,
        // Grown by appended fields: an earlier version's established flows keep their conntrack entries (unstamped: the
        // endpoint check judges their next packet) and the node's config its settings (endpoint generation 0).
        widenedValues: [MAPS.conntrack, MAPS.config],
        ...(opts.pinRoot ? { pinRoot: opts.pinRoot } : {}),
        ...(policyMapEntries !== undefined ? { maxEntries: { [MAPS.policy]: policyMapEntries } } : {}),
      }),
    );
    dp.copyTrieAddressesToHosts();
    dp.dropPartialPolicyCopy();
    dp.rebuildLensIfMissing();
    dp.fillTailCalls();
    return dp;
  }

  /**
   * Points the tail-call slots at this object's programs (the pinned array outlives the agent: a new
   * agent's programs replace the old ones in place). An empty slot fails closed in the datapath.
   */
  private fillTailCalls(): void {
    const m = this.object.map(MAPS.tailCalls);
    for (const t of TAIL_CALLS) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(t.slot);
      const value = Buffer.alloc(4);
      value.writeUInt32LE(this.programFd(t.program));
      m.update(key, value);
    }
  }

  /**
   * A policy map replaced (another size) with only some of its entries copied would enforce part of a subject's policy,
   * an allow without the deny beside it: empty it and the lens map instead. Until the snapshot that lostPinnedState asks
   * for, an enforced endpoint then finds no entry and is default-deny, an unenforced one stays open as before.
   */
  private dropPartialPolicyCopy(): void {
    if (!this.object.replaced.some((r) => r.name === MAPS.policy && !r.complete)) return;
    this.object.map(MAPS.policy).clear();
    this.object.map(MAPS.policyLens).clear();
    log.warn({ map: MAPS.policy }, "the replaced policy map's entries did not all follow: emptied until the next snapshot (enforced endpoints are default-deny)");
  }

  /**
   * Policy entries without their lens are never probed: after an upgrade from before the lens map
   * (its policy map copied over, the lens map new and empty), derive every subject's lens from the
   * keys in the policy map.
   */
  private rebuildLensIfMissing(): void {
    if (!this.object.map(MAPS.policyLens).isEmpty()) return;
    const lens = new Map<string, { subject: number; direction: Direction; lens: PolicyLens }>();
    for (const key of this.object.map(MAPS.policy).keys()) {
      const e = decodePolicyKey(key);
      const id = `${e.subject}/${e.direction}`;
      const have = lens.get(id)?.lens ?? NO_LENS;
      lens.set(id, { subject: e.subject, direction: e.direction, lens: unionLens(have, policyLensOf([e], e.direction)) });
    }
    for (const l of lens.values()) this.setLens(l.subject, l.direction, l.lens);
    if (lens.size) log.info({ lenses: lens.size }, "policy lens rebuilt from the policy map");
  }

  /**
   * Maps pinned by an agent from before the hosts hash hold addresses in the trie only: copy them to
   * the hash, so that these programs find what the earlier agent wrote before the first snapshot.
   */
  private copyTrieAddressesToHosts(): void {
    const trie = this.object.map(MAPS.ipcache);
    const hosts = this.object.map(MAPS.ipcacheHosts);
    if (!hosts.isEmpty()) return; // this version wrote it: every address is in both already
    let copied = 0;
    for (const key of trie.keys()) {
      const hostKey = hostKeyOfTrieKey(key);
      if (!hostKey) continue;
      const value = trie.lookup(key);
      if (!value) continue;
      hosts.update(hostKey, value);
      copied++;
    }
    if (copied) log.info({ copied }, "ipcache addresses of an earlier version copied from the trie to the hosts hash");
  }

  /** Whether loading replaced a map of the node's state without all its entries (then only a snapshot restores it). */
  lostPinnedState(): boolean {
    const state: readonly string[] = [MAPS.policy, MAPS.policyLens, MAPS.ipcache, MAPS.ipcacheHosts, MAPS.ipBlocks, MAPS.endpoints];
    return this.object.replaced.some((r) => !r.complete && state.includes(r.name));
  }

  programFd(name: (typeof PROGRAMS)[keyof typeof PROGRAMS]): number {
    return this.object.programFd(name);
  }

  /** Attaches from-container on the host veth's ingress and to-container on its egress. */
  attachEndpoint(ifindex: number, netns?: string): void {
    const base = { ifindex, ...(netns ? { netns } : {}) };
    this.attach(PROGRAMS.fromContainer, { ...base, direction: "ingress" });
    this.attach(PROGRAMS.toContainer, { ...base, direction: "egress" });
  }

  detachEndpoint(ifindex: number, netns?: string): void {
    const base = { ifindex, ...(netns ? { netns } : {}) };
    for (const direction of ["ingress", "egress"] as const) {
      const t: TcTarget = { ...base, direction };
      detachTcx(t, this.linkPin(t));
    }
  }

  /** Attaches from-overlay on the VXLAN (collect-metadata) device and records it as the tunnel (the monitor aggregation level stays). */
  attachOverlay(vxlanIfindex: number, netns?: string): void {
    this.setConfigField("vxlan_ifindex", vxlanIfindex);
    this.attach(PROGRAMS.fromOverlay, { ifindex: vxlanIfindex, direction: "ingress", ...(netns ? { netns } : {}) });
  }

  /** The host firewall on a node device: to-host on its ingress, from-host on its egress (only the node's own addresses are judged). */
  attachHostDevice(ifindex: number, netns?: string): void {
    const base = { ifindex, ...(netns ? { netns } : {}) };
    this.attach(PROGRAMS.toHost, { ...base, direction: "ingress" });
    this.attach(PROGRAMS.fromHost, { ...base, direction: "egress" });
  }

  detachHostDevice(ifindex: number, netns?: string): void {
    this.detachEndpoint(ifindex, netns); // the same two directions and link pins
  }

  /** One of the node's own addresses as the host endpoint (identity reserved:host, the host policy's flags). */
  setHostAddress(e: Omit<EndpointEntry, "ifindex" | "identity">): void {
    this.object.map(MAPS.hostAddrs).update(encodeEndpointKey(e.ip), encodeEndpointValue({ ...e, ifindex: 0, identity: CONST.IDENTITY_HOST }));
  }

  /** Removes every host address not in keep. */
  pruneHostAddresses(keep: readonly string[]): void {
    const kept = new Set(keep.map((ip) => encodeEndpointKey(ip).toString("hex")));
    const m = this.object.map(MAPS.hostAddrs);
    for (const k of m.keys()) if (!kept.has(k.toString("hex"))) m.delete(k);
  }

  /** The lock-out guard, exactly these entries: new ones first, then the ones that left (none is ever missing in between). */
  setHostGuard(entries: readonly HostGuardEntry[]): void {
    const m = this.object.map(MAPS.hostGuard);
    const keep = new Set<string>();
    for (const e of entries) {
      const k = encodeHostGuardKey(e);
      keep.add(k.toString("hex"));
      m.update(k, encodeHostGuardValue(e));
    }
    for (const k of m.keys()) if (!keep.has(k.toString("hex"))) m.delete(k);
  }

  /** Removes the pins of links whose interface is gone (e.g. deleted while the agent was down); returns how many. */
  pruneDefunctLinks(): number {
    const dir = path.join(this.object.pinDir, "links");
    let pruned = 0;
    for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
      const pin = path.join(dir, name);
      if (tcxLinkLive(pin)) continue;
      fs.rmSync(pin, { force: true });
      pruned++;
    }
    return pruned;
  }

  private attach(program: (typeof PROGRAMS)[keyof typeof PROGRAMS], t: TcTarget): void {
    attachTcx(this.programFd(program), t, this.linkPin(t));
  }

  /**
   * Where the tcx link of an interface's direction is pinned, beside the maps:
   * links/<netns>-<ifindex>-<direction> (bpffs reserves dots in names: other characters are %-escaped).
   */
  private linkPin(t: TcTarget): string {
    const netns = (t.netns ?? "host").replace(/[^A-Za-z0-9_-]/g, (ch) => `%${ch.charCodeAt(0).toString(16).padStart(2, "0")}`);
    return path.join(this.object.pinDir, "links", `${netns}-${t.ifindex}-${t.direction}`);
  }

  /** Writes the whole config; the endpoint generation only moves forward (a stamp of an older one must never match again). */
  setConfig(cfg: DatapathConfig): void {
    const value = encodeConfig(cfg);
    value.writeUInt32LE((this.endpointGeneration() + 1) >>> 0, LAYOUT.config_value.fields.ep_gen.offset);
    this.object.map(MAPS.config).update(Buffer.alloc(4), value);
    this.dualStack = cfg.dualStack ?? false;
  }

  /** The endpoint generation the programs compare conntrack stamps with (config_value.ep_gen, bpf/datapath.c endpoint_fast_path). */
  endpointGeneration(): number {
    return this.object.map(MAPS.config).lookup(Buffer.alloc(4))?.readUInt32LE(LAYOUT.config_value.fields.ep_gen.offset) ?? 0;
  }

  /**
   * After every write or delete in the endpoints map (the entry first, then this): known flows stamped before it take
   * the endpoint check again at their next packet, so a changed interface, identity or EP_F_POLICY_FAILED, or a
   * removed endpoint, holds for established flows as for new ones.
   */
  private endpointsChanged(): void {
    this.setConfigField("ep_gen", (this.endpointGeneration() + 1) >>> 0);
  }

  /** The node addresses last given to setEncryptedNodes: their peer is on an up WireGuard device, so traffic to them is encrypted (flows say so). */
  encryptedNodes(): ReadonlySet<string> {
    return this.encrypted;
  }

  /** Strict encryption: cross-node traffic only to nodes set by setEncryptedNodes, the rest dropped (UNENCRYPTED). */
  setEncryptionStrict(strict: boolean): void {
    this.setEncryptionField("strict", strict ? 1 : 0);
  }

  /**
   * The WireGuard device pod packets are routed into (no VXLAN) for nodes set as routed by setEncryptedNodes;
   * from-wireguard goes on its ingress (the source identity from the ipcache). 0: none, every node is
   * reached through the overlay.
   */
  setWireguardDevice(ifindex: number, netns?: string): void {
    if (ifindex > 0) this.attach(PROGRAMS.fromWireguard, { ifindex, direction: "ingress", ...(netns ? { netns } : {}) });
    this.setEncryptionField("wireguard_ifindex", ifindex);
  }

  /**
   * Strict mode's pod CIDRs (the other nodes'): a pod packet to one of them that does not take the tunnel (its pod not
   * in the ipcache yet) is dropped as UNENCRYPTED instead of following the node's route in clear. Replaces the set.
   */
  setStrictCIDRs(cidrs: readonly string[]): void {
    const m = this.object.map(MAPS.strictCidrs);
    const want = new Map(cidrs.map((c) => { const key = ipcacheKeys(c).trie; return [key.toString("hex"), key] as const; }));
    for (const key of want.values()) m.update(key, Buffer.from([1]));
    for (const key of m.keys()) if (!want.has(key.toString("hex"))) m.delete(key);
  }

  private setEncryptionField(field: keyof typeof LAYOUT.encryption_value.fields, value: number): void {
    const m = this.object.map(MAPS.encryption);
    const v = m.lookup(Buffer.alloc(4)) ?? Buffer.alloc(LAYOUT.encryption_value.size);
    v.writeUInt32LE(value >>> 0, LAYOUT.encryption_value.fields[field].offset);
    m.update(Buffer.alloc(4), v);
  }

  /**
   * The node addresses (IPv4) with a working tunnel: added before the ones gone are removed. Those also in
   * `routed` have their pod CIDRs as their peer's allowed IPs: pod packets to them go into the WireGuard
   * device without VXLAN.
   */
  setEncryptedNodes(ips: readonly string[], routed: ReadonlySet<string> = new Set()): void {
    this.encrypted = new Set(ips);
    const m = this.object.map(MAPS.encryptedNodes);
    const want = new Map(ips.map((ip) => [parseAddress(ip).bytes.subarray(0, 4).toString("hex"), { key: parseAddress(ip).bytes.subarray(0, 4), routed: routed.has(ip) }]));
    for (const { key, routed: r } of want.values()) m.update(key, Buffer.from([CONST.ENCRYPTED_NODE_F_TUNNEL | (r ? CONST.ENCRYPTED_NODE_F_ROUTED : 0)]));
    for (const key of m.keys()) if (!want.has(key.toString("hex"))) m.delete(key);
  }

  /** Which packets of allowed connections the programs report from now on (drops always are); the tunnel device and audit mode stay. */
  setMonitorAggregation(level: MonitorAggregation): void {
    this.setConfigField("flags", MONITOR_AGGREGATION_FLAGS[level], MONITOR_AGGREGATION_FLAGS.none);
  }

  /**
   * Policy audit mode for the whole node, from the next new connection on: a packet policy would
   * drop passes and is reported as an audit (bpf/lib/audit.h). Connections audited in stay open
   * when it is switched off (their conntrack entries), new ones are enforced.
   */
  setPolicyAuditMode(on: boolean): void {
    this.setConfigField("flags", on ? CONST.CONFIG_F_POLICY_AUDIT : 0, CONST.CONFIG_F_POLICY_AUDIT);
  }

  /**
   * --allow-localhost: true (policy) has the pods' ingress policy judge the node's own new connections to them as
   * reserved:host's; false (always, the default) lets them pass (bpf/lib/localhost.h). A pod at reserved:init is
   * reachable by its node either way.
   */
  setLocalhostPolicy(policy: boolean): void {
    this.setConfigField("flags", policy ? CONST.CONFIG_F_LOCALHOST_POLICY : 0, CONST.CONFIG_F_LOCALHOST_POLICY);
  }

  /**
   * Whether the node runs both address families (Cilium's dual-stack; the agent's --node-ip names one of each): an
   * address outside the ipcache is then reserved:world-ipv4 or reserved:world-ipv6 by its family, else reserved:world
   * in both (bpf/lib/ipcache.h ipcache_unknown_identity), from the next new connection on.
   */
  setDualStack(on: boolean): void {
    this.setConfigField("flags", on ? CONST.CONFIG_F_DUAL_STACK : 0, CONST.CONFIG_F_DUAL_STACK);
    this.dualStack = on;
  }

  /** The identity the programs give an address of `family` outside the ipcache (user space names it as they do). */
  unknownAddressIdentity(family: IPFamily | undefined): number {
    return unknownAddressIdentity(family, this.dualStack);
  }

  /** Whether the node-wide audit mode is set in the config the programs read. */
  policyAuditMode(): boolean {
    const value = this.object.map(MAPS.config).lookup(Buffer.alloc(4));
    return value !== undefined && (value.readUInt32LE(LAYOUT.config_value.fields.flags.offset) & CONST.CONFIG_F_POLICY_AUDIT) !== 0;
  }

  /**
   * Bits of one field of the config element (those in mask, all by default), the rest as they are:
   * the overlay's attach, the monitor aggregation and audit mode each own theirs.
   */
  private setConfigField(field: "vxlan_ifindex" | "flags" | "ep_gen", value: number, mask = 0xffffffff): void {
    const m = this.object.map(MAPS.config);
    const key = Buffer.alloc(4);
    const current = m.lookup(key) ?? Buffer.alloc(LAYOUT.config_value.size);
    const next = Buffer.from(current);
    const offset = LAYOUT.config_value.fields[field].offset;
    next.writeUInt32LE(((current.readUInt32LE(offset) & ~mask) | (value & mask)) >>> 0, offset);
    m.update(key, next);
  }

  /** Writes a local endpoint; one whose identity's policy could not be installed keeps failing closed. */
  setEndpoint(e: EndpointEntry): void {
    const value = encodeEndpointValue(e);
    this.object.map(MAPS.endpoints).update(encodeEndpointKey(e.ip), this.failed.has(e.identity) ? withFlag(value, CONST.EP_F_POLICY_FAILED, true) : value);
    this.endpointsChanged();
  }

  deleteEndpoint(ip: string): void {
    this.object.map(MAPS.endpoints).delete(encodeEndpointKey(ip));
    this.endpointsChanged();
  }

  /** Removes every endpoint entry whose key (encodeEndpointKey, hex) is not in keep; returns how many went. */
  pruneEndpoints(keep: ReadonlySet<string>): number {
    const m = this.object.map(MAPS.endpoints);
    let removed = 0;
    for (const k of m.keys()) if (!keep.has(k.toString("hex")) && m.delete(k)) removed++;
    if (removed) this.endpointsChanged();
    return removed;
  }

  /** An address goes to the hosts hash and the trie, a CIDR to the trie. */
  setIpcache(e: IpcacheEntry): void {
    const keys = ipcacheKeys(e.cidr);
    const value = encodeIpcacheValue(e);
    if (keys.host) this.object.map(MAPS.ipcacheHosts).update(keys.host, value);
    this.object.map(MAPS.ipcache).update(keys.trie, value);
  }

  /** The trie first, the hosts hash last: the programs probe the hash first, so no lookup sees a half-removed address. */
  deleteIpcache(cidr: string): void {
    const keys = ipcacheKeys(cidr);
    this.object.map(MAPS.ipcache).delete(keys.trie);
    if (keys.host) this.object.map(MAPS.ipcacheHosts).delete(keys.host);
  }

  /** The encoded value the datapath holds for exactly this prefix, if any. */
  ipcacheValue(cidr: string): Buffer | undefined {
    const keys = ipcacheKeys(cidr);
    if (keys.host) return this.object.map(MAPS.ipcacheHosts).lookup(keys.host);
    const value = this.object.map(MAPS.ipcache).lookup(keys.trie); // a trie lookup answers with the longest prefix
    return value && this.object.map(MAPS.ipcache).keys().some((k) => k.equals(keys.trie)) ? value : undefined;
  }

  /**
   * Writes many entries as setIpcache does each, encoded once into arrays laid back to back and written in batches
   * (BPF_MAP_UPDATE_BATCH where the map type has it): the hosts hash first, then the trie. A snapshot's 51,000
   * entries cost no Buffer per key. A bad entry throws before anything is written.
   */
  setIpcacheMany(entries: readonly IpcacheEntry[]): void {
    const n = entries.length;
    const trie = Buffer.alloc(n * LAYOUT.ipcache_key.size);
    const values = Buffer.alloc(n * LAYOUT.ipcache_value.size);
    const hosts = Buffer.alloc(n * LAYOUT.ipcache_host_key.size);
    const hostValues = Buffer.alloc(n * LAYOUT.ipcache_value.size);
    let h = 0;
    for (let i = 0; i < n; i++) {
      const e = entries[i]!;
      writeIpcacheValue(e, values, i * LAYOUT.ipcache_value.size);
      if (writeIpcacheKeys(e.cidr, trie, i * LAYOUT.ipcache_key.size, hosts, h * LAYOUT.ipcache_host_key.size)) {
        values.copy(hostValues, h * LAYOUT.ipcache_value.size, i * LAYOUT.ipcache_value.size, (i + 1) * LAYOUT.ipcache_value.size);
        h++;
      }
    }
    this.object.map(MAPS.ipcacheHosts).updateMany(hosts, hostValues, h);
    this.object.map(MAPS.ipcache).updateMany(trie, values, n);
  }

  /** Whether the ipcache (trie and hosts hash) holds nothing: one get-next-key call each. */
  ipcacheIsEmpty(): boolean {
    return this.object.map(MAPS.ipcache).isEmpty() && this.object.map(MAPS.ipcacheHosts).isEmpty();
  }

  /** Removes every ipcache entry whose prefix is not in keep (also those pinned before a restart): the trie first, then the hosts hash. */
  pruneIpcache(keep: Iterable<string>): void {
    const kept = { trie: new Set<number | string>(), host: new Set<number | string>() };
    const trieKey = Buffer.alloc(LAYOUT.ipcache_key.size);
    const hostKey = Buffer.alloc(LAYOUT.ipcache_host_key.size);
    for (const cidr of keep) {
      if (writeIpcacheKeys(cidr, trieKey, 0, hostKey, 0)) kept.host.add(ipcacheKeyId("host", hostKey, 0));
      kept.trie.add(ipcacheKeyId("trie", trieKey, 0));
    }
    for (const [name, kind] of [[MAPS.ipcache, "trie"], [MAPS.ipcacheHosts, "host"]] as const) {
      const m = this.object.map(name);
      const stale: Buffer[] = [];
      m.forEachKey((buf, offset) => {
        if (!kept[kind].has(ipcacheKeyId(kind, buf, offset))) stale.push(Buffer.from(buf.subarray(offset, offset + m.keySize)));
      });
      for (const k of stale) m.delete(k);
    }
  }

  /** A NetworkPolicy ipBlock prefix and its ipBlock identity (bpf/lib/ipblock.h). */
  setIPBlock(e: IPBlockEntry): void {
    this.object.map(MAPS.ipBlocks).update(ipcacheKeys(e.cidr).trie, encodeIPBlockValue(e));
  }

  deleteIPBlock(cidr: string): void {
    this.object.map(MAPS.ipBlocks).delete(ipcacheKeys(cidr).trie);
  }

  /** Removes every ipBlock prefix not in keep (also those pinned before a restart). */
  pruneIPBlocks(keep: Iterable<string>): void {
    const kept = new Set([...keep].map((cidr) => ipcacheKeys(cidr).trie.toString("hex")));
    const m = this.object.map(MAPS.ipBlocks);
    for (const k of m.keys()) if (!kept.has(k.toString("hex"))) m.delete(k);
  }

  /**
   * Installs a subject's compiled policy: new and changed entries first, then removals, then the
   * endpoints' enforcement flags (when given). The keys the kernel probes (the subject's lens:
   * port-prefix lengths in use, proto ANY or not, per peer kind) are widened to old ∪ new before
   * the entries change and narrowed to new after, so no packet misses an entry that is in the map
   * (a superset only costs probes). A direction without entries has no lens: one lookup decides.
   *
   * When the policy map has no room for it, the subject fails closed: the batch is rolled back,
   * every local endpoint of that identity is flagged to drop all its traffic (reason
   * POLICY_OVERFLOW), its remaining entries are removed (they no longer decide anything and
   * other subjects may need the room), and the result says why. A later install that fits lifts
   * the flag. Any other failure rolls the batch back and throws.
   */
  setSubjectPolicy(policy: SubjectPolicy, endpoints: readonly { ip: string; ifindex: number }[] = []): PolicyInstall {
    const subject = policy.subject;
    const firstWrite = !this.written.has(subject);
    const keep = new Set(policy.entries.map((e) => encodePolicyKey(e).toString("hex")));
    const previous = firstWrite
      ? this.pinnedKeysOf(subject) // first write since this process started: read the pinned map
      : this.written.get(subject)!.map(encodePolicyKey);
    this.touched.add(subject);
    const lens = DIRECTIONS.map((d) => ({ direction: d, now: this.lensOf(subject, d), next: policyLensOf(policy.entries, d) }));
    try {
      for (const l of lens) this.setLens(subject, l.direction, unionLens(l.now, l.next));
      this.object.map(MAPS.policy).applyBatch({
        upserts: policy.entries.map((e) => ({ key: encodePolicyKey(e), value: encodePolicyValue(e) })),
        deletes: previous.filter((k) => !keep.has(k.toString("hex"))),
      });
    } catch (err) {
      if (!(err instanceof BpfError && CAPACITY_ERRNOS.has(err.errno))) {
        for (const l of lens) this.setLens(subject, l.direction, l.now); // the batch was rolled back
        throw err;
      }
      const reason = `policy map full: ${policy.entries.length} entries of identity ${subject} do not fit (${err.message})`;
      this.failClosed(subject, previous);
      for (const d of DIRECTIONS) this.setLens(subject, d, NO_LENS);
      for (const ep of endpoints) this.setEndpoint(endpointFor(ep.ip, ep.ifindex, policy)); // flagged: the subject has failed
      log.error({ subject, entries: policy.entries.length, error: err.message }, "policy does not fit the policy map; its endpoints fail closed");
      return { installed: false, reason };
    }
    for (const l of lens) this.setLens(subject, l.direction, l.next);
    this.written.set(subject, policy.entries);
    // Lift the flag of a subject that failed before (also one flagged before this process started).
    if (this.failed.delete(subject) || firstWrite) this.flagEndpointsOf(subject, false);
    for (const ep of endpoints) this.setEndpoint(endpointFor(ep.ip, ep.ifindex, policy));
    return { installed: true };
  }

  /**
   * The first half of a compiled delta (core/wire SubjectDelta) on a subject the map holds: the lens
   * widens to old ∪ new, then only the added entries are upserted (nothing is removed yet, so no
   * packet loses an allow; a new deny is in force at once). Returns false when the subject cannot
   * take a delta (it failed closed, or the entries do not fit; the batch is rolled back): the caller
   * installs the whole policy with setSubjectPolicy instead.
   */
  addSubjectEntries(next: SubjectPolicy, added: readonly PolicyEntry[]): boolean {
    const subject = next.subject;
    if (this.failed.has(subject)) return false;
    this.touched.add(subject);
    for (const d of DIRECTIONS) this.setLens(subject, d, unionLens(this.lensOf(subject, d), policyLensOf(next.entries, d)));
    // Until the removals, the map holds old ∪ added: a full install in between reads the map's keys.
    this.written.delete(subject);
    try {
      this.object.map(MAPS.policy).applyBatch({ upserts: added.map((e) => ({ key: encodePolicyKey(e), value: encodePolicyValue(e) })), deletes: [] });
    } catch (err) {
      if (err instanceof BpfError && CAPACITY_ERRNOS.has(err.errno)) return false; // the wider lens only costs probes until the full install sets it
      throw err;
    }
    return true;
  }

  /** The second half of a compiled delta: the removed keys go, then the lens narrows to the new entries. */
  removeSubjectEntries(next: SubjectPolicy, removed: readonly PolicyEntry[]): void {
    this.touched.add(next.subject);
    this.object.map(MAPS.policy).applyBatch({ upserts: [], deletes: removed.map(encodePolicyKey) });
    for (const d of DIRECTIONS) this.setLens(next.subject, d, policyLensOf(next.entries, d));
    this.written.set(next.subject, next.entries);
  }

  /** The subjects (identities) whose policy could not be installed: their endpoints drop everything. */
  failedSubjects(): ReadonlySet<number> {
    return this.failed;
  }

  private failClosed(subject: number, pinned: readonly Buffer[]): void {
    this.failed.add(subject);
    // The flag first: from here on the endpoints drop everything, so removing their entries opens nothing.
    this.flagEndpointsOf(subject, true);
    const policyMap = this.object.map(MAPS.policy);
    for (const key of pinned) policyMap.delete(key);
    this.written.set(subject, []);
  }

  /** The keys the kernel probes for a subject's direction. */
  private lensOf(subject: number, direction: Direction): PolicyLens {
    const value = this.object.map(MAPS.policyLens).lookup(encodePolicyLensKey(subject, direction));
    return value ? decodePolicyLensValue(value) : NO_LENS;
  }

  private setLens(subject: number, direction: Direction, lens: PolicyLens): void {
    const m = this.object.map(MAPS.policyLens);
    const key = encodePolicyLensKey(subject, direction);
    if (lens.peerLens !== 0 || lens.wildcardLens !== 0) m.update(key, encodePolicyLensValue(lens));
    else if (m.lookup(key)) m.delete(key);
  }

  /** Sets or clears the policy-failed flag of every local endpoint whose identity is `subject`. */
  private flagEndpointsOf(subject: number, failed: boolean): void {
    const endpoints = this.object.map(MAPS.endpoints);
    const F = LAYOUT.endpoint_value.fields;
    for (const key of endpoints.keys()) {
      const value = endpoints.lookup(key);
      if (!value || value.readUInt32LE(F.identity.offset) !== subject) continue;
      const next = withFlag(value, CONST.EP_F_POLICY_FAILED, failed);
      if (!next.equals(value)) {
        endpoints.update(key, next);
        this.endpointsChanged();
      }
    }
  }

  /** The policy-map keys of a subject as the kernel has them (e.g. written before an agent restart). */
  private pinnedKeysOf(subject: number): Buffer[] {
    const offset = LAYOUT.policy_key.fields.subject.offset;
    const policy = this.object.map(MAPS.policy);
    const copy = (keys: Buffer, at: number): Buffer => Buffer.from(keys.subarray(at, at + policy.keySize));
    if (this.touched.has(subject)) {
      // Written by this process (then a delta made it read the map again): its keys now, from a walk copying only them.
      const out: Buffer[] = [];
      policy.forEachKey((keys, at) => {
        if (keys.readUInt32LE(at + offset) === subject) out.push(copy(keys, at));
      });
      return out;
    }
    if (!this.pinnedBySubject) {
      const by = new Map<number, Buffer[]>();
      policy.forEachKey((keys, at) => {
        const s = keys.readUInt32LE(at + offset);
        if (this.touched.has(s)) return;
        const list = by.get(s);
        if (list) list.push(copy(keys, at));
        else by.set(s, [copy(keys, at)]);
      });
      this.pinnedBySubject = by;
      queueMicrotask(() => (this.pinnedBySubject = undefined));
    }
    return this.pinnedBySubject.get(subject) ?? [];
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

  /** Events lost to a full ring, on each CPU (index = CPU): the programs count them where the reservation failed. */
  lostEventsPerCpu(): bigint[] {
    const k = Buffer.alloc(4); // key 0 of the drops map: the ring's losses
    return this.object.map(MAPS.drops).lookupPerCpu(k);
  }

  /** Policy drops that audit mode let pass, per would-be drop reason (never loses a count). */
  auditCounters(): Record<string, bigint> {
    const m = this.object.map(MAPS.audits);
    const out: Record<string, bigint> = {};
    for (const [code, name] of Object.entries(DROP_REASONS)) {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(Number(code));
      const n = m.lookupPerCpuSum(k);
      if (n > 0n) out[name] = n;
    }
    return out;
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

  /** The proxy redirect's maps (bpf/lib/redirect.h): one for the object's life, so its reused lookup buffers are reused (a proxy asks per query). */
  get redirect(): ProxyRedirect {
    return (this.redirectMaps ??= new ProxyRedirect(this.object));
  }

  /** The destinations of live egress connections in conntrack (an address still in use). */
  liveEgressDestinations(): Set<string> {
    const L = LAYOUT.ct_key.fields;
    const V = LAYOUT.ct_value.fields;
    const now = process.hrtime.bigint();
    const out = new Set<string>();
    const ct = this.object.map(MAPS.conntrack);
    for (const k of ct.keys()) {
      if (k.readUInt8(L.direction.offset) !== CONST.DIR_EGRESS) continue;
      const v = ct.lookup(k);
      if (!v || v.readBigUInt64LE(V.expires_ns.offset) <= now) continue;
      out.add(formatAddress(k.readUInt8(L.family.offset), k, L.daddr.offset));
    }
    return out;
  }

  /** Forgets every policy entry, endpoint, ipcache and ipBlock entry (tests and benchmarks). */
  clearAll(): void {
    for (const m of [MAPS.policy, MAPS.policyLens, MAPS.ipcache, MAPS.ipcacheHosts, MAPS.ipBlocks, MAPS.endpoints, MAPS.conntrack, REDIRECT_MAPS.redirects, REDIRECT_MAPS.proxyPorts, MAPS.hostAddrs, MAPS.hostGuard]) this.object.map(m).clear();
    this.endpointsChanged();
    this.written.clear();
    this.failed.clear();
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

const DIRECTIONS: readonly Direction[] = ["ingress", "egress"];

/** A policy map size below the entries the pinned policy map holds (the agent refuses to start rather than lose some). */
export class PolicyMapTooSmall extends RangeError {
  constructor(
    readonly size: number,
    readonly pinned: number,
    readonly pin: string,
  ) {
    super(`a policy map of ${size} entries cannot hold the ${pinned} entries pinned at ${pin}: use a size of at least ${pinned}`);
  }
}

/**
 * Loading with another size replaces the pinned policy map and copies its entries over; a smaller map than its entries
 * would hold only some, which is refused here, before anything changes (the pinned map and the attached programs stay).
 */
function refuseSmallerThanPinned(pin: string, size: number): void {
  if (!fs.existsSync(pin)) return;
  const m = openPinnedMap(pin, `${MAPS.policy} (pinned)`);
  try {
    if (m.maxEntries() <= size) return;
    let pinned = 0;
    m.forEachKey(() => pinned++);
    if (pinned > size) throw new PolicyMapTooSmall(size, pinned, pin);
  } finally {
    closePinnedMap(m);
  }
}

/** An endpoint value with one EP_F_* flag set or cleared. */
function withFlag(value: Buffer, flag: number, on: boolean): Buffer {
  const offset = LAYOUT.endpoint_value.fields.flags.offset;
  const out = Buffer.from(value);
  const flags = out.readUInt32LE(offset);
  out.writeUInt32LE((on ? flags | flag : flags & ~flag) >>> 0, offset);
  return out;
}

export { CONST };
