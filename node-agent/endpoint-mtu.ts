// The pod MTU for endpoints wired before the agent's mode changed it (encryption turned on or off): both ends of each veth get
// the MTU new pods get, so a pod that existed before WireGuard stops sending packets too big for the tunnel.
import { execFile } from "node:child_process";
import type { Logger } from "pino";

/** What the agent records of an endpoint that this needs. */
export interface EndpointLink {
  readonly namespace?: string;
  readonly pod?: string;
  readonly hostIfname: string;
  readonly hostIfindex: number;
  /** The pod's network namespace by path (CNI_NETNS). */
  readonly netns?: string;
}

export interface EndpointMtuResult {
  readonly changed: number;
  readonly unchanged: number;
  readonly failed: number;
}

interface JsonLink {
  readonly ifindex: number;
  readonly ifname: string;
  readonly mtu: number;
  readonly link_index?: number;
}

function run(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, [...args], { timeout: 10_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(" ")}: ${stderr.trim() || err.message}`)) : resolve(stdout))),
  );
}

/** `ip` in the node's namespace (a name, the agent's --netns) and in a pod's (a path, as CNI_NETNS gives it). */
const ipNode = (netns: string | undefined, args: readonly string[]): Promise<string> => run("ip", [...(netns ? ["-n", netns] : []), ...args]);
const ipPod = (netns: string, args: readonly string[]): Promise<string> => run("nsenter", [`--net=${netns}`, "ip", ...args]);

async function setEndpointMtu(ep: EndpointLink, mtu: number, nodeNetns: string | undefined): Promise<boolean> {
  const host = (JSON.parse(await ipNode(nodeNetns, ["-j", "link", "show", "dev", ep.hostIfname])) as JsonLink[])[0];
  if (!host || host.ifindex !== ep.hostIfindex) throw new Error(`host veth ${ep.hostIfname} (ifindex ${ep.hostIfindex}) is gone`);
  if (!ep.netns) throw new Error("the endpoint record has no network namespace: its pod side cannot be reached");
  // The pod side is the veth whose peer is the host side (the plugin may have named it anything).
  const pod = (JSON.parse((await ipPod(ep.netns, ["-j", "link", "show", "type", "veth"])) || "[]") as JsonLink[]).find((l) => l.link_index === host.ifindex);
  if (!pod) throw new Error(`no veth in ${ep.netns} is the peer of ${ep.hostIfname}`);
  if (host.mtu === mtu && pod.mtu === mtu) return false;
  // A veth drops what is larger than the receiving end's MTU: the sender's side is lowered first and raised last.
  const setPod = () => ipPod(ep.netns!, ["link", "set", "dev", pod.ifname, "mtu", String(mtu)]);
  const setHost = () => ipNode(nodeNetns, ["link", "set", "dev", ep.hostIfname, "mtu", String(mtu)]);
  if (mtu < pod.mtu) {
    await setPod();
    await setHost();
  } else {
    await setHost();
    await setPod();
  }
  // The routes carry no MTU of their own (they follow the device); path MTUs the pod learnt under the old one are forgotten.
  await ipPod(ep.netns, ["route", "flush", "cache"]);
  return true;
}

/** Gives every endpoint's veth (host and pod side) `mtu`; an endpoint that cannot be changed is logged and the rest still are. */
export async function applyEndpointMtu(endpoints: readonly EndpointLink[], mtu: number, o: { readonly netns?: string; readonly log: Logger }): Promise<EndpointMtuResult> {
  let changed = 0;
  let unchanged = 0;
  let failed = 0;
  for (const ep of endpoints) {
    try {
      if (await setEndpointMtu(ep, mtu, o.netns)) {
        changed++;
        o.log.info({ namespace: ep.namespace, name: ep.pod, hostIfname: ep.hostIfname, mtu }, "endpoint MTU changed to the pod MTU of the agent's mode");
      } else unchanged++;
    } catch (err) {
      failed++;
      o.log.error({ namespace: ep.namespace, name: ep.pod, hostIfname: ep.hostIfname, mtu, error: (err as Error).message }, "endpoint MTU could not be changed: large packets of this pod may be fragmented or lost");
    }
  }
  return { changed, unchanged, failed };
}
