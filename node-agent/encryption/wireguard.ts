// The agent's WireGuard mode: a userspace WireGuard device (wireguard-go: this kernel has none) in the
// node's namespace, the node's key pair, one peer per other node (allowed IPs: its address and, routed,
// its pods' addresses from the ipcache, as Cilium's WireGuard agent does), pod packets to those routed into
// the device by the datapath without VXLAN (the receiver takes the source identity from its ipcache), and
// a routing rule that sends the VXLAN overlay (identity in the VNI) through the tunnel otherwise. The device is its own process and outlives the agent, so
// established connections survive an agent restart.
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { loadOrCreatePrivateKey, newPrivateKey, publicKeyOf, savePrivateKey } from "./wireguard-keys.ts";
import { type DeviceState, UAPI_DIR, getDevice, setRequest, uapi } from "./wireguard-uapi.ts";
import { ENCRYPTION_READY, type EncryptionPublication } from "./publication.ts";
import { type WireguardRouting, wireguardMtu } from "../mtu.ts";

function samePrefixes(a: ReadonlyMap<string, readonly string[]>, b: ReadonlyMap<string, readonly string[]>): boolean {
  if (a.size !== b.size) return false;
  for (const [node, list] of a) {
    const other = b.get(node);
    if (!other || other.length !== list.length || list.some((p, i) => other[i] !== p)) return false;
  }
  return true;
}

/** WireGuard's UDP port on every node. */
export const WIREGUARD_PORT = 51871;
/** The routing table holding one route per peer (its underlay address → the device), and the rule's preference. */
export const WIREGUARD_TABLE = 8472;
export const RULE_PREF = 100;
/** The rule's protocol by number: ip(8) resolves a name through /etc/protocols, which the chart's image (no netbase) lacks. */
export const RULE_IPPROTO = "17";

/** The device name: unique per node (control sockets are global: /var/run/wireguard/<ifname>.sock), at most 15 bytes. */
export function wireguardIfname(nodeName: string): string {
  return `mbrwg${createHash("sha256").update(nodeName).digest("hex").slice(0, 10)}`;
}

/** What the agent needs of a CiliumNode to make it a peer. */
export interface PeerNode {
  readonly name: string;
  readonly publicKey?: string;
  readonly internalIP?: string;
}

export interface WireguardOptions {
  readonly nodeName: string;
  /** The node's network namespace (name under /var/run/netns); the agent's own when absent. */
  readonly netns?: string;
  readonly stateDir: string;
  /** The wireguard-go binary. */
  readonly binary: string;
  /** The VXLAN port whose traffic goes through the tunnel. */
  readonly vxlanPort: number;
  /** routed (default): pod packets go into the device as they are, each peer's allowed IPs its pods' addresses; vxlan: the overlay inside the tunnel. */
  readonly routing?: WireguardRouting;
  /** Strict: traffic to a node without a working peer is dropped (blackhole route), never sent in clear. */
  readonly strict: boolean;
  /** The datapath's view: strict or not, and the nodes with a working tunnel (the rest are dropped as UNENCRYPTED when strict). */
  readonly datapath: EncryptedNodesSink;
  readonly log: Logger;
}

export interface EncryptedNodesSink {
  setEncryptionStrict(strict: boolean): void;
  /** `routed`: those of `ips` whose pods' addresses are their peer's allowed IPs. */
  setEncryptedNodes(ips: readonly string[], routed?: ReadonlySet<string>): void;
  /** The device the datapath routes pod packets into (its ingress program takes identities from the ipcache); 0: none. */
  setWireguardDevice(ifindex: number, netns?: string): void;
  /** Strict mode's pod CIDRs (the other nodes'): a pod packet to one of them outside the tunnel is dropped; []: none. */
  setStrictCIDRs(cidrs: readonly string[]): void;
}

interface Peer {
  readonly ip: string;
  readonly publicKey: string;
}

