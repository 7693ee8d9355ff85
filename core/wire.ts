// The operator ↔ node-agent stream, defined once: xDS-style snapshot and deltas with version and
// nonce downstream, hello/ACK/NACK upstream. Messages travel as JSON over one gRPC bidi stream.
import type { FieldError, PolicyEntry, Result, RuleHttpRules, RuleOrigin, SubjectDns, SubjectPolicy } from "./model.ts";
import { MAX_LOCAL_IDENTITY, MIN_LOCAL_IDENTITY } from "./identity.ts";
import { MAX_NODE_HOST_IDENTITY, MIN_NODE_HOST_IDENTITY } from "./host-endpoint.ts";
import type { Workload } from "./workload.ts";
import { TRACING_POLICY_KINDS, validateTracingPolicy } from "./tracing.ts";

/** gRPC method path of the stream (service membrane.v1.Distribution, method Stream). */
export const STREAM_METHOD = "/membrane.v1.Distribution/Stream";

/** One ipcache entry: every address in `prefix` carries `identity`; `node` is the hosting node's IP (tunnel endpoint), absent for non-pod prefixes. */
export interface IPCacheEntry {
  readonly prefix: string;
  readonly identity: number;
  readonly node?: string;
  /** The pod that holds this address (`namespace/name`), for naming remote endpoints in flows. */
  readonly pod?: string;
  /** That pod's workload (its Deployment, StatefulSet, CronJob, …), for Hubble's `Endpoint.workloads`; absent: none. */
  readonly workload?: Workload;
  /**
   * Set when a NetworkPolicy ipBlock names this prefix: the ipBlock identity (local scope) that pod
   * addresses inside the prefix also have for ipBlock peers (core/ipblock.ts). On a node's address: the
   * node's host subject identity, which node selectors select (core/node-peers.ts). The agent writes it to
   * the datapath's ipBlock map, not to the ipcache.
   */
  readonly ipBlockIdentity?: number;
}

/** An identity's labels, for flow enrichment on the node. */
export interface IdentityLabels {
  readonly id: number;
  readonly labels: readonly string[];
}

/** Which policy generation a node's state includes, so an ACK tells the operator what is enforced. */
export interface PolicyGeneration {
  readonly key: string; // core/compiler policyKey: kind/namespace/name
  readonly uid: string;
  readonly generation: number;
}

/**
 * A TracingPolicy or TracingPolicyNamespaced a node enforces, as the API server holds it (kind, name,
 * namespace, spec: what `membrane runtime` reads), with the uid and generation its status is counted by.
 * Tetragon's schema has no node selector: every node gets every policy.
 */
export interface TracingPolicyItem {
  /** tracingPolicyKey: `TracingPolicy/name` or `TracingPolicyNamespaced/namespace/name`. */
  readonly key: string;
  readonly uid: string;
  readonly generation: number;
  readonly policy: {
    readonly apiVersion: string;
    readonly kind: (typeof TRACING_POLICY_KINDS)[number];
    readonly metadata: { readonly name: string; readonly namespace?: string };
    readonly spec: Readonly<Record<string, unknown>>;
  };
}

/** The key of a TracingPolicy object on the wire and in status: `TracingPolicy/name`, `TracingPolicyNamespaced/namespace/name`. */
export function tracingPolicyKey(kind: string, name: string, namespace?: string): string {
  return kind === "TracingPolicyNamespaced" ? `${kind}/${namespace ?? ""}/${name}` : `${kind}/${name}`;
}

/** One TracingPolicy on one node: enforced by its runtime enforcer, or why not (HookUnavailable naming the hook, Invalid, LoadFailed). */
export interface TracingPolicyNodeStatus {
  readonly key: string;
  readonly uid: string;
  readonly generation: number;
  readonly enforced: boolean;
  readonly reason?: string;
  readonly message?: string;
}

