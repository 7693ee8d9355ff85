// Encryption-key reconciler: a MembraneEncryptionKey → its Secret's key material validated (created
// when missing), rotated on request or on schedule (new SPI, previous key kept until every node uses
// the new one), and a status that counts the nodes on the current key and names those that cannot use it.
// WireGuard keys are the nodes' own: a rotation of the key asks every node's agent for a new key pair.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { ENCRYPTION_READY, ROTATE_ANNOTATION, WIREGUARD_ROTATE_ANNOTATION, validateEncryptionKey } from "../core/encryption.ts";
import {
  IPSEC_ALGORITHM,
  MIN_SPI,
  type IpsecKeyMaterial,
  type NodeKeyReport,
  type NodeKeySummary,
  ipsecSecretData,
  nodeCount,
  parseIpsecSecret,
  rotated,
  summarizeNodes,
} from "../core/ipsec-key.ts";
import { type Condition, type ConditionInput, mergeConditions, sameConditions } from "../kube/conditions.ts";
import type { Reconciler, ReconcileResult } from "../kube/controller.ts";
import type { Informer } from "../kube/informer.ts";
import { type KubeClient, type KubeObject, isNotFound, resourcePath } from "../kube/kube.ts";
import { CILIUM_NODES, ENCRYPTION_KEYS, SECRETS } from "../kube/resources.ts";

/** On the Secret: the request its current key answers, so a rotation is done once however often reconcile runs. */
export const ROTATED_FOR_ANNOTATION = "membrane.io/rotated-for";
/** Secrets are not watched (a cluster-wide Secret watch for one object): looked at again this often. */
const SECRET_RESYNC_MS = 10_000;

