// The node devices' programs (to-host on their ingress, from-host on their egress), attached by the agent itself: the L7 proxy's upstream connections to pods on other nodes and its answers to their clients cross there.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import type { Logger } from "pino";
import { type DeviceSelector, formatDeviceList, selectsDevice } from "../core/devices.ts";
import type { Datapath } from "./bpf/datapath.ts";
import { HOST_IFNAME } from "./endpoint-links.ts";

/** What an agent attached, recorded so a later agent adopts it, or detaches exactly it when the devices changed or were switched off. */
interface Attached {
  readonly device: string;
  readonly ifindex: number;
  readonly netns?: string;
}

export interface NodeDeviceOptions {
  readonly datapath: Pick<Datapath, "attachHostDevice" | "detachHostDevice">;
  /** --node-device: names and prefix wildcards; absent: the device holding nodeIP, else the one its route leaves by; null: none (switched off). */
  readonly devices: readonly DeviceSelector[] | null | undefined;
  readonly nodeIP?: string;
  /** The namespace holding the node's devices (the agent's own when absent). */
  readonly netns?: string;
  /** The host firewall's devices: the same programs, attached by it; never detached from here. */
  readonly hostFirewallDevices: readonly string[];
  /** The host links of the agent's pods (in netns), asked at every scan: their programs are the pods', never replaced or detached from here. */
  readonly podIfindexes: () => readonly number[];
  /** The overlay device (--tunnel-device): from-overlay's ingress, never a node device's. */
  readonly tunnelDevice?: string;
  /** Where the attachments are recorded across agent restarts. */
  readonly stateFile: string;
  readonly log: Logger;
}

/**
 * The command line that runs `cmd` with SIGKILL as its parent-death signal (util-linux's setpriv, in the image and on
 * Debian hosts): the link monitor goes with an agent killed by SIGKILL outside a container too, instead of running on
 * until its next link event. Without setpriv on the PATH, `cmd` as it is (a container's end still takes it along).
 */
export function diesWithParent(cmd: string, args: readonly string[]): [string, string[]] {
  setprivPath ??= (process.env.PATH ?? "").split(":").map((d) => path.join(d || ".", "setpriv")).find((f) => isExecutable(f)) ?? null;
  return setprivPath ? [setprivPath, ["--pdeathsig", "KILL", "--", cmd, ...args]] : [cmd, [...args]];
}
let setprivPath: string | null | undefined;

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** A wildcard's new links are looked for at least this often too, in case the link monitor missed one (it starts after the first scan). */
const RESCAN_BACKSTOP_MS = 60_000;
/** Link events come in bursts (a veth pair, its up): one scan after the burst. */
const RESCAN_DELAY_MS = 200;

/**
 * Attaches the node devices' programs at agent start and, with a prefix wildcard in --node-device, on the links that
 * match it later (`ip monitor link`, rtnetlink's link events, each burst followed by a scan of the links; and a scan
 * every minute as a backstop). A restart adopts what the earlier agent attached (the tcx links are pinned per
 * interface and direction: attaching again updates the same link in place, never a second one); a device no longer
 * selected, or none, is detached as recorded, unless the host firewall attaches there.
 */