export interface WireguardStats {
  readonly ifname: string;
  readonly up: boolean;
  readonly peers: number;
  readonly lastHandshake?: string;
  readonly rxBytes: number;
  readonly txBytes: number;
}

function run(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, [...args], { timeout: 10_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(" ")}: ${stderr.trim() || err.message}`)) : resolve(stdout))),
  );
}

export class WireguardEncryption {
  readonly ifname: string;
  private readonly socket: string;
  private readonly keyFile: string;
  private readonly pidFile: string;
  private readonly rotatedFile: string;
  private privateKey: Buffer | undefined;
  private peers = new Map<string, Peer>();
  private nodes: readonly PeerNode[] = [];
  /** Routed: the other nodes' pod prefixes by node address (from the ipcache). */
  private podPrefixes: ReadonlyMap<string, readonly string[]> = new Map();
  /** Each peer's configuration as last sent to the device (public key hex → endpoint and allowed IPs): only changes are sent. */
  private sent = new Map<string, string>();
  private ifindex = 0;
  private device: DeviceState | undefined;
  private up = false;
  private lastError: string | undefined;
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> = Promise.resolve();
  private rotatingFor: string | undefined;

  constructor(private readonly o: WireguardOptions) {
    this.ifname = wireguardIfname(o.nodeName);
    this.socket = path.join(UAPI_DIR, `${this.ifname}.sock`);
    this.keyFile = path.join(o.stateDir, "wireguard.key");
    this.pidFile = path.join(o.stateDir, "wireguard-go.pid");
    this.rotatedFile = path.join(o.stateDir, "wireguard.rotated-for");
  }

  private ip(args: readonly string[]): Promise<string> {
    return run("ip", [...(this.o.netns ? ["-n", this.o.netns] : []), ...args]);
  }

  /** Key, device (reused when it outlived the previous agent), its settings and the routing rule; then watches the device. */
  async start(): Promise<void> {
    this.privateKey = loadOrCreatePrivateKey(this.keyFile);
    // No node counts as encrypted until its peer is configured on a device that is up.
    this.o.datapath.setEncryptedNodes([]);
    this.o.datapath.setWireguardDevice(0);
    this.o.datapath.setEncryptionStrict(this.o.strict);
    if (!(await this.alive())) await this.spawnDevice();
    await uapi(this.socket, setRequest({ privateKey: this.privateKey, listenPort: WIREGUARD_PORT }));
    // Pods get podMtu("wireguard", …, routing), so their packets (routed) or their VXLAN packets fit this MTU and the WireGuard packets the underlay's: nothing is fragmented.
    // The decrypted packets of pods on other nodes arrive here with sources routed elsewhere (the underlay): no reverse-path filter on the device.
    await this.sysctl(`net.ipv4.conf.${this.ifname}.rp_filter`, "0");
    // Pods wired before encryption was on get podMtu("wireguard") too, from the agent at start (node-agent/endpoint-mtu.ts).
    await this.ip(["link", "set", this.ifname, "up", "mtu", String(wireguardMtu())]);
    await this.ensureRule();
    await this.refresh();
    this.o.log.info({ ifname: this.ifname, publicKey: this.publicKey(), strict: this.o.strict }, "WireGuard device ready");
    this.timer = setInterval(() => {
      this.refresh().catch((e: unknown) => this.o.log.error({ ifname: this.ifname, error: (e as Error).message }, "reading the WireGuard device failed"));
    }, 2000);
    this.timer.unref();
  }

  /** Stops watching; the device stays (it carries established connections across an agent restart). */
  stop(): void {
    clearInterval(this.timer);
  }

  publicKey(): string {
    return this.privateKey ? publicKeyOf(this.privateKey).toString("base64") : "";
  }

  onChange(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  private changed(): void {
    for (const f of this.listeners) f();
  }

  private async alive(): Promise<boolean> {
    if (!existsSync(this.socket)) return false;
    try {
      await getDevice(this.socket);
      return true;
    } catch {
      return false;
    }
  }

  /** wireguard-go in the foreground, detached from the agent (its own session): the agent records its pid; `dev down` stops it. */
  private async spawnDevice(): Promise<void> {
    rmSync(this.socket, { force: true });
    const args = this.o.netns ? [`--net=/var/run/netns/${this.o.netns}`, this.o.binary, "-f", this.ifname] : ["-f", this.ifname];
    const logFd = openSync(path.join(this.o.stateDir, "wireguard-go.log"), "a");
    const child = spawn(this.o.netns ? "nsenter" : this.o.binary, args, { detached: true, stdio: ["ignore", logFd, logFd], env: { ...process.env, LOG_LEVEL: "error" } });
    closeSync(logFd);
    child.unref();
    if (child.pid !== undefined) writeFileSync(this.pidFile, `${child.pid}\n`);
    const until = Date.now() + 10_000;
    while (!(await this.alive())) {
      if (child.exitCode !== null || Date.now() > until) throw new Error(`wireguard-go ${this.ifname} did not start (see ${path.join(this.o.stateDir, "wireguard-go.log")})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    this.o.log.info({ ifname: this.ifname, pid: child.pid, binary: this.o.binary }, "wireguard-go started");
  }

  /** In the agent's own namespace through /proc/sys (the chart's image has no sysctl(8): procps is not in it); in another, sysctl there. */
  private async sysctl(key: string, value: string): Promise<void> {
    if (this.o.netns) await run("ip", ["netns", "exec", this.o.netns, "sysctl", "-qw", `${key}=${value}`]);
    else writeFileSync(path.join("/proc/sys", ...key.split(".")), `${value}\n`);
  }

  /** `ip rule`: VXLAN (UDP to the overlay port) looks up the WireGuard table first; added once, never removed and re-added (no window in clear). */
  private async ensureRule(): Promise<void> {
    const rules = JSON.parse((await this.ip(["-j", "rule", "list", "pref", String(RULE_PREF)])) || "[]") as { table?: string }[];
    if (!rules.some((r) => r.table === String(WIREGUARD_TABLE))) {
      await this.ip(["rule", "add", "pref", String(RULE_PREF), "ipproto", RULE_IPPROTO, "dport", String(this.o.vxlanPort), "lookup", String(WIREGUARD_TABLE)]);
    }
    // Strict: a node without a working peer (none configured, or the device down and its routes gone) meets this, not the underlay.
    if (this.o.strict) await this.ip(["route", "replace", "blackhole", "default", "table", String(WIREGUARD_TABLE)]);
  }

  /** Makes the peers and routes match the other nodes that announced a key (level-triggered; runs one at a time). */
  setPeers(nodes: readonly PeerNode[]): Promise<void> {
    this.syncing = this.syncing.then(() => this.syncPeers(nodes)).catch((e: unknown) => {
      this.lastError = (e as Error).message;
      this.o.log.warn({ ifname: this.ifname, error: this.lastError }, "configuring WireGuard peers failed");
    });
    return this.syncing;
  }

  private async syncPeers(nodes: readonly PeerNode[]): Promise<void> {
    const want = new Map<string, Peer>();
    for (const n of nodes) {
      if (n.name === this.o.nodeName || !n.publicKey || !n.internalIP) continue;
      const key = Buffer.from(n.publicKey, "base64");
      if (key.length !== 32) continue;
      want.set(n.name, { ip: n.internalIP, publicKey: n.publicKey });
    }
    this.nodes = nodes;
    const device = await getDevice(this.socket);
    const wantKeys = new Set([...want.values()].map((p) => Buffer.from(p.publicKey, "base64").toString("hex")));
    const remove = device.peers.map((p) => p.publicKey).filter((k) => !wantKeys.has(k));
    const configured = new Set(device.peers.map((p) => p.publicKey));
    const peers = [...want.values()]
      .map((p) => ({ publicKey: Buffer.from(p.publicKey, "base64"), endpoint: `${p.ip}:${WIREGUARD_PORT}`, allowedIPs: [`${p.ip}/32`, ...(this.routed() ? (this.podPrefixes.get(p.ip) ?? []) : [])] }))
      .filter((p) => !configured.has(p.publicKey.toString("hex")) || this.sent.get(p.publicKey.toString("hex")) !== `${p.endpoint} ${p.allowedIPs.join(",")}`);
    // New and changed peers first, then the removals: a node's new key is usable before its old one goes.
    if (peers.length > 0) await uapi(this.socket, setRequest({ peers }));
    for (const p of peers) this.sent.set(p.publicKey.toString("hex"), `${p.endpoint} ${p.allowedIPs.join(",")}`);
    // A peer made anew (a node's new key after a rotation, a new node) handshakes at once: a keepalive turned on sends one,
    // and turned off again nothing else changes. Without it a node handshakes only when it has a packet for the peer: the
    // side that learnt of the new keys first tried then, too early (the other did not know its key yet), and retries only
    // after WireGuard's 5 s rekey timeout, while the other side may have nothing to send (a new connection's SYNs).
    const created = peers.map((p) => p.publicKey.toString("hex")).filter((k) => !configured.has(k));
    if (created.length > 0) {
      await uapi(this.socket, setRequest({ keepalive: new Map(created.map((k) => [k, 1])) }));
      await uapi(this.socket, setRequest({ keepalive: new Map(created.map((k) => [k, 0])) }));
    }
    if (remove.length > 0) await uapi(this.socket, setRequest({ remove }));
    for (const k of remove) this.sent.delete(k);
    for (const p of want.values()) await this.ip(["route", "replace", `${p.ip}/32`, "dev", this.ifname, "table", String(WIREGUARD_TABLE)]);
    for (const [name, p] of this.peers) {
      if (want.has(name) && want.get(name)!.ip === p.ip) continue;
      if ([...want.values()].some((w) => w.ip === p.ip)) continue;
      await this.ip(["route", "del", `${p.ip}/32`, "table", String(WIREGUARD_TABLE)]).catch(() => undefined);
    }
    const before = [...this.peers.keys()].sort().join(",");
    this.peers = want;
    this.publishEncryptedNodes();
    this.device = await getDevice(this.socket);
    this.lastError = undefined;
    if ([...want.keys()].sort().join(",") !== before) {
      this.o.log.info({ ifname: this.ifname, peers: [...want.keys()].sort(), routing: this.o.routing ?? "routed" }, "WireGuard peers configured");
      this.changed();
    }
  }

  private routed(): boolean {
    return (this.o.routing ?? "routed") === "routed";
  }

  /**
   * Routed: the other nodes' pod prefixes (by node address, from the applied ipcache) become their peers'
   * allowed IPs; only peers whose list changed are sent. A pod's first packets may meet its peer before
   * its address does: WireGuard drops them (no peer for the address), nothing leaves in clear.
   */
  setRemotePods(byNode: ReadonlyMap<string, readonly string[]>): Promise<void> {
    if (!this.routed() || samePrefixes(this.podPrefixes, byNode)) return this.syncing;
    this.podPrefixes = byNode;
    return this.setPeers(this.nodes);
  }

  /** A new key pair (rotation): set on the device at once; peers switch when they see the new public key on the CiliumNode. */
  async rotate(request: string): Promise<void> {
    if (this.rotatingFor === request || this.handledRotation() === request) return;
    this.rotatingFor = request;
    const key = newPrivateKey();
    savePrivateKey(this.keyFile, key);
    await uapi(this.socket, setRequest({ privateKey: key }));
    this.privateKey = key;
    writeFileSync(this.rotatedFile, `${request}\n`);
    this.o.log.info({ ifname: this.ifname, publicKey: this.publicKey(), request }, "WireGuard key rotated");
    this.changed();
  }

  handledRotation(): string | undefined {
    return existsSync(this.rotatedFile) ? readFileSync(this.rotatedFile, "utf8").trim() : undefined;
  }

  /** Re-reads the device: gone or down is reported (and, in strict mode, its routes are gone so traffic meets the blackhole). */
  private async refresh(): Promise<void> {
    let up = false;
    const handshook = (this.device?.peers ?? []).filter((p) => p.lastHandshake > 0).length;
    try {
      this.device = await getDevice(this.socket);
      const link = JSON.parse(await this.ip(["-j", "link", "show", "dev", this.ifname])) as { ifindex?: number; flags?: string[] }[];
      up = link[0]?.flags?.includes("UP") ?? false;
      if (up && link[0]?.ifindex !== undefined && link[0].ifindex !== this.ifindex) {
        // A device made anew (its ifindex changed) needs the datapath's ingress program again.
        this.ifindex = link[0].ifindex;
        this.o.datapath.setWireguardDevice(this.ifindex, this.o.netns);
      }
    } catch {
      this.device = undefined;
    }
    if (up !== this.up) {
      this.up = up;
      this.publishEncryptedNodes();
      this.o.log[up ? "info" : "warn"]({ ifname: this.ifname, up }, up ? "WireGuard device up" : "WireGuard device down or gone");
      // Back up: the routes the kernel dropped with the link are put back.
      if (up && this.peers.size > 0) await this.setPeers(this.nodes);
      this.changed();
    } else if ((this.device?.peers ?? []).filter((p) => p.lastHandshake > 0).length !== handshook) {
      // A peer's first handshake (or its loss) is news for the status; the counters otherwise ride the resync.
      this.changed();
    }
  }

  /** The datapath sends cross-node traffic (strict) only to these: configured peers, while the device is up. */
  private publishEncryptedNodes(): void {
    const ips = this.up ? [...this.peers.values()].map((p) => p.ip) : [];
    this.o.datapath.setEncryptedNodes(ips, this.routed() ? new Set(ips) : new Set());
  }

  stats(): WireguardStats {
    const peers = this.device?.peers ?? [];
    const last = Math.max(0, ...peers.map((p) => p.lastHandshake));
    return {
      ifname: this.ifname,
      up: this.up,
      peers: peers.length,
      ...(last > 0 ? { lastHandshake: new Date(last * 1000).toISOString().replace(/\.\d{3}Z$/, "Z") } : {}),
      rxBytes: peers.reduce((s, p) => s + p.rxBytes, 0),
      txBytes: peers.reduce((s, p) => s + p.txBytes, 0),
    };
  }

  publication(): EncryptionPublication {
    const st = this.stats();
    const status = { mode: "wireguard" as const, interface: st.ifname, peers: st.peers, ...(st.lastHandshake ? { lastHandshake: st.lastHandshake } : {}), rxBytes: st.rxBytes, txBytes: st.txBytes };
    return { ...this.readiness(), status };
  }

  private readiness(): Omit<EncryptionPublication, "status"> {
    const publicKey = this.publicKey();
    if (!this.up) return { condition: { type: ENCRYPTION_READY, status: "False", reason: "DeviceDown", message: `WireGuard device ${this.ifname} is down or gone${this.o.strict ? "; strict: cross-node traffic is dropped" : "; cross-node traffic leaves unencrypted"}` }, spec: { publicKey } };
    if (this.lastError) return { condition: { type: ENCRYPTION_READY, status: "False", reason: "PeersNotConfigured", message: this.lastError }, spec: { publicKey } };
    return {
      condition: { type: ENCRYPTION_READY, status: "True", reason: "TunnelUp", message: `wireguard-go device ${this.ifname}, ${this.peers.size} peer(s)${this.o.strict ? ", strict" : ""}` },
      spec: { publicKey },
    };
  }
}
