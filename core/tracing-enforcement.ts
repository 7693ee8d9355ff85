// What a node enforces for one TracingPolicy: its exec, file and connect hooks with their selectors read into a
// typed plan (which argument is the path or the address, the filters, the actions), and the decision for one
// call (the first selector that matches, Tetragon's order) — pure, the agent's enforcers feed it what they see.
import { containerSelects, type PodContainer } from "./container.ts";
import { labelSetFrom, label, LABEL_SOURCE, POD_NAMESPACE_LABEL } from "./labels.ts";
import type { FieldError } from "./model.ts";
import { isRecord } from "./parser/fields.ts";
import { matchesSelector, selectorFrom, type LabelSelectorInput } from "./selector.ts";
import { expandSelectorMacros } from "./tracing-macros.ts";
import { TRANSLATION_TABLE, translatePolicy } from "./tracing-translation.ts";
import { validateTracingPolicy, type HookKind } from "./tracing.ts";

export type HookMeaning = "exec" | "file" | "connect" | "tracepoint";
export type EnforcedAction = "Post" | "NoPost" | "Sigkill" | "Signal" | "Override";
export type NamespaceType = "Uts" | "Ipc" | "Mnt" | "Pid" | "Net" | "Time" | "Cgroup" | "User";

export interface ArgFilter {
  /** Tracepoints: which listed argument (the n-th entry of args); other hooks judge their one path or address argument. */
  readonly index?: number;
  readonly operator: string;
  readonly values: readonly string[];
}

export interface SelectorPlan {
  /** Filters on the hook's path (exec, file) or socket address (connect) argument; all must hold. */
  readonly args: readonly ArgFilter[];
  readonly binaries: readonly ArgFilter[];
  readonly namespaces: readonly { readonly namespace: NamespaceType; readonly operator: "In" | "NotIn"; readonly values: readonly string[] }[];
  readonly pids: readonly { readonly operator: "In" | "NotIn"; readonly values: readonly number[]; readonly isNamespacePID: boolean }[];
  readonly names: readonly { readonly namespace: string; readonly pod?: string }[];
  /** matchActions; Post when the selector lists none. */
  readonly actions: readonly { readonly action: EnforcedAction; readonly signal?: number }[];
}

export interface HookPlan {
  /** Where it is declared, e.g. `spec.kprobes[0]`. */
  readonly path: string;
  readonly kind: HookKind;
  /** The function or LSM hook as written (`fd_install`, `file_open`). */
  readonly name: string;
  readonly meaning: HookMeaning;
  /** The declared arguments (index and type), for the event's args. */
  readonly args: readonly { readonly index: number; readonly type: string }[];
  /** No selectors: every call is posted. */
  readonly selectors: readonly SelectorPlan[];
  /** Tracepoints: where it is (`raw: true` is a raw tracepoint, its args the probe's). */
  readonly tracepoint?: { readonly subsystem: string; readonly event: string; readonly raw: boolean };
}

export interface EnforcementPlan {
  readonly kind: "TracingPolicy" | "TracingPolicyNamespaced";
  readonly name: string;
  readonly namespace?: string;
  /** Only processes of pods these labels select (a namespaced policy: only its namespace's pods). */
  readonly podSelector?: LabelSelectorInput;
  /** Only processes of the pods' containers these fields select (Tetragon's `name`, `repo`); a process in no known container never. */
  readonly containerSelector?: LabelSelectorInput;
  readonly hooks: readonly HookPlan[];
}

/** The process, pod and argument of one call, as the enforcer saw them. */
export interface CallSubject {
  readonly pid: number;
  /** The pid in the process's own pid namespace (matchPIDs isNamespacePID). */
  readonly nsPid?: number;
  readonly binary: string;
  /** Namespace inodes of the process, and of the host (for `host_ns`). */
  readonly namespaces: Partial<Record<NamespaceType, number>>;
  readonly hostNamespaces: Partial<Record<NamespaceType, number>>;
  readonly pod?: { readonly namespace: string; readonly name: string; readonly labels?: Readonly<Record<string, string>>; readonly container?: Pick<PodContainer, "name" | "image"> };
  /** exec and file hooks: the file's path. */
  readonly path?: string;
  /** connect hooks. */
  readonly address?: { readonly family: "AF_INET" | "AF_INET6"; readonly address: string; readonly port: number; readonly protocol: "TCP" | "UDP" };
}

export interface CallDecision {
  /** Index of the selector that matched. */
  readonly selector: number;
  readonly actions: readonly { readonly action: EnforcedAction; readonly signal?: number }[];
  /** Whether an event is exported (every action but NoPost posts). */
  readonly post: boolean;
}

