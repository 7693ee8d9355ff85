// A pod's containers as the runtime tells them apart: the container ID read from a process's cgroup path (the
// kubelet's cgroupfs and systemd layouts, cgroup v1 and v2), the container fields a TracingPolicy's
// containerSelector matches (Tetragon's: `name` and `repo`), and the container of Tetragon's process events.
import { labelSetFrom, label, LABEL_SOURCE } from "./labels.ts";
import type { FieldError } from "./model.ts";
import { matchesSelector, selectorFrom, type LabelSelectorInput } from "./selector.ts";

/** One container of a pod, from the pod's status (`status.containerStatuses[]`, init and ephemeral ones too). */
export interface PodContainer {
  /** The runtime's container ID without its scheme (`containerd://` stripped). */
  readonly id: string;
  readonly name: string;
  /** `status.containerStatuses[].image` (what the kubelet reports the container runs). */
  readonly image: string;
  /** `status.containerStatuses[].imageID`. */
  readonly imageId: string;
  /** When it started (RFC 3339), where the status says. */
  readonly startedAt?: string;
}

/** Tetragon's `process.pod.container`. */
export interface TetragonContainer {
  id: string;
  name: string;
  image: { id: string; name: string };
  start_time?: string;
  /** The process's pid inside the container's pid namespace. */
  pid?: number;
  /** Whether the process may be a kubelet exec probe (Tetragon's heuristic; never known here: always false). */
  maybe_exec_probe: boolean;
}

/** The fields Tetragon's containerSelector reads (a map built as labels are). */
export const CONTAINER_SELECTOR_KEYS = ["name", "repo"] as const;
const SELECTOR_OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist"] as const;

const HEX_ID = /^[0-9a-f]{64}$/;
/** systemd driver's scope names: `cri-containerd-ID.scope`, `docker-ID.scope`, `crio-ID.scope`. */
const SCOPE_ID = /^(?:cri-containerd|containerd|docker|crio|libpod)-([0-9a-f]{64})\.scope$/;

/** The container ID a cgroup path ends in (`/kubepods/besteffort/pod…/ID`, `…/cri-containerd-ID.scope`), or undefined. */
export function containerIdFromCgroupPath(path: string): string | undefined {
  const parts = path.split("/").filter((p) => p !== "");
  // A container's processes sit in its own cgroup, or (some runtimes) one level below it.
  for (const part of parts.slice(-2).reverse()) {
    if (HEX_ID.test(part)) return part;
    const m = SCOPE_ID.exec(part);
    if (m) return m[1];
  }
  return undefined;
}

/**
 * The container ID of a process from its `/proc/PID/cgroup` text: the unified (v2, `0::`) line first, then any
 * v1 controller's line (hybrid hosts keep the pod's cgroups under each controller); undefined when no line ends in one.
 */
export function containerIdFromProcCgroup(text: string): string | undefined {
  const lines = text.split("\n").filter((l) => l !== "");
  const unified = lines.find((l) => l.startsWith("0::"));
  const ordered = unified !== undefined ? [unified, ...lines.filter((l) => l !== unified)] : lines;
  for (const line of ordered) {
    const path = line.slice(line.indexOf(":", line.indexOf(":") + 1) + 1);
    const id = containerIdFromCgroupPath(path);
    if (id !== undefined) return id;
  }
  return undefined;
}

/** `containerd://abc` → `abc` (the pod status's form to the cgroup path's). */
export function stripContainerScheme(id: string): string {
  const i = id.indexOf("://");
  return i === -1 ? id : id.slice(i + 3);
}

/** The image's repository (Tetragon's `repo`): the reference without its tag or digest (`docker.io/library/nginx:1.27` → `docker.io/library/nginx`). */
export function imageRepo(image: string): string {
  const at = image.indexOf("@");
  const noDigest = at === -1 ? image : image.slice(0, at);
  const colon = noDigest.lastIndexOf(":");
  return colon > noDigest.lastIndexOf("/") ? noDigest.slice(0, colon) : noDigest;
}

/** Whether a containerSelector selects this container (an absent or empty selector selects every container). */
export function containerSelects(selector: LabelSelectorInput | undefined, container: Pick<PodContainer, "name" | "image"> | undefined): boolean {
  if (selector === undefined || ((selector.matchLabels === undefined || Object.keys(selector.matchLabels).length === 0) && (selector.matchExpressions ?? []).length === 0)) return true;
  // A process outside any known container (the host, a process-based pod, a container not in the pod's status yet) is never selected: fail closed.
  if (container === undefined) return false;
  const fields = { name: container.name, repo: imageRepo(container.image) };
  const sel = selectorFrom(selector, { kubernetesKeys: true });
  return matchesSelector(sel, labelSetFrom(Object.entries(fields).map(([k, v]) => label(LABEL_SOURCE.k8s, k, v))));
}

