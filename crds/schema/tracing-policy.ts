// Schema of TracingPolicy (cluster-scoped) and TracingPolicyNamespaced (cilium.io/v1alpha1): Tetragon's
// runtime hooks (kprobes, fentries, tracepoints, LSM hooks, uprobes, USDTs) with selectors and actions,
// in Tetragon's current shape plus Membrane's matchNames. Operator and action names carry no enum here:
// the admission webhook (core/tracing.ts) refuses a wrong one with a sentence saying what to write.
import {
  AGE_COLUMN,
  conditions,
  type JSONSchemaProps,
  type PrinterColumn,
  arr,
  bool,
  defineCRD,
  int,
  labelSelector,
  map,
  obj,
  str,
} from "./common.ts";
import { TRACING_ACTIONS, TRACING_ARG_OPERATORS, TRACING_ARG_TYPES } from "../../core/tracing.ts";

const IN_NOT_IN = { enum: ["In", "NotIn"] } as const;

/** A string Tetragon's schema wants; a number is let through so that admission can say how to quote it. */
function stringValue(description: string): JSONSchemaProps {
  return { description, "x-kubernetes-int-or-string": true };
}

function arg(description: string): JSONSchemaProps {
  return obj(
    description,
    {
      index: int(
        "Position of the argument: in the hooked function's signature (kprobes, fentries, LSM hooks, uprobes, " +
          "USDTs) or among the tracepoint's format fields (tracepoints), from 0.",
        { minimum: 0, format: "int32" },
      ),
      type: str('How to read the argument; "auto" (the default) takes the type from BTF or the tracepoint format.', {
        enum: TRACING_ARG_TYPES,
        default: "auto",
      }),
      label: str("Name of the argument in emitted events."),
      sizeArgIndex: int("Index (from 1) of the argument holding this buffer's size (char_buf, char_iovec).", {
        minimum: 0,
        format: "int32",
      }),
      returnCopy: bool("Read the buffer when the function returns, not when it is entered (e.g. read(2))."),
      maxData: bool("Read up to the kernel's maximum instead of 4096 bytes (char_buf only)."),
      resolve: str('Follow the argument to one of its fields, e.g. "f_path.dentry" of a file.'),
    },
    { required: ["index"] },
  );
}

/** Builds a schema node once, so that every place using it shares the node (and its generated type). */
function once(build: () => JSONSchemaProps): () => JSONSchemaProps {
  let node: JSONSchemaProps | undefined;
  return () => (node ??= build());
}

function argFilters(description: string): JSONSchemaProps {
  return arr(description, argFilter());
}

const argFilter = once(() =>
    obj(
      "A filter on one argument.",
      {
        index: int(
          "Which argument: its index in the function's signature (kprobes, LSM hooks, uprobes), or the n-th " +
            "entry of args (tracepoints).",
          { minimum: 0, format: "int32" },
        ),
        operator: str(`Comparison to apply (case-sensitive): ${TRACING_ARG_OPERATORS.join(", ")}.`),
        values: arr("Values to compare against, as strings; any one matching satisfies the filter.", stringValue("A value.")),
        args: arr("Positions in args of the arguments the operator compares (operators over several arguments).", int("A position in args.", { minimum: 0, format: "int32" })),
      },
      { required: ["index", "operator"] },
    ),
);

function capabilityFilter(description: string): JSONSchemaProps {
  return arr(description, capabilityItem());
}

const capabilityItem = once(() =>
    obj(
      "A capability filter.",
      {
        type: str("Which capability set: Effective (when omitted), Inheritable or Permitted.", {
          enum: ["Effective", "Inheritable", "Permitted"],
        }),
        operator: str("In or NotIn.", IN_NOT_IN),
        values: arr('Capabilities, e.g. "CAP_SYS_ADMIN".', str("A capability name.")),
        isNamespaceCapability: bool("Compare capabilities relative to the user namespace."),
      },
      { required: ["operator", "values"] },
    ),
);

