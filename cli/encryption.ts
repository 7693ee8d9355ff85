// `membrane encryption status|rotate`: the cluster's encryption keys and each node's encryption state; asking the operator for a key rotation.
import { KubeClient, type ObjectList, isNotFound, resourcePath } from "../kube/kube.ts";
import { CILIUM_NODES, ENCRYPTION_KEYS } from "../kube/resources.ts";
import { parseFlags } from "../kube/flags.ts";
import { ENCRYPTION_READY, ROTATE_ANNOTATION, WIREGUARD_ROTATE_ANNOTATION } from "../core/encryption.ts";
import type { CiliumNode, MembraneEncryptionKey } from "../crds/generated/types.ts";
import { cliKubeconfig } from "./kubeconfig.ts";

const USAGE = `usage: membrane encryption status [--kubeconfig PATH] [-o table|json]
       membrane encryption rotate --key NAME | --node NODE [--kubeconfig PATH]

  status   each MembraneEncryptionKey (mode, key id, SPI, nodes on the current key n/m, Ready) and each
           node (the SPI or WireGuard public key it announces, EncryptionReady and why)
  rotate   --key NAME: asks the operator to rotate the key NAME (annotation ${ROTATE_ANNOTATION}): ipsec, a new
           key under the next SPI, the previous one kept in the Secret until every node uses the new one;
           wireguard, every node's agent asked for a new key pair (as --node for each node).
           --node NODE: asks NODE's agent for a new WireGuard key pair (annotation ${WIREGUARD_ROTATE_ANNOTATION} on
           its CiliumNode); the other nodes switch to its new public key as it appears there
`;

export interface KeyRow {
  readonly name: string;
  readonly mode: string;
  readonly keyID?: number;
  readonly spi?: number;
  readonly previousSPI?: number;
  readonly nodes?: string;
  readonly ready: string;
  readonly message: string;
}

export interface NodeRow {
  readonly name: string;
  readonly spi?: number;
  readonly publicKey?: string;
  readonly peers?: number;
  readonly lastHandshake?: string;
  readonly rxBytes?: number;
  readonly txBytes?: number;
  readonly ready: string;
  readonly message: string;
}