/** Argument types that carry the path a file or exec hook is judged by. */
const PATH_TYPES = new Set(["file", "path", "string", "filename", "char_buf", "linux_binprm", "dentry", "auto"]);
const ADDRESS_TYPES = new Set(["sock", "sockaddr", "socket", "auto"]);
const ENFORCED_ACTIONS = new Set<string>(["Post", "NoPost", "Sigkill", "Signal", "Override"]);

export type PlanResult =
  | { readonly ok: true; readonly value: EnforcementPlan }
  | { readonly ok: false; readonly reason: "Invalid" | "HookUnavailable"; readonly errors: readonly FieldError[] };

/** The plan for a TracingPolicy object, or why this node cannot enforce it (each problem with its field path). */
export function enforcementPlan(obj: unknown): PlanResult {
  const valid = validateTracingPolicy(obj);
  if (!valid.ok) return { ok: false, reason: "Invalid", errors: valid.errors };
  const t = translatePolicy(valid.value);
  if (!t.ok) return { ok: false, reason: "HookUnavailable", errors: t.unavailable.map((u) => ({ path: u.path, message: `${u.hook}: ${u.reason}` })) };
  // Valid above, so its macros expand.
  const expanded = expandSelectorMacros(obj);
  const spec = ((expanded.ok ? expanded.value : obj) as { spec: Record<string, unknown> }).spec;
  const errors: FieldError[] = [];
  const hooks: HookPlan[] = [];
  for (const kind of ["kprobes", "fentries", "lsmhooks", "tracepoints"] as const) {
    const list = Array.isArray(spec[kind]) ? (spec[kind] as unknown[]) : [];
    list.forEach((raw, i) => {
      const path = `spec.${kind}[${i}]`;
      if (!isRecord(raw)) return;
      const name = kind === "tracepoints" ? `${String(raw.subsystem)}/${String(raw.event)}` : String(kind === "lsmhooks" ? raw.hook : raw.call);
      const meaning = kind === "tracepoints" ? "tracepoint" : meaningOf(kind, name);
      if (meaning === undefined) return; // translatePolicy refused it already
      const args = (Array.isArray(raw.args) ? raw.args : []).filter(isRecord).map((a) => ({ index: Number(a.index), type: typeof a.type === "string" ? a.type : "auto" }));
      const selectors: SelectorPlan[] = [];
      (Array.isArray(raw.selectors) ? raw.selectors : []).forEach((s: unknown, j: number) => {
        if (isRecord(s)) selectors.push(selectorPlan(s, `${path}.selectors[${j}]`, meaning, args, errors));
      });
      const tracepoint = kind === "tracepoints" ? { tracepoint: { subsystem: String(raw.subsystem), event: String(raw.event), raw: raw.raw === true } } : {};
      hooks.push({ path, kind, name, meaning, args, selectors, ...tracepoint });
    });
  }
  // Tetragon's policy-mode option: "monitor" reports what the actions would do and takes none of them.
  const monitor = (Array.isArray(spec.options) ? spec.options : []).some((o: unknown) => isRecord(o) && o.name === "policy-mode" && o.value === "monitor");
  const planned: HookPlan[] = monitor
    ? hooks.map((h) => ({ ...h, selectors: h.selectors.map((s) => ({ ...s, actions: s.actions.some((a) => a.action === "NoPost") ? [{ action: "NoPost" as const }] : [{ action: "Post" as const }] })) }))
    : hooks;
  const containerSelector = isRecord(spec.containerSelector) && Object.keys(spec.containerSelector).length > 0 ? (spec.containerSelector as LabelSelectorInput) : undefined;
  if (errors.length > 0) return { ok: false, reason: "HookUnavailable", errors };
  const meta = isRecord((obj as Record<string, unknown>).metadata) ? ((obj as Record<string, unknown>).metadata as Record<string, unknown>) : {};
  const podSelector = isRecord(spec.podSelector) ? (spec.podSelector as LabelSelectorInput) : undefined;
  const namespace = valid.value.kind === "TracingPolicyNamespaced" && typeof meta.namespace === "string" ? meta.namespace : undefined;
  return {
    ok: true,
    value: { kind: valid.value.kind, name: valid.value.name, ...(namespace !== undefined ? { namespace } : {}), ...(podSelector ? { podSelector } : {}), ...(containerSelector ? { containerSelector } : {}), hooks: planned },
  };
}

