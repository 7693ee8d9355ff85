// Validation of TracingPolicy and TracingPolicyNamespaced (cilium.io/v1alpha1) in Tetragon's own terms: what
// Tetragon's loader accepts is accepted, every unknown key and every name Tetragon removed or never had is
// refused with its field path and what to write instead; warnings for what is legal but ignored.
import { containerSelectorErrors } from "./container.ts";
import type { FieldError, Result } from "./model.ts";
import { isRecord, show, type Obj } from "./parser/fields.ts";
import { expandSelectorMacros } from "./tracing-macros.ts";

export type HookKind = "kprobes" | "fentries" | "tracepoints" | "lsmhooks" | "uprobes" | "usdts";
export const HOOK_KINDS: readonly HookKind[] = ["kprobes", "fentries", "tracepoints", "lsmhooks", "uprobes", "usdts"];

export const TRACING_POLICY_KINDS = ["TracingPolicy", "TracingPolicyNamespaced"] as const;

/** One hook of a policy with what it asks for: the actions its selectors take and the operators they use. */
export interface TracingHook {
  readonly kind: HookKind;
  /** The function, `subsystem/event`, LSM hook, binary path or `list:NAME`. */
  readonly name: string;
  /** Where it is declared, e.g. `spec.kprobes[0]`. */
  readonly path: string;
  readonly actions: readonly string[];
  readonly operators: readonly string[];
  /** The selector filters it uses (matchArgs, matchBinaries, ...), each once. */
  readonly filters: readonly string[];
  /** It hooks the function's return too (return: true). */
  readonly returnProbe: boolean;
}

/** What a valid TracingPolicy looks like to the rest of Membrane. */
export interface TracingPolicySummary {
  readonly kind: (typeof TRACING_POLICY_KINDS)[number];
  readonly name: string;
  readonly namespace?: string;
  readonly hooks: readonly TracingHook[];
  /** spec.loader: events for binaries and libraries mapped. */
  readonly loader: boolean;
  /** Legal but ignored input (Tetragon ignores it too), shown by `kubectl apply` as warnings. */
  readonly warnings: readonly FieldError[];
}

/** Argument types Tetragon's loader reads (its names, case-sensitive); the CRD schema's enum too. */
export const TRACING_ARG_TYPES = [
  "auto", "int", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "size_t",
  "char_buf", "char_iovec", "const_buf", "string", "data_loc", "fd", "file", "filename", "path",
  "dentry", "skb", "sock", "sockaddr", "socket", "net_device", "nop", "bpf_attr", "bpf_cmd",
  "perf_event", "bpf_map", "user_namespace", "capability", "kiocb", "iov_iter", "cred", "load_info",
  "module", "syscall64", "kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective",
  "linux_binprm", "bpf_prog",
] as const;

/** Actions a selector may take (Tetragon's names, case-sensitive). FollowFD, UnfollowFD and CopyFD were removed in Tetragon 1.5. */
export const TRACING_ACTIONS = [
  "Post", "NoPost", "Sigkill", "Signal", "Override", "GetUrl", "DnsLookup", "TrackSock", "UntrackSock",
  "NotifyEnforcer", "CleanupEnforcerNotification", "Set",
] as const;

/** Comparison operators of matchArgs/matchReturnArgs (Tetragon's names, case-sensitive; "NotSportPriv" is its CRD's spelling). */
export const TRACING_ARG_OPERATORS = [
  "Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix", "GreaterThan", "GT", "LessThan",
  "LT", "Mask", "InRange", "NotInRange", "SubString", "SubStringIgnCase", "SPort", "NotSPort",
  "SPortPriv", "NotSPortPriv", "NotSportPriv", "DPort", "NotDPort", "DPortPriv", "NotDPortPriv", "SAddr",
  "NotSAddr", "DAddr", "NotDAddr", "Protocol", "Family", "State", "InMap", "NotInMap", "CapabilitiesGained",
  "FileType", "NotFileType",
] as const;