function selector(): JSONSchemaProps {
  return obj("One selector: the hook fires its actions when every filter in the selector matches.", {
    matchPIDs: arr(
      "Filters on the process ID.",
      obj(
        "A process ID filter.",
        {
          operator: str("In or NotIn.", IN_NOT_IN),
          values: arr("Process IDs.", int("A process ID.", { format: "int32", minimum: 0 })),
          followForks: bool("Also match descendants of these processes."),
          isNamespacePID: bool("The IDs are PIDs inside the process's PID namespace."),
        },
        { required: ["operator", "values"] },
      ),
    ),
    matchArgs: argFilters("Filters on the hooked function's arguments; all must match."),
    matchReturnArgs: argFilters("Filters on the return value (kprobes with return: true)."),
    matchBinaries: arr(
      "Filters on the executable of the calling process.",
      obj(
        "An executable filter.",
        {
          operator: str("In, NotIn, Prefix, NotPrefix, Postfix or NotPostfix.", {
            enum: ["In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix"],
          }),
          values: arr("Absolute paths (or path prefixes/suffixes) of executables.", str("A path.")),
          followChildren: bool("Also match processes started by a matching executable."),
        },
        { required: ["operator", "values"] },
      ),
    ),
    matchNamespaces: arr(
      "Filters on the Linux namespaces of the calling process.",
      obj(
        "A Linux namespace filter.",
        {
          namespace: str("Which Linux namespace type to compare.", {
            enum: ["Uts", "Ipc", "Mnt", "Pid", "PidForChildren", "Net", "Time", "TimeForChildren", "Cgroup", "User"],
          }),
          operator: str("In or NotIn.", IN_NOT_IN),
          values: arr(
            'Namespace inode numbers as strings, or "host_ns" for the host\'s namespace.',
            stringValue("A namespace ID."),
          ),
        },
        { required: ["namespace", "operator", "values"] },
      ),
    ),
    matchNamespaceChanges: arr(
      "Filters on changes of the calling process's Linux namespaces.",
      obj(
        "A namespace-change filter.",
        {
          operator: str("In or NotIn.", IN_NOT_IN),
          values: arr('Namespace types, e.g. "Mnt", "Pid".', str("A namespace type.")),
        },
        { required: ["operator", "values"] },
      ),
    ),
    matchNames: arr(
      "Membrane extension: filters on the Kubernetes workload of the calling process; any entry matching " +
        "satisfies the filter.",
      obj(
        "A Kubernetes workload filter.",
        {
          namespace: str("Kubernetes namespace of the pod.", { minLength: 1, maxLength: 63 }),
          pod: str("Name of the pod (all pods of the namespace when omitted).", { maxLength: 253 }),
        },
        { required: ["namespace"] },
      ),
    ),
    matchCapabilities: capabilityFilter("Filters on the capabilities of the calling process."),
    matchCapabilityChanges: capabilityFilter("Filters on capabilities the calling process gains."),
    matchActions: arr("What to do when the selector matches.", action()),
    matchReturnActions: arr("What to do when the selector matches on return.", action()),
    macros: arr("Names of spec.selectorsMacros whose filters this selector takes (a filter from one place only).", str("A macro name.")),
  });
}

const action = once(() =>
  obj(
    "One action.",
    {
      action: str(`What to do (case-sensitive): ${TRACING_ACTIONS.join(", ")}.`),
      argError: int("Error value the call returns (Override), e.g. -1.", { format: "int32" }),
      argSig: int("Signal number to send (Signal).", { format: "int32" }),
      argFd: int("Removed from Tetragon (FollowFD, UnfollowFD, CopyFD): admission refuses it and says what to write.", {
        format: "int32",
      }),
      argName: int("Removed from Tetragon (FollowFD, CopyFD): admission refuses it and says what to write.", {
        format: "int32",
      }),
      argSock: int("Index of the socket argument (TrackSock, UntrackSock).", { format: "int32" }),
      argUrl: str("URL to fetch (GetUrl)."),
      argFqdn: str("DNS name to look up (DnsLookup)."),
      rateLimit: str('Suppress repeated events within this period, e.g. "30s", "5m", "1h" (Post).'),
      rateLimitScope: str('What the rate limit counts per: "thread" (the default), "process" or "global".'),
      kernelStackTrace: bool("Include the kernel stack in the event (Post)."),
      userStackTrace: bool("Include the user stack in the event (Post)."),
      imaHash: bool("Include the file's hash from the integrity subsystem in the event (Post)."),
    },
    { required: ["action"] },
  ),
);

