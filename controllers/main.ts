// `membrane operator`: parses flags, runs the operator until SIGTERM/SIGINT, and exits non-zero if leadership is lost.
import { isIP } from "node:net";
import os from "node:os";
import { pino } from "pino";
import { Operator, type OperatorConfig, ALL_CONTROLLERS } from "./operator.ts";
import { PodCIDRPool } from "./cidrpool.ts";
import { DEFAULT_AGENT_AUDIENCE, serviceAccountUser } from "./distribution/tokenauth.ts";
import { startServiceMap, SERVICEMAP_USAGE, type ServiceMapConfig } from "./servicemap/servicemap.ts";
import { parseObserverAddress } from "../flowapi/discover.ts";
import { EXTENDED_IP_PROTOCOLS_FLAG } from "../core/parser/index.ts";

const USAGE = `usage: membrane operator [flags]

  --kubeconfig PATH            kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)
  --bind-address IP            address the health/metrics and distribution servers listen on (default 127.0.0.1)
  --health-port N              /healthz /readyz /metrics on the bind address, port N (default 9891; 0 picks one)
  --leader-elect BOOL          use a coordination.k8s.io Lease (default true)
  --lease-namespace NS         (default kube-system)
  --lease-name NAME            (default membrane-operator)
  --id NAME                    this replica's lease holder identity (default hostname_pid)
  --identity-gc-grace DURATION unused identities are deleted after this (default 15m; e.g. 30s, 2m)
  --identity-gc-interval DURATION  how often every identity is checked for use again, besides the
                               checks pod changes trigger (default 15m)
  --cluster-name NAME          (default "default")
  --enable-extended-ip-protocols  parse port-less rules for VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH and
                               distribute them (refused otherwise; give the webhook the same flag)
  --pod-cidr-pool CIDR         pool for per-node pod CIDRs (default 10.244.0.0/16)
  --node-cidr-mask-size N      prefix length of each node's pod CIDR (default 24)
  --controllers LIST           comma-separated subset of ${ALL_CONTROLLERS.join(",")} (default all)
  --distribution-port N        serve the agent stream (gRPC, mutual TLS) on the bind address, port N (0 picks one; off when absent)
  --tls-ca FILE                CA that signs agent client certificates (with --distribution-port)
  --tls-cert FILE              the operator's serving certificate (with --distribution-port)
  --tls-key FILE               its private key (with --distribution-port)
  --agent-auth cert|token      how an agent proves its node (default cert): cert = its client certificate's
                               CN is the node name; token = a pod-bound ServiceAccount token in the call's
                               authorization metadata, checked by TokenReview (the node comes from the token)
  --agent-service-account NS/NAME  the agents' ServiceAccount (required with --agent-auth token)
  --agent-token-audience AUD   the audience agents' tokens must be bound to (default ${DEFAULT_AGENT_AUDIENCE})
${SERVICEMAP_USAGE}  --log-level LEVEL            pino level (default info)
`;

/** Parses "15m", "30s", "500ms", "1h" or plain milliseconds. */
export function parseDuration(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "ms"] ?? 1;
  return Math.round(n * unit);
}

