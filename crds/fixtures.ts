// Test fixtures shared across the project: the example policies (seed + Cilium documentation) and objects
// that break the CRD schemas, each with the field path an error must name.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
export const SEED_FILE = join(here, "examples", "seed.yaml");
export const CILIUM_DOCS_DIR = join(here, "examples", "cilium-docs");
export const TETRAGON_DOCS_DIR = join(here, "examples", "tetragon-docs");

/** A Kubernetes object as read from YAML. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  [field: string]: unknown;
}

export interface Example {
  /** Path relative to crds/examples, e.g. "seed.yaml#1" or "cilium-docs/l4-egress-tcp-80.yaml". */
  source: string;
  /** The first line's comment: what the policy means. */
  meaning?: string;
  object: KubeObject;
}

function readDocuments(file: string, label: string): Example[] {
  const text = readFileSync(file, "utf8");
  const meaning = /^# (.*)$/m.exec(text.split("\n")[0] ?? "")?.[1];
  const docs = parseAllDocuments(text);
  return docs.map((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${label}: ${doc.errors[0]?.message}`);
    const object = doc.toJS() as KubeObject;
    return { source: docs.length > 1 ? `${label}#${i}` : label, meaning, object };
  });
}

/** The three seed examples of issue 2, in file order (CNP, CCNP, TracingPolicy). */
export function seedExamples(): Example[] {
  return readDocuments(SEED_FILE, "seed.yaml");
}

/** Policies recreated from Cilium's policy-language documentation, one per file, sorted by file name. */
export function ciliumDocsExamples(): Example[] {
  return readdirSync(CILIUM_DOCS_DIR)
    .filter((f) => f.endsWith(".yaml"))
    .sort()
    .flatMap((f) => readDocuments(join(CILIUM_DOCS_DIR, f), `cilium-docs/${f}`));
}

/** TracingPolicies written after Tetragon's documentation (hook points, selectors, actions, lists, options), one per file. */
export function tetragonDocsExamples(): Example[] {
  return readdirSync(TETRAGON_DOCS_DIR)
    .filter((f) => f.endsWith(".yaml"))
    .sort()
    .flatMap((f) => readDocuments(join(TETRAGON_DOCS_DIR, f), `tetragon-docs/${f}`));
}

export interface InvalidCase {
  title: string;
  object: KubeObject;
  /** Field path the rejection must name, Kubernetes style. */
  path: string;
  /** Only the API server can catch it (a CEL rule), not an offline OpenAPI check. */
  serverOnly?: boolean;
}

function cnp(name: string, spec: Record<string, unknown>): KubeObject {
  return { apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name }, spec };
}

function egressPort(port: Record<string, unknown>): Record<string, unknown> {
  return { endpointSelector: {}, egress: [{ toPorts: [{ ports: [port] }] }] };
}

const PORT = "spec.egress[0].toPorts[0].ports[0]";

