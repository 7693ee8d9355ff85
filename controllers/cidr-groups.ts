// The CiliumCIDRGroups policies may name, as the distribution and the policy status read them: each object's last valid version.
import { type CIDRGroup, parseCIDRGroup } from "../core/cidr-group.ts";
import type { Informer } from "../kube/informer.ts";
import type { KubeObject } from "../kube/kube.ts";

/**
 * The groups in the informer's cache. A group edited into something invalid (which the webhook refuses,
 * but an install without it admits) keeps its last valid version, as a policy does: a broken edit is never
 * half-applied. One never valid counts as absent. Without an informer (the CRD not watched) there is no group.
 */
export class CIDRGroups {
  private readonly lastValid = new Map<string, CIDRGroup>();
  private readonly parsed = new WeakMap<KubeObject, CIDRGroup | undefined>();
  private memo: { objects: readonly KubeObject[]; groups: ReadonlyMap<string, CIDRGroup> } | undefined;

  constructor(readonly informer?: Informer<KubeObject>) {}

  /** The groups by name, now. The same map is returned while no group object changed. */
  current(): ReadonlyMap<string, CIDRGroup> {
    const objects = this.informer?.list() ?? [];
    if (this.memo && sameObjects(this.memo.objects, objects)) return this.memo.groups;
    const groups = new Map<string, CIDRGroup>();
    for (const obj of objects) {
      const name = obj.metadata.name;
      let group = this.parsed.get(obj);
      if (!this.parsed.has(obj)) {
        const r = parseCIDRGroup(obj);
        group = r.ok ? r.value : undefined;
        this.parsed.set(obj, group);
      }
      if (group) this.lastValid.set(name, group);
      const g = group ?? this.lastValid.get(name);
      if (g) groups.set(name, g);
    }
    for (const name of this.lastValid.keys()) if (!groups.has(name)) this.lastValid.delete(name);
    this.memo = { objects, groups };
    return groups;
  }
}

function sameObjects(a: readonly KubeObject[], b: readonly KubeObject[]): boolean {
  return a.length === b.length && a.every((o, i) => o === b[i]);
}

/** Whether two group maps give every group reference the same CIDRs (names, labels and CIDRs equal). */
export function sameCIDRGroups(a: ReadonlyMap<string, CIDRGroup>, b: ReadonlyMap<string, CIDRGroup>): boolean {
  if (a === b) return true;
  if (a.size !== b.size) return false;
  for (const [name, g] of a) {
    const h = b.get(name);
    if (!h || h.labels.key !== g.labels.key || h.cidrs.length !== g.cidrs.length || h.cidrs.some((c, i) => c !== g.cidrs[i])) return false;
  }
  return true;
}
