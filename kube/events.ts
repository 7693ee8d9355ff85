// Records Kubernetes Events about an object (core/v1), one per (object, reason, generation); a repeat bumps its count.
import type { Logger } from "pino";
import { createHash } from "node:crypto";
import { type KubeClient, type KubeObject, isConflict, resourcePath } from "./kube.ts";
import { EVENTS } from "./resources.ts";
import { errMessage } from "./informer.ts";

export class EventRecorder {
  constructor(
    private readonly client: KubeClient,
    private readonly component: string,
    private readonly log: Logger,
    /** Namespace for events about cluster-scoped objects. */
    private readonly defaultNamespace = "default",
  ) {}

  /** Best effort: a failure to record is logged, never thrown (the reconcile itself must not fail on it). */
  async record(obj: KubeObject, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const ns = obj.metadata.namespace ?? this.defaultNamespace;
    const digest = createHash("sha256")
      .update(`${obj.kind}/${obj.metadata.uid}/${obj.metadata.generation ?? 0}/${reason}/${message}`)
      .digest("hex")
      .slice(0, 10);
    const name = `${obj.metadata.name}.${digest}`;
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
    try {
      await this.client.create(resourcePath(EVENTS, ns), {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name, namespace: ns },
        involvedObject: {
          apiVersion: obj.apiVersion,
          kind: obj.kind,
          name: obj.metadata.name,
          namespace: obj.metadata.namespace,
          uid: obj.metadata.uid,
          resourceVersion: obj.metadata.resourceVersion,
        },
        type,
        reason,
        message,
        source: { component: this.component },
        reportingComponent: this.component,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      });
    } catch (e) {
      if (!isConflict(e)) {
        this.log.warn({ err: errMessage(e), namespace: ns, name: obj.metadata.name, reason }, "could not record event");
        return;
      }
      try {
        const path = resourcePath(EVENTS, ns, name);
        const existing = await this.client.get<{ count?: number }>(path);
        await this.client.mergePatch(path, { count: (existing.count ?? 1) + 1, lastTimestamp: now });
      } catch (e2) {
        this.log.warn({ err: errMessage(e2), namespace: ns, name: obj.metadata.name, reason }, "could not update event");
      }
    }
  }
}
