// Semantic validation of a TracingPolicy (cilium.io/v1alpha1) object beyond its CRD schema: every error with its field path.
import type { FieldError, Result } from "./model.ts";
import { isRecord, show, type Obj } from "./parser/fields.ts";

/** What a valid TracingPolicy looks like to the rest of Membrane (the hooks it declares, by kind and name). */
export interface TracingPolicySummary {
  readonly name: string;
  readonly namespace?: string;
  readonly hooks: readonly { readonly kind: HookKind; readonly name: string }[];
}

type HookKind = "kprobes" | "tracepoints" | "uprobes" | "lsmhooks";
const HOOK_KINDS: readonly HookKind[] = ["kprobes", "tracepoints", "uprobes", "lsmhooks"];

/** Argument types the tracing agent knows how to read (Tetragon's names); the CRD schema's enum too. */
export const TRACING_ARG_TYPES = [
  "auto", "int", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "size_t",
  "char_buf", "char_iovec", "const_buf", "string", "data_loc", "fd", "file", "filename", "path",
  "dentry", "skb", "sock", "sockaddr", "socket", "net_device", "nop", "bpf_attr", "bpf_cmd",
  "perf_event", "bpf_map", "user_namespace", "capability", "kiocb", "iov_iter", "cred", "load_info",
  "module", "syscall64", "kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective",
  "linux_binprm", "bpf_prog",
] as const;

/** Actions a selector may take (Tetragon's names); the CRD schema's enum too. */
export const TRACING_ACTIONS = [
  "Post", "NoPost", "FollowFD", "UnfollowFD", "CopyFD", "Sigkill", "Signal", "Override", "GetUrl",
  "DnsLookup", "TrackSock", "UntrackSock", "NotifyEnforcer", "CleanupEnforcerNotification", "Set",
] as const;

/** Comparison operators of matchArgs/matchReturnArgs (Tetragon's names); the CRD schema's enum too. */
export const TRACING_ARG_OPERATORS = [
  "Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix", "GreaterThan", "GT", "LessThan",
  "LT", "Mask", "InRange", "NotInRange", "SubString", "SubStringIgnCase", "SPort", "NotSPort",
  "SPortPriv", "NotSPortPriv", "DPort", "NotDPort", "DPortPriv", "NotDPortPriv", "SAddr", "NotSAddr",
  "DAddr", "NotDAddr", "Protocol", "Family", "State", "InMap", "NotInMap", "CapabilitiesGained",
  "FileType", "NotFileType",
] as const;

// Compared case-insensitively, as Tetragon does, so that the CLI (no schema) accepts what the API server does.
const lowerSet = (names: readonly string[]): ReadonlySet<string> => new Set(names.map((n) => n.toLowerCase()));
const ARG_TYPES = lowerSet(TRACING_ARG_TYPES);
const ACTIONS = lowerSet(TRACING_ACTIONS);
const ARG_OPERATORS = lowerSet(TRACING_ARG_OPERATORS);

/** Tetragon reads at most this many selectors per hook (one BPF program slot each). */
const MAX_SELECTORS = 5;
const MAX_ARG_INDEX = 5;

const isObj = isRecord;