/** Objects the CRD schemas reject; names are unique so a cluster test can create each in turn. */
export const INVALID_CASES: readonly InvalidCase[] = [
  {
    title: "a port above 65535",
    object: cnp("bad-port-range", egressPort({ port: "65536", protocol: "TCP" })),
    path: `${PORT}.port`,
  },
  {
    title: "a port that is neither a number nor a port name",
    object: cnp("bad-port-name", egressPort({ port: "abc!", protocol: "TCP" })),
    path: `${PORT}.port`,
  },
  {
    title: "a number where the port string belongs",
    object: cnp("bad-port-type", egressPort({ port: 80, protocol: "TCP" })),
    path: `${PORT}.port`,
  },
  {
    title: "an unknown protocol",
    object: cnp("bad-protocol", egressPort({ port: "80", protocol: "TCPX" })),
    path: `${PORT}.protocol`,
  },
  {
    title: "an endPort above 65535",
    object: cnp("bad-endport", egressPort({ port: "80", endPort: 70000, protocol: "TCP" })),
    path: `${PORT}.endPort`,
  },
  {
    title: "a string where the toFQDNs list belongs",
    object: cnp("bad-fqdn-list", { endpointSelector: {}, egress: [{ toFQDNs: "example.com" }] }),
    path: "spec.egress[0].toFQDNs",
  },
  {
    title: "a string where the ingress list belongs",
    object: cnp("bad-ingress-list", { endpointSelector: {}, ingress: "fromEntities" }),
    path: "spec.ingress",
  },
  {
    title: "an object where the http rule list belongs",
    object: cnp("bad-http-list", {
      endpointSelector: {},
      ingress: [
        { toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: { method: "GET" } } }] },
      ],
    }),
    path: "spec.ingress[0].toPorts[0].rules.http",
  },
  {
    title: "an unknown entity",
    object: cnp("bad-entity", { endpointSelector: {}, egress: [{ toEntities: ["everything"] }] }),
    path: "spec.egress[0].toEntities[0]",
  },
  {
    title: "a CIDR with a prefix longer than 32 bits",
    object: cnp("bad-cidr", { endpointSelector: {}, egress: [{ toCIDR: ["10.0.0.0/33"] }] }),
    path: "spec.egress[0].toCIDR[0]",
  },
  {
    title: "an ICMP type above 255",
    object: cnp("bad-icmp-number", {
      endpointSelector: {},
      egress: [{ icmps: [{ fields: [{ type: 300 }] }] }],
    }),
    path: "spec.egress[0].icmps[0].fields[0].type",
  },
  {
    title: "an unknown ICMP type name",
    object: cnp("bad-icmp-name", {
      endpointSelector: {},
      egress: [{ icmps: [{ fields: [{ type: "Ping" }] }] }],
    }),
    path: "spec.egress[0].icmps[0].fields[0].type",
  },
  {
    title: "a label value with a space",
    object: cnp("bad-label-value", { endpointSelector: { matchLabels: { app: "my app" } } }),
    path: "spec.endpointSelector.matchLabels.app",
  },
  {
    title: "an unknown selector operator",
    object: cnp("bad-operator", {
      endpointSelector: { matchExpressions: [{ key: "app", operator: "Like", values: ["x"] }] },
    }),
    path: "spec.endpointSelector.matchExpressions[0].operator",
  },
  {
    title: "a Kafka role other than produce or consume",
    object: cnp("bad-kafka-role", {
      endpointSelector: {},
      ingress: [{ toPorts: [{ ports: [{ port: "9092" }], rules: { kafka: [{ role: "delete" }] } }] }],
    }),
    path: "spec.ingress[0].toPorts[0].rules.kafka[0].role",
  },
  {
    title: "an L7 rule in a deny rule",
    object: cnp("bad-deny-l7", {
      endpointSelector: {},
      ingressDeny: [{ toPorts: [{ ports: [{ port: "80" }], rules: { http: [{}] } }] }],
    }),
    path: "spec.ingressDeny[0].toPorts[0].rules",
  },
  {
    title: "a misspelt field (strict field validation)",
    object: cnp("bad-unknown-field", {
      endpointSelector: {},
      egress: [{ toFQDN: [{ matchName: "example.com" }] }],
    }),
    path: "spec.egress[0].toFQDN",
  },
  {
    title: "a missing TLS secret name",
    object: cnp("bad-tls-secret", {
      endpointSelector: {},
      egress: [
        { toPorts: [{ ports: [{ port: "443" }], terminatingTLS: { secret: { namespace: "default" } } }] },
      ],
    }),
    path: "spec.egress[0].toPorts[0].terminatingTLS.secret.name",
  },
  {
    title: "a rule with neither endpointSelector nor nodeSelector",
    object: cnp("bad-no-selector", { ingress: [{ fromEntities: ["world"] }] }),
    path: "spec.endpointSelector",
    serverOnly: true,
  },
  {
    title: "both endpointSelector and nodeSelector",
    object: cnp("bad-two-selectors", { endpointSelector: {}, nodeSelector: {}, ingress: [{}] }),
    path: "spec.nodeSelector",
    serverOnly: true,
  },
  {
    title: "a TracingPolicy process ID that is not a number",
    object: {
      apiVersion: "cilium.io/v1alpha1",
      kind: "TracingPolicy",
      metadata: { name: "bad-pid" },
      spec: { kprobes: [{ call: "fd_install", selectors: [{ matchPIDs: [{ operator: "In", values: ["init"] }] }] }] },
    },
    path: "spec.kprobes[0].selectors[0].matchPIDs[0].values[0]",
  },
  {
    title: "an encryption mode other than wireguard or ipsec",
    object: {
      apiVersion: "membrane.io/v1alpha1",
      kind: "MembraneEncryptionKey",
      metadata: { name: "bad-mode" },
      spec: { mode: "aes", secretRef: { name: "k" } },
    },
    path: "spec.mode",
  },
  {
    title: "key material in an encryption-key object instead of a Secret",
    object: {
      apiVersion: "membrane.io/v1alpha1",
      kind: "MembraneEncryptionKey",
      metadata: { name: "bad-key-material" },
      spec: { mode: "wireguard", secretRef: { name: "k" }, privateKey: "c2VjcmV0" },
    },
    path: "spec.privateKey",
  },
  {
    title: "an identity without security labels",
    object: { apiVersion: "cilium.io/v2", kind: "CiliumIdentity", metadata: { name: "4242" } },
    path: "security-labels",
  },
  {
    title: "an identity whose name is not a number",
    object: {
      apiVersion: "cilium.io/v2",
      kind: "CiliumIdentity",
      metadata: { name: "web" },
      "security-labels": { "k8s:app": "web" },
    },
    path: "metadata.name",
    serverOnly: true,
  },
];