/** Everything a node needs; a snapshot carries all of it, a delta only what changed. */
export interface NodeState {
  /** Compiled policy of the identities hosted on this node (one SubjectPolicy per identity). */
  readonly policies: readonly SubjectPolicy[];
  readonly ipcache: readonly IPCacheEntry[];
  readonly identities: readonly IdentityLabels[];
  /** ruleId → where the rule came from, so every verdict can name its policy. */
  readonly rules: readonly { readonly id: number; readonly origin: RuleOrigin }[];
  readonly policyGenerations: readonly PolicyGeneration[];
  /** The TracingPolicies the node's runtime enforcer runs (absent: none), sorted by key. */
  readonly tracingPolicies?: readonly TracingPolicyItem[];
}

/** Per-subject entry changes: apply `added` before `removed` (no packet sees a gap). */
export interface SubjectDelta {
  readonly subject: number;
  readonly ingressEnforced: boolean;
  readonly egressEnforced: boolean;
  readonly added: readonly PolicyEntry[];
  readonly removed: readonly PolicyEntry[];
  /** The subject's DNS rules and toFQDNs selectors as they are now (whole, like the flags); absent: none. */
  readonly dns?: SubjectDns;
  /** Its HTTP rules per L7 allow rule as they are now (whole, like the flags); absent: none. */
  readonly http?: readonly RuleHttpRules[];
}

export type Downstream =
  | { readonly type: "snapshot"; readonly version: number; readonly nonce: string; readonly state: NodeState }
  | {
      readonly type: "delta";
      readonly version: number;
      /** The version this delta applies on top of; an agent at another version must NACK and gets a snapshot. */
      readonly baseVersion: number;
      readonly nonce: string;
      /** Subjects no longer hosted on the node are listed in `removedSubjects`. */
      readonly subjects: readonly SubjectDelta[];
      readonly removedSubjects: readonly number[];
      readonly ipcacheUpserts: readonly IPCacheEntry[];
      readonly ipcacheRemovals: readonly string[];
      readonly identityUpserts: readonly IdentityLabels[];
      readonly identityRemovals: readonly number[];
      readonly ruleUpserts: readonly { readonly id: number; readonly origin: RuleOrigin }[];
      /**
       * The policy generations the state includes now that it did not (a new policy, or a newer
       * generation), and the keys of those it no longer includes: a change of one policy in a
       * cluster of thousands is one entry, not the whole list (which a snapshot carries).
       */
      readonly policyGenerationUpserts: readonly PolicyGeneration[];
      readonly policyGenerationRemovals: readonly string[];
      /** TracingPolicies new or changed (whole, by key), and the keys of those gone; absent: none. */
      readonly tracingPolicyUpserts?: readonly TracingPolicyItem[];
      readonly tracingPolicyRemovals?: readonly string[];
    };

export type Upstream =
  /**
   * First message on a stream: who is asking, the last version it applied (to resume from), and
   * whether it runs the DNS proxy (its DNS rules and toFQDNs are enforced only then) and supervises
   * the L7 proxy (its HTTP rules are enforced only then: decided by the proxy, or while the proxy is
   * down their connections fail). `clusterClass`: its datapath looks up the `cluster` entity's entries held once per key
   * (peer CLUSTER_CLASS_PEER); while an agent without it is known, the operator compiles that entity per peer.
   * `everyPodClass`: it looks up the entries of selectors of every pod held once per key (peer EVERY_POD_CLASS_PEER,
   * instead of the cluster class's for a pod); while an agent without it is known, those are compiled per pod.
   * `worldClass`: it looks up the `world` entity's entries held once per key (peer WORLD_CLASS_PEER, for a CIDR or
   * reserved world peer); while an agent without it is known, the entity is compiled per CIDR identity.
   * `worldFamilyClass`: it looks up the `world-ipv4`/`world-ipv6` entities' entries held once per key (peers
   * WORLD_IPV4/6_CLASS_PEER, for a world peer in a packet of that family); while an agent without it is known, those
   * entities are compiled per peer.
   */
  | { readonly type: "hello"; readonly node: string; readonly lastAppliedVersion?: number; readonly dnsProxy?: boolean; readonly l7Proxy?: boolean; readonly runtime?: boolean; readonly clusterClass?: boolean; readonly everyPodClass?: boolean; readonly worldClass?: boolean; readonly worldFamilyClass?: boolean }
  | { readonly type: "ack"; readonly version: number; readonly nonce: string }
  /**
   * Each TracingPolicy's status on the node, as its runtime enforcer reports it (sent by an agent that runs the
   * enforcer, hello `runtime: true`, whenever it changes): the whole list, the last word.
   */
  | { readonly type: "runtime"; readonly policies: readonly TracingPolicyNodeStatus[] }
  | { readonly type: "nack"; readonly version: number; readonly nonce: string; readonly error: string };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const isVersion = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/** Parses an agent's message at the edge; errors name the field. */