export function validateTracingPolicy(obj: unknown): Result<TracingPolicySummary> {
  const errors: FieldError[] = [];
  const err = (path: string, message: string): void => void errors.push({ path, message });
  if (!isObj(obj)) return { ok: false, errors: [{ path: "", message: "a TracingPolicy must be an object" }] };
  const meta = isObj(obj.metadata) ? obj.metadata : {};
  const name = typeof meta.name === "string" ? meta.name : "";
  const spec = obj.spec;
  if (!isObj(spec)) {
    err("spec", spec === undefined ? "required" : `must be an object, not ${show(spec)}`);
    return { ok: false, errors };
  }
  const hooks: { kind: HookKind; name: string }[] = [];
  for (const kind of HOOK_KINDS) {
    const list = spec[kind];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) {
      err(`spec.${kind}`, `must be a list, not ${show(list)}`);
      continue;
    }
    list.forEach((hook: unknown, i: number) => {
      const path = `spec.${kind}[${i}]`;
      if (!isObj(hook)) return err(path, `must be an object, not ${show(hook)}`);
      const hookName = validateHookTarget(kind, hook, path, err);
      if (hookName !== undefined) hooks.push({ kind, name: hookName });
      const declared = validateArgs(hook, path, err);
      validateReturnArg(hook, path, err);
      validateSelectors(hook, path, declared, err);
    });
  }
  if (errors.length === 0 && hooks.length === 0) {
    err("spec", `declares no ${HOOK_KINDS.join(", ")}: the policy would trace nothing`);
  }
  if (errors.length > 0) return { ok: false, errors };
  const namespace = typeof meta.namespace === "string" ? meta.namespace : undefined;
  return { ok: true, value: { name, ...(namespace !== undefined ? { namespace } : {}), hooks } };
}

type Report = (path: string, message: string) => void;

const SYMBOL = /^[A-Za-z_][A-Za-z0-9_.]*$/;

function validateHookTarget(kind: HookKind, hook: Obj, path: string, err: Report): string | undefined {
  const requireSymbol = (field: string): string | undefined => {
    const v = hook[field];
    if (v === undefined || v === "") return void err(`${path}.${field}`, "required");
    if (typeof v !== "string") return void err(`${path}.${field}`, `must be a string, not ${show(v)}`);
    if (!SYMBOL.test(v)) return void err(`${path}.${field}`, `${show(v)} is not a kernel symbol name`);
    return v;
  };
  switch (kind) {
    case "kprobes":
      if (hook.syscall !== undefined && typeof hook.syscall !== "boolean") {
        err(`${path}.syscall`, `must be true or false, not ${show(hook.syscall)}`);
      }
      return requireSymbol("call");
    case "lsmhooks":
      return requireSymbol("hook");
    case "tracepoints": {
      const subsystem = requireSymbol("subsystem");
      const event = requireSymbol("event");
      return subsystem !== undefined && event !== undefined ? `${subsystem}/${event}` : undefined;
    }
    case "uprobes": {
      const p = hook.path;
      if (typeof p !== "string" || p === "") err(`${path}.path`, p === undefined ? "required" : "must be an absolute file path");
      else if (!p.startsWith("/")) err(`${path}.path`, `${show(p)} is not an absolute path`);
      const symbols = hook.symbols;
      if (!Array.isArray(symbols) || symbols.length === 0) err(`${path}.symbols`, "must list at least one symbol");
      else symbols.forEach((s: unknown, j: number) => {
        if (typeof s !== "string" || s === "") err(`${path}.symbols[${j}]`, `${show(s)} is not a symbol name`);
      });
      return typeof p === "string" ? p : undefined;
    }
  }
}

function validateArgs(hook: Obj, path: string, err: Report): Set<number> {
  const declared = new Set<number>();
  const args = hook.args;
  if (args === undefined || args === null) return declared;
  if (!Array.isArray(args)) {
    err(`${path}.args`, `must be a list, not ${show(args)}`);
    return declared;
  }
  args.forEach((arg: unknown, j: number) => {
    const p = `${path}.args[${j}]`;
    if (!isObj(arg)) return err(p, `must be an object, not ${show(arg)}`);
    const idx = arg.index;
    if (typeof idx !== "number" || !Number.isInteger(idx) || idx < 0 || idx > MAX_ARG_INDEX) {
      err(`${p}.index`, idx === undefined ? "required" : `${show(idx)} is not an argument index (0-${MAX_ARG_INDEX})`);
    } else if (declared.has(idx)) {
      err(`${p}.index`, `argument ${idx} is declared twice`);
    } else {
      declared.add(idx);
    }
    validateArgType(arg.type, `${p}.type`, err);
  });
  return declared;
}

