// The VXLAN overlay device (Cilium's cilium_vxlan): made by the agent when the node lacks it, adopted when one of its name is already there; the datapath sends pod packets to other nodes into it with the sender's identity in the VNI, and from-overlay judges what arrives there.
import { execFileSync } from "node:child_process";
import type { Logger } from "pino";
import type { Datapath } from "./bpf/datapath.ts";
import { OVERLAY_VXLAN_PORT } from "./encryption/mode.ts";
import { UNDERLAY_MTU, VXLAN_OVERHEAD } from "./mtu.ts";

/** The overlay device's name under the chart's defaults (agent.tunnelDevice) and in the local clusters. */
export const OVERLAY_DEVICE = "membrane_vxlan";

/**
 * The interface alias (ifalias) an agent gives a device it made. It lives on the link itself, so it survives agent
 * restarts and lost state files, and it is how an uninstall tells a device Membrane made from one the node brought.
 */
export const OVERLAY_MADE_BY = "made by membrane-agent";

export interface OverlayDeviceOptions {
  readonly datapath: Pick<Datapath, "attachOverlay">;
  /** The device's name (--tunnel-device). */
  readonly device: string;
  /** The namespace holding the node's devices (the agent's own when absent). */
  readonly netns?: string;
  readonly log: Logger;
}

/** A link as `ip -d -j link show` prints it (the fields read here). */
export interface LinkDetails {
  ifname?: string;
  ifindex?: number;
  ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: { external?: boolean; port?: number } };
}

/** What the agent does at start about the overlay device, from the node's links. */
export type OverlayPlan =
  | { readonly action: "create" }
  | { readonly action: "adopt"; readonly ifindex: number; /** an agent made it (the mark): an uninstall removes it */ readonly madeByMembrane: boolean }
  | { readonly action: "refuse"; readonly problem: string };

/**
 * Create, adopt or refuse, from the node's links. A link of that name is adopted when it is a collect-metadata
 * VXLAN device on the overlay port (an earlier agent's, or one the node brought) and refused otherwise: sending
 * pods' packets into any other link would leak them. Without one, a VXLAN device of another name on the overlay
 * port collides with the one to be made: refused, naming it, rather than left to fail inside `ip link`. Pure.
 */
export function planOverlay(device: string, links: readonly LinkDetails[]): OverlayPlan {
  const named = links.find((l) => l.ifname === device);
  if (named) {
    const problem = overlayLinkProblem(named);
    return problem ? { action: "refuse", problem } : { action: "adopt", ifindex: named.ifindex!, madeByMembrane: named.ifalias === OVERLAY_MADE_BY };
  }
  // Another VXLAN device on the port holds it: the kernel refuses a second collect-metadata device there (EEXIST), and
  // one with a VNI keeps it from coming up (EADDRINUSE).
  const other = links.find((l) => l.linkinfo?.info_kind === "vxlan" && l.linkinfo.info_data?.port === OVERLAY_VXLAN_PORT);
  if (other) {
    return {
      action: "refuse",
      problem:
        overlayLinkProblem(other) === undefined
          ? `the node already has a collect-metadata VXLAN device on UDP ${OVERLAY_VXLAN_PORT}, ${other.ifname}, and a second one cannot be made on that port: name it to use it (--tunnel-device ${other.ifname}) or remove it`
          : `${other.ifname}, a VXLAN device without collect-metadata, holds UDP ${OVERLAY_VXLAN_PORT}: remove it or move it to another port`,
    };
  }
  return { action: "create" };
}

/** Whether an uninstall removes the link of that name: only a device an agent made (the mark), never the node's own or another kind of link. Pure. */
export function overlayRemoval(device: string, links: readonly LinkDetails[]): { readonly remove: true; readonly ifindex: number } | { readonly remove: false; readonly why: string } {
  const named = links.find((l) => l.ifname === device);
  if (!named) return { remove: false, why: "no such link" };
  const problem = overlayLinkProblem(named);
  if (problem) return { remove: false, why: problem };
  if (named.ifalias !== OVERLAY_MADE_BY) return { remove: false, why: "not made by Membrane (adopted from the node): kept" };
  return { remove: true, ifindex: named.ifindex! };
}