export function parseUpstream(v: unknown): Result<Upstream> {
  const err = (path: string, message: string): Result<Upstream> => ({ ok: false, errors: [{ path, message }] });
  if (!isRecord(v)) return err("", "must be an object");
  switch (v.type) {
    case "hello":
      if (typeof v.node !== "string" || v.node === "") return err("node", "must be a non-empty string");
      if (v.lastAppliedVersion !== undefined && !isVersion(v.lastAppliedVersion)) return err("lastAppliedVersion", "must be a non-negative integer");
      if (v.dnsProxy !== undefined && typeof v.dnsProxy !== "boolean") return err("dnsProxy", "must be a boolean");
      if (v.l7Proxy !== undefined && typeof v.l7Proxy !== "boolean") return err("l7Proxy", "must be a boolean");
      if (v.runtime !== undefined && typeof v.runtime !== "boolean") return err("runtime", "must be a boolean");
      if (v.clusterClass !== undefined && typeof v.clusterClass !== "boolean") return err("clusterClass", "must be a boolean");
      if (v.everyPodClass !== undefined && typeof v.everyPodClass !== "boolean") return err("everyPodClass", "must be a boolean");
      if (v.worldClass !== undefined && typeof v.worldClass !== "boolean") return err("worldClass", "must be a boolean");
      if (v.worldFamilyClass !== undefined && typeof v.worldFamilyClass !== "boolean") return err("worldFamilyClass", "must be a boolean");
      return {
        ok: true,
        value: {
          type: "hello",
          node: v.node,
          ...(v.lastAppliedVersion !== undefined ? { lastAppliedVersion: v.lastAppliedVersion as number } : {}),
          ...(v.dnsProxy !== undefined ? { dnsProxy: v.dnsProxy } : {}),
          ...(v.l7Proxy !== undefined ? { l7Proxy: v.l7Proxy } : {}),
          ...(v.runtime !== undefined ? { runtime: v.runtime } : {}),
          ...(v.clusterClass !== undefined ? { clusterClass: v.clusterClass } : {}),
          ...(v.everyPodClass !== undefined ? { everyPodClass: v.everyPodClass } : {}),
          ...(v.worldClass !== undefined ? { worldClass: v.worldClass } : {}),
          ...(v.worldFamilyClass !== undefined ? { worldFamilyClass: v.worldFamilyClass } : {}),
        },
      };
    case "runtime": {
      if (!Array.isArray(v.policies)) return err("policies", "must be a list");
      const policies: TracingPolicyNodeStatus[] = [];
      for (const [i, p] of (v.policies as unknown[]).entries()) {
        const at = `policies[${i}]`;
        if (!isRecord(p)) return err(at, "must be an object");
        if (typeof p.key !== "string" || p.key === "") return err(`${at}.key`, "must be a non-empty string");
        if (typeof p.uid !== "string") return err(`${at}.uid`, "must be a string");
        if (!isVersion(p.generation)) return err(`${at}.generation`, "must be a non-negative integer");
        if (typeof p.enforced !== "boolean") return err(`${at}.enforced`, "must be a boolean");
        if (p.reason !== undefined && typeof p.reason !== "string") return err(`${at}.reason`, "must be a string");
        if (p.message !== undefined && typeof p.message !== "string") return err(`${at}.message`, "must be a string");
        policies.push({
          key: p.key, uid: p.uid, generation: p.generation, enforced: p.enforced,
          ...(p.reason !== undefined ? { reason: p.reason as string } : {}), ...(p.message !== undefined ? { message: p.message as string } : {}),
        });
      }
      return { ok: true, value: { type: "runtime", policies } };
    }
    case "ack":
    case "nack": {
      if (!isVersion(v.version)) return err("version", "must be a non-negative integer");
      if (typeof v.nonce !== "string" || v.nonce === "") return err("nonce", "must be a non-empty string");
      if (v.type === "ack") return { ok: true, value: { type: "ack", version: v.version, nonce: v.nonce } };
      if (typeof v.error !== "string") return err("error", "must be a string");
      return { ok: true, value: { type: "nack", version: v.version, nonce: v.nonce, error: v.error } };
    }
    default:
      return err("type", `must be hello, ack, nack or runtime, not ${JSON.stringify(v.type)}`);
  }
}