function meaningOf(kind: HookKind, name: string): HookMeaning | undefined {
  if (kind === "lsmhooks") {
    const bare = name.startsWith("security_") ? name.slice("security_".length) : name;
    return TRANSLATION_TABLE.find((r) => r.lsmHooks.includes(bare))?.meaning;
  }
  const bare = name.replace(/^__(x64|arm64|ia32)_/, "");
  return TRANSLATION_TABLE.find((r) => r.functions.includes(bare))?.meaning;
}

function selectorPlan(s: Record<string, unknown>, path: string, meaning: HookMeaning, args: HookPlan["args"], errors: FieldError[]): SelectorPlan {
  const list = (v: unknown): Record<string, unknown>[] => (Array.isArray(v) ? v.filter(isRecord) : []);
  const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);
  const argFilters: ArgFilter[] = [];
  list(s.matchArgs).forEach((m, k) => {
    if (meaning === "tracepoint") {
      // A tracepoint's matchArgs index is the n-th listed argument (Tetragon); its type is read against the format on the node.
      argFilters.push({ index: Number(m.index), operator: String(m.operator), values: strings(m.values) });
      return;
    }
    const arg = args.find((a) => a.index === m.index);
    const wanted = meaning === "connect" ? ADDRESS_TYPES : PATH_TYPES;
    if (arg !== undefined && !wanted.has(arg.type)) {
      errors.push({
        path: `${path}.matchArgs[${k}].index`,
        message: `argument ${String(m.index)} is of type ${arg.type}: on this kernel a ${meaning} hook is judged by its ${meaning === "connect" ? "socket address (sock, sockaddr)" : "path (file, path, string, filename, linux_binprm)"} only`,
      });
      return;
    }
    argFilters.push({ operator: String(m.operator), values: strings(m.values) });
  });
  const actions: { action: EnforcedAction; signal?: number }[] = [];
  list(s.matchActions).forEach((a) => {
    const action = String(a.action);
    if (!ENFORCED_ACTIONS.has(action)) return; // the translation refused anything else
    actions.push({ action: action as EnforcedAction, ...(action === "Signal" && typeof a.argSig === "number" ? { signal: a.argSig } : {}) });
  });
  return {
    args: argFilters,
    binaries: list(s.matchBinaries).map((b) => ({ operator: String(b.operator), values: strings(b.values) })),
    namespaces: list(s.matchNamespaces)
      .filter((n, k) => {
        if (!String(n.namespace).endsWith("ForChildren")) return true;
        errors.push({ path: `${path}.matchNamespaces[${k}].namespace`, message: `${String(n.namespace)} (the namespace a process's children get) is not read on this node` });
        return false;
      })
      .map((n) => ({ namespace: String(n.namespace) as NamespaceType, operator: n.operator === "NotIn" ? "NotIn" : "In", values: strings(n.values) })),
    pids: list(s.matchPIDs).map((p) => ({
      operator: p.operator === "NotIn" ? "NotIn" : "In",
      values: Array.isArray(p.values) ? p.values.filter((x): x is number => typeof x === "number") : [],
      isNamespacePID: p.isNamespacePID === true,
    })),
    names: list(s.matchNames).map((n) => ({ namespace: String(n.namespace), ...(typeof n.pod === "string" ? { pod: n.pod } : {}) })),
    actions: actions.length > 0 ? actions : [{ action: "Post" }],
  };
}

/** Whether the policy applies to this process at all (its pod, namespace and container), before any selector. */
export function policySelects(plan: Pick<EnforcementPlan, "namespace" | "podSelector" | "containerSelector">, pod: CallSubject["pod"]): boolean {
  if (plan.containerSelector !== undefined && !containerSelects(plan.containerSelector, pod?.container)) return false;
  return podSelects(plan, pod);
}

/** Whether the policy's namespace and podSelector select the pod (its containerSelector aside: the kernel's rules judge that per cgroup). */
export function podSelects(plan: Pick<EnforcementPlan, "namespace" | "podSelector">, pod: CallSubject["pod"]): boolean {
  if (plan.namespace === undefined && plan.podSelector === undefined) return true;
  if (pod === undefined) return false;
  if (plan.namespace !== undefined && pod.namespace !== plan.namespace) return false;
  if (plan.podSelector === undefined) return true;
  const sel = selectorFrom(plan.podSelector, { kubernetesKeys: true });
  const labels = Object.entries(pod.labels ?? {}).map(([k, v]) => label(LABEL_SOURCE.k8s, k, v));
  labels.push(label(LABEL_SOURCE.k8s, POD_NAMESPACE_LABEL, pod.namespace));
  return matchesSelector(sel, labelSetFrom(labels));
}

