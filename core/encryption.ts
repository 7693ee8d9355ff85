// Semantic validation of the encryption-key resource (cluster-scoped: mode, rotation interval; key material only in Secrets).
import type { FieldError, Result } from "./model.ts";
import { parseDuration } from "./duration.ts";
import { dns1123LabelProblem, dns1123SubdomainProblem, field, isRecord, show } from "./parser/fields.ts";

export type EncryptionMode = "wireguard" | "ipsec";

export interface EncryptionKeySpec {
  readonly name: string;
  readonly mode: EncryptionMode;
  /** How often the operator rolls a new key; undefined = never automatically. */
  readonly rotationIntervalMs?: number;
  /** The Secret holding the key material (namespace undefined: the namespace Membrane runs in). */
  readonly secretRef: { readonly name: string; readonly namespace?: string };
}

/** The resource's kind (membrane.io/v1alpha1, cluster-scoped; see crds/schema/encryption-key.ts). */
export const ENCRYPTION_KEY_KIND = "MembraneEncryptionKey";

/** The condition each agent publishes on its CiliumNode: whether the node encrypts with the cluster's mode and key. */
export const ENCRYPTION_READY = "EncryptionReady";

/** On the key: a rotation is asked for when this annotation's value is one the Secret has not been rotated for (`membrane encryption rotate` writes the time). */
export const ROTATE_ANNOTATION = "membrane.io/rotate";

/** On a CiliumNode: `membrane encryption rotate --node N` writes the time; that node's agent makes a new WireGuard key pair for each new value. */
export const WIREGUARD_ROTATE_ANNOTATION = "membrane.io/wireguard-rotate";

const MODES: readonly EncryptionMode[] = ["wireguard", "ipsec"];
const MIN_ROTATION_MS = 60_000;
const MAX_ROTATION_MS = 366 * 86_400_000;
/** Field names that would carry secret key material: such data belongs in a Secret, never in a custom resource. */
const KEY_MATERIAL = /^(key|keys|privatekey|private_key|secretkey|psk|presharedkey|keydata|material)$/i;

export function validateEncryptionKey(obj: unknown): Result<EncryptionKeySpec> {
  const errors: FieldError[] = [];
  const err = (path: string, message: string): void => void errors.push({ path, message });
  if (!isRecord(obj)) return { ok: false, errors: [{ path: "<root>", message: "must be an object" }] };
  const meta = field(obj, "metadata");
  const name = isRecord(meta) && typeof field(meta, "name") === "string" ? String(field(meta, "name")) : "";
  const spec = field(obj, "spec");
  if (!isRecord(spec)) {
    err("spec", spec === undefined ? "required" : `must be an object, not ${show(spec)}`);
    return { ok: false, errors };
  }
  const mode = field(spec, "mode");
  if (mode === undefined) err("spec.mode", `required: one of ${MODES.join(", ")}`);
  else if (typeof mode !== "string" || !(MODES as readonly string[]).includes(mode)) {
    err("spec.mode", `${show(mode)} is not an encryption mode (${MODES.join(", ")})`);
  }
  let rotationIntervalMs: number | undefined;
  const interval = field(spec, "rotationInterval");
  if (interval !== undefined && interval !== null) {
    const ms = typeof interval === "string" ? parseDuration(interval) : undefined;
    if (ms === undefined) err("spec.rotationInterval", `${show(interval)} is not a duration (such as "24h" or "90m")`);
    else if (ms < MIN_ROTATION_MS) err("spec.rotationInterval", `${show(interval)} is too short: rotate at most once a minute`);
    else if (ms > MAX_ROTATION_MS) err("spec.rotationInterval", `${show(interval)} is too long: rotate at least once a year`);
    else rotationIntervalMs = ms;
  }
  const secretRef = validateSecretRef(field(spec, "secretRef"), err);
  for (const key of Object.keys(spec)) {
    if (KEY_MATERIAL.test(key)) err(`spec.${key}`, "key material must not be stored in this resource: it lives only in Secrets");
  }
  if (errors.length > 0 || secretRef === undefined) return { ok: false, errors };
  return {
    ok: true,
    value: { name, mode: mode as EncryptionMode, secretRef, ...(rotationIntervalMs !== undefined ? { rotationIntervalMs } : {}) },
  };
}

function validateSecretRef(ref: unknown, err: (path: string, message: string) => void): EncryptionKeySpec["secretRef"] | undefined {
  if (ref === undefined || ref === null) return void err("spec.secretRef", "required: the Secret that holds the key material");
  if (!isRecord(ref)) return void err("spec.secretRef", `must be an object with a name, not ${show(ref)}`);
  const name = field(ref, "name");
  const namespace = field(ref, "namespace");
  let ok = true;
  if (typeof name !== "string" || name === "") {
    err("spec.secretRef.name", name === undefined ? "required" : `${show(name)} is not a Secret name`);
    ok = false;
  } else {
    const problem = dns1123SubdomainProblem(name);
    if (problem) {
      err("spec.secretRef.name", `${show(name)} is not a valid Secret name: it ${problem}`);
      ok = false;
    }
  }
  if (namespace !== undefined && namespace !== null && namespace !== "") {
    const problem = typeof namespace === "string" ? dns1123LabelProblem(namespace) : "must be a string";
    if (problem) {
      err("spec.secretRef.namespace", `${show(namespace)} is not a valid namespace: it ${problem}`);
      ok = false;
    }
  }
  if (!ok || typeof name !== "string") return undefined;
  return typeof namespace === "string" && namespace !== "" ? { name, namespace } : { name };
}