const REMOVED_ACTIONS: Readonly<Record<string, string>> = {
  FollowFD: "FollowFD was removed from Tetragon (1.5): read the file itself instead, e.g. hook fd_install with an argument of type: file (or security_file_open) and match its path with matchArgs",
  UnfollowFD: "UnfollowFD was removed from Tetragon (1.5) with FollowFD: hook the file with an argument of type: file instead and delete this action",
  CopyFD: "CopyFD was removed from Tetragon (1.5) with FollowFD: hook the file with an argument of type: file instead and delete this action",
};

/** Keys Tetragon's schema (plus Membrane's matchNames) knows, per kind of object; a test compares them with the CRD. */
export const TRACING_KEYS = {
  spec: ["kprobes", "fentries", "tracepoints", "lsmhooks", "uprobes", "usdts", "lists", "enforcers", "options", "loader", "podSelector", "containerSelector", "hostSelector", "selectorsMacros"],
  kprobe: ["call", "syscall", "return", "returnArg", "returnArgAction", "ignore", "args", "selectors", "message", "tags"],
  tracepoint: ["subsystem", "event", "raw", "args", "selectors", "message", "tags"],
  lsmhook: ["hook", "args", "selectors", "message", "tags"],
  uprobe: ["path", "symbols", "offsets", "refCtrOffsets", "args", "selectors", "message", "tags"],
  usdt: ["path", "provider", "name", "args", "selectors", "message", "tags"],
  arg: ["index", "type", "label", "sizeArgIndex", "returnCopy", "maxData", "resolve"],
  ignore: ["callNotFound"],
  selector: ["matchPIDs", "matchArgs", "matchReturnArgs", "matchBinaries", "matchNamespaces", "matchNamespaceChanges", "matchNames", "matchCapabilities", "matchCapabilityChanges", "matchActions", "matchReturnActions", "macros"],
  argFilter: ["index", "operator", "values", "args"],
  pidFilter: ["operator", "values", "followForks", "isNamespacePID"],
  binaryFilter: ["operator", "values", "followChildren"],
  namespaceFilter: ["namespace", "operator", "values"],
  namespaceChangeFilter: ["operator", "values"],
  nameFilter: ["namespace", "pod"],
  capabilityFilter: ["type", "operator", "values", "isNamespaceCapability"],
  action: ["action", "argError", "argSig", "argFd", "argName", "argSock", "argUrl", "argFqdn", "rateLimit", "rateLimitScope", "kernelStackTrace", "userStackTrace", "imaHash"],
  list: ["name", "type", "values", "pattern", "validated"],
  enforcer: ["calls"],
  option: ["name", "value"],
  labelSelector: ["matchLabels", "matchExpressions"],
} as const satisfies Record<string, readonly string[]>;

const HOOK_SHAPE: Readonly<Record<HookKind, keyof typeof TRACING_KEYS>> = {
  kprobes: "kprobe", fentries: "kprobe", tracepoints: "tracepoint", lsmhooks: "lsmhook", uprobes: "uprobe", usdts: "usdt",
};

/** Tetragon reads at most this many selectors per hook, and function arguments up to this index. */
const MAX_SELECTORS = 5;
const MAX_FUNCTION_ARG_INDEX = 5;
const SYMBOL = /^[A-Za-z_][A-Za-z0-9_.]*$/;
const RATE_LIMIT = /^[0-9]+[smh]?$/;

type Report = (path: string, message: string) => void;