export class NodeDevice {
  private attached: readonly Attached[] = [];
  private monitor: ChildProcess | undefined;
  private stopped = false;
  private rescanTimer: NodeJS.Timeout | undefined;
  private backstop: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: NodeDeviceOptions) {}

  /** Attaches (or adopts) and returns the devices (none when there is none); throws when a named device does not exist or is not a node device. */
  start(): readonly Attached[] {
    const previous = this.recorded();
    const now = this.wanted(true);
    this.apply(previous, now, "start");
    if (now.length === 0) {
      if (this.o.devices === undefined && this.o.nodeIP !== undefined) this.o.log.warn({ nodeIP: this.o.nodeIP, netns: this.o.netns }, "no node device found for --node-ip: L7 connections across nodes are dropped (set --node-device)");
      if (this.o.devices) this.o.log.info({ devices: formatDeviceList(this.o.devices), netns: this.o.netns }, "no link matches --node-device yet: the programs are attached when one appears");
    }
    return now;
  }

  /** With a prefix wildcard: watches the links, attaching the programs on every new match (and forgetting the ones that went). */
  watch(): void {
    if (!this.o.devices?.some((s) => s.kind === "prefix")) return;
    this.stopped = false;
    this.startMonitor();
    this.backstop = setInterval(() => this.rescan("periodic scan"), RESCAN_BACKSTOP_MS);
    this.backstop.unref();
  }

  /** Stops watching (the attached programs stay: the next agent adopts them). */
  stop(): void {
    this.stopped = true;
    for (const t of [this.rescanTimer, this.restartTimer]) if (t) clearTimeout(t);
    if (this.backstop) clearInterval(this.backstop);
    this.monitor?.kill();
    this.monitor = undefined;
  }

  /** Detaches what an agent recorded (uninstall): the host firewall's devices keep their programs. */
  remove(): void {
    for (const a of this.recorded()) this.detach(a, "removed");
    this.attached = [];
    fs.rmSync(this.o.stateFile, { force: true });
  }

  private startMonitor(): void {
    const [cmd, args] = diesWithParent("ip", [...(this.o.netns ? ["-n", this.o.netns] : []), "monitor", "link"]);
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.monitor = child;
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-500)));
    readline.createInterface({ input: child.stdout! }).on("line", () => this.scheduleRescan());
    // The links may have changed between the first scan and the monitor's start.
    child.once("spawn", () => this.scheduleRescan());
    child.once("error", (err) => this.o.log.error({ error: err.message }, "the node device link monitor failed to start"));
    child.once("exit", (code, signal) => {
      if (this.stopped || this.monitor !== child) return;
      this.o.log.warn({ code, signal, stderr: stderr.trim(), netns: this.o.netns }, "the node device link monitor exited: restarted in 1 s");
      this.restartTimer = setTimeout(() => this.startMonitor(), 1000);
      this.restartTimer.unref();
    });
  }

  private scheduleRescan(): void {
    if (this.rescanTimer || this.stopped) return;
    this.rescanTimer = setTimeout(() => {
      this.rescanTimer = undefined;
      this.rescan("link event");
    }, RESCAN_DELAY_MS);
  }

  private rescan(trigger: string): void {
    if (this.stopped) return;
    try {
      this.apply(this.attached, this.wanted(false), trigger);
    } catch (err) {
      this.o.log.error({ devices: this.o.devices && formatDeviceList(this.o.devices), netns: this.o.netns, trigger, error: (err as Error).message }, "scanning the links for node devices failed");
    }
  }

  /** Detaches what is no longer selected, records the new set (before the programs: an agent killed between the two still finds it), attaches what is new. */
  private apply(previous: readonly Attached[], now: readonly Attached[], trigger: string): void {
    for (const p of previous) {
      if (now.some((n) => sameAttachment(n, p))) continue;
      this.detach(p, now.some((n) => n.device === p.device) ? "its link was replaced (new ifindex)" : `not a node device now (${this.describeDevices()})`);
    }
    if (now.length === 0) fs.rmSync(this.o.stateFile, { force: true });
    else {
      fs.mkdirSync(path.dirname(this.o.stateFile), { recursive: true });
      fs.writeFileSync(this.o.stateFile, JSON.stringify({ devices: now }) + "\n");
    }
    const before = this.attached;
    this.attached = now;
    for (const n of now) {
      if (trigger !== "start" && before.some((b) => sameAttachment(b, n))) continue;
      this.o.datapath.attachHostDevice(n.ifindex, this.o.netns);
      this.o.log.info({ device: n.device, ifindex: n.ifindex, netns: this.o.netns, adopted: previous.some((p) => sameAttachment(p, n)), detected: this.o.devices === undefined, trigger }, "node device programs attached");
    }
  }

  /** The devices the flag selects now; strict (at start): a named device missing or not a node device throws naming the flag. */
  private wanted(strict: boolean): Attached[] {
    const netns = this.o.netns ? { netns: this.o.netns } : {};
    if (this.o.devices === null) return [];
    if (this.o.devices === undefined) {
      const name = this.o.nodeIP ? detectNodeDevice(this.o.nodeIP, this.o.netns) : undefined;
      if (name === undefined) return [];
      const ifindex = deviceIndex(name, this.o.netns, "--node-device");
      if (this.notNodeDevice(name, ifindex)) {
        this.o.log.warn({ device: name, nodeIP: this.o.nodeIP, netns: this.o.netns }, "the device holding --node-ip is a pod's host link: node device programs not attached (set --node-device)");
        return [];
      }
      return [{ device: name, ifindex, ...netns }];
    }
    const links = listLinks(this.o.netns);
    if (strict) {
      for (const s of this.o.devices) {
        if (s.kind !== "name") continue;
        const link = links.find((l) => l.ifname === s.name);
        if (!link) throw new Error(`--node-device ${s.name}: no such link${this.o.netns ? ` in netns ${this.o.netns}` : ""}`);
        const why = this.notNodeDevice(link.ifname, link.ifindex);
        if (why) throw new Error(`--node-device ${s.name}: ${why}, not the node's device`);
      }
    }
    return links.filter((l) => selectsDevice(this.o.devices!, l.ifname) && !this.notNodeDevice(l.ifname, l.ifindex)).map((l) => ({ device: l.ifname, ifindex: l.ifindex, ...netns }));
  }

  /** Why a link never gets the node device's programs, whatever a wildcard says; undefined when it may. */
  private notNodeDevice(ifname: string, ifindex: number): string | undefined {
    if (ifname === "lo") return "the loopback";
    if (ifname === this.o.tunnelDevice) return "the overlay device (--tunnel-device)";
    if (HOST_IFNAME.test(ifname) || this.o.podIfindexes().includes(ifindex)) return "a pod's host link";
    return undefined;
  }

  private describeDevices(): string {
    return this.o.devices === null ? "--node-device none" : this.o.devices === undefined ? "detected from --node-ip" : `--node-device ${formatDeviceList(this.o.devices)}`;
  }

  private detach(a: Attached, why: string): void {
    if (this.o.podIfindexes().includes(a.ifindex) && a.netns === this.o.netns) {
      this.o.log.info({ device: a.device, ifindex: a.ifindex, netns: a.netns, why }, "node device programs not detached: the link is a pod's now");
      return;
    }
    if (this.o.hostFirewallDevices.includes(a.device) && a.netns === this.o.netns) {
      this.o.log.info({ device: a.device, ifindex: a.ifindex, netns: a.netns, why }, "node device programs kept: the host firewall attaches there");
      return;
    }
    // A link that went took its programs with it: this removes the pins naming it.
    this.o.datapath.detachHostDevice(a.ifindex, a.netns);
    this.o.log.info({ device: a.device, ifindex: a.ifindex, netns: a.netns, why }, "node device programs detached");
  }

  /** The recorded attachments: {devices: [...]}, or one device as agents before device lists wrote it. */
  private recorded(): Attached[] {
    let text: string;
    try {
      text = fs.readFileSync(this.o.stateFile, "utf8");
    } catch {
      return [];
    }
    try {
      const v = JSON.parse(text) as { devices?: unknown } & Partial<Attached>;
      const list: unknown[] = Array.isArray(v.devices) ? v.devices : [v];
      const out = list.flatMap((d) => {
        const a = d as Partial<Attached>;
        return typeof a.device === "string" && Number.isInteger(a.ifindex) ? [{ device: a.device, ifindex: a.ifindex!, ...(typeof a.netns === "string" ? { netns: a.netns } : {}) }] : [];
      });
      if (out.length === list.length) return out;
    } catch {
      // unreadable: as if nothing were recorded (attaching again adopts the pinned links anyway)
    }
    this.o.log.warn({ file: this.o.stateFile }, "node device record unreadable, ignored");
    return [];
  }
}

