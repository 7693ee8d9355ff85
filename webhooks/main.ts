// `membrane webhook`: starts the admission server, its certificates and its registration with the API server.
import { KubeClient } from "../kube/kube.ts";
import { flagError } from "../kube/flags.ts";
import { onTermination, shutdownStep } from "../kube/shutdown.ts";
import { parseArgs } from "node:util";
import { pino, type Logger } from "pino";
import { parseHostPort, parseIP } from "../core/cidr.ts";
import { parseDuration } from "../core/duration.ts";
import type { ValidateOptions } from "../core/validate.ts";
import { dns1123LabelProblem } from "../core/parser/fields.ts";
import { DEFAULT_CERT_OPTIONS, issueBundle, type CertBundle, type CertOptions } from "./certs.ts";
import { CertRotator, WebhookRegistration, type RegistrationOptions } from "./registration.ts";
import { DEFAULT_MAX_BODY_BYTES, DEFAULT_REQUEST_TIMEOUT_MS, VALIDATE_PATH, WebhookServer } from "./server.ts";

export interface WebhookConfig {
  readonly host: string;
  readonly port: number;
  /** Without a kubeconfig the server runs standalone: in-memory certificates, nothing registered. */
  readonly kubeconfig?: string;
  readonly namespace: string;
  readonly secretName: string;
  readonly configName: string;
  readonly webhookName: string;
  /** A Service name in `namespace` (in-cluster) or, when absent, the URL (local cluster). */
  readonly service?: string;
  /** The Service's port that forwards to `port` (default 443). */
  readonly servicePort?: number;
  readonly url?: string;
  readonly timeoutSeconds: number;
  readonly requestTimeoutMs: number;
  readonly maxBodyBytes: number;
  readonly cert: CertOptions;
  readonly renewBeforeMs: number;
  /** Wait between trusting a new CA and serving a certificate it signed (see CertRotator). */
  readonly trustGraceMs?: number;
  /** Lower bound between two rotations. */
  readonly minRotationIntervalMs?: number;
  /** How policies are parsed (extended IP protocols) and the policy secrets namespace; the operator must run with the same. */
  readonly parseOptions?: ValidateOptions;
  readonly logger?: Logger;
}

export const DEFAULTS: Omit<WebhookConfig, "host" | "port"> = {
  namespace: "membrane-system",
  secretName: "membrane-webhook-tls",
  configName: "membrane-policy-validation",
  webhookName: "policies.membrane.io",
  timeoutSeconds: 10,
  requestTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS,
  maxBodyBytes: DEFAULT_MAX_BODY_BYTES,
  cert: DEFAULT_CERT_OPTIONS,
  renewBeforeMs: 7 * 86_400_000,
};

export interface RunningWebhook {
  readonly server: WebhookServer;
  readonly rotator: CertRotator;
  readonly registration?: WebhookRegistration;
  readonly url: string;
  /** The CA bundle clients should trust right now. */
  caBundle(): string;
  stop(): Promise<void>;
}