/** Validates either kind; never throws on user input. */
export function validateTracingPolicy(input: unknown): Result<TracingPolicySummary> {
  const errors: FieldError[] = [];
  const warnings: FieldError[] = [];
  const err: Report = (path, message) => void errors.push({ path, message });
  const warn: Report = (path, message) => void warnings.push({ path, message });
  if (!isRecord(input)) return { ok: false, errors: [{ path: "", message: "a TracingPolicy must be an object" }] };
  // Selectors are read with their macros expanded (spec.selectorsMacros), as Tetragon's loader reads them.
  const expanded = expandSelectorMacros(input);
  if (!expanded.ok) return expanded;
  const obj = expanded.value as Obj;
  const kind = obj.kind === "TracingPolicyNamespaced" ? "TracingPolicyNamespaced" : "TracingPolicy";
  const meta = isRecord(obj.metadata) ? obj.metadata : {};
  const name = typeof meta.name === "string" ? meta.name : "";
  const spec = obj.spec;
  if (!isRecord(spec)) {
    err("spec", spec === undefined ? "required" : `must be an object, not ${show(spec)}`);
    return { ok: false, errors };
  }
  const v = new Checker(err, warn);
  v.known(spec, "spec", "spec");
  const lists = v.lists(spec.lists);
  const hooks: TracingHook[] = [];
  for (const hookKind of HOOK_KINDS) {
    v.list(spec[hookKind], `spec.${hookKind}`, (hook, path) => {
      v.known(hook, path, HOOK_SHAPE[hookKind]);
      const h = v.hook(hookKind, hook, path, lists);
      if (h !== undefined) hooks.push(h);
    });
  }
  v.list(spec.enforcers, "spec.enforcers", (e, path) => {
    v.known(e, path, "enforcer");
    v.strings(e.calls, `${path}.calls`);
  });
  v.list(spec.options, "spec.options", (o, path) => {
    v.known(o, path, "option");
    if (typeof o.name !== "string" || o.name === "") err(`${path}.name`, "required: the option's name");
    if (o.value !== undefined && typeof o.value !== "string") err(`${path}.value`, v.quote(o.value));
  });
  if (spec.loader !== undefined && typeof spec.loader !== "boolean") err("spec.loader", `must be true or false, not ${show(spec.loader)}`);
  for (const sel of ["podSelector", "containerSelector"] as const) v.labelSelector(spec[sel], `spec.${sel}`);
  for (const e of containerSelectorErrors(spec.containerSelector, "spec.containerSelector")) err(e.path, e.message);
  if (spec.hostSelector !== undefined && spec.hostSelector !== null) {
    if (kind === "TracingPolicyNamespaced") err("spec.hostSelector", "a TracingPolicyNamespaced applies to its namespace's pods only: delete hostSelector");
    else if (!isRecord(spec.hostSelector) || Object.keys(spec.hostSelector).length > 0) {
      err("spec.hostSelector", "only {} (every host process) is supported: write hostSelector: {} or delete it");
    }
  }
  if (errors.length === 0 && hooks.length === 0 && spec.loader !== true) {
    err("spec", `declares no ${HOOK_KINDS.join(", ")}: the policy would trace nothing`);
  }
  if (errors.length > 0) return { ok: false, errors };
  const namespace = typeof meta.namespace === "string" ? meta.namespace : undefined;
  return { ok: true, value: { kind, name, ...(namespace !== undefined ? { namespace } : {}), hooks, loader: spec.loader === true, warnings } };
}

class Checker {
  constructor(
    private readonly err: Report,
    private readonly warn: Report,
  ) {}

  /** Every key of `o` must be one Tetragon knows at this place; a near miss is named. */
  known(o: Obj, path: string, shape: keyof typeof TRACING_KEYS): void {
    const allowed: readonly string[] = TRACING_KEYS[shape];
    for (const k of Object.keys(o)) {
      if (allowed.includes(k)) continue;
      const near = nearest(k, allowed);
      this.err(`${path}.${k}`, `unknown field ${show(k)}${near !== undefined ? `: did you mean ${show(near)}?` : ""} (known here: ${allowed.join(", ")})`);
    }
  }

  list(v: unknown, path: string, each: (o: Obj, path: string, i: number) => void): number {
    if (v === undefined || v === null) return 0;
    if (!Array.isArray(v)) {
      this.err(path, `must be a list, not ${show(v)}`);
      return 0;
    }
    v.forEach((item: unknown, i: number) => {
      const p = `${path}[${i}]`;
      if (!isRecord(item)) this.err(p, `must be an object, not ${show(item)}`);
      else each(item, p, i);
    });
    return v.length;
  }

  /** What to say about a non-string where Tetragon's schema wants a string. */
  quote(v: unknown): string {
    return typeof v === "number" || typeof v === "boolean"
      ? `${show(v)} is not a string: Tetragon's schema wants strings here, write "${String(v)}" (quoted)`
      : `must be a string, not ${show(v)}`;
  }

