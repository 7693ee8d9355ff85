// Start-up reconciliation of the agent's endpoint records against the pods' host-side veths (`mbr*`) that exist.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import { hostIfname } from "./cni/podnet.ts";
import { IpamStore } from "./cni/ipam-store.ts";

/** A host-side pod veth as the kernel has it. */
export interface HostLink {
  readonly ifname: string;
  readonly ifindex: number;
  /** The addresses routed over it as /32s and /128s (a pod's addresses, routed to it by the CNI plugin); absent: not read. */
  readonly routes?: readonly string[];
}

/** A pod the CNI plugin wired, as its IPAM state holds it: the container and the addresses it was given (IPv4 first; two on a dual-stack network). */
export interface WiredPod {
  readonly containerId: string;
  readonly ifname: string;
  readonly ips: readonly string[];
}

/** What the agent records per endpoint (only what matching needs). */
export interface LinkedRecord {
  readonly containerId: string;
  readonly hostIfname: string;
  readonly hostIfindex: number;
}

/** The host-side names the CNI plugin gives (node-agent/cni/podnet.ts hostIfname): `mbr` + 11 hex characters. */
export const HOST_IFNAME = /^mbr[0-9a-f]{11}$/;

export interface EndpointReconcilePlan<R extends LinkedRecord> {
  /** Records whose link exists with the same index: kept as they are. */
  readonly keep: readonly R[];
  /** Records whose link is gone (or was re-created under another index): dropped. */
  readonly stale: readonly R[];
  /**
   * `mbr*` links no record owns whose pod the CNI plugin's IPAM still holds, with the address routed over the
   * link: pods wired while the agent was away (a network config without the agent, a lost state file). They
   * are adopted as endpoints, as Cilium restores its endpoints.
   */
  readonly adopt: readonly { readonly link: HostLink; readonly pod: WiredPod }[];
  /** `mbr*` links no record owns and the IPAM holds no address for: their pod is gone (its DEL released it), so they are stale. */
  readonly orphans: readonly HostLink[];
  /** `mbr*` links no record owns that cannot be proven stale (IPAM unreadable, or its address not routed over the link): left alone. */
  readonly unproven: readonly HostLink[];
}

/**
 * Pure: which records and links match. A link is matched by name and ifindex, so a re-created link is not
 * mistaken for the old one. A link no record owns is matched to the IPAM's pods by the name the plugin
 * derives from the container id; `wired` undefined (the IPAM could not be read) proves nothing stale.
 */
export function planEndpointReconcile<R extends LinkedRecord>(records: readonly R[], links: readonly HostLink[], wired?: readonly WiredPod[]): EndpointReconcilePlan<R> {
  const byName = new Map(links.map((l) => [l.ifname, l]));
  const keep: R[] = [];
  const stale: R[] = [];
  const owned = new Set<string>();
  for (const r of records) {
    const link = byName.get(r.hostIfname);
    if (link && link.ifindex === r.hostIfindex && !owned.has(link.ifname)) {
      keep.push(r);
      owned.add(link.ifname);
    } else stale.push(r);
  }
  const adopt: { link: HostLink; pod: WiredPod }[] = [];
  const orphans: HostLink[] = [];
  const unproven: HostLink[] = [];
  const podByLink = new Map((wired ?? []).map((p) => [hostIfname(p.containerId), p]));
  for (const link of byName.values()) {
    if (!HOST_IFNAME.test(link.ifname) || owned.has(link.ifname)) continue;
    if (wired === undefined) {
      unproven.push(link);
      continue;
    }
    const pod = podByLink.get(link.ifname);
    if (pod === undefined) orphans.push(link);
    else if (pod.ips.length > 0 && pod.ips.every((ip) => link.routes?.includes(ip))) adopt.push({ link, pod });
    else unproven.push(link);
  }
  return { keep, stale, adopt, orphans, unproven };
}

/**
 * The pods the CNI plugin's IPAM holds in `stateDir` (node-agent/cni/ipam-store.ts); undefined when the dir
 * does not exist (the plugin keeps its state elsewhere: nothing can be proven). Read after the links are
 * listed: an address is allocated before its link is made, so every listed link's pod is in this read.
 */
export function readWiredPods(stateDir: string): WiredPod[] | undefined {
  if (!fs.existsSync(stateDir)) return undefined;
  const state = new IpamStore(stateDir).read();
  const pods: { containerId: string; ifname: string; ips: string[] }[] = [];
  for (const [ip, o] of Object.entries(state.allocations)) {
    const pod = pods.find((p) => p.containerId === o.containerId && p.ifname === o.ifname);
    if (pod) pod.ips.push(ip);
    else pods.push({ containerId: o.containerId, ifname: o.ifname, ips: [ip] });
  }
  for (const pod of pods) pod.ips.sort((a, b) => Number(a.includes(":")) - Number(b.includes(":")));
  return pods;
}

const ip = (netns: string | undefined, args: readonly string[]): string =>
  execFileSync("ip", [...(netns ? ["-n", netns] : []), ...args], { stdio: ["ignore", "pipe", "pipe"] }).toString();

/** The veths in `netns` (the caller's own when absent) with the /32s and /128s routed over each: records may name any; only `mbr*` ones can be orphans. */
export function listHostLinks(netns?: string): HostLink[] {
  const out = JSON.parse(ip(netns, ["-j", "link", "show", "type", "veth"]) || "[]") as { ifname: string; ifindex: number }[];
  const routes = [
    ...(JSON.parse(ip(netns, ["-j", "-4", "route", "show", "table", "main", "scope", "link"]) || "[]") as { dst: string; dev?: string }[]),
    // IPv6 routes have no link scope: a dual-stack pod's /128 is one of the main table's host routes.
    ...(JSON.parse(ip(netns, ["-j", "-6", "route", "show", "table", "main"]) || "[]") as { dst: string; dev?: string }[]),
  ];
  const byDev = new Map<string, string[]>();
  for (const r of routes) {
    if (r.dev === undefined || r.dst.includes("/")) continue; // a /32 (/128) is printed without its length
    byDev.set(r.dev, [...(byDev.get(r.dev) ?? []), r.dst]);
  }
  return out.map((l) => ({ ifname: l.ifname, ifindex: l.ifindex, routes: byDev.get(l.ifname) ?? [] }));
}

/** Removes a host-side veth (its pod-side peer goes with it, and so do the programs attached to it). */
export function removeHostLink(link: HostLink, netns?: string): void {
  if (!HOST_IFNAME.test(link.ifname)) throw new Error(`refusing to remove ${link.ifname}: not a pod veth`);
  ip(netns, ["link", "del", "dev", link.ifname]);
}
