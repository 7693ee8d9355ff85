// What an agent's encryption mode publishes on its CiliumNode: the EncryptionReady condition and the public part it announces in spec.encryption.
import type { ConditionInput } from "../../kube/conditions.ts";

export { ENCRYPTION_READY } from "../../core/encryption.ts";

export interface EncryptionPublication {
  /** EncryptionReady (observedGeneration is filled in by the publisher). */
  readonly condition: Omit<ConditionInput, "observedGeneration">;
  /** spec.encryption: the IPsec SPI the node has programmed, or its WireGuard public key; nothing else ever. */
  readonly spec: { readonly key?: number; readonly publicKey?: string };
  /** status.encryption: the device's counters, as of this publication. */
  readonly status?: EncryptionStatusReport;
}

export interface EncryptionStatusReport {
  readonly mode: "wireguard" | "ipsec";
  readonly interface?: string;
  readonly peers?: number;
  readonly lastHandshake?: string;
  readonly rxBytes?: number;
  readonly txBytes?: number;
}

export const ENCRYPTION_MODES = ["disabled", "ipsec", "wireguard"] as const;
export type AgentEncryptionMode = (typeof ENCRYPTION_MODES)[number];
