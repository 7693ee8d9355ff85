// The VXLAN overlay device (Cilium's cilium_vxlan), made by the agent itself when the node lacks it: the datapath sends pod packets to other nodes into it with the sender's identity in the VNI, and from-overlay judges what arrives there.
import { execFileSync } from "node:child_process";
import type { Logger } from "pino";
import type { Datapath } from "./bpf/datapath.ts";
import { OVERLAY_VXLAN_PORT } from "./encryption/mode.ts";
import { UNDERLAY_MTU, VXLAN_OVERHEAD } from "./mtu.ts";

export interface OverlayDeviceOptions {
  readonly datapath: Pick<Datapath, "attachOverlay">;
  /** The device's name (--tunnel-device). */
  readonly device: string;
  /** The namespace holding the node's devices (the agent's own when absent). */
  readonly netns?: string;
  readonly log: Logger;
}

interface LinkDetails {
  ifindex?: number;
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: { external?: boolean; port?: number } };
}

/**
 * Makes the device (collect-metadata VXLAN on the overlay port, MTU of the underlay less VXLAN's overhead) unless it
 * exists, and attaches from-overlay on it. A restart finds it and attaches again (the same pinned link, updated in
 * place). A link of that name that is not such a device is refused: sending pods' packets into it would leak them.
 */
export function startOverlayDevice(o: OverlayDeviceOptions): { device: string; ifindex: number; created: boolean } {
  let link = showLink(o.device, o.netns);
  const created = link === undefined;
  if (created) {
    ip(o.netns, ["link", "add", o.device, "type", "vxlan", "external", "dstport", String(OVERLAY_VXLAN_PORT)]);
    ip(o.netns, ["link", "set", o.device, "mtu", String(UNDERLAY_MTU - VXLAN_OVERHEAD), "up"]);
    link = showLink(o.device, o.netns);
  }
  const problem = overlayLinkProblem(link);
  if (problem) throw new Error(`--tunnel-device ${o.device}: ${problem}`);
  if (!created) ip(o.netns, ["link", "set", o.device, "up"]);
  o.datapath.attachOverlay(link!.ifindex!, o.netns);
  o.log.info({ device: o.device, ifindex: link!.ifindex, netns: o.netns, created, port: OVERLAY_VXLAN_PORT }, "overlay device attached");
  return { device: o.device, ifindex: link!.ifindex!, created };
}

/** Why an existing link cannot be the overlay, or undefined when it can. */
export function overlayLinkProblem(link: LinkDetails | undefined): string | undefined {
  if (!link || link.ifindex === undefined) return "no such link";
  if (link.linkinfo?.info_kind !== "vxlan") return `a ${link.linkinfo?.info_kind ?? "non-VXLAN"} link, not a VXLAN device`;
  if (link.linkinfo.info_data?.external !== true) return "a VXLAN device without collect-metadata (external): the VNI cannot carry identities";
  if (link.linkinfo.info_data.port !== OVERLAY_VXLAN_PORT) return `a VXLAN device on port ${link.linkinfo.info_data.port}, not the overlay's ${OVERLAY_VXLAN_PORT}`;
  return undefined;
}

function showLink(name: string, netns: string | undefined): LinkDetails | undefined {
  try {
    return (JSON.parse(execFileSync("ip", [...(netns ? ["-n", netns] : []), "-d", "-j", "link", "show", "dev", name], { stdio: ["ignore", "pipe", "pipe"] }).toString()) as LinkDetails[])[0];
  } catch {
    return undefined; // no such link
  }
}

function ip(netns: string | undefined, args: string[]): void {
  try {
    execFileSync("ip", [...(netns ? ["-n", netns] : []), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`--tunnel-device: ip ${args.join(" ")}: ${stderr || (err as Error).message}`, { cause: err });
  }
}
