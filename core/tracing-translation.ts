// The translation table from Tetragon's hooks to what this kernel has (no kprobes, no BPF LSM, no fentry): exec
// hooks → the exec tracepoint and exec permission events, file hooks → fanotify permission events, connect hooks
// → cgroup/connect4/6, tracepoints natively; and the verdict per policy, naming every hook, action or filter it cannot serve.
import type { HookKind, TracingHook, TracingPolicySummary } from "./tracing.ts";

export type Mechanism = "exec-permission" | "file-permission" | "cgroup-connect" | "tracepoint";

/** What each mechanism is, in the kernel's terms (README and docs show this table). */
export const MECHANISMS: Readonly<Record<Mechanism, string>> = {
  "exec-permission": "fanotify FAN_OPEN_EXEC_PERM permission events, before the binary runs (Override: the agent answers deny, execve fails with EPERM; Sigkill: the process that execs is killed and the exec denied)",
  "file-permission": "fanotify FAN_OPEN_PERM permission events (the agent answers allow or deny per open: EPERM; Sigkill kills the opener before the open returns)",
  "cgroup-connect": "cgroup/connect4 and cgroup/connect6 programs (returning 0 fails connect() with EPERM)",
  tracepoint: "the tracepoint itself: a tracepoint program on syscalls/* and raw_syscalls/* (its format read from tracefs mounted in a private mount namespace) that kills with bpf_send_signal and posts through a ring buffer",
};

/** One row of the table: the hooks that mean the same thing, and the mechanism serving each action. */
export interface TranslationRow {
  readonly meaning: "exec" | "file" | "connect";
  /** Function names for kprobes and fentries. */
  readonly functions: readonly string[];
  /** LSM hook names (lsmhooks, without the security_ prefix). */
  readonly lsmHooks: readonly string[];
  readonly actions: Readonly<Record<string, Mechanism>>;
  readonly operators: readonly string[];
}

const PATH_OPERATORS = ["Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix"] as const;
const observe = (m: Mechanism): Record<string, Mechanism> => ({ Post: m, NoPost: m, Sigkill: m, Signal: m });

export const TRANSLATION_TABLE: readonly TranslationRow[] = [
  {
    meaning: "exec",
    functions: ["sys_execve", "sys_execveat", "security_bprm_check", "security_bprm_creds_for_exec"],
    lsmHooks: ["bprm_check_security", "bprm_creds_for_exec"],
    // One mechanism for every action: the permission event comes before the new binary runs, and the
    // selectors are judged in one place (tp_btf/sched_process_exec stays the visibility sensor).
    actions: { ...observe("exec-permission"), Override: "exec-permission" },
    operators: PATH_OPERATORS,
  },
  {
    meaning: "file",
    functions: ["fd_install", "security_file_open", "security_file_permission"],
    lsmHooks: ["file_open", "file_permission"],
    actions: { ...observe("file-permission"), Override: "file-permission" },
    operators: PATH_OPERATORS,
  },
  {
    meaning: "connect",
    functions: ["tcp_connect", "security_socket_connect"],
    lsmHooks: ["socket_connect"],
    actions: { ...observe("cgroup-connect"), Override: "cgroup-connect" },
    operators: ["DPort", "NotDPort", "DPortPriv", "NotDPortPriv", "DAddr", "NotDAddr", "Family", "Protocol"],
  },
];

/** Tracepoints are served natively: what their programs can do. */
const TRACEPOINT_ACTIONS = observe("tracepoint");
const TRACEPOINT_OPERATORS = [...PATH_OPERATORS, "GreaterThan", "GT", "LessThan", "LT", "Mask"];

/** Selector filters every mechanism evaluates (binary, namespaces, PIDs from the process; pods by cgroup). */
const FILTERS = new Set(["matchArgs", "matchBinaries", "matchNamespaces", "matchPIDs", "matchNames"]);
const FILTER_GAPS: Readonly<Record<string, string>> = {
  matchReturnArgs: "return values need a return probe (kretprobe or fexit), which this kernel lacks",
  matchReturnActions: "return actions need a return probe (kretprobe or fexit), which this kernel lacks",
  matchCapabilities: "capability filters are not translated yet",
  matchCapabilityChanges: "capability-change filters need a hook on commit_creds, which this kernel cannot attach",
  matchNamespaceChanges: "namespace-change filters need hooks on setns/unshare internals, which this kernel cannot attach",
};

export interface TranslatedHook {
  readonly path: string;
  readonly hook: string;
  /** The mechanisms it runs on, one per action it takes (Post when it lists none). */
  readonly mechanisms: readonly Mechanism[];
}

export interface UnavailableHook {
  readonly path: string;
  readonly hook: string;
  readonly reason: string;
}

export type Translation =
  | { readonly ok: true; readonly hooks: readonly TranslatedHook[] }
  | { readonly ok: false; readonly unavailable: readonly UnavailableHook[] };