// Built once: every hook type shares these nodes, so the generated types name them once.
const ARG = arg("One argument.");
const SELECTOR = selector();
const HOOK_COMMON: Record<string, JSONSchemaProps> = {
  args: arr("Arguments to read and include in events.", ARG),
  selectors: arr("Selectors, any one of which must match (at most 5).", SELECTOR, { maxItems: 5 }),
  message: str("Short text included in every event of this hook.", { maxLength: 256 }),
  tags: arr("Labels for events of this hook, for filtering.", str("A tag."), { maxItems: 16 }),
};
const hookCommon = (): Record<string, JSONSchemaProps> => HOOK_COMMON;

const FUNCTION_HOOK = obj(
  "One kernel function.",
  {
    call: str(
      'Kernel function (or syscall) name, e.g. "fd_install" or "sys_openat"; "list:NAME" hooks every ' +
        "function of spec.lists NAME.",
      { minLength: 1 },
    ),
    syscall: bool("The function is a system call (its name is resolved per architecture)."),
    return: bool("Also hook the function's return and read returnArg."),
    returnArg: obj("The return value to read when return is true.", { ...(ARG.properties ?? {}) }),
    returnArgAction: str("Action on the return value: Post, TrackSock or UntrackSock."),
    ignore: obj("Conditions under which the hook is skipped instead of failing the policy.", {
      callNotFound: bool("Skip the hook when the function does not exist in this kernel."),
    }),
    ...hookCommon(),
  },
  { required: ["call"] },
);

function functionHook(description: string): JSONSchemaProps {
  return arr(description, FUNCTION_HOOK);
}

