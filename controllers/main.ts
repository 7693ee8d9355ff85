// `membrane operator`: parses flags, runs the operator until SIGTERM/SIGINT, and exits non-zero if leadership is lost.
import { isIP } from "node:net";
import os from "node:os";
import fs from "node:fs";
import { type Logger, pino } from "pino";
import { KubeClient } from "../kube/kube.ts";
import { Operator, type OperatorConfig, type ControllerName, ALL_CONTROLLERS, OPTIONAL_CONTROLLERS } from "./operator.ts";
import { PodCIDRPool } from "./cidrpool.ts";
import { IPAM_MODES, isIpamMode } from "./node.ts";
import { DEFAULT_AGENT_AUDIENCE, serviceAccountUser } from "./distribution/tokenauth.ts";
// The relay and the service map (Hubble's protos, protobufjs) are loaded only when their flags ask for them: an
// operator without them does not keep their code on its heap.
import type { ServiceMapConfig } from "./servicemap/servicemap.ts";
import type { FlowSource } from "../flowapi/hubble/client.ts";
import { parseHostPort } from "../core/cidr.ts";
import { parseDuration } from "../core/duration.ts";
import { parseFlags } from "../kube/flags.ts";
import { onTermination, shutdownStep } from "../kube/shutdown.ts";
import { EXTENDED_IP_PROTOCOLS_FLAG } from "../core/parser/index.ts";
import { dns1123LabelProblem } from "../core/parser/fields.ts";

const SKIP_CRD_CREATION_FLAG = "--skip-crd-creation";

const USAGE = `usage: membrane operator [flags]

  --kubeconfig PATH            kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)
  --bind-address IP            address the health/metrics and distribution servers listen on (default 127.0.0.1)
  --health-port N              /healthz /readyz /metrics on the bind address, port N (default 9891; 0 picks one)
  --leader-elect BOOL          use a coordination.k8s.io Lease (default true)
  --lease-namespace NS         (default kube-system)
  --lease-name NAME            (default membrane-operator)
  --id NAME                    this replica's lease holder identity (default hostname_pid)
  --identity-gc-grace DURATION unused identities are deleted after this (default 15m; e.g. 30s, 2m)
  --identity-gc-concurrency N  delete requests the identity GC has in flight at once (default 32, 1-1024)
  --identity-gc-interval DURATION  how often every identity is checked for use again, besides the
                               checks pod changes trigger (default 15m)
  --cluster-name NAME          (default "default")
  --enable-extended-ip-protocols  parse port-less rules for VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH and
                               distribute them (refused otherwise; give the webhook the same flag)
  --pod-cidr-pool CIDR         pool for per-node pod CIDRs (default 10.244.0.0/16)
  --node-cidr-mask-size N      prefix length of each node's pod CIDR (default 24)
  --ipam MODE                  cluster-pool (default: each CiliumNode gets a block of --pod-cidr-pool) or
                               kubernetes (each CiliumNode carries its Node's spec.podCIDRs, as Cilium's
                               ipam.mode=kubernetes; the pool is unused)
  --controllers LIST           comma-separated, from ${[...ALL_CONTROLLERS, ...OPTIONAL_CONTROLLERS].join(",")} (default ${ALL_CONTROLLERS.join(",")};
                               encryption-key validates and rotates MembraneEncryptionKeys' Secrets in --lease-namespace when
                               their secretRef names none)
  --policy-secrets-namespace NS  read the Secrets TLS rules name (terminatingTLS, originatingTLS) from this namespace
                               only (Cilium's policy-secrets-namespace; needs list/watch on Secrets there, nowhere else)
                               and send their material only to the nodes hosting a subject of the rule; a rule naming a
                               Secret elsewhere fails closed, its status saying so (unset: no Secret is read and every
                               TLS rule fails closed, saying why; give the webhook the same flag)
  --distribution-port N        serve the agent stream (gRPC, mutual TLS) on the bind address, port N (0 picks one; off when absent)
  --tls-ca FILE                CA that signs agent client certificates (with --distribution-port)
  --tls-cert FILE              the operator's serving certificate (with --distribution-port)
  --tls-key FILE               its private key (with --distribution-port)
  --agent-auth cert|token      how an agent proves its node (default cert): cert = its client certificate's
                               CN is the node name; token = a pod-bound ServiceAccount token in the call's
                               authorization metadata, checked by TokenReview (the node comes from the token)
  --agent-service-account NS/NAME  the agents' ServiceAccount (required with --agent-auth token)
  --agent-reconnect-grace DURATION  after a start, policy status counts a node whose agent has not answered yet as
                               the stored status of the same generation did, for this long (default 1m; 0s: off);
                               then such a node counts as not enforcing and the status is written once
  --agent-token-audience AUD   the audience agents' tokens must be bound to (default ${DEFAULT_AGENT_AUDIENCE})
  --servicemap-port N          serve the service map page on 127.0.0.1:N/servicemap (0 picks one; off when absent);
                               its flows come through the Hubble relay (--hubble-relay-address)
  --servicemap-hubble-server ADDR  also (or, without the relay, only) read flows from this Hubble API
                               (repeatable; unix:/PATH or HOST:PORT without TLS)
  --hubble-relay-address HOST:PORT  serve Hubble's Observer API for the whole cluster (hubble observe --server HOST:PORT),
                               merging every agent's (found through the membrane.io/hubble-address of each CiliumNode);
                               without TLS only on a loopback address
  --hubble-relay-tls-cert FILE, --hubble-relay-tls-key FILE, --hubble-relay-tls-ca FILE
                               mutual TLS for the relay: its certificate (server and client auth), key, and the CA that
                               signs its clients and the agents' Hubble servers
  --hubble-relay-peer-server-name NAME  the name in the agents' Hubble server certificate (default: each agent's address)
  --skip-crd-creation          do not create or upgrade Membrane's CRDs at start (by default a missing CRD is created
                               and one of Membrane's with an older schema version upgraded, never a newer or another
                               owner's: Helm installs the chart's crds/ once and never upgrades them)
  --log-level LEVEL            pino level (default info)
`;

