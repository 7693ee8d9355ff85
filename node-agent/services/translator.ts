// Loads bpf/service.c, attaches its eight programs (IPv4 and IPv6 hooks) to the cgroup v2 root (links pinned, so an agent restart keeps
// translating) and writes the ClusterIP and NodePort table (core/service-translation.ts), the node addresses NodePorts are
// dialled at, and the network namespaces it applies to.
import fs from "node:fs";
import { isIP } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type { Frontend } from "../../core/service-translation.ts";
import { attachCgroupLink, BpfObject, detachCgroupLink, BPFFS_ROOT, programId, type BpfMap } from "../bpf/loader.ts";
import { CGROUP2_ROOT } from "../runtime/connect-enforcer.ts";
import {
  backendKey, backendValue, decodeFrontendKey, decodeFrontendValue, frontendKey, frontendValue, IPPROTO, nodeKey, scopeKey, SVC_BACKENDS_MAX, SVC_FRONTENDS_MAX, SVC_NODES_MAX,
} from "./layout.ts";

export const SERVICE_OBJECT = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../bpf/build/service.o");

/** The programs and the cgroup hooks they go on (enum bpf_attach_type). */
export const PROGRAMS = [
  ["membrane_svc_connect4", 10], // BPF_CGROUP_INET4_CONNECT
  ["membrane_svc_sendmsg4", 14], // BPF_CGROUP_UDP4_SENDMSG
  ["membrane_svc_recvmsg4", 19], // BPF_CGROUP_UDP4_RECVMSG
  ["membrane_svc_getpeername4", 29], // BPF_CGROUP_INET4_GETPEERNAME
  ["membrane_svc_connect6", 11], // BPF_CGROUP_INET6_CONNECT
  ["membrane_svc_sendmsg6", 15], // BPF_CGROUP_UDP6_SENDMSG
  ["membrane_svc_recvmsg6", 20], // BPF_CGROUP_UDP6_RECVMSG
  ["membrane_svc_getpeername6", 30], // BPF_CGROUP_INET6_GETPEERNAME
] as const;

/** Each family's frontend and backend maps. */
const FAMILY_MAPS = [
  { family: 4, frontends: "membrane_svc_frontends", backends: "membrane_svc_backends", nodes: "membrane_svc_nodes" },
  { family: 6, frontends: "membrane_svc6_frontends", backends: "membrane_svc6_backends", nodes: "membrane_svc6_nodes" },
] as const;

export interface ServiceTranslatorOptions {
  readonly log: Logger;
  /** Pin scope under /sys/fs/bpf/membrane (tests use their own). */
  readonly scope?: string;
  readonly pinRoot?: string;
  readonly objectPath?: string;
  /** The cgroup v2 directory the programs go on: every process below it is translated (default: the root). */
  readonly cgroupPath?: string;
}

export interface TranslationCounts {
  readonly frontends: number;
  readonly backends: number;
  /** Frontends without a ready backend: their connects are refused. */
  readonly refusing: number;
}

export class ServiceTranslator {
  private obj: BpfObject | undefined;
  private readonly scope: string;

  constructor(private readonly opts: ServiceTranslatorOptions) {
    this.scope = opts.scope ?? "services";
  }

  private get linkDir(): string {
    return path.join(this.opts.pinRoot ?? BPFFS_ROOT, this.scope, "links");
  }

