// `membrane encryption status|rotate`: the cluster's encryption keys and each node's encryption state; asking the operator for a key rotation.
import { KubeClient, type ObjectList, resourcePath } from "../kube/kube.ts";
import { CILIUM_NODES, ENCRYPTION_KEYS } from "../kube/resources.ts";
import { parseFlags } from "../kube/flags.ts";
import { ENCRYPTION_READY, ROTATE_ANNOTATION } from "../core/encryption.ts";
import type { CiliumNode, MembraneEncryptionKey } from "../crds/generated/types.ts";
import { cliKubeconfig } from "./kubeconfig.ts";

const USAGE = `usage: membrane encryption status [--kubeconfig PATH] [-o table|json]
       membrane encryption rotate --key NAME [--kubeconfig PATH]

  status   each MembraneEncryptionKey (mode, key id, SPI, nodes on the current key n/m, Ready) and each
           node (the SPI or WireGuard public key it announces, EncryptionReady and why)
  rotate   asks the operator to rotate the key NAME (annotation ${ROTATE_ANNOTATION}): a new key under the
           next SPI; the previous one stays in the Secret until every node uses the new one
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
      return {
        name: n.metadata.name ?? "",
        ...(spi !== undefined && spi > 0 ? { spi } : {}),
        ...(n.spec?.encryption?.publicKey ? { publicKey: n.spec.encryption.publicKey } : {}),
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
  const n = [["NODE", "SPI", "PUBLIC-KEY", "ENCRYPTION-READY", "MESSAGE"]];
  for (const r of nodes) n.push([r.name, String(r.spi ?? "-"), r.publicKey ?? "-", r.ready, r.message]);
  return `${keys.length === 0 ? "no MembraneEncryptionKey: encryption is off\n" : table(k)}\n${table(n)}`;
}

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "status" && sub !== "rotate") {
    const help = sub === undefined || sub === "help" || sub === "--help" || sub === "-h";
    process.stderr.write(help ? USAGE : `membrane encryption: unknown subcommand "${sub}"\n${USAGE}`);
    return help && sub !== undefined ? 0 : 2;
  }
  const flags = parseFlags({ args: rest, options: { kubeconfig: { type: "string" }, output: { type: "string", short: "o" }, key: { type: "string" } } });
  if (!flags.ok) {
    process.stderr.write(`membrane encryption ${sub}: ${flags.error}\n${USAGE}`);
    return 2;
  }
  const v = flags.parsed.values;
  if (sub === "rotate") {
    if (!v.key) {
      process.stderr.write(`membrane encryption rotate: --key: required (the MembraneEncryptionKey to rotate)\n${USAGE}`);
      return 2;
    }
    const client = await KubeClient.fromKubeconfig(await cliKubeconfig(v.kubeconfig));
    try {
      const at = new Date().toISOString();
      await client.mergePatch(resourcePath(ENCRYPTION_KEYS, undefined, v.key), { metadata: { annotations: { [ROTATE_ANNOTATION]: at } } });
      process.stdout.write(`rotation of ${v.key} requested (${ROTATE_ANNOTATION}=${at}); watch it with membrane encryption status\n`);
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
      client.get<ObjectList<MembraneEncryptionKey>>(resourcePath(ENCRYPTION_KEYS)),
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
