// The workload a pod belongs to (its controller, seen through a ReplicaSet to its Deployment and through a
// Job to its CronJob), as Hubble names it in a flow's `Endpoint.workloads` and filters by `--workload`.

/** A pod's workload: the kind and name of the object that manages it (`Deployment`/`web`). */
export interface Workload {
  readonly kind: string;
  readonly name: string;
}

/** What of a pod the workload is read from: its generated name, its labels and its owner references. */
export interface WorkloadSource {
  readonly generateName?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly ownerReferences?: readonly unknown[];
}

/** The label a Deployment's ReplicaSet puts on its pods and appends to its own name. */
const POD_TEMPLATE_HASH = "pod-template-hash";
/** A CronJob names its Jobs `<cronjob>-<scheduled time in minutes>` (8 to 10 digits). */
const CRONJOB_JOB_NAME = /^(.+)-\d{8,10}$/;

function controllerOf(refs: readonly unknown[] | undefined): Workload | undefined {
  for (const r of refs ?? []) {
    if (typeof r !== "object" || r === null) continue;
    const { kind, name, controller } = r as { kind?: unknown; name?: unknown; controller?: unknown };
    if (controller === true && typeof kind === "string" && kind !== "" && typeof name === "string" && name !== "") return { kind, name };
  }
  return undefined;
}

/**
 * The workload of a pod, by the rules Hubble uses (Cilium's pkg/k8s/utils, after Istio): only a pod whose name
 * was generated has one; it is the pod's controller, except that a ReplicaSet named `<d>-<pod-template-hash>`
 * is the Deployment `<d>`, and a Job named `<c>-<8 to 10 digits>` is the CronJob `<c>`. Undefined for a pod
 * created by hand (no generated name or no controller).
 */
export function workloadOf(pod: WorkloadSource): Workload | undefined {
  if (!pod.generateName) return undefined;
  const owner = controllerOf(pod.ownerReferences);
  if (owner === undefined) return undefined;
  const hash = pod.labels?.[POD_TEMPLATE_HASH];
  if (owner.kind === "ReplicaSet" && hash && owner.name.endsWith(`-${hash}`)) {
    return { kind: "Deployment", name: owner.name.slice(0, -(hash.length + 1)) };
  }
  if (owner.kind === "Job") {
    const m = CRONJOB_JOB_NAME.exec(owner.name);
    if (m) return { kind: "CronJob", name: m[1]! };
  }
  return owner;
}

export function sameWorkload(a: Workload | undefined, b: Workload | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.kind === b.kind && a.name === b.name);
}
