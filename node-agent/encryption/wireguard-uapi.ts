// WireGuard's cross-platform configuration protocol (UAPI) over the device's unix socket, /var/run/wireguard/<ifname>.sock: what wg(8) speaks to a userspace implementation.
import net from "node:net";

export const UAPI_DIR = "/var/run/wireguard";

export interface PeerState {
  /** Hex, as UAPI writes keys. */
  readonly publicKey: string;
  readonly endpoint?: string;
  readonly allowedIPs: readonly string[];
  /** Unix seconds; 0 = never. */
  readonly lastHandshake: number;
  readonly rxBytes: number;
  readonly txBytes: number;
}

export interface DeviceState {
  readonly privateKey?: string;
  readonly listenPort?: number;
  readonly peers: readonly PeerState[];
}

/** One request, the whole answer; rejects on an errno other than 0. */
export function uapi(socket: string, request: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    let out = "";
    const timer = setTimeout(() => c.destroy(new Error(`${socket}: no answer within ${timeoutMs} ms`)), timeoutMs);
    c.on("connect", () => c.write(request.endsWith("\n\n") ? request : `${request}\n\n`));
    c.on("data", (d: Buffer) => {
      out += d.toString();
      // The answer ends with errno=N and an empty line.
      if (/(^|\n)errno=-?\d+\n\n$/.test(out)) c.end();
    });
    c.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    c.on("close", () => {
      clearTimeout(timer);
      const errno = /(?:^|\n)errno=(-?\d+)\n/.exec(out)?.[1];
      if (errno === undefined) reject(new Error(`${socket}: answer without errno: ${JSON.stringify(out.slice(0, 200))}`));
      else if (errno !== "0") reject(new Error(`${socket}: ${request.split("\n")[0]} failed with errno ${errno}`));
      else resolve(out);
    });
  });
}

/** Parses a `get=1` answer. */
export function parseDeviceState(text: string): DeviceState {
  let privateKey: string | undefined;
  let listenPort: number | undefined;
  const peers: { publicKey: string; endpoint?: string; allowedIPs: string[]; lastHandshake: number; rxBytes: number; txBytes: number }[] = [];
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq < 0) continue;
    const k = line.slice(0, eq);
    const v = line.slice(eq + 1);
    const peer = peers[peers.length - 1];
    if (k === "private_key") privateKey = v;
    else if (k === "listen_port") listenPort = Number(v);
    else if (k === "public_key") peers.push({ publicKey: v, allowedIPs: [], lastHandshake: 0, rxBytes: 0, txBytes: 0 });
    else if (!peer) continue;
    else if (k === "endpoint") peer.endpoint = v;
    else if (k === "allowed_ip") peer.allowedIPs.push(v);
    else if (k === "last_handshake_time_sec") peer.lastHandshake = Number(v);
    else if (k === "rx_bytes") peer.rxBytes = Number(v);
    else if (k === "tx_bytes") peer.txBytes = Number(v);
  }
  return { ...(privateKey !== undefined ? { privateKey } : {}), ...(listenPort !== undefined ? { listenPort } : {}), peers };
}

export async function getDevice(socket: string): Promise<DeviceState> {
  return parseDeviceState(await uapi(socket, "get=1"));
}

export interface PeerConfig {
  readonly publicKey: Buffer;
  readonly endpoint: string;
  /** Replaces the peer's allowed IPs: the sources accepted from it and the destinations sent to it. */
  readonly allowedIPs: readonly string[];
}

/**
 * A `set=1` request: peers added or updated in place (their sessions kept), `remove` ones dropped, and existing peers'
 * persistent keepalive interval set (`keepalive`: seconds by public key, 0 = off; turned on, the peer sends one at once).
 */
export function setRequest(o: { privateKey?: Buffer; listenPort?: number; peers?: readonly PeerConfig[]; remove?: readonly string[]; keepalive?: ReadonlyMap<string, number> }): string {
  const lines = ["set=1"];
  if (o.privateKey) lines.push(`private_key=${o.privateKey.toString("hex")}`);
  if (o.listenPort !== undefined) lines.push(`listen_port=${o.listenPort}`);
  for (const hex of o.remove ?? []) lines.push(`public_key=${hex}`, "remove=true");
  for (const p of o.peers ?? []) {
    lines.push(`public_key=${p.publicKey.toString("hex")}`, `endpoint=${p.endpoint}`, "replace_allowed_ips=true", ...p.allowedIPs.map((ip) => `allowed_ip=${ip}`));
  }
  for (const [hex, seconds] of o.keepalive ?? []) lines.push(`public_key=${hex}`, `persistent_keepalive_interval=${seconds}`);
  return `${lines.join("\n")}\n\n`;
}