/** The first selector of the hook that matches the call (Tetragon's order), or undefined: the call is not touched. */
export function decideCall(hook: Pick<HookPlan, "selectors">, call: CallSubject): CallDecision | undefined {
  if (hook.selectors.length === 0) return { selector: 0, actions: [{ action: "Post" }], post: true };
  for (let i = 0; i < hook.selectors.length; i++) {
    const s = hook.selectors[i]!;
    if (selectorMatches(s, call)) return { selector: i, actions: s.actions, post: !s.actions.some((a) => a.action === "NoPost") };
  }
  return undefined;
}

export function selectorMatches(s: SelectorPlan, call: CallSubject): boolean {
  for (const a of s.args) if (!argMatches(a, call)) return false;
  for (const b of s.binaries) if (!binaryMatches(b, call.binary)) return false;
  for (const n of s.namespaces) {
    const mine = call.namespaces[n.namespace];
    const hit = n.values.some((v) => (v === "host_ns" ? mine !== undefined && mine === call.hostNamespaces[n.namespace] : String(mine) === v));
    if ((n.operator === "In") !== hit) return false;
  }
  for (const p of s.pids) {
    const pid = p.isNamespacePID ? call.nsPid : call.pid;
    const hit = pid !== undefined && p.values.includes(pid);
    if ((p.operator === "In") !== hit) return false;
  }
  if (s.names.length > 0 && !s.names.some((n) => call.pod?.namespace === n.namespace && (n.pod === undefined || n.pod === call.pod.name))) return false;
  return true;
}

/** A path operator over one string: Equal/Prefix/Postfix hold when any value does; their Not forms when none does. */
export function pathMatches(operator: string, values: readonly string[], s: string): boolean {
  const negated = operator.startsWith("Not");
  const op = negated ? operator.slice(3) : operator;
  const hit = values.some((v) => (op === "Equal" ? s === v : op === "Prefix" ? s.startsWith(v) : op === "Postfix" ? s.endsWith(v) : false));
  return negated ? !hit : hit;
}

function binaryMatches(b: ArgFilter, binary: string): boolean {
  const op = b.operator === "In" ? "Equal" : b.operator === "NotIn" ? "NotEqual" : b.operator;
  return pathMatches(op, b.values, binary);
}

function argMatches(a: ArgFilter, call: CallSubject): boolean {
  if (call.address === undefined) return call.path !== undefined && pathMatches(a.operator, a.values, call.path);
  const addr = call.address;
  const inValues = (x: string): boolean => a.values.some((v) => v === x || (v.includes("/") && cidrContains(v, addr.address)));
  switch (a.operator) {
    case "DPort":
      return a.values.some((v) => portMatches(v, addr.port));
    case "NotDPort":
      return !a.values.some((v) => portMatches(v, addr.port));
    case "DPortPriv":
      return addr.port < 1024;
    case "NotDPortPriv":
      return addr.port >= 1024;
    case "DAddr":
      return inValues(addr.address);
    case "NotDAddr":
      return !inValues(addr.address);
    case "Family":
      return a.values.some((v) => v === addr.family || v === (addr.family === "AF_INET" ? "2" : "10"));
    case "Protocol":
      return a.values.some((v) => v === `IPPROTO_${addr.protocol}` || v === (addr.protocol === "TCP" ? "6" : "17"));
    default:
      return false;
  }
}

/** `"4444"` or a range `"8000:8080"` (Tetragon's form). */
function portMatches(v: string, port: number): boolean {
  const [lo, hi] = v.split(":").map(Number);
  return hi === undefined ? lo === port : lo !== undefined && port >= lo && port <= hi;
}

/** IPv4 CIDR containment (IPv6 addresses compare by exact match only). */
function cidrContains(cidr: string, address: string): boolean {
  const [net, bits] = cidr.split("/");
  const toInt = (s: string): number | undefined => {
    const p = s.split(".").map(Number);
    return p.length === 4 && p.every((x) => Number.isInteger(x) && x >= 0 && x <= 255) ? ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0 : undefined;
  };
  const n = toInt(net ?? ""), a = toInt(address), b = Number(bits);
  if (n === undefined || a === undefined || !Number.isInteger(b) || b < 0 || b > 32) return false;
  const mask = b === 0 ? 0 : (~0 << (32 - b)) >>> 0;
  return ((n & mask) >>> 0) === ((a & mask) >>> 0);
}
