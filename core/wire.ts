// The operator ↔ node-agent stream, defined once: xDS-style snapshot and deltas with version and
// nonce downstream, hello/ACK/NACK upstream. Messages travel as JSON over one gRPC bidi stream.
import type { PolicyEntry, Result, RuleOrigin, SubjectPolicy } from "./model.ts";

/** gRPC method path of the stream (service membrane.v1.Distribution, method Stream). */
export const STREAM_METHOD = "/membrane.v1.Distribution/Stream";

/** One ipcache entry: every address in `prefix` carries `identity`; `node` is the hosting node's IP (tunnel endpoint), absent for non-pod prefixes. */
export interface IPCacheEntry {
  readonly prefix: string;
  readonly identity: number;
  readonly node?: string;
  /** The pod that holds this address (`namespace/name`), for naming remote endpoints in flows. */
  readonly pod?: string;
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

/** Everything a node needs; a snapshot carries all of it, a delta only what changed. */
export interface NodeState {
  /** Compiled policy of the identities hosted on this node (one SubjectPolicy per identity). */
  readonly policies: readonly SubjectPolicy[];
  readonly ipcache: readonly IPCacheEntry[];
  readonly identities: readonly IdentityLabels[];
  /** ruleId → where the rule came from, so every verdict can name its policy. */
  readonly rules: readonly { readonly id: number; readonly origin: RuleOrigin }[];
  readonly policyGenerations: readonly PolicyGeneration[];
}

/** Per-subject entry changes: apply `added` before `removed` (no packet sees a gap). */
export interface SubjectDelta {
  readonly subject: number;
  readonly ingressEnforced: boolean;
  readonly egressEnforced: boolean;
  readonly added: readonly PolicyEntry[];
  readonly removed: readonly PolicyEntry[];
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
      readonly policyGenerations: readonly PolicyGeneration[];
    };

export type Upstream =
  /** First message on a stream: who is asking, and the last version it applied (to resume from). */
  | { readonly type: "hello"; readonly node: string; readonly lastAppliedVersion?: number }
  | { readonly type: "ack"; readonly version: number; readonly nonce: string }
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
      return { ok: true, value: { type: "hello", node: v.node, ...(v.lastAppliedVersion !== undefined ? { lastAppliedVersion: v.lastAppliedVersion as number } : {}) } };
    case "ack":
    case "nack": {
      if (!isVersion(v.version)) return err("version", "must be a non-negative integer");
      if (typeof v.nonce !== "string" || v.nonce === "") return err("nonce", "must be a non-empty string");
      if (v.type === "ack") return { ok: true, value: { type: "ack", version: v.version, nonce: v.nonce } };
      if (typeof v.error !== "string") return err("error", "must be a string");
      return { ok: true, value: { type: "nack", version: v.version, nonce: v.nonce, error: v.error } };
    }
    default:
      return err("type", `must be hello, ack or nack, not ${JSON.stringify(v.type)}`);
  }
}

/** JSON framing for gRPC's custom (de)serializers. */
export const encodeMessage = (m: Downstream | Upstream): Buffer => Buffer.from(JSON.stringify(m));
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
