// A new pod's identity as its node can know it before the pod has an address: the operator's annotation on the pod, checked against the identity's labels in the applied state.
import { CLUSTER_LABEL, LABEL_SOURCE, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL, SERVICE_ACCOUNT_LABEL, parseLabel } from "../core/labels.ts";
import { identityScope } from "../core/identity.ts";
import { IDENTITY_ANNOTATION, type PodObject } from "../kube/objects.ts";

/**
 * What a pod object says about its identity: the number the operator annotated it with (the only
 * allocator), and the pod's own labels and service account, against which that number is checked.
 */
export interface PodIdentityClaim {
  readonly identity: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly serviceAccount: string | undefined;
}

/** Claims by namespace, then pod name. */
export type PodIdentityClaims = ReadonlyMap<string, ReadonlyMap<string, PodIdentityClaim>>;

export const NO_POD_IDENTITY_CLAIMS: PodIdentityClaims = new Map();

/** The claims of the pods listed (those the operator has annotated). Pure. */
export function podIdentityClaims(pods: readonly PodObject[]): PodIdentityClaims {
  const out = new Map<string, Map<string, PodIdentityClaim>>();
  for (const p of pods) {
    const ns = p.metadata.namespace;
    const n = Number(p.metadata.annotations?.[IDENTITY_ANNOTATION]);
    if (ns === undefined || !Number.isInteger(n) || n <= 0) continue;
    let names = out.get(ns);
    if (!names) out.set(ns, (names = new Map()));
    names.set(p.metadata.name, { identity: n, labels: p.metadata.labels ?? {}, serviceAccount: p.spec?.serviceAccountName });
  }
  return out;
}

/**
 * The claimed identity when its labels (as the operator's state lists them) fit the pod: the pod's
 * namespace, its service account when the identity names one, and every pod label the identity
 * carries with the pod's value. The annotation is writable by whoever may create the pod, so it is
 * never trusted alone: an identity of another namespace, or with a label value the pod does not have,
 * is refused (the pod stays `reserved:init` until the operator's ipcache names its address). What a
 * forged annotation can still reach is an identity of fewer of the pod's own labels — one the same
 * user gets anyway by creating the pod without them. Labels that only Membrane sets (namespace labels,
 * cluster) are not the pod's to match. Pure.
 */
export function verifiedIdentity(namespace: string, claim: PodIdentityClaim, identityLabels: readonly string[] | undefined): number | undefined {
  if (identityScope(claim.identity) !== "cluster" || identityLabels === undefined) return undefined;
  let namespaceNamed = false;
  for (const s of identityLabels) {
    const l = parseLabel(s);
    if (l.source !== LABEL_SOURCE.k8s) return undefined; // not a pod's identity
    if (l.key === POD_NAMESPACE_LABEL) {
      if (l.value !== namespace) return undefined;
      namespaceNamed = true;
    } else if (l.key === SERVICE_ACCOUNT_LABEL) {
      if (l.value !== (claim.serviceAccount ?? "")) return undefined;
    } else if (l.key === CLUSTER_LABEL || l.key.startsWith(`${NAMESPACE_LABELS_PREFIX}.`)) {
      continue;
    } else if (claim.labels[l.key] !== l.value) {
      return undefined;
    }
  }
  return namespaceNamed ? claim.identity : undefined;
}

/** Whether two claims would resolve alike (same number, labels and service account). */
export function sameClaim(a: PodIdentityClaim | undefined, b: PodIdentityClaim | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.identity !== b.identity || a.serviceAccount !== b.serviceAccount) return false;
  const ka = Object.keys(a.labels);
  return ka.length === Object.keys(b.labels).length && ka.every((k) => a.labels[k] === b.labels[k]);
}
