// `membrane identity list`: the cluster's identities (CiliumIdentity objects) with their labels and how many pods use each.
import { KubeClient, type ObjectList, resourcePath } from "../kube/kube.ts";
import { IDENTITIES, PODS } from "../kube/resources.ts";
import { IDENTITY_ANNOTATION, type IdentityObject, type PodObject, labelSetOfIdentity } from "../kube/objects.ts";
import { formatLabel } from "../core/labels.ts";
import { parseFlags } from "../kube/flags.ts";
import { cliKubeconfig } from "./kubeconfig.ts";

const USAGE = `usage: membrane identity list [--kubeconfig PATH] [-o table|json]
`;

export interface IdentityRow {
  readonly id: number;
  readonly labels: string[];
  readonly pods: number;
  readonly unusedSince?: string;
}

/** Rows sorted by number; pods counted from the pods' identity annotation. */
export function identityRows(identities: readonly IdentityObject[], pods: readonly PodObject[]): IdentityRow[] {
  const count = new Map<string, number>();
  for (const p of pods) {
    const id = p.metadata.annotations?.[IDENTITY_ANNOTATION];
    if (id !== undefined) count.set(id, (count.get(id) ?? 0) + 1);
  }
  return identities
    .map((o) => ({
      id: Number(o.metadata.name),
      labels: labelSetOfIdentity(o).labels.map(formatLabel),
      pods: count.get(o.metadata.name) ?? 0,
      ...(o.metadata.annotations?.["membrane.io/unused-since"] ? { unusedSince: o.metadata.annotations["membrane.io/unused-since"] } : {}),
    }))
    .sort((a, b) => a.id - b.id);
}

export function formatTable(rows: readonly IdentityRow[]): string {
  const lines = [["ID", "PODS", "LABELS"]];
  for (const r of rows) lines.push([String(r.id), String(r.pods), r.labels.join(" ")]);
  const w0 = Math.max(...lines.map((l) => (l[0] ?? "").length));
  const w1 = Math.max(...lines.map((l) => (l[1] ?? "").length));
  return lines.map((l) => `${(l[0] ?? "").padEnd(w0)}   ${(l[1] ?? "").padEnd(w1)}   ${l[2] ?? ""}`.trimEnd()).join("\n") + "\n";
}

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "list") {
    process.stderr.write(sub === undefined || sub === "help" || sub === "--help" ? USAGE : `membrane identity: unknown subcommand "${sub}"\n${USAGE}`);
    return sub === "help" || sub === "--help" ? 0 : 2;
  }
  const flags = parseFlags({ args: rest, options: { kubeconfig: { type: "string" }, output: { type: "string", short: "o" } } });
  if (!flags.ok) {
    process.stderr.write(`membrane identity list: ${flags.error}\n${USAGE}`);
    return 2;
  }
  const kubeconfig = flags.parsed.values.kubeconfig;
  const output = flags.parsed.values.output ?? "table";
  if (output !== "table" && output !== "json") {
    process.stderr.write(`membrane identity list: -o: "${output}" is not table or json\n`);
    return 2;
  }
  const client = await KubeClient.fromKubeconfig(await cliKubeconfig(kubeconfig));
  try {
    // One after the other: a refused credential is reported once, for the first request, whatever the timing.
    const ids = await client.get<ObjectList<IdentityObject>>(resourcePath(IDENTITIES));
    const pods = await client.get<ObjectList<PodObject>>(resourcePath(PODS));
    const rows = identityRows(ids.items, pods.items);
    process.stdout.write(output === "json" ? JSON.stringify(rows, null, 2) + "\n" : formatTable(rows));
    return 0;
  } catch (err) {
    process.stderr.write(`membrane identity list: ${(err as Error).message}\n`);
    return 1;
  } finally {
    client.close();
  }
}