  /** Loads the object (reusing pinned maps) and attaches (or switches in place) its programs, ahead of any other connect program. */
  start(): void {
    if (this.obj) return;
    const obj = BpfObject.load(this.opts.objectPath ?? SERVICE_OBJECT, { scope: this.scope, ...(this.opts.pinRoot ? { pinRoot: this.opts.pinRoot } : {}) });
    try {
      const cgroup = this.opts.cgroupPath ?? CGROUP2_ROOT;
      for (const [name, type] of PROGRAMS) attachCgroupLink(obj.programFd(name), cgroup, type, path.join(this.linkDir, name), true);
      this.obj = obj;
      this.opts.log.info({ cgroup, scope: this.scope }, "service translation attached");
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /** The kernel ids of the connect4 program and of the others, by program name (tests check the attach order). */
  programIds(): Map<string, number> {
    const obj = this.loaded();
    return new Map(PROGRAMS.map(([name]) => [name, programId(obj.programFd(name))]));
  }

  /** The network namespaces whose sockets are translated (this node's pods), by path or inode; "every" for all of them. */
  setScope(netns: readonly (string | number)[] | "every"): void {
    const m = this.loaded().map("membrane_svc_scope");
    const want = new Set<number>();
    if (netns === "every") want.add(0);
    else
      for (const n of netns) {
        const inode = typeof n === "number" ? n : inodeOf(n);
        if (inode !== undefined && inode !== 0) want.add(inode);
      }
    const one = Buffer.alloc(4);
    one.writeUInt32LE(1);
    for (const i of want) m.update(scopeKey(i), one);
    for (const k of m.keys()) if (!want.has(k.readUInt32LE(0))) m.delete(k);
  }

  /**
   * Makes the node-address maps hold exactly these addresses (every node's, both families): a connect to one of them at a
   * NodePort frontend's port is translated. New addresses are written before old ones are removed.
   */
  setNodeAddresses(addresses: readonly string[]): void {
    const obj = this.loaded();
    if (addresses.length > SVC_NODES_MAX) throw new Error(`${addresses.length} node addresses; this node holds ${SVC_NODES_MAX}`);
    const one = Buffer.alloc(4);
    one.writeUInt32LE(1);
    for (const { family, nodes } of FAMILY_MAPS) {
      const m = obj.map(nodes);
      const want = new Map<string, Buffer>();
      for (const a of addresses) {
        const k = nodeKey(a);
        if (k.family === family) want.set(k.key.toString("hex"), k.key);
      }
      for (const k of want.values()) m.update(k, one);
      for (const k of m.keys()) if (!want.has(k.toString("hex"))) m.delete(k);
    }
  }

  /** Makes the maps hold exactly these frontends, IPv4 and IPv6 ClusterIPs each in their family's maps (writeFamily). */
  set(frontends: readonly Frontend[]): TranslationCounts {
    const obj = this.loaded();
    if (frontends.length > SVC_FRONTENDS_MAX) throw new Error(`${frontends.length} Service frontends; this node holds ${SVC_FRONTENDS_MAX}`);
    const backends = frontends.reduce((n, f) => n + f.backends.length, 0);
    if (backends > SVC_BACKENDS_MAX) throw new Error(`${backends} Service backends; this node holds ${SVC_BACKENDS_MAX}`);
    let refusing = 0;
    for (const { family, frontends: fName, backends: bName } of FAMILY_MAPS) {
      const mine = frontends.filter((f) => isIP(f.address) === family);
      refusing += writeFamily(obj.map(fName), obj.map(bName), mine);
    }
    return { frontends: frontends.length, backends, refusing };
  }

  /** Closes our handles; the programs stay attached and the maps pinned (an agent restart keeps translating). */
  close(): void {
    this.obj?.close();
    this.obj = undefined;
  }

  /** Detaches the programs and removes the pins (uninstall, tests). */
  remove(): void {
    this.close();
    for (const [name] of PROGRAMS) detachCgroupLink(path.join(this.linkDir, name));
    fs.rmSync(path.join(this.opts.pinRoot ?? BPFFS_ROOT, this.scope), { recursive: true, force: true });
  }

  private loaded(): BpfObject {
    if (!this.obj) throw new Error("service translation not started");
    return this.obj;
  }
}

/**
 * One family's frontends into its maps; returns how many refuse. Per frontend, new backend slots are written before its
 * count grows and removed after it shrinks, so a connect never picks an empty slot; a frontend keeps its number.
 */
function writeFamily(fm: BpfMap, bm: BpfMap, frontends: readonly Frontend[]): number {
  const existing = new Map<string, { key: Buffer; id: number; count: number }>();
  for (const k of fm.keys()) {
    const v = fm.lookup(k);
    if (!v) continue;
    const d = decodeFrontendKey(k);
    existing.set(`${d.address}|${d.port}/${d.protocol}`, { key: k, ...decodeFrontendValue(v) });
  }
  const used = new Set([...existing.values()].map((e) => e.id));
  let nextId = 1;
  const freshId = (): number => {
    while (used.has(nextId)) nextId++;
    used.add(nextId);
    return nextId;
  };
  const keep = new Set<string>();
  let refusing = 0;
  for (const f of frontends) {
    const protocol = IPPROTO[f.protocol];
    const key = frontendKey(f.address, f.port, protocol);
    const d = decodeFrontendKey(key);
    const name = `${d.address}|${d.port}/${d.protocol}`;
    keep.add(name);
    const old = existing.get(name);
    const id = old?.id ?? freshId();
    f.backends.forEach((b, slot) => bm.update(backendKey(id, slot), backendValue(b.address, b.port)));
    fm.update(key, frontendValue(id, f.backends.length));
    for (let slot = f.backends.length; slot < (old?.count ?? 0); slot++) bm.delete(backendKey(id, slot));
    if (f.backends.length === 0) refusing++;
  }
  for (const [name, e] of existing) {
    if (keep.has(name)) continue;
    fm.delete(e.key);
    for (let slot = 0; slot < e.count; slot++) bm.delete(backendKey(e.id, slot));
  }
  return refusing;
}

/** The inode of a network namespace file (its nsfs inode is the namespace's number), or undefined when it is gone. */
function inodeOf(p: string): number | undefined {
  try {
    return fs.statSync(p).ino;
  } catch {
    return undefined;
  }
}
