// Encryption switched off on a node that had WireGuard: the device an earlier agent left running (it outlives agents by design) is
// stopped, its routing rule and table go, and the node withdraws its public key and EncryptionReady from its CiliumNode, so that
// the other nodes stop sending to it through a tunnel it no longer has.
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { type KubeClient, resourcePath } from "../../kube/kube.ts";
import { CILIUM_NODES } from "../../kube/resources.ts";
import { recordedPid, stopProcess } from "../recorded-process.ts";
import { ENCRYPTION_READY } from "./publication.ts";
import { UAPI_DIR } from "./wireguard-uapi.ts";
import { RULE_IPPROTO, RULE_PREF, WIREGUARD_TABLE, wireguardIfname } from "./wireguard.ts";

export interface WireguardRemoval {
  readonly nodeName: string;
  readonly netns?: string;
  readonly stateDir: string;
  readonly vxlanPort: number;
  readonly log: Logger;
}

function ip(netns: string | undefined, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile("ip", [...(netns ? ["-n", netns] : []), ...args], { timeout: 10_000 }, (err, stdout, stderr) => (err ? reject(new Error(`ip ${args.join(" ")}: ${stderr.trim() || err.message}`)) : resolve(stdout))),
  );
}

export async function removeWireguard(o: WireguardRemoval): Promise<string[]> {
  const ifname = wireguardIfname(o.nodeName);
  const removed: string[] = [];
  const pidFile = path.join(o.stateDir, "wireguard-go.pid");
  // Only the process the agent recorded, and only while it still is that device's wireguard-go.
  const pid = recordedPid(pidFile, ifname);
  if (pid !== undefined) {
    await stopProcess(pid, 5_000); // wireguard-go removes its device on the way out
    removed.push(`wireguard-go (pid ${pid})`);
  }
  rmSync(pidFile, { force: true });
  if ((await ip(o.netns, ["-j", "link", "show", "dev", ifname]).catch(() => "[]")) !== "[]") {
    await ip(o.netns, ["link", "del", ifname]);
    removed.push(`device ${ifname}`);
  }
  rmSync(path.join(UAPI_DIR, `${ifname}.sock`), { force: true });
  const rules = JSON.parse((await ip(o.netns, ["-j", "rule", "list", "pref", String(RULE_PREF)])) || "[]") as { table?: string }[];
  if (rules.some((r) => r.table === String(WIREGUARD_TABLE))) {
    await ip(o.netns, ["rule", "del", "pref", String(RULE_PREF), "ipproto", RULE_IPPROTO, "dport", String(o.vxlanPort), "lookup", String(WIREGUARD_TABLE)]);
    removed.push(`rule ${RULE_PREF}`);
  }
  // A table nothing was ever added to does not exist: "FIB table does not exist".
  if ((await ip(o.netns, ["route", "show", "table", String(WIREGUARD_TABLE)]).catch(() => "")).trim() !== "") {
    await ip(o.netns, ["route", "flush", "table", String(WIREGUARD_TABLE)]);
    removed.push(`table ${WIREGUARD_TABLE}`);
  }
  if (removed.length > 0) o.log.info({ ifname, removed }, "encryption is off: the WireGuard device of an earlier run is removed");
  return removed;
}

interface CiliumNodeEncryption {
  spec?: { encryption?: { publicKey?: string } };
  status?: { conditions?: { type: string }[]; encryption?: { mode?: string } };
}

/** Withdraws the node's WireGuard public key, its EncryptionReady and status.encryption from its CiliumNode (when it still announces them). */
export async function withdrawWireguard(client: KubeClient, nodeName: string, log: Logger): Promise<void> {
  const p = resourcePath(CILIUM_NODES, undefined, nodeName);
  const cn = await client.get<CiliumNodeEncryption>(p).catch(() => undefined);
  if (!cn) return;
  if (cn.spec?.encryption?.publicKey) await client.mergePatch(p, { spec: { encryption: { publicKey: null } } });
  const conditions = cn.status?.conditions ?? [];
  if (conditions.some((c) => c.type === ENCRYPTION_READY) || cn.status?.encryption?.mode === "wireguard") {
    await client.mergePatch(`${p}/status`, { status: { conditions: conditions.filter((c) => c.type !== ENCRYPTION_READY), encryption: null } });
  }
  if (cn.spec?.encryption?.publicKey) log.info({ name: nodeName }, "encryption is off: the WireGuard public key is withdrawn from the CiliumNode");
}