/** Starts everything; the returned handle stops the server and the rotation timer (the registration stays: fail closed). */
export async function startWebhook(config: WebhookConfig): Promise<RunningWebhook> {
  const log = config.logger ?? pino({ name: "membrane-webhook" });
  const certOpts: CertOptions = {
    ...config.cert,
    ipAddresses: [...new Set([...config.cert.ipAddresses, ...(parseIP(config.host) !== undefined ? [config.host] : [])])],
    dnsNames: [
      ...new Set([
        ...config.cert.dnsNames,
        ...(config.service ? [`${config.service}.${config.namespace}.svc`, `${config.service}.${config.namespace}.svc.cluster.local`] : []),
      ]),
    ],
  };
  let registration: WebhookRegistration | undefined;
  let bundle: CertBundle;
  if (config.kubeconfig !== undefined) {
    const kube = await KubeClient.fromKubeconfig(config.kubeconfig);
    const regOpts: RegistrationOptions = {
      configName: config.configName,
      webhookName: config.webhookName,
      target: config.service !== undefined ? { service: config.service, port: config.servicePort ?? 443 } : { url: "" },
      namespace: config.namespace,
      secretName: config.secretName,
      timeoutSeconds: config.timeoutSeconds,
    };
    registration = new WebhookRegistration(kube, regOpts, log);
    await registration.ensureNamespace();
    bundle = await registration.loadOrCreate(certOpts, config.renewBeforeMs);
  } else {
    bundle = await issueBundle(certOpts);
  }
  const server = new WebhookServer({
    host: config.host,
    port: config.port,
    cert: bundle.cert,
    key: bundle.key,
    maxBodyBytes: config.maxBodyBytes,
    requestTimeoutMs: config.requestTimeoutMs,
    ...(config.parseOptions !== undefined ? { parseOptions: config.parseOptions } : {}),
    logger: log,
  });
  const addr = await server.start();
  const url = config.url ?? `https://${formatHost(config.host)}:${addr.port}${VALIDATE_PATH}`;
  if (registration !== undefined) {
    registration.setUrl(url);
    await registration.register(bundle.caBundle);
    log.info({ config: config.configName, webhook: config.webhookName, url }, "webhook registered");
  }
  const rotator = new CertRotator(
    bundle,
    certOpts,
    config.renewBeforeMs,
    {
      trust: async (b) => registration?.register(b.caBundle),
      serve: (b) => server.setCertificate(b.cert, b.key),
      persist: async (b) => registration?.saveSecret(b),
    },
    log,
    config.minRotationIntervalMs,
    config.trustGraceMs,
  );
  rotator.start();
  return {
    server,
    rotator,
    registration,
    url,
    caBundle: () => rotator.current().caBundle,
    async stop() {
      rotator.stop();
      await server.stop();
    },
  };
}

function formatHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** "127.0.0.1:9443" or "[::1]:9443" → host and port. */
export function parseListen(text: string): { host: string; port: number } | string {
  return parseHostPort(text) ?? `--listen ${JSON.stringify(text)}: expected HOST:PORT such as 127.0.0.1:9443`;
}

const USAGE = `usage: membrane webhook [flags]

Runs the admission webhook that validates CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,
NetworkPolicy, TracingPolicy and MembraneEncryptionKey objects.

  --listen HOST:PORT        address to serve HTTPS on (default 127.0.0.1:9443)
  --kubeconfig PATH         register with this cluster (default $KUBECONFIG; none: standalone)
  --namespace NS            namespace of the certificate Secret and Service (default membrane-system)
  --service NAME            reach the webhook through this Service (in-cluster)
  --service-port N          the Service's port that forwards to --listen (default 443)
  --url URL                 reach the webhook at this URL (default https://LISTEN/validate)
  --secret NAME             Secret holding the CA and serving certificate (default membrane-webhook-tls)
  --config-name NAME        ValidatingWebhookConfiguration name (default membrane-policy-validation)
  --webhook-name NAME       webhook name shown in denials (default policies.membrane.io)
  --timeout-seconds N       apiserver's timeout for a call (default 10)
  --cert-days N             serving certificate lifetime in days (default 30)
  --renew-before DURATION   rotate this long before expiry (default 168h)
  --dns-name NAME           extra DNS name for the serving certificate (repeatable)
  --enable-extended-ip-protocols
                            admit port-less rules for VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH
                            (refused otherwise; give the operator the same flag)
  --policy-secrets-namespace NS
                            the namespace the operator reads TLS rules' Secrets from (give it the same
                            flag): a terminatingTLS/originatingTLS Secret named elsewhere is warned about
`;