function tracingPolicySpec(namespaced: boolean): JSONSchemaProps {
  return obj("The hooks of the policy.", {
    kprobes: functionHook("Kernel functions to hook with kprobes."),
    fentries: functionHook("Kernel functions to hook with fentry programs."),
    tracepoints: arr(
      "Kernel tracepoints to hook.",
      obj(
        "One tracepoint.",
        {
          subsystem: str('Tracepoint subsystem, e.g. "syscalls".', { minLength: 1 }),
          event: str('Tracepoint event, e.g. "sys_enter_openat".', { minLength: 1 }),
          raw: bool("Hook the raw tracepoint and read its raw arguments."),
          ...hookCommon(),
        },
        { required: ["subsystem", "event"] },
      ),
    ),
    lsmhooks: arr(
      "Linux Security Module hooks.",
      obj(
        "One LSM hook.",
        {
          hook: str('LSM hook name without the prefix, e.g. "file_open".', { minLength: 1 }),
          ...hookCommon(),
        },
        { required: ["hook"] },
      ),
    ),
    uprobes: arr(
      "User-space functions to hook.",
      obj(
        "One executable or library and the functions in it.",
        {
          path: str("Absolute path of the executable or library.", { minLength: 1 }),
          symbols: arr("Names of the functions to hook.", str("A symbol.")),
          offsets: arr("Offsets in the file to hook, instead of symbols.", int("An offset.", { minimum: 0, format: "int64" })),
          refCtrOffsets: arr("Offsets of the reference counters (semaphores) of the probes.", int("An offset.", { minimum: 0, format: "int64" })),
          ...hookCommon(),
        },
        { required: ["path"] },
      ),
    ),
    usdts: arr(
      "User-space statically defined tracepoints to hook.",
      obj(
        "One USDT probe.",
        {
          path: str("Absolute path of the executable or library.", { minLength: 1 }),
          provider: str("Provider name of the probe.", { minLength: 1 }),
          name: str("Name of the probe.", { minLength: 1 }),
          ...hookCommon(),
        },
        { required: ["path", "provider", "name"] },
      ),
    ),
    lists: arr(
      "Named lists of functions that kprobes hook with call: \"list:NAME\".",
      obj(
        "One list.",
        {
          name: str("Name of the list, referenced as list:NAME.", { minLength: 1 }),
          type: str("What the values are: syscalls, generated_syscalls or generated_ftrace.", {
            enum: ["syscalls", "generated_syscalls", "generated_ftrace"],
          }),
          values: arr("The functions (syscall names for type syscalls).", str("A function name.")),
          pattern: str("Regular expression selecting the functions of a generated_ftrace list."),
          validated: bool("The list's functions were checked to exist."),
        },
        { required: ["name"] },
      ),
    ),
    enforcers: arr(
      "Enforcers: the calls whose return value Override actions with NotifyEnforcer change.",
      obj("One enforcer.", { calls: arr("Kernel functions or syscalls.", str("A call.")) }, { required: ["calls"] }),
    ),
    options: arr(
      "Options overriding the agent's defaults for this policy.",
      obj("One option.", { name: str("Name of the option.", { minLength: 1 }), value: str("Value of the option.") }, { required: ["name"] }),
    ),
    loader: bool("Also emit an event when a binary or library is loaded."),
    // The macro's selector schema is not repeated here (it would double the CRD's size): admission checks a macro's
    // filters in every selector that lists it, with the hook's arguments that give them their meaning.
    selectorsMacros: map("Named selector fragments that selectors pull in by listing them in macros.", {
      type: "object",
      description: "A selector's filters (matchArgs, matchBinaries, matchActions, ...), checked where a selector lists the macro.",
      "x-kubernetes-preserve-unknown-fields": true,
    }),
    podSelector: labelSelector("Pods the policy applies to; every process on the node when omitted."),
    containerSelector: labelSelector('Containers the policy applies to, by container field ("name").'),
    ...(namespaced
      ? {}
      : { hostSelector: labelSelector("Only {} (every host process) or absent; no label matching is supported.") }),
  });
}

/**
 * Marks every object of the spec (label selectors aside) to keep unknown keys instead of pruning them, so
 * that the admission webhook sees a misspelt or removed key and refuses it by name whatever field
 * validation the client asked for (pruning would drop it silently for a client that does not ask Strict).
 */
const kept = new WeakMap<JSONSchemaProps, JSONSchemaProps>();
function keepUnknownKeys(node: JSONSchemaProps): JSONSchemaProps {
  const done = kept.get(node);
  if (done) return done;
  if (node.properties?.matchLabels !== undefined) return node;
  const out: JSONSchemaProps = { ...node };
  if (node.properties) {
    out.properties = Object.fromEntries(Object.entries(node.properties).map(([k, v]) => [k, keepUnknownKeys(v)]));
    out["x-kubernetes-preserve-unknown-fields"] = true;
  }
  if (node.items) out.items = keepUnknownKeys(node.items);
  if (node.additionalProperties) out.additionalProperties = keepUnknownKeys(node.additionalProperties);
  kept.set(node, out);
  return out;
}

const DESCRIPTION =
  "Runtime enforcement: kernel hooks to observe, which calls to select, and what to do with them (emit an " +
  "event, kill the process, override the return value).";

// One spec for both kinds, the namespaced one without hostSelector: the same schema nodes, so that the
// generated types name them once.
const CLUSTER_SPEC = keepUnknownKeys(tracingPolicySpec(false));
const { hostSelector: _hostSelector, ...namespacedProperties } = CLUSTER_SPEC.properties ?? {};
const NAMESPACED_SPEC: JSONSchemaProps = { ...CLUSTER_SPEC, properties: namespacedProperties };