  strings(v: unknown, path: string): void {
    if (v === undefined || v === null) return;
    if (!Array.isArray(v)) return this.err(path, `must be a list of strings, not ${show(v)}`);
    v.forEach((s: unknown, i: number) => {
      if (typeof s !== "string") this.err(`${path}[${i}]`, this.quote(s));
    });
  }

  /** A case-sensitive name from `names`; a wrong case or a removed name is answered with what to write. */
  oneOf(v: unknown, path: string, what: string, names: readonly string[]): string | undefined {
    if (v === undefined || v === "") return void this.err(path, `required: ${what} (${names.slice(0, 6).join(", ")}, ...)`);
    if (typeof v !== "string") return void this.err(path, `must be a string, not ${show(v)}`);
    if (names.includes(v)) return v;
    const cased = names.find((n) => n.toLowerCase() === v.toLowerCase());
    if (cased !== undefined) return void this.err(path, `${show(v)} is not ${what}: names are case-sensitive, write ${show(cased)}`);
    const near = nearest(v, names);
    this.err(path, `${show(v)} is not ${what}${near !== undefined ? `: did you mean ${show(near)}?` : ""} (one of ${names.join(", ")})`);
    return undefined;
  }

  lists(v: unknown): ReadonlySet<string> {
    const names = new Set<string>();
    this.list(v, "spec.lists", (l, path) => {
      this.known(l, path, "list");
      if (typeof l.name !== "string" || l.name === "") this.err(`${path}.name`, "required: the name kprobes use as call: \"list:NAME\"");
      else if (names.has(l.name)) this.err(`${path}.name`, `list ${show(l.name)} is declared twice`);
      else names.add(l.name);
      const type = l.type === undefined ? undefined : this.oneOf(l.type, `${path}.type`, "a list type", ["syscalls", "generated_syscalls", "generated_ftrace"]);
      this.strings(l.values, `${path}.values`);
      if (type === "generated_ftrace" && (typeof l.pattern !== "string" || l.pattern === "")) {
        this.err(`${path}.pattern`, "a generated_ftrace list needs pattern, the regular expression of its functions");
      }
      if ((type === undefined || type === "syscalls") && (!Array.isArray(l.values) || l.values.length === 0)) {
        this.err(`${path}.values`, "must list at least one function");
      }
    });
    return names;
  }

  hook(kind: HookKind, hook: Obj, path: string, lists: ReadonlySet<string>): TracingHook | undefined {
    const name = this.target(kind, hook, path, lists);
    const functionArgs = kind !== "tracepoints";
    const declared = this.args(hook.args, `${path}.args`, functionArgs);
    if (kind === "kprobes" || kind === "fentries") this.returnArg(hook, path);
    else if (hook.returnArg !== undefined) this.err(`${path}.returnArg`, `unknown field "returnArg" (only kprobes and fentries read return values)`);
    const actions: string[] = [];
    const operators: string[] = [];
    const filters = new Set<string>();
    const n = this.list(hook.selectors, `${path}.selectors`, (sel, sp) => {
      for (const k of Object.keys(sel)) if (k !== "matchActions" && sel[k] !== null) filters.add(k);
      this.selector(sel, sp, declared, actions, operators);
    });
    if (n > MAX_SELECTORS) this.err(`${path}.selectors`, `has ${n} selectors; Tetragon reads at most ${MAX_SELECTORS} per hook`);
    if (hook.message !== undefined && typeof hook.message !== "string") this.err(`${path}.message`, this.quote(hook.message));
    this.strings(hook.tags, `${path}.tags`);
    const returnProbe = hook.return === true;
    return name === undefined ? undefined : { kind, name, path, actions, operators, filters: [...filters], returnProbe };
  }

