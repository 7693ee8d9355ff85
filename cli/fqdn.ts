// `membrane fqdn cache list`: what each node's DNS proxy learned (name, address, TTL left, the pod that asked), read from the agents as Cilium's `cilium fqdn cache list` reads its agent.
import http from "node:http";
import { KubeClient, listAll, type KubeObject } from "../kube/kube.ts";
import { CILIUM_NODES } from "../kube/resources.ts";
import { AGENT_API_ADDRESS_ANNOTATION } from "../kube/objects.ts";
import { parseFlags } from "../kube/flags.ts";
import { parseHostPort } from "../core/cidr.ts";
import { FQDN_CACHE_PATH, decodeFqdnCacheListing, fqdnCacheRows, type FqdnCacheListing, type FqdnCacheRow } from "../core/dns/cache-list.ts";
import { patternRegExp } from "../core/dns/name-pattern.ts";
import { KUBECONFIG_DEFAULT, cliKubeconfig } from "./kubeconfig.ts";

const USAGE = `usage: membrane fqdn cache list [--node NODE] [--name PATTERN] [--server HOST:PORT ...] [--kubeconfig FILE] [-o table|json]

What each node's DNS proxy learned: every (name, address) with the seconds its TTL has left (0: expired,
kept for the grace period or while a connection to it lives) and the pod whose lookup taught it.

  --node NODE        only this node's agent
  --name PATTERN     only names matching PATTERN, as a DNS rule's matchPattern (\`*\` within one label,
                     \`**.\` for subdomains; a plain name matches itself)
  --server HOST:PORT an agent's HTTP server (its --metrics-address or 127.0.0.1:--health-port; repeatable);
                     without it every agent is found in the cluster (the CiliumNode annotation
                     ${AGENT_API_ADDRESS_ANNOTATION}). The agents listen on their node's loopback by default:
                     from elsewhere, run it in the agent's pod (kubectl exec ds/membrane-agent -- membrane fqdn cache list --server 127.0.0.1:9962)
  --kubeconfig FILE  the cluster to find agents in (default: ${KUBECONFIG_DEFAULT})
  -o, --output       table (default) or json (one row per line)

A node whose agent does not answer (or runs no DNS proxy) is reported on stderr and the others are
listed; the exit code is 1 only when no agent answered.
`;

export interface FqdnCacheListArgs {
  readonly node?: string;
  readonly name?: string;
  readonly servers: readonly string[];
  readonly kubeconfig?: string;
  readonly output: "table" | "json";
}

export function parseFqdnCacheListArgs(args: readonly string[]): { ok: true; value: FqdnCacheListArgs } | { ok: false; error: string } {
  const flags = parseFlags({
    args: [...args],
    options: { node: { type: "string" }, name: { type: "string" }, server: { type: "string", multiple: true }, kubeconfig: { type: "string" }, output: { type: "string", short: "o" } },
  });
  if (!flags.ok) return flags;
  const v = flags.parsed.values;
  const output = v.output ?? "table";
  if (output !== "table" && output !== "json") return { ok: false, error: `-o: "${output}" is not table or json` };
  if (v.node === "") return { ok: false, error: "--node: must be a node name" };
  if (v.name !== undefined) {
    if (v.name === "" || !/^[A-Za-z0-9*_.-]+$/.test(v.name)) return { ok: false, error: `--name: "${v.name}" is not a DNS name pattern (letters, digits, "-", "_", ".", "*")` };
    patternRegExp(v.name);
  }
  const servers = v.server ?? [];
  const bad = servers.find((s) => parseHostPort(s) === undefined);
  if (bad !== undefined) return { ok: false, error: `--server: "${bad}" is not HOST:PORT` };
  if (servers.length > 0 && v.kubeconfig !== undefined) return { ok: false, error: "--kubeconfig: not together with --server (the servers are given, nothing is discovered)" };
  return { ok: true, value: { ...(v.node !== undefined ? { node: v.node } : {}), ...(v.name !== undefined ? { name: v.name } : {}), servers, ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}), output } };
}