// ----- downstream validation: the agent trusts nothing it did not check --------------------------

type Check = (v: unknown, path: string) => FieldError | undefined;

const fail = (path: string, message: string): FieldError => ({ path, message });
const join = (path: string, field: string): string => (path === "" ? field : `${path}.${field}`);

const uint = (max: number): Check => (v, path) =>
  typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= max ? undefined : fail(path, `must be an integer from 0 to ${max}`);
const U32 = uint(0xffffffff);
const version: Check = (v, path) => (isVersion(v) ? undefined : fail(path, "must be a non-negative integer"));
const bool: Check = (v, path) => (typeof v === "boolean" ? undefined : fail(path, "must be a boolean"));
const str: Check = (v, path) => (typeof v === "string" ? undefined : fail(path, "must be a string"));
const nonEmpty: Check = (v, path) => (typeof v === "string" && v !== "" ? undefined : fail(path, "must be a non-empty string"));
const oneOf = (...values: readonly string[]): Check => (v, path) =>
  typeof v === "string" && values.includes(v) ? undefined : fail(path, `must be one of ${values.join(", ")}`);
const optional = (c: Check): Check => (v, path) => (v === undefined ? undefined : c(v, path));

function list(item: Check): Check {
  return (v, path) => {
    if (!Array.isArray(v)) return fail(path, "must be a list");
    for (let i = 0; i < v.length; i++) {
      const e = item(v[i], `${path}[${i}]`);
      if (e) return e;
    }
    return undefined;
  };
}

function record(fields: Readonly<Record<string, Check>>): Check {
  const names = Object.keys(fields);
  return (v, path) => {
    if (!isRecord(v)) return fail(path, "must be an object");
    for (const f of names) {
      const e = fields[f]!(v[f], join(path, f));
      if (e) return e;
    }
    return undefined;
  };
}

const policyEntry = record({
  subject: U32,
  direction: oneOf("ingress", "egress"),
  peer: U32,
  proto: uint(255),
  port: uint(0xffff),
  portPrefixLen: uint(16),
  verdict: oneOf("allow", "deny"),
  proxyPort: uint(0xffff),
  ruleId: U32,
});
const secondIdentity: Check = (v, path) =>
  typeof v === "number" && Number.isInteger(v) && ((v >= MIN_LOCAL_IDENTITY && v <= MAX_LOCAL_IDENTITY) || (v >= MIN_NODE_HOST_IDENTITY && v <= MAX_NODE_HOST_IDENTITY))
    ? undefined
    : fail(path, `must be a local identity (${MIN_LOCAL_IDENTITY} to ${MAX_LOCAL_IDENTITY}) or a node's (${MIN_NODE_HOST_IDENTITY} to ${MAX_NODE_HOST_IDENTITY})`);
