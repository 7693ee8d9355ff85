// The host firewall on the agent's side: the node's devices and addresses as the host endpoint, its enforcement from the host policy, and the lock-out guard.
import type { Logger } from "pino";
import { IDENTITY } from "../core/identity.ts";
import { PROTO_NUMBER } from "../core/model.ts";
import type { NodeState } from "../core/wire.ts";
import { parseHostPort } from "../core/cidr.ts";
import type { Datapath } from "./bpf/datapath.ts";
import type { HostGuardEntry } from "./bpf/layout.ts";
import { OVERLAY_VXLAN_PORT as VXLAN_PORT } from "./encryption/mode.ts";
import { WIREGUARD_PORT } from "./encryption/wireguard.ts";
import { deviceIndex } from "./node-device.ts";

/** The overlay's and WireGuard's UDP ports, as the encryption module uses them. */
export { VXLAN_PORT, WIREGUARD_PORT };

export interface LockOutGuardInputs {
  /** The operator's distribution server, host:port (the agent's stream). */
  readonly operator: string;
  /** The API server's port (as the node's packets carry it, after any Service translation). */
  readonly apiServerPort?: number;
  readonly vxlanPort?: number;
  readonly wireguardPort?: number;
}

/**
 * What the cluster needs to keep running, allowed whatever a host policy says (the chart's README
 * lists the same): the agent's stream to the operator and the node's API server traffic (out, and in
 * on a node serving the API), the overlay and WireGuard between nodes (both ways), ICMP echo between
 * nodes (health checks). Replies of each pass on their conntrack entry.
 */
export function lockOutGuard(i: LockOutGuardInputs): HostGuardEntry[] {
  const out: HostGuardEntry[] = [];
  const operatorPort = parseHostPort(i.operator)?.port;
  if (operatorPort !== undefined) out.push({ direction: "egress", proto: PROTO_NUMBER.TCP, port: operatorPort, peers: "any", why: "the agent's stream to the operator" });
  const api = i.apiServerPort;
  if (api !== undefined) {
    out.push({ direction: "egress", proto: PROTO_NUMBER.TCP, port: api, peers: "any", why: "the node's API server traffic (kubelet, agent)" });
    out.push({ direction: "ingress", proto: PROTO_NUMBER.TCP, port: api, peers: "any", why: "the API server on a control-plane node" });
  }
  for (const [port, why] of [[i.vxlanPort ?? VXLAN_PORT, "the overlay (VXLAN) between nodes"], [i.wireguardPort ?? WIREGUARD_PORT, "encryption (WireGuard) between nodes"]] as const) {
    out.push({ direction: "ingress", proto: PROTO_NUMBER.UDP, port, peers: "nodes", why });
    out.push({ direction: "egress", proto: PROTO_NUMBER.UDP, port, peers: "nodes", why });
  }
  for (const direction of ["ingress", "egress"] as const) out.push({ direction, proto: PROTO_NUMBER.ICMP, port: 8, peers: "nodes", why: "health checks (ICMP echo) between nodes" });
  return out;
}

/** The host endpoint's enforcement from the state: the host subject's policy, or nothing enforced when no host policy selects the node. */
export function hostEnforcement(state: NodeState): { ingressEnforced: boolean; egressEnforced: boolean } {
  const p = state.policies.find((x) => x.subject === IDENTITY.host);
  return { ingressEnforced: p?.ingressEnforced ?? false, egressEnforced: p?.egressEnforced ?? false };
}

export interface HostFirewallOptions {
  readonly datapath: Pick<Datapath, "attachHostDevice" | "setHostAddress" | "pruneHostAddresses" | "setHostGuard">;
  /** The node's devices (external interfaces, overlay device) by name, in `netns` (the agent's own when absent). */
  readonly devices: readonly string[];
  readonly netns?: string;
  /** The node's own addresses: traffic to and from them is the host endpoint's. */
  readonly addresses: readonly string[];
  readonly guard: readonly HostGuardEntry[];
  readonly log: Logger;
}

/** Attaches the host firewall's programs and keeps the host endpoint's flags in step with the host policy the agent applies. */
export class HostFirewall {
  constructor(private readonly o: HostFirewallOptions) {}

  /** The guard and the addresses (not enforced until a state says so) before the programs attach: the first packet is judged. */
  start(): void {
    this.o.datapath.setHostGuard(this.o.guard);
    this.sync({ ingressEnforced: false, egressEnforced: false, auditMode: false });
    for (const name of this.o.devices) {
      const ifindex = deviceIndex(name, this.o.netns, "host firewall device");
      this.o.datapath.attachHostDevice(ifindex, this.o.netns);
      this.o.log.info({ device: name, ifindex, netns: this.o.netns }, "host firewall attached");
    }
    this.o.log.info({ addresses: this.o.addresses, guard: this.o.guard.map((g) => `${g.direction} ${g.proto}/${g.port} ${g.peers}: ${g.why}`) }, "host firewall lock-out guard");
  }

  /** The host endpoint's flags (from hostEnforcement and the node's audit mode) on every node address. */
  sync(flags: { ingressEnforced: boolean; egressEnforced: boolean; auditMode: boolean }): void {
    for (const ip of this.o.addresses) this.o.datapath.setHostAddress({ ip, ...flags });
    this.o.datapath.pruneHostAddresses(this.o.addresses);
  }
}