/** GET the listing from one agent; rejects with what went wrong. */
function fetchListing(address: string, timeoutMs = 5_000): Promise<FqdnCacheListing> {
  const hp = parseHostPort(address)!;
  return new Promise((resolve, reject) => {
    const req = http.get({ host: hp.host.replace(/^\[|\]$/g, ""), port: hp.port, path: FQDN_CACHE_PATH, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => {
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch {
          return reject(new Error(`HTTP ${res.statusCode}: not JSON: ${body.slice(0, 120)}`));
        }
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}: ${(json as { error?: string }).error ?? body.trim()}`));
        const d = decodeFqdnCacheListing(json);
        if (d.ok) resolve(d.value);
        else reject(new Error(`its answer: ${d.error}`));
      });
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
  });
}

/** The agents to ask: the given servers, or every CiliumNode's annotated address (a node without one is a problem to report). */
async function agentsToAsk(a: FqdnCacheListArgs): Promise<{ targets: { node?: string; address: string }[]; problems: string[] }> {
  if (a.servers.length > 0) return { targets: a.servers.map((address) => ({ address })), problems: [] };
  const client = await KubeClient.fromKubeconfig(await cliKubeconfig(a.kubeconfig));
  try {
    const nodes = (await listAll<KubeObject>(client, CILIUM_NODES)).filter((n) => a.node === undefined || n.metadata.name === a.node).sort((x, y) => (x.metadata.name < y.metadata.name ? -1 : 1));
    if (a.node !== undefined && nodes.length === 0) return { targets: [], problems: [`--node: no CiliumNode named "${a.node}"`] };
    const targets: { node: string; address: string }[] = [];
    const problems: string[] = [];
    for (const n of nodes) {
      const address = n.metadata.annotations?.[AGENT_API_ADDRESS_ANNOTATION];
      if (address && parseHostPort(address)) targets.push({ node: n.metadata.name, address });
      else problems.push(`${n.metadata.name}: metadata.annotations["${AGENT_API_ADDRESS_ANNOTATION}"]: ${address ? `"${address}" is not HOST:PORT` : "not set (is the agent running on this node?)"}`);
    }
    return { targets, problems };
  } finally {
    client.close();
  }
}

export function fqdnCacheTable(rows: readonly FqdnCacheRow[]): string {
  const lines = [["NODE", "NAME", "ADDRESS", "TTL", "EXPIRES", "SOURCE"], ...rows.map((r) => [r.node, r.name, r.ip, String(r.ttlSeconds), r.expiresAt, r.source])];
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? "").length)));
  return lines.map((l) => l.map((c, i) => c.padEnd(widths[i]!)).join("   ").trimEnd()).join("\n") + "\n";
}

export async function run(args: string[]): Promise<number> {
  const [group, sub, ...rest] = args;
  if (group === undefined || group === "help" || group === "--help" || group === "-h" || (group === "cache" && (sub === "--help" || sub === "-h" || sub === "help"))) {
    process.stdout.write(USAGE);
    return group === undefined ? 2 : 0;
  }
  if (group !== "cache" || sub !== "list") {
    process.stderr.write(`membrane fqdn: unknown subcommand "${[group, sub].filter((x) => x !== undefined).join(" ")}"\n${USAGE}`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(USAGE);
    return 0;
  }
  const parsed = parseFqdnCacheListArgs(rest);
  if (!parsed.ok) {
    process.stderr.write(`membrane fqdn cache list: ${parsed.error}\n`);
    return 2;
  }
  const a = parsed.value;
  const { targets, problems } = await agentsToAsk(a);
  const listings: FqdnCacheListing[] = [];
  await Promise.all(
    targets.map(async (t) => {
      try {
        const l = await fetchListing(t.address);
        if (a.node === undefined || l.node === a.node) listings.push(l);
      } catch (err) {
        problems.push(`${t.node ?? t.address}: ${t.address}${FQDN_CACHE_PATH}: ${(err as Error).message}`);
      }
    }),
  );
  for (const p of problems.sort()) process.stderr.write(`membrane fqdn cache list: ${p}\n`);
  if (listings.length === 0) return 1;
  listings.sort((x, y) => (x.node < y.node ? -1 : x.node > y.node ? 1 : 0));
  const rows = fqdnCacheRows(listings, a.name);
  process.stdout.write(a.output === "json" ? rows.map((r) => JSON.stringify(r) + "\n").join("") : fqdnCacheTable(rows));
  return 0;
}
