// The CNI commands: ADD wires and registers a pod (all or nothing), DEL undoes it, CHECK verifies it.
import type { Logger } from "pino";
import { ADD_TIMEOUT_MS, callAgent, AgentUnreachable, type AgentRequest } from "./agent-socket.ts";
import { addressesOf, allocate, release, type IpamState } from "./ipam.ts";
import { IpamLockTimeout, IpamStateCorrupt, IpamStore } from "./ipam-store.ts";
import {
  ensureForwarding,
  hostIfname,
  hostLinkExists,
  requireNetns,
  unwirePod,
  verifyPod,
  wirePod,
  type PodWiring,
  type WiredLinks,
} from "./podnet.ts";
import { CniError, ErrorCode, type AddResult, type CniEnv, type NetConf } from "./spec.ts";

export interface Invocation {
  env: CniEnv;
  conf: NetConf;
  log: Logger;
}

function storeFor(conf: NetConf): IpamStore {
  return new IpamStore(conf.stateDir);
}

/** Maps the IPAM store's failures onto CNI codes. With `none`, a store never written is left unmade and `none` answered (a DEL). */
async function ipam<T>(conf: NetConf, fn: (state: IpamState) => { state: IpamState; value: T }, none?: { value: T }): Promise<T> {
  try {
    return none === undefined ? await storeFor(conf).update(fn) : await storeFor(conf).updateStored(fn, none.value);
  } catch (err) {
    if (err instanceof CniError) throw err;
    if (err instanceof IpamLockTimeout) throw new CniError(ErrorCode.TryAgainLater, `IPAM: ${err.message}`);
    if (err instanceof IpamStateCorrupt) throw new CniError(ErrorCode.IOFailure, `IPAM: ${err.message}`);
    throw new CniError(ErrorCode.IOFailure, `IPAM state in ${conf.stateDir}: ${(err as Error).message}`);
  }
}

async function askAgent(conf: NetConf, request: AgentRequest): Promise<void> {
  if (conf.agentSocket === undefined) return;
  let reply;
  try {
    // An ADD's answer may wait for the pod's identity (the agent's --cni-identity-wait); a DEL's never does.
    reply = await callAgent(conf.agentSocket, request, request.op === "endpoint-add" ? ADD_TIMEOUT_MS : undefined);
  } catch (err) {
    if (err instanceof AgentUnreachable)
      throw new CniError(ErrorCode.TryAgainLater, `${request.op}: ${err.message}`);
    throw err;
  }
  if (!reply.ok)
    throw new CniError(
      ErrorCode.AgentRefused,
      `${request.op}: the agent refused the endpoint: ${reply.error}`,
    );
}

function wiringFor(inv: Invocation, ip: string, ip6: string | undefined): PodWiring {
  return {
    hostIf: hostIfname(inv.env.containerId),
    netns: inv.env.netns,
    ifname: inv.env.ifname,
    ip,
    gateway: inv.conf.range.gateway,
    ...(ip6 !== undefined && inv.conf.range6 ? { ip6: { ip: ip6, gateway: inv.conf.range6.gateway } } : {}),
    mtu: inv.conf.mtu,
  };
}

function resultFor(w: PodWiring, links: WiredLinks): AddResult {
  return {
    interfaces: [
      { name: w.hostIf, mac: links.hostMac },
      { name: w.ifname, mac: links.podMac, sandbox: w.netns },
    ],
    ips: [
      { address: `${w.ip}/32`, gateway: w.gateway, interface: 1 },
      ...(w.ip6 ? [{ address: `${w.ip6.ip}/128`, gateway: w.ip6.gateway, interface: 1 }] : []),
    ],
    routes: [{ dst: "0.0.0.0/0", gw: w.gateway }, ...(w.ip6 ? [{ dst: "::/0", gw: w.ip6.gateway }] : [])],
  };
}

