// The node device's programs (to-host on its ingress, from-host on its egress), attached by the agent itself: the L7 proxy's upstream connections to pods on other nodes and its answers to their clients cross there.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import type { Datapath } from "./bpf/datapath.ts";

/** What an agent attached, recorded so a later agent adopts it, or detaches exactly it when the device changed or was switched off. */
interface Attached {
  readonly device: string;
  readonly ifindex: number;
  readonly netns?: string;
}

export interface NodeDeviceOptions {
  readonly datapath: Pick<Datapath, "attachHostDevice" | "detachHostDevice">;
  /** The device by name (--node-device); absent: the device holding nodeIP, else the one its route leaves by; null: none (switched off). */
  readonly device: string | null | undefined;
  readonly nodeIP?: string;
  /** The namespace holding the node's devices (the agent's own when absent). */
  readonly netns?: string;
  /** The host firewall's devices: the same programs, attached by it; never detached from here. */
  readonly hostFirewallDevices: readonly string[];
  /** The host links of the agent's pods (in netns): their programs are the pods', never replaced or detached from here. */
  readonly podIfindexes: readonly number[];
  /** Where the attachment is recorded across agent restarts. */
  readonly stateFile: string;
  readonly log: Logger;
}

/**
 * Attaches the node device's programs at agent start. A restart adopts what the earlier agent attached (the tcx links are
 * pinned per interface and direction: attaching again updates the same link in place, never a second one); a different
 * device, or none, detaches the recorded one, unless the host firewall attaches there.
 */
export class NodeDevice {
  constructor(private readonly o: NodeDeviceOptions) {}

  /** Attaches (or adopts) and returns the device, undefined when there is none; throws when the named device does not exist. */
  start(): Attached | undefined {
    const name = this.o.device === null ? undefined : (this.o.device ?? (this.o.nodeIP ? detectNodeDevice(this.o.nodeIP, this.o.netns) : undefined));
    const previous = this.recorded();
    let now: Attached | undefined = name === undefined ? undefined : { device: name, ifindex: deviceIndex(name, this.o.netns, "--node-device"), ...(this.o.netns ? { netns: this.o.netns } : {}) };
    if (now && this.o.podIfindexes.includes(now.ifindex)) {
      if (this.o.device !== undefined) throw new Error(`--node-device ${now.device}: a pod's host link, not the node's device`);
      this.o.log.warn({ device: now.device, nodeIP: this.o.nodeIP, netns: this.o.netns }, "the device holding --node-ip is a pod's host link: node device programs not attached (set --node-device)");
      now = undefined;
    }
    if (previous && !(now && sameAttachment(previous, now))) this.detach(previous, now ? `the node device is now ${now.device}` : "no node device");
    if (!now) {
      if (this.o.device === undefined && name === undefined && this.o.nodeIP !== undefined) this.o.log.warn({ nodeIP: this.o.nodeIP, netns: this.o.netns }, "no node device found for --node-ip: L7 connections across nodes are dropped (set --node-device)");
      fs.rmSync(this.o.stateFile, { force: true });
      return undefined;
    }
    // Before the programs: an agent killed between the two still finds the record and detaches it if the device changes.
    fs.mkdirSync(path.dirname(this.o.stateFile), { recursive: true });
    fs.writeFileSync(this.o.stateFile, JSON.stringify(now) + "\n");
    this.o.datapath.attachHostDevice(now.ifindex, this.o.netns);
    this.o.log.info({ device: now.device, ifindex: now.ifindex, netns: this.o.netns, adopted: previous !== undefined && sameAttachment(previous, now), detected: this.o.device === undefined }, "node device programs attached");
    return now;
  }

  /** Detaches what an agent recorded (uninstall): the host firewall's devices keep their programs. */
  remove(): void {
    const previous = this.recorded();
    if (previous) this.detach(previous, "removed");
    fs.rmSync(this.o.stateFile, { force: true });
  }

  private detach(a: Attached, why: string): void {
    if (this.o.podIfindexes.includes(a.ifindex) && a.netns === this.o.netns) {
      this.o.log.info({ device: a.device, ifindex: a.ifindex, netns: a.netns, why }, "node device programs not detached: the link is a pod's now");
      return;
    }
    if (this.o.hostFirewallDevices.includes(a.device) && a.netns === this.o.netns) {
      this.o.log.info({ device: a.device, ifindex: a.ifindex, netns: a.netns, why }, "node device programs kept: the host firewall attaches there");
      return;
    }
    this.o.datapath.detachHostDevice(a.ifindex, a.netns);
    this.o.log.info({ device: a.device, ifindex: a.ifindex, netns: a.netns, why }, "node device programs detached");
  }

  private recorded(): Attached | undefined {
    let text: string;
    try {
      text = fs.readFileSync(this.o.stateFile, "utf8");
    } catch {
      return undefined;
    }
    try {
      const v = JSON.parse(text) as Partial<Attached>;
      if (typeof v.device === "string" && Number.isInteger(v.ifindex)) return { device: v.device, ifindex: v.ifindex!, ...(typeof v.netns === "string" ? { netns: v.netns } : {}) };
    } catch {
      // unreadable: as if nothing were recorded (attaching again adopts the pinned link anyway)
    }
    this.o.log.warn({ file: this.o.stateFile }, "node device record unreadable, ignored");
    return undefined;
  }
}

function sameAttachment(a: Attached, b: Attached): boolean {
  return a.device === b.device && a.ifindex === b.ifindex && a.netns === b.netns;
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