const ipcacheEntry = record({
  prefix: nonEmpty,
  identity: U32,
  node: optional(nonEmpty),
  pod: optional(str),
  workload: optional(record({ kind: nonEmpty, name: nonEmpty })),
  ipBlockIdentity: optional(secondIdentity),
});
const identityLabels = record({ id: U32, labels: list(str) });
const rule = record({
  id: U32,
  origin: record({
    policyKind: oneOf("NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"),
    namespace: optional(str),
    name: str,
    ruleIndex: U32,
    path: str,
  }),
});
const policyGeneration = record({ key: nonEmpty, uid: str, generation: version });
// A DNS name selector has exactly one of matchName and matchPattern, each a non-empty name.
const nameSelector: Check = (v, path) => {
  if (!isRecord(v)) return fail(path, "must be an object");
  const e = optional(nonEmpty)(v.matchName, join(path, "matchName")) ?? optional(nonEmpty)(v.matchPattern, join(path, "matchPattern"));
  if (e) return e;
  return (v.matchName === undefined) === (v.matchPattern === undefined) ? fail(path, "must have exactly one of matchName and matchPattern") : undefined;
};
const compiledPort = record({ proto: uint(255), port: uint(0xffff), portPrefixLen: uint(16) });
// A learned address's port with HTTP rules names the L7 proxy port its connections are steered to.
const fqdnPort = record({ proto: uint(255), port: uint(0xffff), portPrefixLen: uint(16), proxyPort: optional(uint(0xffff)) });
const fqdnSelector: Check = (v, path) => nameSelector(v, path) ?? record({ ruleId: U32, ports: list(fqdnPort) })(v, path);
const subjectDns = record({ dnsRules: list(record({ ruleId: U32, rules: list(nameSelector), ports: optional(list(compiledPort)) })), fqdnSelectors: list(fqdnSelector) });
const httpRule = record({
  method: optional(str),
  path: optional(str),
  host: optional(str),
  headers: optional(list(nonEmpty)),
  headerMatches: optional(
    list(record({ name: nonEmpty, value: optional(str), mismatch: optional(oneOf("LOG", "ADD", "DELETE", "REPLACE")), secret: optional(record({ name: nonEmpty, namespace: optional(str) })) })),
  ),
});
const proxyPort: Check = (v, path) => (typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 0xffff ? undefined : fail(path, "must be a port number (1 to 65535)"));
// A Secret a TLS context uses, with the operator's material or why there is none (checked by type only: the values are never echoed).
const tlsSecretUse = record({
  secret: record({ namespace: nonEmpty, name: nonEmpty }),
  certificate: optional(nonEmpty),
  privateKey: optional(nonEmpty),
  trustedCA: optional(nonEmpty),
  material: optional(record({ certificate: optional(str), privateKey: optional(str), trustedCA: optional(str) })),
  unavailable: optional(nonEmpty),
});
const ruleTls = record({ terminating: optional(tlsSecretUse), originating: optional(tlsSecretUse), serverNames: optional(list(nonEmpty)) });
const subjectHttp = list(record({ ruleId: U32, portRule: optional(uint(0xffff)), direction: oneOf("ingress", "egress"), rules: list(httpRule), proxyPorts: optional(list(proxyPort)), tls: optional(ruleTls) }));
const subjectPolicy = record({ subject: U32, ingressEnforced: bool, egressEnforced: bool, entries: list(policyEntry), dns: optional(subjectDns), http: optional(subjectHttp) });
const subjectDelta = record({ subject: U32, ingressEnforced: bool, egressEnforced: bool, added: list(policyEntry), removed: list(policyEntry), dns: optional(subjectDns), http: optional(subjectHttp) });
// A TracingPolicy item: its fields, its key matching its object, and the object as Tetragon's loader rules (core/tracing.ts) take it.
const tracingPolicyItem: Check = (v, path) => {
  const e = record({
    key: nonEmpty,
    uid: str,
    generation: version,
    policy: record({ apiVersion: oneOf("cilium.io/v1alpha1"), kind: oneOf(...TRACING_POLICY_KINDS), metadata: record({ name: nonEmpty, namespace: optional(nonEmpty) }), spec: record({}) }),
  })(v, path);
  if (e) return e;
  const item = v as unknown as TracingPolicyItem;
  const { kind, metadata } = item.policy;
  if (kind === "TracingPolicyNamespaced" && metadata.namespace === undefined) return fail(join(path, "policy.metadata.namespace"), "required for a TracingPolicyNamespaced");
  const key = tracingPolicyKey(kind, metadata.name, metadata.namespace);
  if (item.key !== key) return fail(join(path, "key"), `must be ${JSON.stringify(key)} (the policy's kind, namespace and name), not ${JSON.stringify(item.key)}`);
  const valid = validateTracingPolicy(item.policy);
  if (!valid.ok) {
    const first = valid.errors[0]!;
    return fail(join(join(path, "policy"), first.path), first.message);
  }
  return undefined;
};
/** A list of items in strictly increasing key order (one item per key; what applyDelta merges by). */
const sortedByKey = (item: Check): Check => (v, path) => {
  const e = list(item)(v, path);
  if (e) return e;
  const items = v as readonly { key: string }[];
  for (let i = 1; i < items.length; i++) if (!(items[i - 1]!.key < items[i]!.key)) return fail(`${path}[${i}].key`, `must come after ${JSON.stringify(items[i - 1]!.key)} (sorted by key, each key once)`);
  return undefined;
};
const tracingPolicies = sortedByKey(tracingPolicyItem);

