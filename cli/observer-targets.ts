// The nodes `membrane observe` reads (flows and process events alike): the servers named, or every agent found in the
// cluster through its CiliumNode's Hubble address, and the mutual TLS flags for their TCP servers.
import fs from "node:fs";
import { join } from "node:path";
import { discoverHubblePeers } from "../flowapi/discover.ts";
import type { HubbleClientTls } from "../flowapi/hubble/client.ts";
import { KubeClient } from "../kube/kube.ts";
import { controlPlanePaths } from "../localcluster/cluster.ts";
import { devRealNodePaths, HUBBLE_AGENT_SERVER_NAME } from "../localcluster/realnode/dev-paths.ts";
import { devDir } from "./dev-dir.ts";
import { cliKubeconfig } from "./kubeconfig.ts";

/** One Hubble server to ask: `label` names it in warnings (the node, when discovered). */
export interface ObserverTarget {
  readonly label: string;
  readonly address: string;
}

/** The servers given, or (none given) every node whose agent publishes a Hubble address; a node without one is told through `warn`. */
export async function observerTargets(a: { readonly servers: readonly string[]; readonly kubeconfig?: string }, warn: (s: string) => void): Promise<ObserverTarget[]> {
  if (a.servers.length > 0) return a.servers.map((s) => ({ label: s, address: s }));
  let peers;
  try {
    const client = await KubeClient.fromKubeconfig(await cliKubeconfig(a.kubeconfig));
    try {
      peers = await discoverHubblePeers(client);
    } finally {
      client.close();
    }
  } catch (err) {
    throw new Error(`finding the agents in the cluster (use --server ADDR to name one): ${(err as Error).message}`, { cause: err });
  }
  const found = peers.flatMap((p) => (p.address !== undefined ? [{ label: `node ${p.node} (${p.address})`, address: p.address }] : []));
  for (const p of peers) if (p.address === undefined) warn(`node ${p.node}: not asked: ${p.reason}\n`);
  if (found.length === 0) throw new Error(`no node in the cluster has a Hubble address (${peers.length} CiliumNode(s) without one)`);
  return found;
}

/**
 * The TLS to dial discovered agents with when no TLS flag is given: the Hubble client certificate `membrane dev up`
 * saved from the chart's Secret, when the cluster asked is the local one (its kubeconfig chosen by default, by
 * `dev env`'s KUBECONFIG or by --kubeconfig); otherwise none (the flags are the way).
 */
export async function devClusterTls(kubeconfigFlag: string | undefined): Promise<HubbleClientTls | undefined> {
  const chosen = (await cliKubeconfig(kubeconfigFlag)) ?? process.env.KUBECONFIG;
  if (chosen === undefined || chosen !== controlPlanePaths(devDir()).kubeconfig) return undefined;
  const dir = devRealNodePaths(devDir()).hubbleTlsDir;
  try {
    const [ca, cert, key] = ["ca.crt", "tls.crt", "tls.key"].map((f) => fs.readFileSync(join(dir, f)));
    return { ca: ca!, cert: cert!, key: key!, serverName: HUBBLE_AGENT_SERVER_NAME };
  } catch {
    return undefined; // a process-based local cluster: its agents serve on loopback without TLS
  }
}

/**
 * Asks every server at once; one that fails is reported through `warn` and the others' flows are
 * still shown. Rejects only when no server answered.
 */
export async function fromEvery(targets: readonly ObserverTarget[], warn: (s: string) => void, read: (address: string) => Promise<void>, what = "flows"): Promise<void> {
  const results = await Promise.allSettled(targets.map((t) => read(t.address)));
  const failures = results.flatMap((r, i) => (r.status === "rejected" ? [`${targets[i]!.label}: ${String((r.reason as Error).message ?? r.reason)}`] : []));
  if (failures.length === targets.length) throw new Error(failures.length === 1 ? failures[0]! : `no observer answered:\n  ${failures.join("\n  ")}`);
  for (const f of failures) warn(`${f}: its ${what} are missing\n`);
}

/** The TLS flags' values as the client's credentials: none, or all three files read (mutual TLS); an error names the flag. */
export function tlsFromFlags(v: { readonly "tls-ca-cert-files"?: string; readonly "tls-client-cert-file"?: string; readonly "tls-client-key-file"?: string; readonly "tls-server-name"?: string }): { ok: true; tls?: HubbleClientTls } | { ok: false; error: string } {
  const files = { ca: v["tls-ca-cert-files"], cert: v["tls-client-cert-file"], key: v["tls-client-key-file"] };
  const given = Object.values(files).filter((x) => x !== undefined).length;
  if (given > 0 && given < 3) return { ok: false, error: "--tls-ca-cert-files, --tls-client-cert-file, --tls-client-key-file: give all three (mutual TLS)" };
  if (v["tls-server-name"] !== undefined && given === 0) return { ok: false, error: "--tls-server-name: needs the TLS files" };
  if (given === 0) return { ok: true };
  const read = (flag: string, file: string): Buffer | string => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      return `--${flag}: ${(err as Error).message}`;
    }
  };
  const ca = read("tls-ca-cert-files", files.ca!);
  const cert = read("tls-client-cert-file", files.cert!);
  const key = read("tls-client-key-file", files.key!);
  for (const x of [ca, cert, key]) if (typeof x === "string") return { ok: false, error: x };
  return { ok: true, tls: { ca: ca as Buffer, cert: cert as Buffer, key: key as Buffer, ...(v["tls-server-name"] !== undefined ? { serverName: v["tls-server-name"] } : {}) } };
}

/** `unix:/path`, `unix:///path` or `/path` as `unix:/path`; `host:port` as it is; anything else undefined. */
export function parseHubbleAddress(s: string): string | undefined {
  if (s.startsWith("unix:")) {
    const p = s.slice("unix:".length).replace(/^\/+/, "/");
    return p.startsWith("/") && p.length > 1 ? `unix:${p}` : undefined;
  }
  if (s.startsWith("/")) return `unix:${s}`;
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  return m && Number(m[2]) <= 65535 ? s : undefined;
}

/** The options of the flags above, for parseFlags. */
export const TARGET_FLAG_OPTIONS = {
  server: { type: "string", multiple: true },
  kubeconfig: { type: "string" },
  "tls-ca-cert-files": { type: "string" },
  "tls-client-cert-file": { type: "string" },
  "tls-client-key-file": { type: "string" },
  "tls-server-name": { type: "string" },
} as const;
