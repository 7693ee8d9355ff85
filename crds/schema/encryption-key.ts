// Schema of MembraneEncryptionKey (membrane.io/v1alpha1, cluster-scoped): how node-to-node traffic is
// encrypted and how often its key rotates. The key material itself only ever lives in a Secret.
import { AGE_COLUMN, arr, conditions, defineCRD, int, obj, secretRef, str, timestamp } from "./common.ts";

/** A Go duration such as "24h" or "1h30m" (what the operator parses). */
export const DURATION_PATTERN = "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

export const membraneEncryptionKeyCRD = defineCRD({
  group: "membrane.io",
  version: "v1alpha1",
  kind: "MembraneEncryptionKey",
  plural: "membraneencryptionkeys",
  shortNames: ["mek"],
  categories: ["membrane"],
  scope: "Cluster",
  statusSubresource: true,
  printerColumns: [
    { name: "Mode", type: "string", jsonPath: ".spec.mode", description: "wireguard or ipsec." },
    {
      name: "Key ID",
      type: "integer",
      jsonPath: ".status.currentKeyID",
      description: "The key generation nodes use now.",
    },
    {
      name: "Nodes",
      type: "string",
      jsonPath: ".status.nodesOnCurrentKey",
      description: "Nodes using the current key, n/m.",
    },
    {
      name: "Last Rotation",
      type: "date",
      jsonPath: ".status.lastRotation",
      description: "When the key last rotated.",
    },
    AGE_COLUMN,
  ],
  schema: obj(
    "Transparent encryption of traffic between nodes: the mode, the rotation schedule and the Secret that holds " +
      "the key material. The operator rotates the key in the Secret; this object never contains key material.",
    {
      spec: obj(
        "Desired encryption.",
        {
          mode: str(
            "wireguard (per-node key pairs, public keys published in CiliumNode) or ipsec (a shared key).",
            {
              enum: ["wireguard", "ipsec"],
            },
          ),
          rotationInterval: str(
            'How often the operator rotates the key, as a duration such as "24h" or "90m" (wireguard: asks every node for a new key pair).',
            {
              pattern: DURATION_PATTERN,
            },
          ),
          secretRef: secretRef(
            "The Secret holding the key material, written and rotated by the operator.",
            "Namespace of the Secret (the namespace Membrane runs in when omitted).",
          ),
        },
        { required: ["mode", "secretRef"] },
      ),
      status: obj("Rotation state observed by the operator. Written through the status subresource.", {
        currentKeyID: int("Generation of the key in use; increases by one at each rotation.", { minimum: 0 }),
        currentSPI: int("IPsec: the SPI of the current key (what a node reports in its CiliumNode spec.encryption.key).", {
          minimum: 0,
          maximum: 15,
        }),
        previousSPI: int("IPsec: the SPI of the previous key, kept in the Secret until every node uses the current one.", {
          minimum: 0,
          maximum: 15,
        }),
        nodesOnCurrentKey: str('Nodes using the current key out of all nodes, as "n/m".'),
        nodesUnable: arr(
          "Nodes that report they cannot use the key (EncryptionReady=False on their CiliumNode), with why.",
          obj(
            "One node.",
            {
              name: str("The node."),
              reason: str("Its EncryptionReady reason, e.g. KernelLacksESP."),
              message: str("Its EncryptionReady message."),
            },
            { required: ["name", "reason"] },
          ),
        ),
        lastRotation: timestamp("When the key last rotated."),
        nextRotation: timestamp("When the next rotation is due."),
        rotationRequest: str(
          "The last rotation request carried out: the key's membrane.io/rotate value, or scheduled:<lastRotation> when rotationInterval was due. WireGuard: every node was asked for it (on each CiliumNode's membrane.io/wireguard-rotate); IPsec: the current key answers it (a request waiting for the previous key to go is not named yet).",
        ),
        observedGeneration: int("metadata.generation the status describes.", { minimum: 0, format: "int64" }),
        conditions: conditions("Ready: the Secret exists and every node uses the current key."),
      }),
    },
    { required: ["spec"] },
  ),
});