export async function run(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        listen: { type: "string", default: "127.0.0.1:9443" },
        kubeconfig: { type: "string" },
        namespace: { type: "string", default: DEFAULTS.namespace },
        service: { type: "string" },
        "service-port": { type: "string", default: "443" },
        url: { type: "string" },
        secret: { type: "string", default: DEFAULTS.secretName },
        "config-name": { type: "string", default: DEFAULTS.configName },
        "webhook-name": { type: "string", default: DEFAULTS.webhookName },
        "timeout-seconds": { type: "string", default: String(DEFAULTS.timeoutSeconds) },
        "cert-days": { type: "string", default: String(DEFAULTS.cert.certDays) },
        "renew-before": { type: "string", default: "168h" },
        "dns-name": { type: "string", multiple: true, default: [] },
        "enable-extended-ip-protocols": { type: "boolean", default: false },
        "policy-secrets-namespace": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    process.stderr.write(`membrane webhook: ${flagError(err)}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const problems: string[] = [];
  const listen = parseListen(values.listen);
  if (typeof listen === "string") problems.push(listen);
  const timeoutSeconds = Number(values["timeout-seconds"]);
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1 || timeoutSeconds > 30) problems.push("--timeout-seconds: must be 1-30 (the apiserver's limit)");
  const certDays = Number(values["cert-days"]);
  if (!Number.isInteger(certDays) || certDays < 1) problems.push("--cert-days: must be a whole number of days ≥ 1");
  const renewBeforeMs = parseDuration(values["renew-before"]);
  if (renewBeforeMs === undefined) problems.push(`--renew-before: ${JSON.stringify(values["renew-before"])} is not a duration such as 168h`);
  else if (renewBeforeMs >= certDays * 86_400_000) problems.push("--renew-before: must be shorter than --cert-days");
  if (values.service !== undefined && values.url !== undefined) problems.push("--service and --url are mutually exclusive");
  const secretsNamespace = values["policy-secrets-namespace"];
  const secretsNamespaceProblem = secretsNamespace === undefined ? undefined : dns1123LabelProblem(secretsNamespace);
  if (secretsNamespaceProblem !== undefined) problems.push(`--policy-secrets-namespace: ${secretsNamespaceProblem}`);
  const servicePort = Number(values["service-port"]);
  if (!Number.isInteger(servicePort) || servicePort < 1 || servicePort > 65535) problems.push("--service-port: must be a port (1-65535)");
  if (problems.length > 0 || typeof listen === "string") {
    process.stderr.write(`membrane webhook: ${problems.join("; ")}\n`);
    return 2;
  }
  const kubeconfig = values.kubeconfig ?? process.env.KUBECONFIG;
  const log = pino({ name: "membrane-webhook" });
  const running = await startWebhook({
    ...DEFAULTS,
    host: listen.host,
    port: listen.port,
    ...(kubeconfig ? { kubeconfig } : {}),
    namespace: values.namespace,
    secretName: values.secret,
    configName: values["config-name"],
    webhookName: values["webhook-name"],
    ...(values.service !== undefined ? { service: values.service, servicePort } : {}),
    ...(values.url !== undefined ? { url: values.url } : {}),
    timeoutSeconds,
    // Answer well before the apiserver gives up on us.
    requestTimeoutMs: Math.min(DEFAULT_REQUEST_TIMEOUT_MS, timeoutSeconds * 500),
    cert: { ...DEFAULTS.cert, certDays, dnsNames: [...DEFAULTS.cert.dnsNames, ...values["dns-name"]] },
    renewBeforeMs: renewBeforeMs ?? DEFAULTS.renewBeforeMs,
    parseOptions: { enableExtendedIPProtocols: values["enable-extended-ip-protocols"], ...(secretsNamespace !== undefined ? { policySecretsNamespace: secretsNamespace } : {}) },
    logger: log,
  });
  if (!kubeconfig) log.warn({ url: running.url }, "no kubeconfig: running standalone, nothing registered");
  // Before this point Node's default handling ends the process at once; from here the stop is orderly and bounded.
  const termination = onTermination(log);
  await termination.signal;
  log.info("stopping webhook (its registration stays: the API server fails closed while it is down)");
  await shutdownStep(log, "webhook server", 1_000, () => running.stop());
  termination.dispose();
  log.flush();
  return 0;
}