/** Admission of a containerSelector: only Tetragon's container fields, label-selector operators and their values, each error with its path. */
export function containerSelectorErrors(v: unknown, path: string): FieldError[] {
  const errors: FieldError[] = [];
  if (v === undefined || v === null || typeof v !== "object" || Array.isArray(v)) return errors; // the shape is checked by the caller
  const s = v as Record<string, unknown>;
  const knownKey = (k: unknown, at: string): void => {
    if (typeof k !== "string" || !(CONTAINER_SELECTOR_KEYS as readonly string[]).includes(k)) {
      errors.push({ path: at, message: `${JSON.stringify(k)} is not a container field: a containerSelector matches ${CONTAINER_SELECTOR_KEYS.map((x) => `"${x}"`).join(" or ")} (the container's name, its image repository)` });
    }
  };
  if (s.matchLabels !== undefined) {
    if (typeof s.matchLabels !== "object" || s.matchLabels === null || Array.isArray(s.matchLabels)) errors.push({ path: `${path}.matchLabels`, message: "must be a map of container field to value" });
    else for (const [k, val] of Object.entries(s.matchLabels)) {
      knownKey(k, `${path}.matchLabels.${k}`);
      if (typeof val !== "string") errors.push({ path: `${path}.matchLabels.${k}`, message: `must be a string, not ${JSON.stringify(val)}` });
    }
  }
  if (s.matchExpressions !== undefined) {
    if (!Array.isArray(s.matchExpressions)) errors.push({ path: `${path}.matchExpressions`, message: "must be a list" });
    else s.matchExpressions.forEach((e: unknown, i: number) => {
      const at = `${path}.matchExpressions[${i}]`;
      if (typeof e !== "object" || e === null || Array.isArray(e)) return void errors.push({ path: at, message: "must be an object with key, operator and values" });
      const x = e as Record<string, unknown>;
      for (const k of Object.keys(x)) if (!["key", "operator", "values"].includes(k)) errors.push({ path: `${at}.${k}`, message: `unknown field "${k}" (known here: key, operator, values)` });
      knownKey(x.key, `${at}.key`);
      const op = x.operator;
      if (typeof op !== "string" || !(SELECTOR_OPERATORS as readonly string[]).includes(op)) {
        errors.push({ path: `${at}.operator`, message: `${JSON.stringify(op)} is not a label-selector operator: In, NotIn, Exists or DoesNotExist (case-sensitive)` });
        return;
      }
      const values = x.values;
      if (values !== undefined && (!Array.isArray(values) || values.some((y) => typeof y !== "string"))) errors.push({ path: `${at}.values`, message: "must be a list of strings" });
      const count = Array.isArray(values) ? values.length : 0;
      if ((op === "In" || op === "NotIn") && count === 0) errors.push({ path: `${at}.values`, message: `${op} needs at least one value` });
      if ((op === "Exists" || op === "DoesNotExist") && count > 0) errors.push({ path: `${at}.values`, message: `${op} takes no values` });
    });
  }
  return errors;
}

/** The containers of a pod object's status (every container status with an ID: init, regular, ephemeral). */
export function podContainersFromStatus(status: unknown): PodContainer[] {
  const out: PodContainer[] = [];
  if (typeof status !== "object" || status === null) return out;
  const st = status as Record<string, unknown>;
  for (const list of [st.initContainerStatuses, st.containerStatuses, st.ephemeralContainerStatuses]) {
    if (!Array.isArray(list)) continue;
    for (const c of list as Record<string, unknown>[]) {
      if (typeof c?.containerID !== "string" || c.containerID === "" || typeof c.name !== "string") continue;
      const state = (c.state ?? {}) as Record<string, { startedAt?: unknown } | undefined>;
      const startedAt = state.running?.startedAt ?? state.terminated?.startedAt;
      out.push({
        id: stripContainerScheme(c.containerID),
        name: c.name,
        image: typeof c.image === "string" ? c.image : "",
        imageId: typeof c.imageID === "string" ? c.imageID : "",
        ...(typeof startedAt === "string" ? { startedAt } : {}),
      });
    }
  }
  return out;
}

/** The container of an event: Tetragon's shape from the pod status's container and the process's pid in it. */
export function tetragonContainer(c: PodContainer, nsPid: number | undefined): TetragonContainer {
  return {
    id: c.id,
    name: c.name,
    image: { id: c.imageId, name: c.image },
    ...(c.startedAt !== undefined ? { start_time: c.startedAt } : {}),
    ...(nsPid !== undefined ? { pid: nsPid } : {}),
    maybe_exec_probe: false,
  };
}
