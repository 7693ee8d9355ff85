// Schema of TracingPolicy (cilium.io/v1alpha1, cluster-scoped): runtime enforcement hooks (kprobes,
// tracepoints, LSM hooks) with selectors and actions, in Tetragon's shape plus Membrane's matchNames.
import {
  AGE_COLUMN,
  type JSONSchemaProps,
  arr,
  bool,
  defineCRD,
  int,
  labelSelector,
  obj,
  str,
} from "./common.ts";
import { TRACING_ACTIONS, TRACING_ARG_OPERATORS, TRACING_ARG_TYPES } from "../../core/tracing.ts";

const IN_NOT_IN = { enum: ["In", "NotIn"] } as const;

function arg(description: string): JSONSchemaProps {
  return obj(
    description,
    {
      index: int("Position of the argument in the hooked function's signature, from 0.", {
        minimum: 0,
        format: "int32",
      }),
      type: str("How to read the argument.", { enum: TRACING_ARG_TYPES }),
      label: str("Name of the argument in emitted events."),
      sizeArgIndex: int("Index (from 1) of the argument holding this buffer's size (char_buf, char_iovec).", {
        minimum: 0,
        format: "int32",
      }),
      returnCopy: bool("Read the buffer when the function returns, not when it is entered (e.g. read(2))."),
      maxData: bool("Read up to the kernel's maximum instead of 4096 bytes (char_buf only)."),
    },
    { required: ["index", "type"] },
  );
}

function argFilters(description: string): JSONSchemaProps {
  return arr(
    description,
    obj(
      "A filter on one argument.",
      {
        index: int("Position of the argument to filter on.", { minimum: 0, format: "int32" }),
        operator: str("Comparison to apply.", { enum: TRACING_ARG_OPERATORS }),
        values: arr("Values to compare against; any one matching satisfies the filter.", str("A value.")),
      },
      { required: ["index", "operator", "values"] },
    ),
  );
}

function selector(): JSONSchemaProps {
  return obj("One selector: the hook fires its actions when every filter in the selector matches.", {
    matchPIDs: arr(
      "Filters on the process ID.",
      obj(
        "A process ID filter.",
        {
          operator: str("In or NotIn.", IN_NOT_IN),
          values: arr("Process IDs.", int("A process ID.", { format: "int32" })),
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
            enum: [
              "Uts",
              "Ipc",
              "Mnt",
              "Pid",
              "PidForChildren",
              "Net",
              "Time",
              "TimeForChildren",
              "Cgroup",
              "User",
            ],
          }),
          operator: str("In or NotIn.", IN_NOT_IN),
          values: arr(
            'Namespace inode numbers, or "host_ns" for the host\'s namespace.',
            str("A namespace ID."),
          ),
        },
        { required: ["namespace", "operator", "values"] },
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
    matchCapabilities: arr(
      "Filters on the capabilities of the calling process.",
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
    ),
    matchActions: arr("What to do when the selector matches.", action()),
    matchReturnActions: arr("What to do when the selector matches on return.", action()),
  });
}

function action(): JSONSchemaProps {
  return obj(
    "One action.",
    {
      action: str(
        "Post (emit an event), NoPost, Sigkill (kill the process), Signal, Override (make the call return " +
          "argError), FollowFD, UnfollowFD, CopyFD, GetUrl, DnsLookup, TrackSock, UntrackSock, NotifyEnforcer, " +
          "CleanupEnforcerNotification or Set.",
        { enum: TRACING_ACTIONS },
      ),
      argError: int("Error value the call returns (Override), e.g. -1.", { format: "int32" }),
      argSig: int("Signal number to send (Signal).", { format: "int32", minimum: 1, maximum: 64 }),
      argFd: int("Index of the file-descriptor argument (FollowFD, UnfollowFD, CopyFD).", {
        format: "int32",
      }),
      argName: int("Index of the file-name argument (FollowFD, CopyFD).", { format: "int32" }),
      argSock: int("Index of the socket argument (TrackSock, UntrackSock).", { format: "int32" }),
      argUrl: str("URL to fetch (GetUrl)."),
      argFqdn: str("DNS name to look up (DnsLookup)."),
      rateLimit: str('Suppress repeated events within this period, e.g. "30s", "5m", "1h" (Post).', {
        pattern: "^[0-9]+[smh]?$",
      }),
      rateLimitScope: str("What the rate limit counts per: Thread, Process or Global.", {
        enum: ["Thread", "Process", "Global"],
      }),
      kernelStackTrace: bool("Include the kernel stack in the event (Post)."),
      userStackTrace: bool("Include the user stack in the event (Post)."),
    },
    { required: ["action"] },
  );
}

function hookCommon(): Record<string, JSONSchemaProps> {
  return {
    args: arr("Arguments to read and include in events.", arg("One argument.")),
    selectors: arr("Selectors, any one of which must match (at most 5).", selector(), { maxItems: 5 }),
    message: str("Short text included in every event of this hook.", { maxLength: 256 }),
    tags: arr("Labels for events of this hook, for filtering.", str("A tag."), { maxItems: 16 }),
  };
}

export const tracingPolicyCRD = defineCRD({
  group: "cilium.io",
  version: "v1alpha1",
  kind: "TracingPolicy",
  plural: "tracingpolicies",
  shortNames: ["tp"],
  categories: ["cilium"],
  scope: "Cluster",
  statusSubresource: false,
  printerColumns: [AGE_COLUMN],
  schema: obj(
    "Runtime enforcement: kernel hooks to observe, which calls to select, and what to do with them (emit an " +
      "event, kill the process, override the return value).",
    {
      spec: obj("The hooks of the policy.", {
        kprobes: arr(
          "Kernel functions to hook.",
          obj(
            "One kernel function.",
            {
              call: str('Kernel function (or syscall) name, e.g. "fd_install" or "sys_openat".', {
                minLength: 1,
              }),
              syscall: bool("The function is a system call (its name is resolved per architecture)."),
              return: bool("Also hook the function's return and read returnArg."),
              returnArg: arg("The return value to read when return is true."),
              returnArgAction: str("Action on the return value: Post, TrackSock or UntrackSock."),
              ...hookCommon(),
            },
            { required: ["call"] },
          ),
        ),
        tracepoints: arr(
          "Kernel tracepoints to hook.",
          obj(
            "One tracepoint.",
            {
              subsystem: str('Tracepoint subsystem, e.g. "syscalls".', { minLength: 1 }),
              event: str('Tracepoint event, e.g. "sys_enter_openat".', { minLength: 1 }),
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
        podSelector: labelSelector("Pods the policy applies to; every process on the node when omitted."),
      }),
    },
    { required: ["spec"] },
  ),
});
