// Start-up reconciliation of the agent's endpoint records against the pods' host-side veths (`mbr*`) that exist.
import { execFileSync } from "node:child_process";

/** A host-side pod veth as the kernel has it. */
export interface HostLink {
  readonly ifname: string;
  readonly ifindex: number;
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
  /** `mbr*` links no kept record owns: a pod the agent does not enforce for. */
  readonly orphans: readonly HostLink[];
}

/** Pure: which records and links match. A link is matched by name and ifindex, so a re-created link is not mistaken for the old one. */
export function planEndpointReconcile<R extends LinkedRecord>(records: readonly R[], links: readonly HostLink[]): EndpointReconcilePlan<R> {
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
  return { keep, stale, orphans: [...byName.values()].filter((l) => HOST_IFNAME.test(l.ifname) && !owned.has(l.ifname)) };
}

const ip = (netns: string | undefined, args: readonly string[]): string =>
  execFileSync("ip", [...(netns ? ["-n", netns] : []), ...args], { stdio: ["ignore", "pipe", "pipe"] }).toString();

/** The veths in `netns` (the caller's own when absent): records may name any; only `mbr*` ones can be orphans. */
export function listHostLinks(netns?: string): HostLink[] {
  const out = JSON.parse(ip(netns, ["-j", "link", "show", "type", "veth"]) || "[]") as { ifname: string; ifindex: number }[];
  return out.map((l) => ({ ifname: l.ifname, ifindex: l.ifindex }));
}

/** Removes a host-side veth (its pod-side peer goes with it, and so do the programs attached to it). */
export function removeHostLink(link: HostLink, netns?: string): void {
  if (!HOST_IFNAME.test(link.ifname)) throw new Error(`refusing to remove ${link.ifname}: not a pod veth`);
  ip(netns, ["link", "del", "dev", link.ifname]);
}
