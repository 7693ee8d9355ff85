// A pod's veth wiring with iproute2: create, verify and remove the host and pod sides.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import { CniError, ErrorCode } from "./spec.ts";

/** The host-side veth name: deterministic from the container id so DEL finds it without state. */
export function hostIfname(containerId: string): string {
  return `mbr${createHash("sha256").update(containerId).digest("hex").slice(0, 11)}`;
}

/**
 * What ADD wires: pod address /32 on `ifname` in `netns`, gateway /32 on the host side; on a dual-stack network
 * also the pod's IPv6 address /128 and the IPv6 gateway /128, the same way.
 */
export interface PodWiring {
  hostIf: string;
  netns: string;
  ifname: string;
  ip: string;
  gateway: string;
  ip6?: { ip: string; gateway: string };
  mtu: number;
}

export interface WiredLinks {
  hostIfindex: number;
  hostMac: string;
  podMac: string;
}

class IpFailed extends Error {
  constructor(
    readonly args: readonly string[],
    readonly stderr: string,
  ) {
    super(`${args.join(" ")}: ${stderr.trim()}`);
  }
}

function run(cmd: string, args: readonly string[]): string {
  try {
    return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new IpFailed([cmd, ...args], e.stderr?.toString() || e.message);
  }
}

/** `ip` in the plugin's own network namespace (the node's). */
function ipHost(...args: string[]): string {
  return run("ip", args);
}

/** `ip` inside the pod's namespace, given by path as CNI_NETNS is (`ip -n` only takes names). */
function ipPod(netns: string, ...args: string[]): string {
  return run("nsenter", [`--net=${netns}`, "ip", ...args]);
}

function ioFailure(what: string, err: unknown): CniError {
  if (err instanceof CniError) return err;
  return new CniError(ErrorCode.IOFailure, `${what}: ${err instanceof Error ? err.message : String(err)}`);
}

interface JsonLink {
  ifindex: number;
  ifname: string;
  address?: string;
  flags?: string[];
  mtu?: number;
  link_index?: number;
  linkinfo?: { info_kind?: string };
}

function hostLink(name: string): JsonLink | undefined {
  try {
    return (JSON.parse(ipHost("-j", "-d", "link", "show", "dev", name)) as JsonLink[])[0];
  } catch (err) {
    if (err instanceof IpFailed && /does not exist/.test(err.stderr)) return undefined;
    throw ioFailure(`reading link ${name}`, err);
  }
}

function podLink(netns: string, name: string): JsonLink | undefined {
  try {
    return (JSON.parse(ipPod(netns, "-j", "-d", "link", "show", "dev", name)) as JsonLink[])[0];
  } catch (err) {
    if (err instanceof IpFailed && /does not exist/.test(err.stderr)) return undefined;
    throw ioFailure(`reading link ${name} in ${netns}`, err);
  }
}

export function hostLinkExists(name: string): boolean {
  return hostLink(name) !== undefined;
}

export function requireNetns(netns: string): void {
  if (!fs.existsSync(netns))
    throw new CniError(ErrorCode.UnknownContainer, `CNI_NETNS: network namespace ${netns} does not exist`);
}

/** Pods are routed, not bridged: the node must forward between veths (IPv6 too for dual-stack pods). Only ever turns it on. */
export function ensureForwarding(ipv6 = false): void {
  const files = [["IPv4", "/proc/sys/net/ipv4/ip_forward"], ...(ipv6 ? [["IPv6", "/proc/sys/net/ipv6/conf/all/forwarding"]] : [])];
  for (const [family, p] of files) {
    try {
      if (fs.readFileSync(p!, "utf8").trim() !== "1") fs.writeFileSync(p!, "1");
    } catch (err) {
      throw ioFailure(`enabling ${family} forwarding on the node`, err);
    }
  }
}

/**
 * Creates the veth pair with the peer born inside the pod namespace under its final name, then
 * addresses and routes both sides. Throws CniError; the caller removes the host link on failure
 * (which removes the peer with it).
 */
export function wirePod(w: PodWiring): WiredLinks {
  const mtu = String(w.mtu);
  try {
    ipHost(
      "link",
      "add",
      w.hostIf,
      "mtu",
      mtu,
      "type",
      "veth",
      "peer",
      "name",
      w.ifname,
      "mtu",
      mtu,
      "netns",
      w.netns,
    );
  } catch (err) {
    throw ioFailure(`creating veth ${w.hostIf} with peer ${w.ifname} in ${w.netns}`, err);
  }
  try {
    // Host side: the gateway address (the same /32 on every pod's host veth) and a /32 route to the pod.
    ipHost("addr", "add", `${w.gateway}/32`, "dev", w.hostIf);
    ipHost("link", "set", w.hostIf, "up");
    ipHost("route", "replace", `${w.ip}/32`, "dev", w.hostIf, "scope", "link", "src", w.gateway);
    // Pod side: its address as a /32 and everything via the gateway, reached on-link (the host
    // veth owns the gateway address, so it answers the pod's ARP for it).
    ipPod(w.netns, "addr", "add", `${w.ip}/32`, "dev", w.ifname);
    ipPod(w.netns, "link", "set", w.ifname, "up");
    ipPod(w.netns, "route", "replace", "default", "via", w.gateway, "dev", w.ifname, "onlink");
    if (w.ip6) {
      // The same for IPv6, the addresses without duplicate address detection: a tentative address could not be
      // used for the first second or more of the pod's life, and each is unique on its link by construction.
      ipHost("-6", "addr", "add", `${w.ip6.gateway}/128`, "dev", w.hostIf, "nodad");
      ipHost("-6", "route", "replace", `${w.ip6.ip}/128`, "dev", w.hostIf);
      ipPod(w.netns, "-6", "addr", "add", `${w.ip6.ip}/128`, "dev", w.ifname, "nodad");
      ipPod(w.netns, "-6", "route", "replace", "default", "via", w.ip6.gateway, "dev", w.ifname, "onlink");
    }
  } catch (err) {
    throw ioFailure(`configuring pod network on ${w.hostIf}/${w.ifname}`, err);
  }
  const host = hostLink(w.hostIf);
  const pod = podLink(w.netns, w.ifname);
  if (host === undefined || pod === undefined)
    throw new CniError(ErrorCode.IOFailure, `veth ${w.hostIf} vanished while it was being configured`);
  return { hostIfindex: host.ifindex, hostMac: host.address ?? "", podMac: pod.address ?? "" };
}