function sameAttachment(a: Attached, b: Attached): boolean {
  return a.device === b.device && a.ifindex === b.ifindex && a.netns === b.netns;
}

/** Every link in netns (the agent's own when absent) by name and index. */
function listLinks(netns: string | undefined): { ifname: string; ifindex: number }[] {
  const out = JSON.parse(execFileSync("ip", [...(netns ? ["-n", netns] : []), "-j", "link", "show"], { stdio: ["ignore", "pipe", "pipe"] }).toString() || "[]") as { ifname?: string; ifindex?: number }[];
  return out.flatMap((l) => (typeof l.ifname === "string" && typeof l.ifindex === "number" ? [{ ifname: l.ifname, ifindex: l.ifindex }] : []));
}

/** The interface holding nodeIP, else the one the route to it leaves by (not loopback); as Cilium detects its devices from the node IP. */
export function detectNodeDevice(nodeIP: string, netns?: string): string | undefined {
  const ip = (args: string[]): unknown => JSON.parse(execFileSync("ip", [...(netns ? ["-n", netns] : []), "-j", ...args], { stdio: ["ignore", "pipe", "pipe"] }).toString() || "[]");
  const holders = ip(["addr", "show", "to", nodeIP]) as { ifname?: string; addr_info?: { local?: string }[] }[];
  const holder = holders.find((l) => l.ifname && l.ifname !== "lo" && l.addr_info?.some((a) => a.local === nodeIP));
  if (holder?.ifname) return holder.ifname;
  try {
    const routes = ip(["route", "get", nodeIP]) as { dev?: string }[];
    const dev = routes[0]?.dev;
    return dev && dev !== "lo" ? dev : undefined;
  } catch {
    return undefined; // no route to it
  }
}

/** The ifindex of device `name` (in `netns` when given); `what` names it in the error (a flag or a role). */
export function deviceIndex(name: string, netns: string | undefined, what: string): number {
  const args = [...(netns ? ["-n", netns] : []), "-j", "link", "show", "dev", name];
  let out: { ifindex?: number }[] = [];
  try {
    out = JSON.parse(execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] }).toString()) as { ifindex?: number }[];
  } catch {
    // reported below
  }
  const ifindex = out[0]?.ifindex;
  if (ifindex === undefined) throw new Error(`${what} ${name}: no such link${netns ? ` in netns ${netns}` : ""}`);
  return ifindex;
}