export interface EncryptionKeyStatus {
  currentKeyID?: number;
  currentSPI?: number;
  previousSPI?: number;
  nodesOnCurrentKey?: string;
  nodesUnable?: { name: string; reason: string; message: string }[];
  lastRotation?: string;
  nextRotation?: string;
  rotationRequest?: string;
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface EncryptionKeyObject extends KubeObject {
  spec?: unknown;
  status?: EncryptionKeyStatus;
}

export interface EncryptionNodeObject extends KubeObject {
  spec?: { encryption?: { key?: number; publicKey?: string } };
  status?: { conditions?: Condition[] };
}

interface SecretObject extends KubeObject {
  data?: Record<string, string>;
}

export interface EncryptionKeyDeps {
  readonly client: KubeClient;
  readonly keys: Informer<EncryptionKeyObject>;
  readonly ciliumNodes: Informer<EncryptionNodeObject>;
  /** Where a secretRef without a namespace points: the namespace Membrane runs in. */
  readonly namespace: string;
  readonly log: Logger;
  readonly now?: () => Date;
}

/** What one CiliumNode says about encryption. */
export function nodeKeyReport(cn: EncryptionNodeObject): NodeKeyReport {
  const ready = cn.status?.conditions?.find((c) => c.type === ENCRYPTION_READY);
  const spi = cn.spec?.encryption?.key;
  return {
    name: cn.metadata.name,
    ...(spi !== undefined && spi > 0 ? { spi } : {}),
    ...(ready ? { ready: { status: ready.status, reason: ready.reason, message: ready.message } } : {}),
  };
}

export function encryptionKeyReconciler(d: EncryptionKeyDeps): Reconciler {
  const now = d.now ?? (() => new Date());
  const iso = (t: Date): string => t.toISOString().replace(/\.\d{3}Z$/, "Z");

  async function writeStatus(obj: EncryptionKeyObject, status: EncryptionKeyStatus, conditions: ConditionInput[]): Promise<void> {
    const merged = mergeConditions(obj.status?.conditions, conditions, now());
    const next: EncryptionKeyStatus = { ...status, conditions: merged };
    const prev = obj.status ?? {};
    const { conditions: _a, ...restNext } = next;
    const { conditions: _b, ...restPrev } = prev;
    if (sameConditions(prev.conditions, merged) && sameFields(restPrev, restNext)) return;
    // Fields absent from `next` are cleared (null in a merge patch).
    const patch: Record<string, unknown> = { ...next };
    for (const k of Object.keys(prev)) if (!(k in next)) patch[k] = null;
    await d.client.mergePatch(resourcePath(ENCRYPTION_KEYS, undefined, obj.metadata.name, "status"), { status: patch });
    d.log.info({ key: obj.metadata.name, keyID: next.currentKeyID, spi: next.currentSPI, nodes: next.nodesOnCurrentKey, ready: merged.find((c) => c.type === "Ready")?.reason }, "encryption key status written");
  }

  return {
    name: "encryption-key",
    async reconcile(name: string): Promise<ReconcileResult | void> {
      const obj = d.keys.get(name);
      if (!obj) return;
      const generation = obj.metadata.generation;
      const g = generation !== undefined ? { observedGeneration: generation } : {};
      const spec = validateEncryptionKey(obj);
      if (!spec.ok) {
        const message = spec.errors.map((e) => `${e.path}: ${e.message}`).join("; ");
        await writeStatus(obj, { ...keep(obj.status), ...g }, [{ type: "Ready", status: "False", reason: "InvalidSpec", message, ...g }]);
        return;
      }
      const reports = d.ciliumNodes.list().map(nodeKeyReport);
      if (spec.value.mode === "wireguard") {
        // WireGuard keys are per node and never leave it: the count is of nodes that published a public key.
        const nodes = d.ciliumNodes.list();
        const withKey = nodes.filter((cn) => cn.spec?.encryption?.publicKey).map((cn) => cn.metadata.name);
        const summary = summarizeNodes(1, reports.map((r) => ({ ...r, spi: withKey.includes(r.name) ? 1 : undefined })));
        // Rotation: asked for by annotation (once per value) or due by schedule; each node's agent makes a new key pair
        // for a new value of its CiliumNode's annotation, and its peers switch as its new public key appears there.
        const st = obj.status ?? {};
        const interval = spec.value.rotationIntervalMs;
        const dueAt = interval !== undefined && st.lastRotation !== undefined ? Date.parse(st.lastRotation) + interval : undefined;
        const asked = obj.metadata.annotations?.[ROTATE_ANNOTATION];
        const request = asked !== undefined && asked !== "" && asked !== st.rotationRequest ? asked : dueAt !== undefined && dueAt <= now().getTime() ? `scheduled:${st.lastRotation}` : undefined;
        let rotatedAt = st.lastRotation ?? iso(now());
        if (request !== undefined && request !== st.rotationRequest) {
          // Only nodes not yet asked: a retry after a failed patch asks no node twice, and a request every node already
          // carries (its status lost, e.g. to a CRD without rotationRequest) moves neither lastRotation nor nextRotation.
          const unasked = nodes.filter((n) => n.metadata.annotations?.[WIREGUARD_ROTATE_ANNOTATION] !== request);
          for (const cn of unasked) {
            await d.client.mergePatch(resourcePath(CILIUM_NODES, undefined, cn.metadata.name), { metadata: { annotations: { [WIREGUARD_ROTATE_ANNOTATION]: request } } });
          }
          if (unasked.length > 0) {
            rotatedAt = iso(now());
            d.log.info({ key: name, request, nodes: unasked.map((n) => n.metadata.name) }, "WireGuard key rotation asked of every node");
          }
        }
        const rotation: EncryptionKeyStatus = {
          lastRotation: rotatedAt,
          ...(interval !== undefined ? { nextRotation: iso(new Date(Date.parse(rotatedAt) + interval)) } : {}),
          ...(request !== undefined ? { rotationRequest: request } : st.rotationRequest !== undefined ? { rotationRequest: st.rotationRequest } : {}),
        };
        await writeStatus(obj, { nodesOnCurrentKey: nodeCount(summary), ...unableField(summary), ...rotation, ...g }, [readyCondition(summary, "a published WireGuard key", g)]);
        // setTimeout's limit is ~24.8 days: a later rotation is looked at again before then.
        if (interval !== undefined) return { requeueAfter: Math.max(1000, Math.min(3_600_000, Date.parse(rotatedAt) + interval - now().getTime())) };
        return;
      }
      const ns = spec.value.secretRef.namespace ?? d.namespace;
      const secretName = spec.value.secretRef.name;
      const secretPath = resourcePath(SECRETS, ns, secretName);
      const where = `Secret ${ns}/${secretName}`;
      let secret: SecretObject;
      try {
        secret = await d.client.get<SecretObject>(secretPath);
      } catch (e) {
        if (!isNotFound(e)) throw e;
        const material: IpsecKeyMaterial = { current: { algorithm: IPSEC_ALGORITHM, keyHex: freshKey(36), spi: MIN_SPI } };
        secret = await d.client.create<SecretObject>(resourcePath(SECRETS, ns), {
          apiVersion: "v1",
          kind: "Secret",
          metadata: { name: secretName, namespace: ns, labels: { "app.kubernetes.io/managed-by": "membrane-operator" } },
          type: "Opaque",
          data: encode(ipsecSecretData(material)),
        });
        d.log.info({ key: name, secret: `${ns}/${secretName}`, spi: MIN_SPI }, "IPsec key created");
      }
      const parsed = parseIpsecSecret(decode(secret.data ?? {}));
      if (!parsed.ok) {
        const message = `${where}: ${parsed.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`;
        await writeStatus(obj, { ...keep(obj.status), ...g }, [{ type: "Ready", status: "False", reason: "InvalidKeyMaterial", message, ...g }]);
        return { requeueAfter: SECRET_RESYNC_MS };
      }
      let material = parsed.value;
      const conditions: ConditionInput[] = [];

      // Rotation: asked for by annotation, or due by schedule; one at a time.
      const lastRotation = obj.status?.lastRotation;
      const interval = spec.value.rotationIntervalMs;
      const dueAt = interval !== undefined && lastRotation !== undefined ? Date.parse(lastRotation) + interval : undefined;
      const asked = obj.metadata.annotations?.[ROTATE_ANNOTATION];
      const request = asked !== undefined && asked !== "" ? asked : dueAt !== undefined && dueAt <= now().getTime() ? `scheduled:${lastRotation}` : undefined;
      const done = secret.metadata.annotations?.[ROTATED_FOR_ANNOTATION];
      if (request !== undefined && request !== done) {
        if (material.previous) {
          conditions.push({ type: "Rotating", status: "True", reason: "PreviousKeyInUse", message: `rotation ${JSON.stringify(request)} waits: SPI ${material.previous.spi} is kept until every node uses SPI ${material.current.spi}`, ...g });
        } else {
          const next = rotated(material, freshKey(material.current.keyHex.length / 2));
          // Replaced with its resourceVersion: a concurrent writer makes this fail and retry, never lose a key.
          secret = await d.client.replace<SecretObject>(secretPath, {
            ...secret,
            metadata: { ...secret.metadata, annotations: { ...secret.metadata.annotations, [ROTATED_FOR_ANNOTATION]: request } },
            data: encode(ipsecSecretData(next)),
          });
          d.log.info({ key: name, secret: `${ns}/${secretName}`, from: material.current.spi, to: next.current.spi, request }, "IPsec key rotated");
          material = next;
        }
      }

      const summary = summarizeNodes(material.current.spi, reports);
      if (material.previous && summary.allOnCurrent) {
        // Every node moved: the previous key has no user left.
        const current: IpsecKeyMaterial = { current: material.current };
        await d.client.replace<SecretObject>(secretPath, { ...secret, data: encode(ipsecSecretData(current)) });
        d.log.info({ key: name, secret: `${ns}/${secretName}`, dropped: material.previous.spi }, "previous IPsec key removed: every node uses the current one");
        material = current;
      }
      if (!conditions.some((c) => c.type === "Rotating")) {
        conditions.push(
          material.previous
            ? { type: "Rotating", status: "True", reason: "NodesMoving", message: `SPI ${material.previous.spi} kept until every node uses SPI ${material.current.spi}: ${nodeCount(summary)}`, ...g }
            : { type: "Rotating", status: "False", reason: "Idle", message: "one key in use", ...g },
        );
      }

      const st = obj.status ?? {};
      const answered = secret.metadata.annotations?.[ROTATED_FOR_ANNOTATION];
      const moved = st.currentSPI !== material.current.spi;
      const keyID = moved ? (st.currentKeyID ?? 0) + 1 : (st.currentKeyID ?? 1);
      const rotatedAt = moved ? iso(now()) : (st.lastRotation ?? iso(now()));
      const status: EncryptionKeyStatus = {
        currentKeyID: keyID,
        currentSPI: material.current.spi,
        ...(material.previous ? { previousSPI: material.previous.spi } : {}),
        nodesOnCurrentKey: nodeCount(summary),
        ...unableField(summary),
        lastRotation: rotatedAt,
        ...(interval !== undefined ? { nextRotation: iso(new Date(Date.parse(rotatedAt) + interval)) } : {}),
        // The request the current key answers (the Secret records it): a request still waiting is not named yet.
        ...(answered !== undefined ? { rotationRequest: answered } : {}),
        ...g,
      };
      conditions.unshift(readyCondition(summary, `key ${keyID} (SPI ${material.current.spi})`, g));
      await writeStatus(obj, status, conditions);
      const untilDue = interval !== undefined ? Date.parse(rotatedAt) + interval - now().getTime() : Infinity;
      return { requeueAfter: Math.max(1000, Math.min(SECRET_RESYNC_MS, untilDue)) };
    },
  };
}

function readyCondition(s: NodeKeySummary, what: string, g: { observedGeneration?: number }): ConditionInput {
  const count = `${nodeCount(s)} nodes on ${what}`;
  if (s.total === 0) return { type: "Ready", status: "Unknown", reason: "NoNodes", message: count, ...g };
  if (s.allOnCurrent) return { type: "Ready", status: "True", reason: "AllNodesOnCurrentKey", message: count, ...g };
  if (s.unable.length > 0) {
    const why = s.unable.map((u) => `${u.name} (${u.reason}: ${u.message})`).join(", ");
    return { type: "Ready", status: "False", reason: "NodesCannotEncrypt", message: `${count}; cannot use it: ${why}`, ...g };
  }
  return { type: "Ready", status: "False", reason: "NodesPending", message: `${count}; waiting for ${s.pending.join(", ")}`, ...g };
}

function unableField(s: NodeKeySummary): Pick<EncryptionKeyStatus, "nodesUnable"> {
  return s.unable.length > 0 ? { nodesUnable: s.unable.map((u) => ({ ...u })) } : {};
}

/** On an invalid spec or Secret: the key bookkeeping stays as it was. */
function keep(s: EncryptionKeyStatus | undefined): EncryptionKeyStatus {
  const { conditions: _c, observedGeneration: _g, ...rest } = s ?? {};
  return rest;
}

function freshKey(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}

function encode(data: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "utf8").toString("base64")]));
}

function decode(data: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]));
}

function sameFields(a: EncryptionKeyStatus, b: EncryptionKeyStatus): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]) as Set<keyof EncryptionKeyStatus>;
  for (const k of keys) {
    const x = a[k];
    const y = b[k];
    if (Array.isArray(x) || Array.isArray(y)) {
      const xs = (x ?? []) as { name: string; reason: string; message: string }[];
      const ys = (y ?? []) as { name: string; reason: string; message: string }[];
      if (xs.length !== ys.length || xs.some((u, i) => u.name !== ys[i]!.name || u.reason !== ys[i]!.reason || u.message !== ys[i]!.message)) return false;
    } else if (x !== y) return false;
  }
  return true;
}