  private target(kind: HookKind, hook: Obj, path: string, lists: ReadonlySet<string>): string | undefined {
    const symbol = (field: string): string | undefined => {
      const v = hook[field];
      if (v === undefined || v === "") return void this.err(`${path}.${field}`, "required");
      if (typeof v !== "string") return void this.err(`${path}.${field}`, `must be a string, not ${show(v)}`);
      if (!SYMBOL.test(v)) return void this.err(`${path}.${field}`, `${show(v)} is not a kernel symbol name`);
      return v;
    };
    const absolute = (field: string): string | undefined => {
      const p = hook[field];
      if (typeof p !== "string" || p === "") return void this.err(`${path}.${field}`, p === undefined ? "required" : "must be an absolute file path");
      if (!p.startsWith("/")) return void this.err(`${path}.${field}`, `${show(p)} is not an absolute path`);
      return p;
    };
    const bool = (field: string): void => {
      if (hook[field] !== undefined && typeof hook[field] !== "boolean") this.err(`${path}.${field}`, `must be true or false, not ${show(hook[field])}`);
    };
    switch (kind) {
      case "kprobes":
      case "fentries": {
        bool("syscall");
        bool("return");
        if (hook.ignore !== undefined) {
          if (!isRecord(hook.ignore)) this.err(`${path}.ignore`, `must be an object, not ${show(hook.ignore)}`);
          else this.known(hook.ignore, `${path}.ignore`, "ignore");
        }
        const call = hook.call;
        if (typeof call === "string" && call.startsWith("list:")) {
          const list = call.slice("list:".length);
          if (!lists.has(list)) {
            this.err(`${path}.call`, `${show(call)} names list ${show(list)}, which spec.lists does not declare${lists.size > 0 ? ` (declared: ${[...lists].join(", ")})` : ""}`);
            return undefined;
          }
          return call;
        }
        return symbol("call");
      }
      case "lsmhooks":
        return symbol("hook");
      case "tracepoints": {
        bool("raw");
        const subsystem = symbol("subsystem");
        const event = symbol("event");
        return subsystem !== undefined && event !== undefined ? `${subsystem}/${event}` : undefined;
      }
      case "uprobes": {
        const p = absolute("path");
        const symbols = Array.isArray(hook.symbols) ? hook.symbols : [];
        const offsets = Array.isArray(hook.offsets) ? hook.offsets : [];
        this.strings(hook.symbols, `${path}.symbols`);
        if (symbols.length === 0 && offsets.length === 0) this.err(`${path}.symbols`, "list at least one symbol (or offsets) to hook");
        if (Array.isArray(hook.refCtrOffsets) && hook.refCtrOffsets.length > 0 && hook.refCtrOffsets.length !== offsets.length) {
          this.err(`${path}.refCtrOffsets`, `has ${hook.refCtrOffsets.length} entries for ${offsets.length} offsets: give one per offset`);
        }
        return p;
      }
      case "usdts": {
        const p = absolute("path");
        for (const f of ["provider", "name"]) {
          if (typeof hook[f] !== "string" || hook[f] === "") this.err(`${path}.${f}`, "required");
        }
        return p === undefined ? undefined : `${p}:${String(hook.provider)}:${String(hook.name)}`;
      }
    }
  }

  /** The declared arguments: their signature indexes (function hooks) or their count (tracepoints, where an index in matchArgs means the n-th listed argument). */
  private args(args: unknown, path: string, functionArgs: boolean): Declared {
    const indexes = new Set<number>();
    const count = this.list(args, path, (arg, p) => {
      this.known(arg, p, "arg");
      const idx = arg.index;
      if (typeof idx !== "number" || !Number.isInteger(idx) || idx < 0) {
        this.err(`${p}.index`, idx === undefined ? "required" : `${show(idx)} is not an argument index (0 or more)`);
      } else if (functionArgs && idx > MAX_FUNCTION_ARG_INDEX) {
        this.err(`${p}.index`, `${idx} is beyond the ${MAX_FUNCTION_ARG_INDEX + 1} arguments Tetragon reads (0-${MAX_FUNCTION_ARG_INDEX})`);
      } else if (functionArgs && indexes.has(idx)) {
        this.err(`${p}.index`, `argument ${idx} is declared twice`);
      } else {
        indexes.add(idx);
      }
      // Tetragon defaults a missing type to "auto" (BTF or the tracepoint's format says what it is).
      if (arg.type !== undefined) this.oneOf(arg.type, `${p}.type`, "an argument type", TRACING_ARG_TYPES);
      for (const b of ["returnCopy", "maxData"]) {
        if (arg[b] !== undefined && typeof arg[b] !== "boolean") this.err(`${p}.${b}`, `must be true or false, not ${show(arg[b])}`);
      }
    });
    return { functionArgs, indexes, count };
  }

