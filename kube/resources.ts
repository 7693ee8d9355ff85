// The API resources the operator and the CLI read and write.
import type { Resource } from "./kube.ts";

export const PODS: Resource = { group: "", version: "v1", plural: "pods", namespaced: true, kind: "Pod" };
export const NAMESPACES: Resource = { group: "", version: "v1", plural: "namespaces", namespaced: false, kind: "Namespace" };
export const NODES: Resource = { group: "", version: "v1", plural: "nodes", namespaced: false, kind: "Node" };
export const SERVICES: Resource = { group: "", version: "v1", plural: "services", namespaced: true, kind: "Service" };
export const ENDPOINT_SLICES: Resource = { group: "discovery.k8s.io", version: "v1", plural: "endpointslices", namespaced: true, kind: "EndpointSlice" };
export const CONFIG_MAPS: Resource = { group: "", version: "v1", plural: "configmaps", namespaced: true, kind: "ConfigMap" };
export const EVENTS: Resource = { group: "", version: "v1", plural: "events", namespaced: true, kind: "Event" };
export const NETWORK_POLICIES: Resource = { group: "networking.k8s.io", version: "v1", plural: "networkpolicies", namespaced: true, kind: "NetworkPolicy" };
export const CNPS: Resource = { group: "cilium.io", version: "v2", plural: "ciliumnetworkpolicies", namespaced: true, kind: "CiliumNetworkPolicy" };
export const CCNPS: Resource = { group: "cilium.io", version: "v2", plural: "ciliumclusterwidenetworkpolicies", namespaced: false, kind: "CiliumClusterwideNetworkPolicy" };
export const IDENTITIES: Resource = { group: "cilium.io", version: "v2", plural: "ciliumidentities", namespaced: false, kind: "CiliumIdentity" };
/** Served as v2alpha1 too (Cilium before 1.18); read as v2. */
export const CIDR_GROUPS: Resource = { group: "cilium.io", version: "v2", plural: "ciliumcidrgroups", namespaced: false, kind: "CiliumCIDRGroup" };
export const CILIUM_NODES: Resource = { group: "cilium.io", version: "v2", plural: "ciliumnodes", namespaced: false, kind: "CiliumNode" };
export const LEASES: Resource = { group: "coordination.k8s.io", version: "v1", plural: "leases", namespaced: true, kind: "Lease" };
export const DAEMONSETS: Resource = { group: "apps", version: "v1", plural: "daemonsets", namespaced: true, kind: "DaemonSet" };
export const DEPLOYMENTS: Resource = { group: "apps", version: "v1", plural: "deployments", namespaced: true, kind: "Deployment" };
export const SECRETS: Resource = { group: "", version: "v1", plural: "secrets", namespaced: true, kind: "Secret" };
export const ENCRYPTION_KEYS: Resource = { group: "membrane.io", version: "v1alpha1", plural: "membraneencryptionkeys", namespaced: false, kind: "MembraneEncryptionKey" };
export const TRACING_POLICIES: Resource = { group: "cilium.io", version: "v1alpha1", plural: "tracingpolicies", namespaced: false, kind: "TracingPolicy" };
export const TRACING_POLICIES_NAMESPACED: Resource = { group: "cilium.io", version: "v1alpha1", plural: "tracingpoliciesnamespaced", namespaced: true, kind: "TracingPolicyNamespaced" };
export const CUSTOM_RESOURCE_DEFINITIONS: Resource = { group: "apiextensions.k8s.io", version: "v1", plural: "customresourcedefinitions", namespaced: false, kind: "CustomResourceDefinition" };