export async function cmdAdd(inv: Invocation): Promise<AddResult> {
  const { env, conf, log } = inv;
  const owner = { containerId: env.containerId, ifname: env.ifname };
  requireNetns(env.netns);

  // Both families in one update: a dual-stack pod holds both addresses or none.
  const allocated = await ipam<{ ip: string; ip6: string | undefined; fresh: boolean }>(conf, (state) => {
    const r = allocate(state, conf.range, owner);
    if (!r.ok) throw new CniError(ErrorCode.AddressesExhausted, `IPAM: ${r.message}`);
    if (conf.range6 === undefined) return { state: r.state, value: { ip: r.ip, ip6: undefined, fresh: r.fresh } };
    const r6 = allocate(r.state, conf.range6, owner);
    if (!r6.ok) throw new CniError(ErrorCode.AddressesExhausted, `IPAM: ${r6.message}`);
    return { state: r6.state, value: { ip: r.ip, ip6: r6.ip, fresh: r.fresh || r6.fresh } };
  });
  const w = wiringFor(inv, allocated.ip, allocated.ip6);
  try {
    let links: WiredLinks | undefined;
    if (!allocated.fresh && hostLinkExists(w.hostIf)) {
      // A repeated ADD: keep a wiring that is already right, rebuild one that is not.
      const found = verifyPod(w);
      if (found.problems.length === 0) links = found.links;
      else {
        log.warn(
          { containerId: env.containerId, problems: found.problems },
          "rebuilding a previous pod wiring that does not match",
        );
        unwirePod(w.hostIf);
      }
    } else if (hostLinkExists(w.hostIf)) {
      // A leftover from a container whose DEL never ran: the address is new, so the link is stale.
      unwirePod(w.hostIf);
    }
    if (links === undefined) {
      ensureForwarding(w.ip6 !== undefined);
      links = wirePod(w);
    }
    await askAgent(conf, {
      op: "endpoint-add",
      containerId: env.containerId,
      ...(env.podNamespace !== undefined ? { namespace: env.podNamespace } : {}),
      ...(env.podName !== undefined ? { pod: env.podName } : {}),
      ifname: env.ifname,
      netns: env.netns,
      hostIfname: w.hostIf,
      hostIfindex: links.hostIfindex,
      ips: [w.ip, ...(w.ip6 ? [w.ip6.ip] : [])],
      mtu: w.mtu,
    });
    log.info(
      {
        containerId: env.containerId,
        pod: env.podName,
        namespace: env.podNamespace,
        ip: w.ip,
        ...(w.ip6 ? { ip6: w.ip6.ip } : {}),
        hostIf: w.hostIf,
        fresh: allocated.fresh,
      },
      "pod added",
    );
    return resultFor(w, links);
  } catch (err) {
    // All or nothing: a failed ADD leaves neither a link nor an address behind. The first error
    // is what the runtime hears about; a failure to undo is added to its details.
    const undoErrors: string[] = [];
    try {
      unwirePod(w.hostIf);
    } catch (undoErr) {
      undoErrors.push((undoErr as Error).message);
    }
    try {
      await ipam(conf, (state) => ({ state: release(state, owner).state, value: undefined }));
    } catch (undoErr) {
      undoErrors.push((undoErr as Error).message);
    }
    log.warn(
      { containerId: env.containerId, err: (err as Error).message, undoErrors },
      "pod add failed, undone",
    );
    if (undoErrors.length > 0 && err instanceof CniError) {
      throw new CniError(
        err.code,
        err.message,
        [err.details, `undo failed: ${undoErrors.join("; ")}`].filter(Boolean).join("; "),
      );
    }
    throw err;
  }
}

export async function cmdDel(inv: Invocation): Promise<void> {
  const { env, conf, log } = inv;
  const owner = { containerId: env.containerId, ifname: env.ifname };
  const hostIf = hostIfname(env.containerId);
  if (conf.agentSocket !== undefined) {
    // Best effort: the link is going away either way, and a DEL that fails only makes the runtime
    // retry it; the agent reconciles its endpoints against the links that exist when it starts.
    try {
      await askAgent(conf, {
        op: "endpoint-del",
        containerId: env.containerId,
        ifname: env.ifname,
        hostIfname: hostIf,
      });
    } catch (err) {
      log.warn(
        { containerId: env.containerId, err: (err as Error).message },
        "agent not told about the deleted endpoint",
      );
    }
  }
  const removed = unwirePod(hostIf);
  // The address is freed last, so it cannot be handed out while the old link still routes to it.
  const released = await ipam(
    conf,
    (state) => {
      const r = release(state, owner);
      return { state: r.state, value: r.released };
    },
    { value: [] as string[] },
  );
  log.info({ containerId: env.containerId, hostIf, linkRemoved: removed, released }, "pod deleted");
}

function prevIPs(prevResult: unknown): string[] | undefined {
  const ips = (prevResult as { ips?: unknown } | undefined)?.ips;
  if (!Array.isArray(ips)) return undefined;
  return ips.map((i) => String((i as { address?: unknown }).address ?? "").split("/")[0] ?? "");
}

export async function cmdCheck(inv: Invocation): Promise<void> {
  const { env, conf } = inv;
  requireNetns(env.netns);
  let state;
  try {
    state = storeFor(conf).read();
  } catch (err) {
    throw new CniError(ErrorCode.IOFailure, `IPAM: ${(err as Error).message}`);
  }
  const held = addressesOf(state, { containerId: env.containerId, ifname: env.ifname });
  const ip = held.find((a) => !a.includes(":"));
  const ip6 = held.find((a) => a.includes(":"));
  if (ip === undefined)
    throw new CniError(
      ErrorCode.CheckFailed,
      `check: IPAM holds no address for container ${env.containerId} interface ${env.ifname}`,
    );
  if (conf.range6 !== undefined && ip6 === undefined)
    throw new CniError(
      ErrorCode.CheckFailed,
      `check: IPAM holds no IPv6 address for container ${env.containerId} interface ${env.ifname} (podCIDRv6 is set)`,
    );
  const assigned = conf.range6 !== undefined ? [ip, ip6!] : [ip];
  const prev = prevIPs(conf.prevResult);
  if (prev !== undefined && !(prev.length === assigned.length && prev.every((a, i) => a === assigned[i]))) {
    throw new CniError(
      ErrorCode.CheckFailed,
      `check: prevResult has ips ${JSON.stringify(prev)} but IPAM assigned ${assigned.join(", ")}`,
    );
  }
  const { problems } = verifyPod(wiringFor(inv, ip, ip6));
  if (problems.length > 0)
    throw new CniError(ErrorCode.CheckFailed, `check: ${problems[0]}`, problems.join("; "));
}