const nodeState = record({
  policies: list(subjectPolicy),
  ipcache: list(ipcacheEntry),
  identities: list(identityLabels),
  rules: list(rule),
  policyGenerations: list(policyGeneration),
  tracingPolicies: optional(tracingPolicies),
});
const snapshot = record({ version, nonce: nonEmpty, state: nodeState });
const delta = record({
  version,
  baseVersion: version,
  nonce: nonEmpty,
  subjects: list(subjectDelta),
  removedSubjects: list(U32),
  ipcacheUpserts: list(ipcacheEntry),
  ipcacheRemovals: list(nonEmpty),
  identityUpserts: list(identityLabels),
  identityRemovals: list(U32),
  ruleUpserts: list(rule),
  policyGenerationUpserts: list(policyGeneration),
  policyGenerationRemovals: list(nonEmpty),
  tracingPolicyUpserts: optional(tracingPolicies),
  tracingPolicyRemovals: optional(list(nonEmpty)),
});

/**
 * Parses an operator's message at the agent's edge: every field of a snapshot or delta is checked
 * (types, ranges, enums) before anything is applied; the error names the first bad field. Entries
 * that a subject does not own are refused too, so a delta cannot write another subject's keys.
 */
export function parseDownstream(v: unknown): Result<Downstream> {
  const err = (e: FieldError): Result<Downstream> => ({ ok: false, errors: [e] });
  if (!isRecord(v)) return err(fail("", "must be an object"));
  let e: FieldError | undefined;
  if (v.type === "snapshot") e = snapshot(v, "");
  else if (v.type === "delta") e = delta(v, "");
  else return err(fail("type", `must be snapshot or delta, not ${JSON.stringify(v.type) ?? "undefined"}`));
  if (e) return err(e);
  const m = v as unknown as Downstream;
  const owned = (subject: number, entries: readonly PolicyEntry[], path: string): FieldError | undefined => {
    const i = entries.findIndex((x) => x.subject !== subject);
    return i < 0 ? undefined : fail(`${path}[${i}].subject`, `must be the subject ${subject}, not ${entries[i]!.subject}`);
  };
  if (m.type === "snapshot") {
    for (let i = 0; i < m.state.policies.length && !e; i++) e = owned(m.state.policies[i]!.subject, m.state.policies[i]!.entries, `state.policies[${i}].entries`);
  } else {
    for (let i = 0; i < m.subjects.length && !e; i++) {
      const sd = m.subjects[i]!;
      e = owned(sd.subject, sd.added, `subjects[${i}].added`) ?? owned(sd.subject, sd.removed, `subjects[${i}].removed`);
    }
  }
  return e ? err(e) : { ok: true, value: m };
}

/** A reason for a refusal, from a parse's errors. */
export function describeErrors(errors: readonly FieldError[]): string {
  return errors.map((e) => (e.path === "" ? e.message : `${e.path}: ${e.message}`)).join("; ");
}

/**
 * The JSON of lists every node is sent alike, by object: one change fans out to a thousand streams
 * with the same shared-part arrays (the ipcache, identity and rule deltas, a snapshot's ipcache), so
 * each is serialised once, not once per node. Messages are immutable once written (readonly types).
 */
