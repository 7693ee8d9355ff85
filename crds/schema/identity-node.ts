// Schemas of CiliumIdentity (a numeric security identity and its labels) and CiliumNode (a node's
// addresses, pod CIDRs, encryption parameters and health), both cilium.io/v2 and cluster-scoped.
import { AGE_COLUMN, arr, bool, conditions, defineCRD, int, map, obj, str, timestamp } from "./common.ts";

export const ciliumIdentityCRD = defineCRD({
  group: "cilium.io",
  version: "v2",
  kind: "CiliumIdentity",
  plural: "ciliumidentities",
  shortNames: ["ciliumid"],
  categories: ["cilium"],
  scope: "Cluster",
  statusSubresource: false,
  printerColumns: [
    {
      name: "Namespace",
      type: "string",
      jsonPath: ".metadata.labels.io\\.kubernetes\\.pod\\.namespace",
      description: "Namespace of the pods that carry this identity.",
    },
    AGE_COLUMN,
  ],
  schema: {
    ...obj(
      "A security identity: the object's name is the identity number (256-65535 for cluster identities) and " +
        "security-labels the canonical label set it stands for. Allocated by the Membrane operator only; pods " +
        "with equal security labels share one identity.",
      {
        "security-labels": map(
          'The canonical security labels of this identity, "source:key" → value, e.g. "k8s:app": "web", ' +
            '"k8s:io.kubernetes.pod.namespace": "default".',
          str("Label value (may be empty)."),
        ),
      },
      {
        required: ["metadata", "security-labels"],
        "x-kubernetes-validations": [
          {
            rule: "self.metadata.name.matches('^[1-9][0-9]*$')",
            message: "metadata.name must be the identity number in decimal, e.g. 256",
            reason: "FieldValueInvalid",
          },
        ],
      },
    ),
  },
});

const WIREGUARD_PUBLIC_KEY = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";

export const ciliumNodeCRD = defineCRD({
  group: "cilium.io",
  version: "v2",
  kind: "CiliumNode",
  plural: "ciliumnodes",
  shortNames: ["cn", "ciliumn"],
  categories: ["cilium"],
  scope: "Cluster",
  statusSubresource: true,
  printerColumns: [
    {
      name: "InternalIP",
      type: "string",
      jsonPath: '.spec.addresses[?(@.type=="InternalIP")].ip',
      description: "The node's internal address.",
    },
    {
      name: "Ready",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Ready")].status',
      description: "Whether the node's agent runs with its datapath loaded (its Ready condition).",
    },
    {
      name: "PolicyAudit",
      type: "boolean",
      jsonPath: ".status.agent.policyAuditMode",
      description: "Policy audit mode for the whole node: would-be policy drops pass, reported as AUDIT.",
    },
    AGE_COLUMN,
  ],
  schema: obj(
    "A node as the Membrane datapath sees it: its addresses, the pod CIDRs it allocates from, its encryption " +
      "parameters and its agent's health. The object's name is the Kubernetes node name; the node's agent writes it.",
    {
      spec: obj("What the node's agent announces about itself.", {
        addresses: arr(
          "Addresses of the node. Tunnel traffic is trusted only from these.",
          obj(
            "One address.",
            {
              type: str(
                "Kind of address: InternalIP, ExternalIP or CiliumInternalIP (the node's router address).",
                {
                  enum: ["InternalIP", "ExternalIP", "CiliumInternalIP"],
                },
              ),
              ip: str("The IPv4 or IPv6 address."),
            },
            { required: ["type", "ip"] },
          ),
        ),
        ipam: obj("Address management for the node's pods.", {
          podCIDRs: arr(
            "CIDRs the node allocates pod addresses from.",
            str('A CIDR, e.g. "10.244.1.0/24".', { format: "cidr" }),
          ),
        }),
        encryption: obj("Transparent encryption parameters (public data only; keys live in Secrets).", {
          key: int("IPsec key index (SPI) the node currently uses; 0 when IPsec is off.", {
            minimum: 0,
            maximum: 15,
          }),
          publicKey: str("The node's WireGuard public key (base64, 32 bytes).", {
            pattern: WIREGUARD_PUBLIC_KEY,
          }),
        }),
        health: obj("Addresses of the node's health endpoint, probed by other nodes.", {
          ipv4: str("IPv4 address of the health endpoint."),
          ipv6: str("IPv6 address of the health endpoint."),
        }),
      }),
      status: obj("What others observe about the node. Written through the status subresource.", {
        conditions: conditions(
          "Ready: the agent runs and its datapath is loaded; others as the agent reports.",
        ),
        encryption: obj("The node's transparent encryption as its agent sees it (read by membrane encryption status).", {
          mode: str("wireguard or ipsec.", { enum: ["wireguard", "ipsec"] }),
          interface: str("The WireGuard device in the node's network namespace."),
          peers: int("Peers configured (other nodes with a published key).", { minimum: 0 }),
          lastHandshake: timestamp("The most recent handshake with any peer."),
          rxBytes: int("Bytes received from all peers, at the last report.", { minimum: 0, format: "int64" }),
          txBytes: int("Bytes sent to all peers, at the last report.", { minimum: 0, format: "int64" }),
        }),
        agent: obj("What the node's agent reports about itself (read by membrane status).", {
          version: str("The agent's Membrane version, e.g. 0.1.0."),
          policyVersion: int("The version of the operator's state the agent last applied and acknowledged.", {
            minimum: 0,
          }),
          policyAuditMode: bool(
            "The whole node is in policy audit mode (the agent's --policy-audit-mode, or the Node's annotation " +
              'policy.membrane.io/audit-mode: "true"): packets policy would drop pass and are reported with verdict AUDIT.',
          ),
          auditedEndpoints: int(
            'Endpoints in policy audit mode through their pod\'s annotation policy.membrane.io/audit-mode: "true".',
            { minimum: 0 },
          ),
        }),
      }),
    },
  ),
});