/**
 * Makes the device (collect-metadata VXLAN on the overlay port, MTU of the underlay less VXLAN's overhead, marked as
 * Membrane's) or adopts the one of that name, and attaches from-overlay on it. A restart adopts it again (the same
 * pinned link, updated in place).
 */
export function startOverlayDevice(o: OverlayDeviceOptions): { device: string; ifindex: number; created: boolean; madeByMembrane: boolean } {
  const plan = planOverlay(o.device, listLinks(o.netns));
  if (plan.action === "refuse") throw new Error(`--tunnel-device ${o.device}: ${plan.problem}`);
  let ifindex: number;
  if (plan.action === "create") {
    ip(o.netns, ["link", "add", o.device, "type", "vxlan", "external", "dstport", String(OVERLAY_VXLAN_PORT)]);
    ip(o.netns, ["link", "set", o.device, "alias", OVERLAY_MADE_BY]);
    ip(o.netns, ["link", "set", o.device, "mtu", String(UNDERLAY_MTU - VXLAN_OVERHEAD), "up"]);
    const made = listLinks(o.netns).find((l) => l.ifname === o.device);
    if (made?.ifindex === undefined) throw new Error(`--tunnel-device ${o.device}: made, then not found`);
    ifindex = made.ifindex;
  } else {
    ip(o.netns, ["link", "set", o.device, "up"]);
    ifindex = plan.ifindex;
  }
  const created = plan.action === "create";
  const madeByMembrane = created || (plan.action === "adopt" && plan.madeByMembrane);
  o.datapath.attachOverlay(ifindex, o.netns);
  o.log.info({ device: o.device, ifindex, netns: o.netns, created, madeByMembrane, port: OVERLAY_VXLAN_PORT }, created ? "overlay device made and attached" : "overlay device adopted and attached");
  return { device: o.device, ifindex, created, madeByMembrane };
}

/** The uninstall's part: removes the device only if an agent made it; a device the node brought stays, and the log says which. */
export function removeOverlayDevice(o: { device: string; netns?: string; log: Logger }): boolean {
  const decision = overlayRemoval(o.device, listLinks(o.netns));
  if (!decision.remove) {
    o.log.info({ device: o.device, netns: o.netns, why: decision.why }, "uninstalled: the overlay device not removed");
    return false;
  }
  ip(o.netns, ["link", "del", o.device]);
  o.log.info({ device: o.device, ifindex: decision.ifindex, netns: o.netns }, "uninstalled: the overlay device removed");
  return true;
}

/** Why an existing link cannot be the overlay, or undefined when it can. Pure. */
export function overlayLinkProblem(link: LinkDetails | undefined): string | undefined {
  if (!link || link.ifindex === undefined) return "no such link";
  if (link.linkinfo?.info_kind !== "vxlan") return `a ${link.linkinfo?.info_kind ?? "non-VXLAN"} link, not a VXLAN device`;
  if (link.linkinfo.info_data?.external !== true) return "a VXLAN device without collect-metadata (external): the VNI cannot carry identities";
  if (link.linkinfo.info_data.port !== OVERLAY_VXLAN_PORT) return `a VXLAN device on port ${link.linkinfo.info_data.port}, not the overlay's ${OVERLAY_VXLAN_PORT}`;
  return undefined;
}

function listLinks(netns: string | undefined): LinkDetails[] {
  const out = execFileSync("ip", [...(netns ? ["-n", netns] : []), "-d", "-j", "link", "show"], { stdio: ["ignore", "pipe", "pipe"] }).toString();
  return JSON.parse(out) as LinkDetails[];
}

function ip(netns: string | undefined, args: string[]): void {
  try {
    execFileSync("ip", [...(netns ? ["-n", netns] : []), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`--tunnel-device: ip ${args.join(" ")}: ${stderr || (err as Error).message}`, { cause: err });
  }
}
