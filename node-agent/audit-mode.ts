// Policy audit mode as the agent decides it: its --policy-audit-mode flag, and the annotation it watches on its own Node and on the node's pods.
import type { Logger } from "pino";
import { Informer } from "../kube/informer.ts";
import type { KubeClient, KubeObject } from "../kube/kube.ts";
import type { PodObject } from "../kube/objects.ts";
import { NODES } from "../kube/resources.ts";
import { NodePods } from "./node-pods.ts";

/**
 * The annotation that puts a Node (all its endpoints) or one Pod in policy audit mode: `"true"` audits,
 * anything else (or none) enforces. Cilium has no annotation for this (its per-endpoint switch is the
 * `PolicyAuditMode` endpoint option of its CLI); ours follows its `policy.cilium.io/*` naming.
 */
export const AUDIT_MODE_ANNOTATION = "policy.membrane.io/audit-mode";

/** What decides audit mode besides the flag: the Node's annotation, and the pods annotated, by namespace then name. */
export interface AuditModeAnnotations {
  readonly node: boolean;
  readonly pods: ReadonlyMap<string, ReadonlySet<string>>;
  /** Whether the node's Node object exists (undefined: not known yet). Without it no host policy can select the node. */
  readonly nodeObject?: boolean;
}

export const NO_AUDIT_ANNOTATIONS: AuditModeAnnotations = { node: false, pods: new Map() };

/** Whether the object carries the annotation with value "true" (the only value that audits: fail closed). */
export function annotatedForAudit(obj: KubeObject | undefined): boolean {
  return obj?.metadata.annotations?.[AUDIT_MODE_ANNOTATION] === "true";
}

/** A value of the annotation other than "true"/"false": worth a warning, since it enforces. */
export function unclearAuditValue(obj: KubeObject): string | undefined {
  const v = obj.metadata.annotations?.[AUDIT_MODE_ANNOTATION];
  return v === undefined || v === "true" || v === "false" ? undefined : v;
}

/** The annotations as the node's objects say them now. Pure. */
export function auditAnnotationsOf(node: KubeObject | undefined, pods: readonly KubeObject[]): AuditModeAnnotations {
  const byNamespace = new Map<string, Set<string>>();
  for (const p of pods) {
    if (!annotatedForAudit(p) || p.metadata.namespace === undefined) continue;
    let names = byNamespace.get(p.metadata.namespace);
    if (!names) byNamespace.set(p.metadata.namespace, (names = new Set()));
    names.add(p.metadata.name);
  }
  return { node: annotatedForAudit(node), pods: byNamespace, nodeObject: node !== undefined };
}

export function sameAuditAnnotations(a: AuditModeAnnotations, b: AuditModeAnnotations): boolean {
  if (a.node !== b.node || a.nodeObject !== b.nodeObject || a.pods.size !== b.pods.size) return false;
  for (const [ns, names] of a.pods) {
    const other = b.pods.get(ns);
    if (!other || other.size !== names.size || [...names].some((n) => !other.has(n))) return false;
  }
  return true;
}

export interface AuditModeWatchOptions {
  readonly client: KubeClient;
  readonly nodeName: string;
  /** Called with the annotations each time they change (and once after both lists). */
  readonly apply: (a: AuditModeAnnotations) => void;
  readonly log: Logger;
  /** The node's pods informer shared with the agent's other watches (node-pods.ts); without it, one of its own. */
  readonly pods?: Informer<PodObject>;
}

/**
 * Watches this node's Node object and the pods scheduled to it (field selectors: nothing of other
 * nodes crosses the wire) and hands the audit annotations to the agent on every change. Switching
 * needs no restart: the agent rewrites one config bit or an endpoint's flag.
 */
export class AuditModeWatch {
  private readonly node: Informer<KubeObject>;
  private readonly pods: NodePods;
  private last: AuditModeAnnotations | undefined;
  private readonly warned = new Set<string>();

  constructor(private readonly o: AuditModeWatchOptions) {
    this.node = new Informer<KubeObject>(o.client, NODES, o.log, { fieldSelector: `metadata.name=${o.nodeName}` });
    this.pods = new NodePods({ client: o.client, nodeName: o.nodeName, log: o.log, ...(o.pods ? { shared: o.pods } : {}) });
    this.node.on(() => this.changed());
    this.pods.informer.on(() => this.changed());
  }

  start(): void {
    this.node.start();
    this.pods.start();
    void this.synced().then(() => this.changed());
  }

  async stop(): Promise<void> {
    await Promise.all([this.node.stop(), this.pods.stop()]);
  }

  /** Both lists arrived (the first annotations were handed over). */
  async synced(): Promise<void> {
    await Promise.all([this.node.waitForSync(), this.pods.informer.waitForSync()]);
  }

  private changed(): void {
    // Until both lists arrived a missing annotation may only be not listed yet: decide nothing (start() calls again).
    if (!this.node.hasSynced || !this.pods.informer.hasSynced) return;
    const pods = this.pods.informer.list();
    for (const obj of [this.node.get(this.o.nodeName), ...pods]) {
      const v = obj && unclearAuditValue(obj);
      const who = obj && `${obj.metadata.namespace ?? ""}/${obj.metadata.name}=${v}`;
      if (v === undefined || who === undefined || this.warned.has(who)) continue;
      this.warned.add(who);
      this.o.log.warn({ kind: obj!.metadata.namespace === undefined ? "Node" : "Pod", namespace: obj!.metadata.namespace, name: obj!.metadata.name, annotation: AUDIT_MODE_ANNOTATION, value: v }, 'audit-mode annotation is neither "true" nor "false": policy is enforced');
    }
    const next = auditAnnotationsOf(this.node.get(this.o.nodeName), pods);
    if (this.last && sameAuditAnnotations(this.last, next)) return;
    this.last = next;
    this.o.apply(next);
  }
}