  private returnArg(hook: Obj, path: string): void {
    const ra = hook.returnArg;
    if (ra === undefined || ra === null) return;
    if (!isRecord(ra)) return this.err(`${path}.returnArg`, `must be an object, not ${show(ra)}`);
    this.known(ra, `${path}.returnArg`, "arg");
    if (ra.type !== undefined) this.oneOf(ra.type, `${path}.returnArg.type`, "an argument type", TRACING_ARG_TYPES);
    if (hook.return !== true) this.warn(`${path}.returnArg`, "is read only when return: true; without it Tetragon ignores returnArg");
    if (hook.returnArgAction !== undefined) this.oneOf(hook.returnArgAction, `${path}.returnArgAction`, "a return action", ["Post", "TrackSock", "UntrackSock"]);
  }

  private selector(sel: Obj, sp: string, declared: Declared, actions: string[], operators: string[]): void {
    this.known(sel, sp, "selector");
    for (const field of ["matchArgs", "matchReturnArgs"] as const) {
      this.list(sel[field], `${sp}.${field}`, (m, mp) => {
        this.known(m, mp, "argFilter");
        if (field === "matchArgs") this.argIndex(m.index, `${mp}.index`, declared);
        const op = this.oneOf(m.operator, `${mp}.operator`, "an operator", TRACING_ARG_OPERATORS);
        if (op !== undefined) operators.push(op);
        this.strings(m.values, `${mp}.values`);
        if (Array.isArray(m.args)) {
          m.args.forEach((a: unknown, j: number) => {
            if (typeof a !== "number" || !Number.isInteger(a) || a < 0 || a >= declared.count) {
              this.err(`${mp}.args[${j}]`, `${show(a)} is not a position in args (0-${Math.max(declared.count - 1, 0)})`);
            }
          });
        }
      });
    }
    this.list(sel.matchPIDs, `${sp}.matchPIDs`, (m, mp) => {
      this.known(m, mp, "pidFilter");
      this.oneOf(m.operator, `${mp}.operator`, "a PID operator", ["In", "NotIn"]);
      if (!Array.isArray(m.values)) this.err(`${mp}.values`, "required: a list of process IDs");
      else m.values.forEach((p: unknown, j: number) => {
        if (typeof p !== "number" || !Number.isInteger(p) || p < 0) this.err(`${mp}.values[${j}]`, `${show(p)} is not a process ID (write a number, unquoted)`);
      });
    });
    this.list(sel.matchBinaries, `${sp}.matchBinaries`, (m, mp) => {
      this.known(m, mp, "binaryFilter");
      this.oneOf(m.operator, `${mp}.operator`, "a binary operator", ["In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix"]);
      this.strings(m.values, `${mp}.values`);
    });
    this.list(sel.matchNamespaces, `${sp}.matchNamespaces`, (m, mp) => {
      this.known(m, mp, "namespaceFilter");
      this.oneOf(m.namespace, `${mp}.namespace`, "a Linux namespace type", ["Uts", "Ipc", "Mnt", "Pid", "PidForChildren", "Net", "Time", "TimeForChildren", "Cgroup", "User"]);
      this.oneOf(m.operator, `${mp}.operator`, "a namespace operator", ["In", "NotIn"]);
      this.strings(m.values, `${mp}.values`);
    });
    this.list(sel.matchNamespaceChanges, `${sp}.matchNamespaceChanges`, (m, mp) => {
      this.known(m, mp, "namespaceChangeFilter");
      this.oneOf(m.operator, `${mp}.operator`, "a namespace operator", ["In", "NotIn"]);
      this.strings(m.values, `${mp}.values`);
    });
    this.list(sel.matchNames, `${sp}.matchNames`, (m, mp) => {
      this.known(m, mp, "nameFilter");
      if (typeof m.namespace !== "string" || m.namespace === "") this.err(`${mp}.namespace`, "required: the Kubernetes namespace of the pods");
    });
    for (const field of ["matchCapabilities", "matchCapabilityChanges"] as const) {
      this.list(sel[field], `${sp}.${field}`, (m, mp) => {
        this.known(m, mp, "capabilityFilter");
        if (m.type !== undefined) this.oneOf(m.type, `${mp}.type`, "a capability set", ["Effective", "Inheritable", "Permitted"]);
        this.oneOf(m.operator, `${mp}.operator`, "a capability operator", ["In", "NotIn"]);
        this.strings(m.values, `${mp}.values`);
      });
    }
    for (const field of ["matchActions", "matchReturnActions"] as const) {
      this.list(sel[field], `${sp}.${field}`, (a, ap) => {
        this.known(a, ap, "action");
        const action = this.action(a, ap);
        if (action !== undefined) actions.push(action);
      });
    }
  }

