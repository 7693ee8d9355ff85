// Starts the agent's encryption mode from its flags: IPsec (a probe of the kernel) or WireGuard (the device, and the CiliumNodes that make its peers and ask for key rotations).
import type { Logger } from "pino";
import { Informer } from "../../kube/informer.ts";
import type { KubeClient, KubeObject } from "../../kube/kube.ts";
import { CILIUM_NODES } from "../../kube/resources.ts";
import { IpsecEncryption } from "./ipsec.ts";
import type { AgentEncryptionMode, EncryptionPublication } from "./publication.ts";
import { type EncryptedNodesSink, WireguardEncryption, type PeerNode } from "./wireguard.ts";
import { WIREGUARD_ROTATE_ANNOTATION } from "../../core/encryption.ts";
import { removeWireguard, withdrawWireguard } from "./wireguard-removal.ts";
import type { WireguardRouting } from "../mtu.ts";

/** The port of the nodes' VXLAN overlay device (Linux's historical default, as Cilium and the local cluster use it). */
export const OVERLAY_VXLAN_PORT = 8472;

export interface AgentEncryption {
  publication(): EncryptionPublication;
  onChange(f: () => void): () => void;
  stop(): Promise<void>;
  readonly wireguard?: WireguardEncryption;
}

interface CiliumNodeObject extends KubeObject {
  spec?: { addresses?: { type: string; ip: string }[]; encryption?: { publicKey?: string }; ipam?: { podCIDRs?: string[] } };
}

export interface EncryptionFlags {
  readonly mode: AgentEncryptionMode;
  readonly strict: boolean;
  readonly nodeName: string;
  readonly netns?: string;
  readonly stateDir: string;
  readonly wireguardGo: string;
  readonly wireguardRouting: WireguardRouting;
}

export function peerNode(cn: CiliumNodeObject): PeerNode {
  const ip = cn.spec?.addresses?.find((a) => a.type === "InternalIP")?.ip;
  const publicKey = cn.spec?.encryption?.publicKey;
  return { name: cn.metadata.name, ...(publicKey ? { publicKey } : {}), ...(ip ? { internalIP: ip } : {}) };
}

/** undefined when encryption is disabled. WireGuard needs API access (the peers are the other CiliumNodes). */
export async function startEncryption(f: EncryptionFlags, client: KubeClient | undefined, datapath: EncryptedNodesSink, log: Logger): Promise<AgentEncryption | undefined> {
  // Pinned maps and the WireGuard device outlive agents: neither the strict flag nor the tunnel of an earlier run outlives the mode.
  if (f.mode !== "wireguard") {
    datapath.setEncryptionStrict(false);
    datapath.setEncryptedNodes([]);
    datapath.setWireguardDevice(0);
    datapath.setStrictCIDRs([]);
    await removeWireguard({ nodeName: f.nodeName, ...(f.netns ? { netns: f.netns } : {}), stateDir: f.stateDir, vxlanPort: OVERLAY_VXLAN_PORT, log });
  }
  if (f.mode === "disabled") {
    if (client) await withdrawWireguard(client, f.nodeName, log);
    return undefined;
  }
  if (f.mode === "ipsec") {
    const ipsec = new IpsecEncryption({ ...(f.netns ? { netns: f.netns } : {}), log });
    await ipsec.start();
    return { publication: () => ipsec.publication(), onChange: (fn) => ipsec.onChange(fn), stop: async () => undefined };
  }
  if (!client) throw new Error("--encryption wireguard needs API access (--kubeconfig or in-cluster): the peers are the other nodes' CiliumNodes");
  const wg = new WireguardEncryption({
    nodeName: f.nodeName,
    ...(f.netns ? { netns: f.netns } : {}),
    stateDir: f.stateDir,
    binary: f.wireguardGo,
    vxlanPort: OVERLAY_VXLAN_PORT,
    routing: f.wireguardRouting,
    strict: f.strict,
    datapath,
    log,
  });
  await wg.start();
  const nodes = new Informer<CiliumNodeObject>(client, CILIUM_NODES, log);
  // Level-triggered: any CiliumNode event re-derives every peer; our own node's annotation asks for a rotation.
  nodes.on(() => {
    void wg.setPeers(nodes.list().map(peerNode));
    // Strict covers the other nodes' pod CIDRs: a pod there the ipcache does not name yet is dropped, not sent by the
    // node's route in clear (a node's CiliumNode, and so its CIDRs, comes before its pods).
    datapath.setStrictCIDRs(f.strict ? nodes.list().filter((cn) => cn.metadata.name !== f.nodeName).flatMap((cn) => cn.spec?.ipam?.podCIDRs ?? []) : []);
    const request = nodes.get(f.nodeName)?.metadata.annotations?.[WIREGUARD_ROTATE_ANNOTATION];
    if (request) void wg.rotate(request).catch((e: unknown) => log.error({ error: (e as Error).message }, "WireGuard key rotation failed"));
  });
  nodes.start();
  return {
    wireguard: wg,
    publication: () => wg.publication(),
    onChange: (fn) => wg.onChange(fn),
    stop: async () => {
      wg.stop();
      await nodes.stop();
    },
  };
}