/** Schema nodes the generated TypeScript types name (Tetragon's Go type names). */
export const TRACING_SHARED_TYPES: ReadonlyMap<JSONSchemaProps, string> = (() => {
  const p = CLUSTER_SPEC.properties ?? {};
  const kprobe = p.kprobes?.items;
  const named = new Map<JSONSchemaProps, string>();
  const add = (node: JSONSchemaProps | undefined, name: string): void => {
    if (node) named.set(node, name);
  };
  add(kprobe?.properties?.selectors?.items, "KProbeSelector");
  add(kprobe?.properties?.args?.items, "KProbeArg");
  const sel = kprobe?.properties?.selectors?.items?.properties;
  add(sel?.matchArgs?.items, "ArgSelector");
  add(sel?.matchActions?.items, "ActionSelector");
  add(sel?.matchCapabilities?.items, "CapabilitiesSelector");
  add(kprobe, "KProbeSpec");
  add(p.tracepoints?.items, "TracepointSpec");
  add(p.lsmhooks?.items, "LsmHookSpec");
  add(p.uprobes?.items, "UProbeSpec");
  add(p.usdts?.items, "UsdtSpec");
  add(p.lists?.items, "ListSpec");
  return named;
})();

/** Written by the operator (controllers/tracing.ts); Membrane's addition to Tetragon's schema. */
const STATUS = obj("What the operator observed: whether the policy is valid, whether this kernel can load it, and which nodes enforce it.", {
  conditions: conditions(
    "Valid (admission's verdict); Loaded: False with reason HookUnavailable names each hook, action or filter " +
      "this kernel cannot serve and why, True once every node's runtime enforcer runs it; Enforced: n/m nodes, " +
      "and why the others do not (EnforcerNotRunning, Pending, or the node's HookUnavailable/LoadFailed).",
  ),
  observedGeneration: int("metadata.generation the conditions were computed from.", { minimum: 0, format: "int64" }),
  enforced: str('Nodes whose runtime enforcer runs the current generation, of the cluster\'s nodes, e.g. "3/3".'),
  enforcedNodes: int("Nodes whose runtime enforcer runs the current generation.", { minimum: 0, format: "int32" }),
  totalNodes: int("The cluster's nodes (every node runs every TracingPolicy).", { minimum: 0, format: "int32" }),
  nodeErrors: arr(
    "Nodes that do not enforce the current generation, and why.",
    obj("One node.", { node: str("Node name."), reason: str("EnforcerNotRunning, Pending, HookUnavailable, Invalid or LoadFailed."), message: str("Details.") }, { required: ["node", "reason", "message"] }),
    { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["node"] },
  ),
});

const LOADED_COLUMNS: PrinterColumn[] = [
  { name: "Loaded", type: "string", jsonPath: '.status.conditions[?(@.type=="Loaded")].status', description: "Whether the policy is loaded." },
  { name: "Reason", type: "string", jsonPath: '.status.conditions[?(@.type=="Loaded")].reason', description: "Why (HookUnavailable names the hook in the condition message)." },
  { name: "Enforced", type: "string", jsonPath: ".status.enforced", description: "Nodes enforcing the current generation out of the cluster's nodes." },
  AGE_COLUMN,
];

export const tracingPolicyCRD = defineCRD({
  group: "cilium.io",
  version: "v1alpha1",
  kind: "TracingPolicy",
  plural: "tracingpolicies",
  shortNames: ["tp"],
  categories: ["cilium"],
  scope: "Cluster",
  statusSubresource: true,
  printerColumns: LOADED_COLUMNS,
  schema: obj(DESCRIPTION, { spec: CLUSTER_SPEC, status: STATUS }, { required: ["spec"] }),
});

export const tracingPolicyNamespacedCRD = defineCRD({
  group: "cilium.io",
  version: "v1alpha1",
  kind: "TracingPolicyNamespaced",
  plural: "tracingpoliciesnamespaced",
  shortNames: ["tpn"],
  categories: ["cilium"],
  scope: "Namespaced",
  statusSubresource: true,
  printerColumns: LOADED_COLUMNS,
  schema: obj(`${DESCRIPTION} Applies to the processes of this namespace's pods only.`, { spec: NAMESPACED_SPEC, status: STATUS }, { required: ["spec"] }),
});