/** Removes the host veth (the kernel removes its peer and the routes through it). Missing is fine. */
export function unwirePod(hostIf: string): boolean {
  try {
    ipHost("link", "del", hostIf);
    return true;
  } catch (err) {
    if (err instanceof IpFailed && /does not exist|Cannot find device/.test(err.stderr)) return false;
    throw ioFailure(`deleting veth ${hostIf}`, err);
  }
}

interface JsonAddr {
  addr_info?: { family: string; local: string; prefixlen: number }[];
}
interface JsonRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
}

function hasAddr(json: string, ip: string, prefixlen = 32): boolean {
  return (JSON.parse(json) as JsonAddr[]).some((l) =>
    (l.addr_info ?? []).some((a) => a.local === ip && a.prefixlen === prefixlen),
  );
}

/** Every way the wiring differs from what ADD sets up; empty when it matches. */
export function verifyPod(w: PodWiring): { problems: string[]; links?: WiredLinks } {
  const problems: string[] = [];
  const host = hostLink(w.hostIf);
  if (host === undefined) return { problems: [`host veth ${w.hostIf} does not exist`] };
  if (host.linkinfo?.info_kind !== "veth") problems.push(`host link ${w.hostIf} is not a veth`);
  if (!(host.flags ?? []).includes("UP")) problems.push(`host veth ${w.hostIf} is down`);
  if (host.mtu !== w.mtu) problems.push(`host veth ${w.hostIf} has mtu ${host.mtu}, want ${w.mtu}`);
  if (!hasAddr(ipHost("-j", "addr", "show", "dev", w.hostIf), w.gateway))
    problems.push(`host veth ${w.hostIf} lacks the gateway address ${w.gateway}/32`);
  const hostRoutes = JSON.parse(ipHost("-j", "route", "show", "exact", `${w.ip}/32`)) as JsonRoute[];
  if (!hostRoutes.some((r) => r.dev === w.hostIf))
    problems.push(`node has no route to ${w.ip}/32 via ${w.hostIf}`);

  const pod = podLink(w.netns, w.ifname);
  if (pod === undefined)
    return { problems: [...problems, `interface ${w.ifname} does not exist in ${w.netns}`] };
  if (pod.link_index !== host.ifindex)
    problems.push(`${w.ifname} in ${w.netns} is not the peer of ${w.hostIf}`);
  if (!(pod.flags ?? []).includes("UP")) problems.push(`${w.ifname} in ${w.netns} is down`);
  if (!hasAddr(ipPod(w.netns, "-j", "addr", "show", "dev", w.ifname), w.ip))
    problems.push(`${w.ifname} in ${w.netns} lacks the address ${w.ip}/32`);
  const podRoutes = JSON.parse(ipPod(w.netns, "-j", "route", "show", "default")) as JsonRoute[];
  if (!podRoutes.some((r) => r.gateway === w.gateway && r.dev === w.ifname))
    problems.push(`${w.netns} has no default route via ${w.gateway} dev ${w.ifname}`);
  if (w.ip6) {
    const { ip, gateway } = w.ip6;
    if (!hasAddr(ipHost("-j", "-6", "addr", "show", "dev", w.hostIf), gateway, 128))
      problems.push(`host veth ${w.hostIf} lacks the gateway address ${gateway}/128`);
    const hostRoutes6 = JSON.parse(ipHost("-j", "-6", "route", "show", "exact", `${ip}/128`)) as JsonRoute[];
    if (!hostRoutes6.some((r) => r.dev === w.hostIf)) problems.push(`node has no route to ${ip}/128 via ${w.hostIf}`);
    if (!hasAddr(ipPod(w.netns, "-j", "-6", "addr", "show", "dev", w.ifname), ip, 128))
      problems.push(`${w.ifname} in ${w.netns} lacks the address ${ip}/128`);
    const podRoutes6 = JSON.parse(ipPod(w.netns, "-j", "-6", "route", "show", "default")) as JsonRoute[];
    if (!podRoutes6.some((r) => r.gateway === gateway && r.dev === w.ifname))
      problems.push(`${w.netns} has no IPv6 default route via ${gateway} dev ${w.ifname}`);
  }
  return {
    problems,
    links: { hostIfindex: host.ifindex, hostMac: host.address ?? "", podMac: pod.address ?? "" },
  };
}