export function keyRows(keys: readonly MembraneEncryptionKey[]): KeyRow[] {
  return keys
    .map((k) => {
      const r = k.status?.conditions?.find((c) => c.type === "Ready");
      return {
        name: k.metadata.name ?? "",
        mode: k.spec.mode,
        ...(k.status?.currentKeyID !== undefined ? { keyID: k.status.currentKeyID } : {}),
        ...(k.status?.currentSPI !== undefined ? { spi: k.status.currentSPI } : {}),
        ...(k.status?.previousSPI !== undefined ? { previousSPI: k.status.previousSPI } : {}),
        ...(k.status?.nodesOnCurrentKey !== undefined ? { nodes: k.status.nodesOnCurrentKey } : {}),
        ready: r ? `${r.status}/${r.reason}` : "Unknown",
        message: r?.message ?? "",
      };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

export function nodeRows(nodes: readonly CiliumNode[]): NodeRow[] {
  return nodes
    .map((n) => {
      const r = n.status?.conditions?.find((c) => c.type === ENCRYPTION_READY);
      const spi = n.spec?.encryption?.key;
      const e = n.status?.encryption;
      return {
        name: n.metadata.name ?? "",
        ...(spi !== undefined && spi > 0 ? { spi } : {}),
        ...(n.spec?.encryption?.publicKey ? { publicKey: n.spec.encryption.publicKey } : {}),
        ...(e?.peers !== undefined ? { peers: e.peers } : {}),
        ...(e?.lastHandshake !== undefined ? { lastHandshake: e.lastHandshake } : {}),
        ...(e?.rxBytes !== undefined ? { rxBytes: e.rxBytes } : {}),
        ...(e?.txBytes !== undefined ? { txBytes: e.txBytes } : {}),
        ready: r ? `${r.status}/${r.reason}` : "-",
        message: r?.message ?? "",
      };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("   ").trimEnd()).join("\n") + "\n";
}

export function formatStatus(keys: readonly KeyRow[], nodes: readonly NodeRow[]): string {
  const k = [["KEY", "MODE", "KEY-ID", "SPI", "NODES", "READY", "MESSAGE"]];
  for (const r of keys) k.push([r.name, r.mode, String(r.keyID ?? "-"), r.spi === undefined ? "-" : r.previousSPI !== undefined ? `${r.spi} (previous ${r.previousSPI})` : String(r.spi), r.nodes ?? "-", r.ready, r.message]);
  const n = [["NODE", "SPI", "PUBLIC-KEY", "PEERS", "LAST-HANDSHAKE", "RX-BYTES", "TX-BYTES", "ENCRYPTION-READY", "MESSAGE"]];
  const opt = (v: string | number | undefined): string => (v === undefined ? "-" : String(v));
  for (const r of nodes) n.push([r.name, opt(r.spi), r.publicKey ?? "-", opt(r.peers), opt(r.lastHandshake), opt(r.rxBytes), opt(r.txBytes), r.ready, r.message]);
  return `${keys.length === 0 ? "no MembraneEncryptionKey: encryption is off\n" : table(k)}\n${table(n)}`;
}

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "status" && sub !== "rotate") {
    const help = sub === undefined || sub === "help" || sub === "--help" || sub === "-h";
    process.stderr.write(help ? USAGE : `membrane encryption: unknown subcommand "${sub}"\n${USAGE}`);
    return help && sub !== undefined ? 0 : 2;
  }
  const flags = parseFlags({ args: rest, options: { kubeconfig: { type: "string" }, output: { type: "string", short: "o" }, key: { type: "string" }, node: { type: "string" } } });
  if (!flags.ok) {
    process.stderr.write(`membrane encryption ${sub}: ${flags.error}\n${USAGE}`);
    return 2;
  }
  const v = flags.parsed.values;
  if (sub === "rotate") {
    if ((v.key === undefined) === (v.node === undefined) || v.key === "" || v.node === "") {
      process.stderr.write(`membrane encryption rotate: --key or --node: one of them, required (the IPsec key, or the node whose WireGuard key pair to renew)\n${USAGE}`);
      return 2;
    }
    const client = await KubeClient.fromKubeconfig(await cliKubeconfig(v.kubeconfig));
    try {
      const at = new Date().toISOString();
      const [resource, name, annotation] = v.key !== undefined ? [ENCRYPTION_KEYS, v.key, ROTATE_ANNOTATION] : [CILIUM_NODES, v.node!, WIREGUARD_ROTATE_ANNOTATION];
      await client.mergePatch(resourcePath(resource, undefined, name), { metadata: { annotations: { [annotation]: at } } });
      process.stdout.write(`rotation of ${v.key !== undefined ? `key ${name}` : `node ${name}'s WireGuard key pair`} requested (${annotation}=${at}); watch it with membrane encryption status\n`);
      return 0;
    } finally {
      client.close();
    }
  }
  const output = v.output ?? "table";
  if (output !== "table" && output !== "json") {
    process.stderr.write(`membrane encryption status: -o: "${output}" is not table or json\n`);
    return 2;
  }
  const client = await KubeClient.fromKubeconfig(await cliKubeconfig(v.kubeconfig));
  try {
    const [keys, nodes] = await Promise.all([
      // No MembraneEncryptionKey CRD: no keys (WireGuard needs none).
      client.get<ObjectList<MembraneEncryptionKey>>(resourcePath(ENCRYPTION_KEYS)).catch((e: unknown) => {
        if (isNotFound(e)) return { items: [] as MembraneEncryptionKey[] };
        throw e;
      }),
      client.get<ObjectList<CiliumNode>>(resourcePath(CILIUM_NODES)),
    ]);
    const k = keyRows(keys.items);
    const n = nodeRows(nodes.items);
    process.stdout.write(output === "json" ? JSON.stringify({ keys: k, nodes: n }, null, 2) + "\n" : formatStatus(k, n));
    return 0;
  } finally {
    client.close();
  }
}