function validateReturnArg(hook: Obj, path: string, err: Report): void {
  if (hook.returnArg === undefined || hook.returnArg === null) return;
  if (!isObj(hook.returnArg)) return err(`${path}.returnArg`, `must be an object, not ${show(hook.returnArg)}`);
  validateArgType(hook.returnArg.type, `${path}.returnArg.type`, err);
  if (hook.return !== true) err(`${path}.returnArg`, "is only read when return: true");
}

function validateArgType(type: unknown, path: string, err: Report): void {
  if (type === undefined) return err(path, "required");
  if (typeof type !== "string" || !ARG_TYPES.has(type.toLowerCase())) {
    err(path, `${show(type)} is not an argument type (e.g. int, string, file, fd, sock, skb, path)`);
  }
}

function validateSelectors(hook: Obj, path: string, declared: ReadonlySet<number>, err: Report): void {
  const selectors = hook.selectors;
  if (selectors === undefined || selectors === null) return;
  if (!Array.isArray(selectors)) return err(`${path}.selectors`, `must be a list, not ${show(selectors)}`);
  if (selectors.length > MAX_SELECTORS) {
    err(`${path}.selectors`, `has ${selectors.length} selectors; at most ${MAX_SELECTORS} are supported per hook`);
  }
  selectors.forEach((sel: unknown, k: number) => {
    const sp = `${path}.selectors[${k}]`;
    if (!isObj(sel)) return err(sp, `must be an object, not ${show(sel)}`);
    for (const field of ["matchArgs", "matchReturnArgs"] as const) {
      const list = sel[field];
      if (list === undefined) continue;
      if (!Array.isArray(list)) {
        err(`${sp}.${field}`, `must be a list, not ${show(list)}`);
        continue;
      }
      list.forEach((m: unknown, n: number) => {
        const mp = `${sp}.${field}[${n}]`;
        if (!isObj(m)) return err(mp, `must be an object, not ${show(m)}`);
        if (field === "matchArgs") {
          if (typeof m.index !== "number" || !Number.isInteger(m.index)) err(`${mp}.index`, "required: the index of an argument in args");
          else if (!declared.has(m.index)) err(`${mp}.index`, `argument ${m.index} is not declared in args`);
        }
        if (typeof m.operator !== "string" || !ARG_OPERATORS.has(m.operator.toLowerCase())) {
          err(`${mp}.operator`, m.operator === undefined ? "required" : `${show(m.operator)} is not an operator (Equal, Prefix, Postfix, ...)`);
        }
        if (m.values !== undefined && !Array.isArray(m.values)) err(`${mp}.values`, `must be a list, not ${show(m.values)}`);
      });
    }
    const actions = sel.matchActions;
    if (actions === undefined) return;
    if (!Array.isArray(actions)) return err(`${sp}.matchActions`, `must be a list, not ${show(actions)}`);
    actions.forEach((a: unknown, n: number) => {
      const ap = `${sp}.matchActions[${n}]`;
      if (!isObj(a)) return err(ap, `must be an object, not ${show(a)}`);
      const action = typeof a.action === "string" ? a.action.toLowerCase() : undefined;
      if (action === undefined || !ACTIONS.has(action)) {
        return err(`${ap}.action`, a.action === undefined ? "required" : `${show(a.action)} is not an action (Post, Sigkill, Signal, Override, ...)`);
      }
      if (action === "signal" && (typeof a.argSig !== "number" || !Number.isInteger(a.argSig) || a.argSig < 1 || a.argSig > 64)) {
        err(`${ap}.argSig`, "Signal needs argSig, a signal number 1-64");
      }
      if (action === "override" && typeof a.argError !== "number") {
        err(`${ap}.argError`, "Override needs argError, the error number to return");
      }
      if ((action === "followfd" || action === "unfollowfd" || action === "copyfd") && typeof a.argFd === "number" && !declared.has(a.argFd)) {
        err(`${ap}.argFd`, `argument ${a.argFd} is not declared in args`);
      }
    });
  });
}