export function parseArgs(argv: string[]): { config: OperatorConfig; logLevel: string; servicemap?: ServiceMapConfig } | { error: string } | { help: true } {
  const args = argv;
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
    controllers: new Set(ALL_CONTROLLERS),
  };
  let logLevel = "info";
  let distPort: number | undefined;
  const tls: { caFile?: string; certFile?: string; keyFile?: string } = {};
  let agentAuth: string | undefined;
  let agentServiceAccount: string | undefined;
  let agentAudience: string | undefined;
  let servicemapPort: number | undefined;
  const observers: string[] = [];
  let servicemapDiscover = true;
  for (let i = 0; i < args.length; i++) {
    const raw = args[i] ?? "";
    if (raw === "-h" || raw === "--help") return { help: true };
    const eq = raw.indexOf("=");
    const flag = eq >= 0 ? raw.slice(0, eq) : raw;
    // A switch: bare means on, like the webhook's flag of the same name, so the chart passes both alike.
    if (flag === EXTENDED_IP_PROTOCOLS_FLAG) {
      const on = eq >= 0 ? raw.slice(eq + 1) : "true";
      if (on !== "true" && on !== "false") return { error: `${EXTENDED_IP_PROTOCOLS_FLAG}: "${on}" is not true or false` };
      config.parseOptions = { enableExtendedIPProtocols: on === "true" };
      continue;
    }
    const value = (): string | undefined => (eq >= 0 ? raw.slice(eq + 1) : args[++i]);
    const v = value();
    if (v === undefined) return { error: `${flag}: a value is required` };
    switch (flag) {
      case "--kubeconfig":
        config.kubeconfig = v;
        break;
      case "--health-port": {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 65535) return { error: `--health-port: "${v}" is not a port number` };
        config.healthPort = n;
        break;
      }
      case "--leader-elect":
        if (v !== "true" && v !== "false") return { error: `--leader-elect: "${v}" is not true or false` };
        config.leaderElect = v === "true";
        break;
      case "--lease-namespace":
        config.leaseNamespace = v;
        break;
      case "--lease-name":
        config.leaseName = v;
        break;
      case "--id":
        config.id = v;
        break;
      case "--identity-gc-grace": {
        const ms = parseDuration(v);
        if (ms === undefined) return { error: `--identity-gc-grace: "${v}" is not a duration (e.g. 15m, 30s)` };
        config.identityGcGraceMs = ms;
        break;
      }
      case "--identity-gc-interval": {
        const ms = parseDuration(v);
        if (ms === undefined || ms <= 0) return { error: `--identity-gc-interval: "${v}" is not a positive duration (e.g. 1m, 30s)` };
        config.identityGcIntervalMs = ms;
        break;
      }
      case "--bind-address":
        if (isIP(v) === 0) return { error: `--bind-address: "${v}" is not an IP address` };
        config.bindAddress = v;
        break;
      case "--cluster-name":
        config.clusterName = v;
        break;
      case "--pod-cidr-pool":
        config.podCidrPool = v;
        break;
      case "--node-cidr-mask-size": {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1 || n > 128) return { error: `--node-cidr-mask-size: "${v}" is not a prefix length` };
        config.nodeCidrMaskSize = n;
        break;
      }
      case "--controllers": {
        const names = v.split(",").filter((s) => s !== "");
        const unknown = names.filter((n) => !(ALL_CONTROLLERS as readonly string[]).includes(n));
        if (unknown.length > 0) return { error: `--controllers: unknown controller(s) ${unknown.join(", ")}; known: ${ALL_CONTROLLERS.join(", ")}` };
        config.controllers = new Set(names as (typeof ALL_CONTROLLERS)[number][]);
        break;
      }
      case "--distribution-port": {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 65535) return { error: `--distribution-port: "${v}" is not a port number` };
        distPort = n;
        break;
      }
      case "--tls-ca":
        tls.caFile = v;
        break;
      case "--tls-cert":
        tls.certFile = v;
        break;
      case "--tls-key":
        tls.keyFile = v;
        break;
      case "--agent-auth":
        if (v !== "cert" && v !== "token") return { error: `--agent-auth: "${v}" is not cert or token` };
        agentAuth = v;
        break;
      case "--agent-service-account": {
        const u = serviceAccountUser(v);
        if (!u.ok) return { error: `--agent-service-account: ${u.error}` };
        agentServiceAccount = v;
        break;
      }
      case "--agent-token-audience":
        if (v.trim() === "") return { error: `--agent-token-audience: must not be empty` };
        agentAudience = v;
        break;
      case "--servicemap-port": {
        const n = Number(v);
        if (v === "" || !Number.isInteger(n) || n < 0 || n > 65535) return { error: `--servicemap-port: "${v}" is not a port number` };
        servicemapPort = n;
        break;
      }
      case "--observer":
        if (parseObserverAddress(v) === undefined) return { error: `--observer: "${v}" is not unix:/PATH or http://HOST:PORT` };
        observers.push(v);
        break;
      case "--servicemap-discover":
        if (v !== "true" && v !== "false") return { error: `--servicemap-discover: "${v}" is not true or false` };
        servicemapDiscover = v === "true";
        break;
      case "--log-level":
        logLevel = v;
        break;
      default:
        return { error: `unknown flag ${flag}` };
    }
  }
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
  if (servicemapPort === undefined && observers.length > 0) return { error: "--observer: needs --servicemap-port (the observers feed the service map)" };
  try {
    new PodCIDRPool(config.podCidrPool, config.nodeCidrMaskSize);
  } catch (e) {
    return { error: `--pod-cidr-pool/--node-cidr-mask-size: ${(e as Error).message}` };
  }
  const servicemap: ServiceMapConfig | undefined = servicemapPort === undefined ? undefined : { port: servicemapPort, observers, discover: servicemapDiscover };
  return { config, logLevel, ...(servicemap ? { servicemap } : {}) };
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
  const servicemap = parsed.servicemap ? await startServiceMap(parsed.servicemap, parsed.config.kubeconfig, log) : undefined;
  let stopping: Promise<void> | undefined;
  const shutdown = (signal: string): void => {
    log.info({ signal }, "shutting down");
    stopping ??= operator.stop();
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
  const outcome = await operator.run();
  await stopping;
  await servicemap?.stop();
  if (outcome === "lost") {
    await operator.stop();
    return 1;
  }
  return 0;
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
