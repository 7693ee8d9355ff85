// The shapes of the API objects Membrane's components read and write (pods, CiliumIdentity), and the
// translation between a CiliumIdentity's `security-labels` and a core label set.
import type { LabelSet } from "../core/model.ts";
import { label, labelSetFrom } from "../core/labels.ts";
import type { KubeObject } from "./kube.ts";

/** The pod annotation that records the pod's identity number. */
export const IDENTITY_ANNOTATION = "membrane.io/identity";
/** On a CiliumNode, set by its agent: the HOST:PORT of the agent's HTTP server (health, metrics, read-only JSON such as the FQDN cache). */
export const AGENT_API_ADDRESS_ANNOTATION = "membrane.io/agent-api-address";
/** On a CiliumIdentity: since when no pod has used it (RFC 3339), as operators before the one-object marks wrote it; still honoured. */
export const UNUSED_SINCE_ANNOTATION = "membrane.io/unused-since";

/** On a CiliumIdentity: its own number, so that the GC can delete many in one request selected by it. */
export const IDENTITY_NUMBER_LABEL = "membrane.io/identity-number";

export interface PodObject extends KubeObject {
  spec?: {
    serviceAccountName?: string;
    hostNetwork?: boolean;
    nodeName?: string;
    containers?: { ports?: { name?: string; containerPort: number; protocol?: string }[] }[];
  };
  status?: { phase?: string; podIP?: string; podIPs?: { ip: string }[] };
}

/** What toServices reads of a Service: its labels (metadata) and whether it selects pods. */
export interface ServiceObject extends KubeObject {
  spec?: { selector?: Record<string, string> | null };
}

/** The label by which an EndpointSlice names its Service (same namespace). */
export const SERVICE_NAME_LABEL = "kubernetes.io/service-name";

/** What toServices reads of a discovery.k8s.io/v1 EndpointSlice: its address family and its endpoints' addresses. */
export interface EndpointSliceObject extends KubeObject {
  addressType?: string;
  endpoints?: { addresses?: string[] | null; conditions?: { ready?: boolean | null } }[] | null;
}

export interface IdentityObject extends KubeObject {
  "security-labels"?: Record<string, string>;
}

/** The `security-labels` map of a CiliumIdentity: "source:key" → value, as Cilium writes it. */
export function securityLabelsMap(set: LabelSet): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of set.labels) out[`${l.source}:${l.key}`] = l.value;
  return out;
}

export function labelSetOfIdentity(obj: IdentityObject): LabelSet {
  return labelSetFrom(
    Object.entries(obj["security-labels"] ?? {}).map(([sk, value]) => {
      const i = sk.indexOf(":");
      return i < 0 ? label("unspec", sk, value) : label(sk.slice(0, i), sk.slice(i + 1), value);
    }),
  );
}