const HOOK_TYPE: Readonly<Record<HookKind, string>> = {
  kprobes: "kprobe", fentries: "fentry", tracepoints: "tracepoint", lsmhooks: "LSM hook", uprobes: "uprobe", usdts: "USDT probe",
};

/** Whether this kernel can serve every hook of the policy, and how; or each hook it cannot, and why. */
export function translatePolicy(policy: Pick<TracingPolicySummary, "hooks"> & { readonly loader?: boolean }): Translation {
  const translated: TranslatedHook[] = [];
  const unavailable: UnavailableHook[] = [];
  if (policy.loader === true) {
    unavailable.push({ path: "spec.loader", hook: "loader", reason: "loader events (binaries and libraries mapped) are not in the translation table" });
  }
  for (const h of policy.hooks) {
    const r = translateHook(h);
    if (typeof r === "string") unavailable.push({ path: h.path, hook: `${HOOK_TYPE[h.kind]} ${h.name}`, reason: r });
    else translated.push(r);
  }
  return unavailable.length > 0 ? { ok: false, unavailable } : { ok: true, hooks: translated };
}

/** The mechanism row for a hook, or why there is none. */
function translateHook(h: TracingHook): TranslatedHook | string {
  let actions: Readonly<Record<string, Mechanism>>;
  let operators: readonly string[];
  switch (h.kind) {
    case "uprobes":
    case "usdts":
      return `${HOOK_TYPE[h.kind]}s are not in the translation table (user-space hooks; only exec, file-open and connect kernel hooks and tracepoints are translated)`;
    case "tracepoints":
      actions = TRACEPOINT_ACTIONS;
      operators = TRACEPOINT_OPERATORS;
      break;
    default: {
      const row = rowFor(h.kind, h.name);
      if (row === undefined) return noRow(h);
      actions = row.actions;
      operators = row.operators;
    }
  }
  if (h.returnProbe) return "return: true needs a return probe (kretprobe or fexit), which this kernel lacks";
  const gaps: string[] = [];
  for (const f of h.filters) if (!FILTERS.has(f)) gaps.push(`${f}: ${FILTER_GAPS[f] ?? "not translated"}`);
  for (const op of h.operators) if (!operators.includes(op)) gaps.push(`operator ${op} is not served here (${operators.join(", ")} are)`);
  const mechanisms: Mechanism[] = [];
  for (const a of h.actions.length === 0 ? ["Post"] : h.actions) {
    const m = actions[a];
    if (m === undefined) gaps.push(`action ${a} ${a === "Override" && h.kind === "tracepoints" ? "cannot change the result of a call from a tracepoint" : "has no mechanism on this kernel"}`);
    else if (!mechanisms.includes(m)) mechanisms.push(m);
  }
  if (gaps.length > 0) return gaps.join("; ");
  return { path: h.path, hook: `${HOOK_TYPE[h.kind]} ${h.name}`, mechanisms };
}

function rowFor(kind: HookKind, name: string): TranslationRow | undefined {
  if (kind === "lsmhooks") {
    const bare = name.startsWith("security_") ? name.slice("security_".length) : name;
    return TRANSLATION_TABLE.find((r) => r.lsmHooks.includes(bare));
  }
  // Tetragon adds the architecture's prefix to syscalls (__x64_sys_execve): the table names them without.
  const bare = name.replace(/^__(x64|arm64|ia32)_/, "");
  return TRANSLATION_TABLE.find((r) => r.functions.includes(bare));
}

function noRow(h: TracingHook): string {
  const why =
    h.kind === "lsmhooks"
      ? "BPF LSM programs fail to load on this kernel (EPERM)"
      : h.kind === "fentries"
        ? "fentry programs fail to load on this kernel"
        : "kprobes are not configured in this kernel";
  const syscall = /^(?:__(?:x64|arm64|ia32)_)?sys_(\w+)$/.exec(h.name);
  const instead = syscall ? `; a tracepoint can observe it: tracepoints: [{subsystem: syscalls, event: sys_enter_${syscall[1]}}]` : "";
  return `${why}, and ${h.name.startsWith("list:") ? "hooks from a list" : h.name} ${h.name.startsWith("list:") ? "are" : "is"} not in the translation table (exec, file-open and connect hooks)${instead}`;
}

/** The policy's Loaded condition: HookUnavailable naming each hook and why, or what it translates to. */
export function loadedCondition(t: Translation): { status: "False"; reason: string; message: string } {
  if (!t.ok) {
    return {
      status: "False",
      reason: "HookUnavailable",
      message: t.unavailable.map((u) => `${u.path} (${u.hook}): ${u.reason}`).join("; "),
    };
  }
  const how = t.hooks.map((h) => `${h.path} (${h.hook}) → ${h.mechanisms.join(", ")}`).join("; ");
  // Honest until the operator sends policies to the nodes: translated is not loaded.
  return { status: "False", reason: "NotLoadedYet", message: `translates to: ${how}; the operator does not send TracingPolicies to the nodes yet (membrane runtime --policy-file enforces exec, file and connect hooks and syscall tracepoints on a node)` };
}
