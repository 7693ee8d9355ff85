// Every CRD Membrane installs, in install order; the single list the generator, the tests and tooling read.
import type { CustomResourceDefinition } from "./common.ts";
import { membraneEncryptionKeyCRD } from "./encryption-key.ts";
import { ciliumCIDRGroupCRD } from "./cidr-group.ts";
import { ciliumIdentityCRD, ciliumNodeCRD } from "./identity-node.ts";
import { ciliumClusterwideNetworkPolicyCRD, ciliumNetworkPolicyCRD } from "./network-policy.ts";
import { tracingPolicyCRD, tracingPolicyNamespacedCRD } from "./tracing-policy.ts";

export type { CustomResourceDefinition, JSONSchemaProps } from "./common.ts";

export const CRDS: readonly CustomResourceDefinition[] = [
  ciliumNetworkPolicyCRD,
  ciliumClusterwideNetworkPolicyCRD,
  ciliumIdentityCRD,
  ciliumNodeCRD,
  ciliumCIDRGroupCRD,
  membraneEncryptionKeyCRD,
  tracingPolicyCRD,
  tracingPolicyNamespacedCRD,
];

/** The CRD that serves `apiVersion`/`kind`, if Membrane defines one. */
export function crdFor(apiVersion: string, kind: string): CustomResourceDefinition | undefined {
  return CRDS.find(
    (c) => c.spec.names.kind === kind && c.spec.versions.some((v) => `${c.spec.group}/${v.name}` === apiVersion),
  );
}