  private argIndex(idx: unknown, path: string, declared: Declared): void {
    if (typeof idx !== "number" || !Number.isInteger(idx) || idx < 0) {
      return this.err(path, "required: which argument (a number)");
    }
    if (declared.functionArgs) {
      if (!declared.indexes.has(idx)) this.err(path, `argument ${idx} is not declared in args`);
    } else if (idx >= declared.count) {
      this.err(path, `index ${idx} means the ${ordinal(idx + 1)} entry of args (for tracepoints an index counts the listed arguments), but args lists ${declared.count}`);
    }
  }

  private action(a: Obj, ap: string): string | undefined {
    const removed = typeof a.action === "string" ? REMOVED_ACTIONS[a.action] : undefined;
    if (removed !== undefined) {
      this.err(`${ap}.action`, removed);
      return undefined;
    }
    for (const f of ["argFd", "argName"]) {
      if (a[f] !== undefined) this.err(`${ap}.${f}`, `${f} was removed from Tetragon (1.5) with FollowFD and CopyFD: delete it`);
    }
    const action = this.oneOf(a.action, `${ap}.action`, "an action", TRACING_ACTIONS);
    if (action === "Signal" && (typeof a.argSig !== "number" || !Number.isInteger(a.argSig) || a.argSig < 1 || a.argSig > 64)) {
      this.err(`${ap}.argSig`, "Signal needs argSig, a signal number 1-64");
    }
    if (action === "Override" && typeof a.argError !== "number") {
      this.err(`${ap}.argError`, "Override needs argError, the error number the call returns (e.g. -1)");
    }
    if (a.rateLimit !== undefined && (typeof a.rateLimit !== "string" || !RATE_LIMIT.test(a.rateLimit))) {
      this.err(`${ap}.rateLimit`, `${show(a.rateLimit)} is not a period: write e.g. "30s", "5m" or "1h" (quoted)`);
    }
    if (a.rateLimitScope !== undefined) {
      const scope = typeof a.rateLimitScope === "string" ? a.rateLimitScope.toLowerCase() : "";
      if (!["thread", "process", "global"].includes(scope)) this.err(`${ap}.rateLimitScope`, `${show(a.rateLimitScope)} is not a scope: write "thread", "process" or "global"`);
      else if (a.rateLimit === undefined) this.warn(`${ap}.rateLimitScope`, "has no effect without rateLimit");
    }
    return action;
  }

  labelSelector(v: unknown, path: string): void {
    if (v === undefined || v === null) return;
    if (!isRecord(v)) return this.err(path, `must be an object, not ${show(v)}`);
    this.known(v, path, "labelSelector");
  }
}

interface Declared {
  readonly functionArgs: boolean;
  readonly indexes: ReadonlySet<number>;
  readonly count: number;
}

function ordinal(n: number): string {
  const suffix = n % 100 >= 11 && n % 100 <= 13 ? "th" : (["th", "st", "nd", "rd"][n % 10] ?? "th");
  return `${n}${suffix}`;
}

/** The known name closest to `v` (case-insensitive equal, a plural or singular form, or at most 2 edits away). */
function nearest(v: string, names: readonly string[]): string | undefined {
  const lv = v.toLowerCase();
  let best: string | undefined;
  let bestDistance = 3;
  for (const n of names) {
    const ln = n.toLowerCase();
    if (ln === lv || ln === `${lv}s` || `${ln}s` === lv) return n;
    const d = editDistance(lv, ln, bestDistance);
    if (d < bestDistance) {
      best = n;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) >= cap) return cap;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? cap;
}