const sharedJSON = new WeakMap<object, string>();
function listJSON(items: readonly unknown[]): string {
  if (items.length === 0) return "[]";
  let s = sharedJSON.get(items);
  if (s === undefined) sharedJSON.set(items, (s = JSON.stringify(items)));
  return s;
}

/** A downstream message as JSON, its shared lists from sharedJSON; the same text JSON.stringify gives, in another key order. */
function downstreamJSON(m: Downstream): string {
  const head = `{"type":"${m.type}","version":${JSON.stringify(m.version)},"nonce":${JSON.stringify(m.nonce)}`;
  if (m.type === "snapshot") {
    const s = m.state;
    return `${head},"state":{"policies":${JSON.stringify(s.policies)},"ipcache":${listJSON(s.ipcache)},"identities":${listJSON(s.identities)},"rules":${listJSON(s.rules)},"policyGenerations":${listJSON(s.policyGenerations)}${s.tracingPolicies ? `,"tracingPolicies":${listJSON(s.tracingPolicies)}` : ""}}}`;
  }
  return (
    `${head},"baseVersion":${JSON.stringify(m.baseVersion)},"subjects":${JSON.stringify(m.subjects)},"removedSubjects":${JSON.stringify(m.removedSubjects)}` +
    `,"ipcacheUpserts":${listJSON(m.ipcacheUpserts)},"ipcacheRemovals":${listJSON(m.ipcacheRemovals)},"identityUpserts":${listJSON(m.identityUpserts)},"identityRemovals":${listJSON(m.identityRemovals)}` +
    `,"ruleUpserts":${listJSON(m.ruleUpserts)},"policyGenerationUpserts":${listJSON(m.policyGenerationUpserts)},"policyGenerationRemovals":${listJSON(m.policyGenerationRemovals)}` +
    (m.tracingPolicyUpserts ? `,"tracingPolicyUpserts":${listJSON(m.tracingPolicyUpserts)}` : "") +
    (m.tracingPolicyRemovals ? `,"tracingPolicyRemovals":${listJSON(m.tracingPolicyRemovals)}` : "") +
    "}"
  );
}

const DELTA_LISTS = ["subjects", "removedSubjects", "ipcacheUpserts", "ipcacheRemovals", "identityUpserts", "identityRemovals", "ruleUpserts", "policyGenerationUpserts", "policyGenerationRemovals"] as const;
const STATE_LISTS = ["policies", "ipcache", "identities", "rules", "policyGenerations"] as const;

/** Every list of the message is there (what the operator sends; a test may write a malformed one on purpose, which goes out as it is). */
function wellFormed(m: Downstream): boolean {
  if (typeof m.version !== "number" || typeof m.nonce !== "string") return false;
  const optionalList = (v: unknown): boolean => v === undefined || Array.isArray(v);
  if (m.type === "delta") return typeof m.baseVersion === "number" && DELTA_LISTS.every((k) => Array.isArray(m[k])) && optionalList(m.tracingPolicyUpserts) && optionalList(m.tracingPolicyRemovals);
  return isRecord(m.state) && STATE_LISTS.every((k) => Array.isArray(m.state[k])) && optionalList(m.state.tracingPolicies);
}

/** JSON framing for gRPC's custom (de)serializers. */
export const encodeMessage = (m: Downstream | Upstream): Buffer =>
  Buffer.from((m.type === "snapshot" || m.type === "delta") && wellFormed(m) ? downstreamJSON(m) : JSON.stringify(m));
export const decodeMessage = (b: Buffer): unknown => JSON.parse(b.toString("utf8"));

/** The stream as a gRPC service definition (plain data; @grpc/grpc-js takes it for server and client). */
export const DISTRIBUTION_SERVICE = {
  Stream: {
    path: STREAM_METHOD,
    requestStream: true,
    responseStream: true,
    requestSerialize: encodeMessage,
    requestDeserialize: decodeMessage,
    responseSerialize: encodeMessage,
    responseDeserialize: decodeMessage,
  },
};
