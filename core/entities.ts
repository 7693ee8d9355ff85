// Policy entities (toEntities/fromEntities) as Cilium defines them: each a union of selectors over identity labels.
import type { Entity, LabelSet, Selector } from "./model.ts";
import { CLUSTER_LABEL, DEFAULT_CLUSTER_NAME, LABEL_SOURCE, label } from "./labels.ts";
import { SELECT_ALL, matchesSelector, selectorFromLabels } from "./selector.ts";

export const ENTITIES: readonly Entity[] = Object.freeze([
  "all",
  "world",
  "world-ipv4",
  "world-ipv6",
  "cluster",
  "host",
  "remote-node",
  "kube-apiserver",
  "health",
  "init",
  "ingress",
  "unmanaged",
  "none",
]);

export function isEntity(s: string): s is Entity {
  return (ENTITIES as readonly string[]).includes(s);
}

const reservedSelector = (name: string): Selector => selectorFromLabels([label(LABEL_SOURCE.reserved, name)]);

/**
 * The selectors an entity stands for (an identity is in the entity when any of them matches it).
 * `world` carries the world labels, which CIDR identities carry too (see cidrLabels), so it covers
 * every address outside the cluster. `cluster` is every reserved in-cluster identity plus every
 * pod of this cluster (by its `io.cilium.k8s.policy.cluster` label). `all` matches every identity.
 */
export function entitySelectors(entity: Entity, clusterName: string = DEFAULT_CLUSTER_NAME): readonly Selector[] {
  switch (entity) {
    case "all":
      return [SELECT_ALL];
    case "none":
      return [];
    case "world":
      return [reservedSelector("world"), reservedSelector("world-ipv4"), reservedSelector("world-ipv6")];
    case "cluster":
      return [
        reservedSelector("host"),
        reservedSelector("remote-node"),
        reservedSelector("init"),
        reservedSelector("ingress"),
        reservedSelector("health"),
        reservedSelector("unmanaged"),
        reservedSelector("kube-apiserver"),
        selectorFromLabels([label(LABEL_SOURCE.k8s, CLUSTER_LABEL, clusterName)]),
      ];
    default:
      // host, remote-node, kube-apiserver, health, init, ingress, unmanaged, world-ipv4, world-ipv6.
      return [reservedSelector(entity)];
  }
}

/** A predicate over one identity's labels, for the selector cache to evaluate incrementally. */
export function entityMatches(entity: Entity, labels: LabelSet, clusterName?: string): boolean {
  return entitySelectors(entity, clusterName).some((s) => matchesSelector(s, labels));
}

/** The numbers, ascending, of the given identities that the entity means. */
export function entityIdentities(
  entity: Entity,
  identities: Iterable<{ readonly id: number; readonly labels: LabelSet }>,
  clusterName?: string,
): number[] {
  const selectors = entitySelectors(entity, clusterName);
  const out: number[] = [];
  for (const { id, labels } of identities) if (selectors.some((s) => matchesSelector(s, labels))) out.push(id);
  return out.sort((a, b) => a - b);
}