/** The relay's flags, checked: files are read at start. */
export interface RelayFlags {
  readonly address: string;
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly caFile: string };
  readonly peerServerName?: string;
}

export function parseArgs(argv: string[]): { config: OperatorConfig; logLevel: string; servicemap?: ServiceMapConfig; relay?: RelayFlags } | { error: string } | { help: true } {
  const config: OperatorConfig = {
    healthPort: 9891,
    leaderElect: true,
    leaseNamespace: "kube-system",
    leaseName: "membrane-operator",
    id: `${os.hostname()}_${process.pid}`,
    identityGcGraceMs: 15 * 60_000,
    identityGcIntervalMs: 15 * 60_000,
    bindAddress: "127.0.0.1",
    clusterName: "default",
    podCidrPool: "10.244.0.0/16",
    nodeCidrMaskSize: 24,
    ipamMode: "cluster-pool",
    controllers: new Set<ControllerName>(ALL_CONTROLLERS),
  };
  // Switches, bare or =true|false (the extended protocols like the webhook's flag of the same name, so the chart passes
  // both alike; --skip-crd-creation as Cilium's operator); parseArgs' booleans take no value, so they are read first.
  const rest: string[] = [];
  for (const raw of argv) {
    const eq = raw.indexOf("=");
    const name = eq >= 0 ? raw.slice(0, eq) : raw;
    if (name !== EXTENDED_IP_PROTOCOLS_FLAG && name !== SKIP_CRD_CREATION_FLAG) {
      rest.push(raw);
      continue;
    }
    const on = eq >= 0 ? raw.slice(eq + 1) : "true";
    if (on !== "true" && on !== "false") return { error: `${name}: "${on}" is not true or false` };
    if (name === SKIP_CRD_CREATION_FLAG) config.registerCRDs = on === "false";
    else config.parseOptions = { enableExtendedIPProtocols: on === "true" };
  }
  const flags = parseFlags({
    args: rest,
    options: {
      kubeconfig: { type: "string" },
      "bind-address": { type: "string" },
      "health-port": { type: "string" },
      "leader-elect": { type: "string" },
      "lease-namespace": { type: "string" },
      "lease-name": { type: "string" },
      id: { type: "string" },
      "identity-gc-grace": { type: "string" },
      "identity-gc-interval": { type: "string" },
      "identity-gc-concurrency": { type: "string" },
      "cluster-name": { type: "string" },
      "policy-secrets-namespace": { type: "string" },
      "enable-policy-secrets": { type: "string" },
      "pod-cidr-pool": { type: "string" },
      "node-cidr-mask-size": { type: "string" },
      ipam: { type: "string" },
      controllers: { type: "string" },
      "distribution-port": { type: "string" },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "agent-auth": { type: "string" },
      "agent-service-account": { type: "string" },
      "agent-token-audience": { type: "string" },
      "agent-reconnect-grace": { type: "string" },
      "servicemap-port": { type: "string" },
      "hubble-relay-address": { type: "string" },
      "hubble-relay-tls-cert": { type: "string" },
      "hubble-relay-tls-key": { type: "string" },
      "hubble-relay-tls-ca": { type: "string" },
      "hubble-relay-peer-server-name": { type: "string" },
      "servicemap-hubble-server": { type: "string", multiple: true },
      "log-level": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (!flags.ok) return { error: flags.error };
  const v = flags.parsed.values;
  if (v.help) return { help: true };
  const port = (flag: string, value: string): number | string => {
    const n = Number(value);
    return value !== "" && Number.isInteger(n) && n >= 0 && n <= 65535 ? n : `--${flag}: "${value}" is not a port number`;
  };
  const bool = (flag: string, value: string): boolean | string => (value === "true" || value === "false" ? value === "true" : `--${flag}: "${value}" is not true or false`);
  if (v.kubeconfig !== undefined) config.kubeconfig = v.kubeconfig;
  if (v["health-port"] !== undefined) {
    const n = port("health-port", v["health-port"]);
    if (typeof n === "string") return { error: n };
    config.healthPort = n;
  }
  if (v["leader-elect"] !== undefined) {
    const b = bool("leader-elect", v["leader-elect"]);
    if (typeof b === "string") return { error: b };
    config.leaderElect = b;
  }
  if (v["lease-namespace"] !== undefined) config.leaseNamespace = v["lease-namespace"];
  if (v["lease-name"] !== undefined) config.leaseName = v["lease-name"];
  if (v.id !== undefined) config.id = v.id;
  if (v["identity-gc-grace"] !== undefined) {
    const ms = parseDuration(v["identity-gc-grace"]);
    if (ms === undefined) return { error: `--identity-gc-grace: "${v["identity-gc-grace"]}" is not a duration (e.g. 15m, 30s)` };
    config.identityGcGraceMs = ms;
  }
  if (v["identity-gc-interval"] !== undefined) {
    const ms = parseDuration(v["identity-gc-interval"]);
    if (ms === undefined || ms <= 0) return { error: `--identity-gc-interval: "${v["identity-gc-interval"]}" is not a positive duration (e.g. 1m, 30s)` };
    config.identityGcIntervalMs = ms;
  }
  if (v["identity-gc-concurrency"] !== undefined) {
    const n = Number(v["identity-gc-concurrency"]);
    if (!/^[0-9]+$/.test(v["identity-gc-concurrency"]) || n < 1 || n > 1024) return { error: `--identity-gc-concurrency: "${v["identity-gc-concurrency"]}" is not an integer from 1 to 1024` };
    config.identityGcConcurrency = n;
  }
  if (v["agent-reconnect-grace"] !== undefined) {
    const ms = parseDuration(v["agent-reconnect-grace"]);
    if (ms === undefined) return { error: `--agent-reconnect-grace: "${v["agent-reconnect-grace"]}" is not a duration (e.g. 1m, 30s)` };
    config.agentReconnectGraceMs = ms;
  }
  if (v["bind-address"] !== undefined) {
    if (isIP(v["bind-address"]) === 0) return { error: `--bind-address: "${v["bind-address"]}" is not an IP address` };
    config.bindAddress = v["bind-address"];
  }
  if (v["cluster-name"] !== undefined) config.clusterName = v["cluster-name"];
  // Replaced before any release: reading Secrets in every namespace is not offered (a namespaced Role must suffice).
  if (v["enable-policy-secrets"] !== undefined) return { error: "--enable-policy-secrets: replaced by --policy-secrets-namespace NS (the operator reads TLS rules' Secrets from that one namespace only)" };
  if (v["policy-secrets-namespace"] !== undefined) {
    const problem = dns1123LabelProblem(v["policy-secrets-namespace"]);
    if (problem !== undefined) return { error: `--policy-secrets-namespace: ${JSON.stringify(v["policy-secrets-namespace"])} is not a namespace name: it ${problem}` };
    config.policySecretsNamespace = v["policy-secrets-namespace"];
  }
  if (v["pod-cidr-pool"] !== undefined) config.podCidrPool = v["pod-cidr-pool"];
  if (v.ipam !== undefined) {
    if (!isIpamMode(v.ipam)) return { error: `--ipam: "${v.ipam}" is not one of ${IPAM_MODES.join(", ")}` };
    config.ipamMode = v.ipam;
  }
  if (v["node-cidr-mask-size"] !== undefined) {
    const n = Number(v["node-cidr-mask-size"]);
    if (!Number.isInteger(n) || n < 1 || n > 128) return { error: `--node-cidr-mask-size: "${v["node-cidr-mask-size"]}" is not a prefix length` };
    config.nodeCidrMaskSize = n;
  }
  if (v.controllers !== undefined) {
    const names = v.controllers.split(",").filter((s) => s !== "");
    const known: readonly string[] = [...ALL_CONTROLLERS, ...OPTIONAL_CONTROLLERS];
    const unknown = names.filter((n) => !known.includes(n));
    if (unknown.length > 0) return { error: `--controllers: unknown controller(s) ${unknown.join(", ")}; known: ${known.join(", ")}` };
    config.controllers = new Set(names as ControllerName[]);
  }
  let distPort: number | undefined;
  if (v["distribution-port"] !== undefined) {
    const n = port("distribution-port", v["distribution-port"]);
    if (typeof n === "string") return { error: n };
    distPort = n;
  }
  const tls = { caFile: v["tls-ca"], certFile: v["tls-cert"], keyFile: v["tls-key"] };
  const agentAuth = v["agent-auth"];
  if (agentAuth !== undefined && agentAuth !== "cert" && agentAuth !== "token") return { error: `--agent-auth: "${agentAuth}" is not cert or token` };
  const agentServiceAccount = v["agent-service-account"];
  if (agentServiceAccount !== undefined) {
    const u = serviceAccountUser(agentServiceAccount);
    if (!u.ok) return { error: `--agent-service-account: ${u.error}` };
  }
  const agentAudience = v["agent-token-audience"];
  if (agentAudience !== undefined && agentAudience.trim() === "") return { error: `--agent-token-audience: must not be empty` };
  let servicemapPort: number | undefined;
  if (v["servicemap-port"] !== undefined) {
    const n = port("servicemap-port", v["servicemap-port"]);
    if (typeof n === "string") return { error: n };
    servicemapPort = n;
  }
  const hubbleServers = v["servicemap-hubble-server"] ?? [];
  const badServer = hubbleServers.find((o) => !/^unix:\/./.test(o) && parseHostPort(o) === undefined);
  if (badServer !== undefined) return { error: `--servicemap-hubble-server: "${badServer}" is not unix:/PATH or HOST:PORT` };
  const logLevel = v["log-level"] ?? "info";
  if (distPort !== undefined) {
    const missing = (["caFile", "certFile", "keyFile"] as const).filter((k) => !tls[k]).map((k) => `--tls-${k.replace("File", "")}`);
    if (missing.length > 0) return { error: `--distribution-port needs ${missing.join(", ")} (the stream is mutual TLS only)` };
    config.distribution = { port: distPort, caFile: tls.caFile ?? "", certFile: tls.certFile ?? "", keyFile: tls.keyFile ?? "" };
    if (agentAuth === "token") {
      if (!agentServiceAccount) return { error: "--agent-auth token needs --agent-service-account NAMESPACE/NAME" };
      config.distribution.agentAuth = { mode: "token", serviceAccount: agentServiceAccount, audience: agentAudience ?? DEFAULT_AGENT_AUDIENCE };
    } else {
      if (agentServiceAccount !== undefined || agentAudience !== undefined) return { error: "--agent-service-account/--agent-token-audience need --agent-auth token" };
      config.distribution.agentAuth = { mode: "cert" };
    }
  } else if (agentAuth !== undefined || agentServiceAccount !== undefined || agentAudience !== undefined) {
    return { error: "--agent-auth/--agent-service-account/--agent-token-audience need --distribution-port" };
  }
  if (servicemapPort === undefined && hubbleServers.length > 0) return { error: "--servicemap-hubble-server: needs --servicemap-port (the servers feed the service map)" };
  try {
    new PodCIDRPool(config.podCidrPool, config.nodeCidrMaskSize);
  } catch (e) {
    return { error: `--pod-cidr-pool/--node-cidr-mask-size: ${(e as Error).message}` };
  }
  const relay = relayFlags(v);
  if (typeof relay === "string") return { error: relay };
  if (servicemapPort !== undefined && relay === undefined && hubbleServers.length === 0) {
    return { error: "--servicemap-port: needs --hubble-relay-address (the map reads flows through the relay) or --servicemap-hubble-server" };
  }
  const servicemap: ServiceMapConfig | undefined = servicemapPort === undefined ? undefined : { port: servicemapPort, hubbleServers };
  return { config, logLevel, ...(servicemap ? { servicemap } : {}), ...(relay ? { relay } : {}) };
}

function relayFlags(v: Readonly<Record<string, unknown>>): RelayFlags | undefined | string {
  const str = (k: string): string | undefined => (typeof v[k] === "string" ? (v[k] as string) : undefined);
  const address = str("hubble-relay-address");
  const tlsFlags = ["hubble-relay-tls-cert", "hubble-relay-tls-key", "hubble-relay-tls-ca"] as const;
  const given = tlsFlags.filter((f) => str(f) !== undefined);
  const peerServerName = str("hubble-relay-peer-server-name");
  if (address === undefined) {
    if (given.length > 0) return `--${given[0]}: only with --hubble-relay-address`;
    return peerServerName !== undefined ? "--hubble-relay-peer-server-name: only with --hubble-relay-address" : undefined;
  }
  if (peerServerName !== undefined && given.length === 0) return "--hubble-relay-peer-server-name: only with the --hubble-relay-tls-* flags (it names the agents' certificate)";
  if (peerServerName !== undefined && !/^[A-Za-z0-9*]([-A-Za-z0-9.*]*[A-Za-z0-9])?$/.test(peerServerName)) return `--hubble-relay-peer-server-name: ${JSON.stringify(peerServerName)} is not a DNS name`;
  const hp = parseHostPort(address);
  if (hp === undefined) return `--hubble-relay-address: must be HOST:PORT, got ${JSON.stringify(address)}`;
  if (given.length > 0 && given.length < tlsFlags.length) return `--${tlsFlags.find((f) => str(f) === undefined)}: required with the other --hubble-relay-tls-* flags`;
  if (given.length === 0) {
    // Every flow of the cluster, unauthenticated: only where nothing but this host can connect.
    if (!/^(127\.|::1$|localhost$)/.test(hp.host)) return `--hubble-relay-address: ${hp.host} is not a loopback address; off loopback the relay needs --hubble-relay-tls-cert, --hubble-relay-tls-key and --hubble-relay-tls-ca`;
    return { address };
  }
  return {
    address,
    tls: { certFile: str("hubble-relay-tls-cert")!, keyFile: str("hubble-relay-tls-key")!, caFile: str("hubble-relay-tls-ca")! },
    ...(peerServerName !== undefined ? { peerServerName } : {}),
  };
}

export async function run(args: string[]): Promise<number> {
  const parsed = parseArgs(args);
  if ("help" in parsed) {
    process.stdout.write(USAGE);
    return 0;
  }
  if ("error" in parsed) {
    process.stderr.write(`membrane operator: ${parsed.error}\n\n${USAGE}`);
    return 2;
  }
  const log = pino({ level: parsed.logLevel, base: { component: "operator", id: parsed.config.id } });
  const operator = new Operator(parsed.config, log);
  // Handlers first: a signal while the relay or the service map starts still stops the operator in order.
  const termination = onTermination(log);
  let stopping: Promise<void> | undefined;
  void termination.signal.then(() => (stopping ??= operator.stop()));
  const relay = parsed.relay ? await startRelay(parsed.relay, parsed.config.kubeconfig, log) : undefined;
  const servicemap = parsed.servicemap ? await (await import("./servicemap/servicemap.ts")).startServiceMap(parsed.servicemap, parsed.config.kubeconfig, log, relay?.source) : undefined;
  const outcome = await operator.run();
  await stopping;
  await shutdownStep(log, "service map", 300, () => servicemap?.stop());
  await shutdownStep(log, "relay", 300, () => relay?.stop());
  if (outcome === "lost") await operator.stop();
  termination.dispose();
  log.flush();
  return outcome === "lost" ? 1 : 0;
}

/** The relay runs in every replica, leader or not: it only reads. */
async function startRelay(f: RelayFlags, kubeconfig: string | undefined, log: Logger): Promise<{ stop(): Promise<void>; source: FlowSource }> {
  const client = await KubeClient.fromKubeconfig(kubeconfig);
  const tls = f.tls ? { cert: fs.readFileSync(f.tls.certFile), key: fs.readFileSync(f.tls.keyFile), ca: fs.readFileSync(f.tls.caFile) } : undefined;
  const { HubbleRelay } = await import("./relay/relay.ts");
  const relay = HubbleRelay.fromCluster(client, { address: f.address, ...(tls ? { tls } : {}), ...(f.peerServerName ? { peerServerName: f.peerServerName } : {}), log });
  await relay.start();
  return {
    source: relay.source,
    stop: async () => {
      await relay.stop();
      client.close();
    },
  };
}

// Run directly: `node --import tsx controllers/main.ts [flags]`.
if (import.meta.url === `file://${process.argv[1]}`) {
  run(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`membrane operator: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
