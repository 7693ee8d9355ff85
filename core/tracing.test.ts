// TracingPolicy validation in Tetragon's terms: its documented policies pass; unknown keys, removed actions,
// wrong-case names and unquoted values are named by field path with what to write instead.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seedExamples, tetragonDocsExamples } from "../crds/fixtures.ts";
import { validateObject } from "./validate.ts";
import { validateTracingPolicy } from "./tracing.ts";

const tp = (spec: unknown, kind = "TracingPolicy") => ({ apiVersion: "cilium.io/v1alpha1", kind, metadata: { name: "t" }, spec });
const errorsOf = (spec: unknown, kind?: string): string[] => {
  const r = validateTracingPolicy(tp(spec, kind));
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
};
const fdInstall = (selector: unknown) => ({
  kprobes: [{ call: "fd_install", args: [{ index: 0, type: "int" }, { index: 1, type: "file" }], selectors: [selector] }],
});

describe("TracingPolicy validation", () => {
  it("accepts the seed example and summarises its hooks", () => {
    const seed = seedExamples().find((e) => e.object.kind === "TracingPolicy");
    const r = validateTracingPolicy(seed?.object);
    assert.ok(r.ok);
    assert.deepEqual(
      r.value.hooks.map((h) => [h.kind, h.name, h.path, h.actions]),
      [["kprobes", "fd_install", "spec.kprobes[0]", ["Sigkill"]]],
    );
  });

  for (const ex of tetragonDocsExamples()) {
    it(`accepts ${ex.source} without errors or warnings`, () => {
      assert.deepEqual(validateObject(ex.object), { kind: ex.object.kind, errors: [], warnings: [] });
    });
  }

  it("the Tetragon documentation corpus covers every hook type and the fields Tetragon's loader added", () => {
    const all = JSON.stringify(tetragonDocsExamples().map((e) => e.object));
    const missing = [
      '"kprobes"', '"fentries"', '"tracepoints"', '"lsmhooks"', '"uprobes"', '"usdts"', '"lists"', '"call":"list:',
      '"loader":true', '"options"', '"enforcers"', '"podSelector"', '"containerSelector"', '"returnArg"',
      '"matchReturnArgs"', '"matchPIDs"', '"matchBinaries"', '"matchNamespaces"', '"matchCapabilities"',
      '"kind":"TracingPolicyNamespaced"', '"action":"Sigkill"', '"action":"Override"', '"action":"Signal"',
      '"action":"NotifyEnforcer"', '"rateLimit"',
    ].filter((f) => !all.includes(f));
    assert.deepEqual(missing, []);
    // A tracepoint argument without a type (Tetragon defaults it to "auto").
    assert.ok(tetragonDocsExamples().some((e) => JSON.stringify(e.object).includes('{"index":5}')));
  });

  it("names every unknown key, at every level, with the nearest known one", () => {
    assert.deepEqual(
      errorsOf({
        kprobe: [],
        kprobes: [{ call: "fd_install", args: [{ index: 1, type: "file", lable: "f" }], selector: [], selectors: [{ matchArg: [] }] }],
      }),
      [
        'spec.kprobe: unknown field "kprobe": did you mean "kprobes"? (known here: kprobes, fentries, tracepoints, lsmhooks, uprobes, usdts, lists, enforcers, options, loader, podSelector, containerSelector, hostSelector, selectorsMacros)',
        'spec.kprobes[0].selector: unknown field "selector": did you mean "selectors"? (known here: call, syscall, return, returnArg, returnArgAction, ignore, args, selectors, message, tags)',
        'spec.kprobes[0].args[0].lable: unknown field "lable": did you mean "label"? (known here: index, type, label, sizeArgIndex, returnCopy, maxData, resolve)',
        'spec.kprobes[0].selectors[0].matchArg: unknown field "matchArg": did you mean "matchArgs"? (known here: matchPIDs, matchArgs, matchReturnArgs, matchBinaries, matchNamespaces, matchNamespaceChanges, matchNames, matchCapabilities, matchCapabilityChanges, matchActions, matchReturnActions, macros)',
      ],
    );
  });

  it("refuses what Tetragon removed (FollowFD, UnfollowFD, CopyFD, argFd, argName) saying what to write instead", () => {
    assert.deepEqual(
      errorsOf(fdInstall({ matchActions: [{ action: "FollowFD", argFd: 0, argName: 1 }, { action: "UnfollowFD" }, { action: "CopyFD" }] })),
      [
        "spec.kprobes[0].selectors[0].matchActions[0].action: FollowFD was removed from Tetragon (1.5): read the file itself instead, e.g. hook fd_install with an argument of type: file (or security_file_open) and match its path with matchArgs",
        "spec.kprobes[0].selectors[0].matchActions[1].action: UnfollowFD was removed from Tetragon (1.5) with FollowFD: hook the file with an argument of type: file instead and delete this action",
        "spec.kprobes[0].selectors[0].matchActions[2].action: CopyFD was removed from Tetragon (1.5) with FollowFD: hook the file with an argument of type: file instead and delete this action",
      ],
    );
    assert.deepEqual(errorsOf(fdInstall({ matchActions: [{ action: "Post", argFd: 0 }] })), [
      "spec.kprobes[0].selectors[0].matchActions[0].argFd: argFd was removed from Tetragon (1.5) with FollowFD and CopyFD: delete it",
    ]);
  });

  it("refuses names in the wrong case (Tetragon's are case-sensitive) and says which to write", () => {
    assert.deepEqual(
      errorsOf(
        fdInstall({
          matchArgs: [{ index: 1, operator: "equal", values: ["/etc/shadow"] }],
          matchNamespaces: [{ namespace: "pid", operator: "in", values: ["host_ns"] }],
          matchActions: [{ action: "sigkill" }],
        }),
      ),
      [
        'spec.kprobes[0].selectors[0].matchArgs[0].operator: "equal" is not an operator: names are case-sensitive, write "Equal"',
        'spec.kprobes[0].selectors[0].matchNamespaces[0].namespace: "pid" is not a Linux namespace type: names are case-sensitive, write "Pid"',
        'spec.kprobes[0].selectors[0].matchNamespaces[0].operator: "in" is not a namespace operator: names are case-sensitive, write "In"',
        'spec.kprobes[0].selectors[0].matchActions[0].action: "sigkill" is not an action: names are case-sensitive, write "Sigkill"',
      ],
    );
    assert.deepEqual(errorsOf({ kprobes: [{ call: "fd_install", args: [{ index: 0, type: "File" }] }] }), [
      'spec.kprobes[0].args[0].type: "File" is not an argument type: names are case-sensitive, write "file"',
    ]);
    assert.match(errorsOf(fdInstall({ matchArgs: [{ index: 1, operator: "Equals", values: ["x"] }] }))[0] ?? "", /"Equals" is not an operator: did you mean "Equal"\?/);
  });

  it("refuses integers where Tetragon's schema wants strings, saying how to quote them", () => {
    assert.deepEqual(
      errorsOf({
        kprobes: [
          {
            call: "sys_openat",
            return: true,
            returnArg: { index: 0, type: "int" },
            selectors: [
              {
                matchReturnArgs: [{ index: 0, operator: "NotEqual", values: [0] }],
                matchNamespaces: [{ namespace: "Pid", operator: "In", values: [4026531836] }],
              },
            ],
          },
        ],
      }),
      [
        'spec.kprobes[0].selectors[0].matchReturnArgs[0].values[0]: 0 is not a string: Tetragon\'s schema wants strings here, write "0" (quoted)',
        'spec.kprobes[0].selectors[0].matchNamespaces[0].values[0]: 4026531836 is not a string: Tetragon\'s schema wants strings here, write "4026531836" (quoted)',
      ],
    );
  });

  it("reads a tracepoint's matchArgs index as the n-th listed argument, a kprobe's as the signature position", () => {
    const tracepoint = (index: number) => ({
      tracepoints: [{ subsystem: "syscalls", event: "sys_enter_openat", args: [{ index: 5 }, { index: 6 }], selectors: [{ matchArgs: [{ index, operator: "Prefix", values: ["/etc"] }] }] }],
    });
    assert.deepEqual(errorsOf(tracepoint(1)), []);
    assert.deepEqual(errorsOf(tracepoint(2)), [
      "spec.tracepoints[0].selectors[0].matchArgs[0].index: index 2 means the 3rd entry of args (for tracepoints an index counts the listed arguments), but args lists 2",
    ]);
    assert.deepEqual(errorsOf(fdInstall({ matchArgs: [{ index: 2, operator: "Equal", values: ["x"] }] })), [
      "spec.kprobes[0].selectors[0].matchArgs[0].index: argument 2 is not declared in args",
    ]);
  });

  it("resolves call: \"list:NAME\" against spec.lists", () => {
    const lists = [{ name: "dups", type: "syscalls", values: ["sys_dup"] }];
    assert.deepEqual(errorsOf({ lists, kprobes: [{ call: "list:dups", syscall: true }] }), []);
    assert.deepEqual(errorsOf({ lists, kprobes: [{ call: "list:dup", syscall: true }] }), [
      'spec.kprobes[0].call: "list:dup" names list "dup", which spec.lists does not declare (declared: dups)',
    ]);
    assert.deepEqual(errorsOf({ lists: [{ name: "f", type: "generated_ftrace" }], kprobes: [{ call: "list:f" }] }), [
      "spec.lists[0].pattern: a generated_ftrace list needs pattern, the regular expression of its functions",
    ]);
  });

  it("admits returnArg without return: true with a warning, as Tetragon ignores it", () => {
    const v = validateObject(tp({ kprobes: [{ call: "sys_openat", returnArg: { index: 0, type: "int" } }] }));
    assert.deepEqual(v.errors, []);
    assert.deepEqual(v.warnings, ["spec.kprobes[0].returnArg: is read only when return: true; without it Tetragon ignores returnArg"]);
  });

  it("keeps hostSelector to {} and out of TracingPolicyNamespaced", () => {
    const kprobes = [{ call: "fd_install" }];
    assert.deepEqual(errorsOf({ kprobes, hostSelector: {} }), []);
    assert.deepEqual(errorsOf({ kprobes, hostSelector: { matchLabels: { a: "b" } } }), [
      "spec.hostSelector: only {} (every host process) is supported: write hostSelector: {} or delete it",
    ]);
    assert.deepEqual(errorsOf({ kprobes, hostSelector: {} }, "TracingPolicyNamespaced"), [
      "spec.hostSelector: a TracingPolicyNamespaced applies to its namespace's pods only: delete hostSelector",
    ]);
  });

  it("admits containerSelector on Tetragon's container fields (name, repo) and refuses another key or operator at its path", () => {
    const kprobes = [{ call: "fd_install" }];
    assert.deepEqual(errorsOf({ kprobes, containerSelector: { matchExpressions: [{ key: "name", operator: "In", values: ["app"] }] } }), []);
    assert.deepEqual(errorsOf({ kprobes, containerSelector: { matchExpressions: [{ key: "image", operator: "Equal", values: ["app"] }] } }).map((e) => e.split(":")[0]), [
      "spec.containerSelector.matchExpressions[0].key",
      "spec.containerSelector.matchExpressions[0].operator",
    ]);
  });

  it("names every other mistake at once", () => {
    assert.deepEqual(
      errorsOf({
        kprobes: [
          { call: "", args: [{ index: 1, type: "file" }, { index: 1, type: "nonsense" }] },
          { call: "tcp_connect", selectors: [{ matchActions: [{ action: "Override" }, { action: "Explode" }, { action: "Signal" }] }] },
        ],
        tracepoints: [{ subsystem: "syscalls" }],
        lsmhooks: "file_open",
        uprobes: [{ path: "bin/bash" }],
        usdts: [{ path: "/usr/bin/python3", provider: "python" }],
      }),
      [
        "spec.kprobes[0].call: required",
        "spec.kprobes[0].args[1].index: argument 1 is declared twice",
        'spec.kprobes[0].args[1].type: "nonsense" is not an argument type (one of auto, int, int8, uint8, int16, uint16, int32, uint32, int64, uint64, size_t, char_buf, char_iovec, const_buf, string, data_loc, fd, file, filename, path, dentry, skb, sock, sockaddr, socket, net_device, nop, bpf_attr, bpf_cmd, perf_event, bpf_map, user_namespace, capability, kiocb, iov_iter, cred, load_info, module, syscall64, kernel_cap_t, cap_inheritable, cap_permitted, cap_effective, linux_binprm, bpf_prog)',
        "spec.kprobes[1].selectors[0].matchActions[0].argError: Override needs argError, the error number the call returns (e.g. -1)",
        'spec.kprobes[1].selectors[0].matchActions[1].action: "Explode" is not an action (one of Post, NoPost, Sigkill, Signal, Override, GetUrl, DnsLookup, TrackSock, UntrackSock, NotifyEnforcer, CleanupEnforcerNotification, Set)',
        "spec.kprobes[1].selectors[0].matchActions[2].argSig: Signal needs argSig, a signal number 1-64",
        "spec.tracepoints[0].event: required",
        'spec.lsmhooks: must be a list, not "file_open"',
        'spec.uprobes[0].path: "bin/bash" is not an absolute path',
        "spec.uprobes[0].symbols: list at least one symbol (or offsets) to hook",
        "spec.usdts[0].name: required",
      ],
    );
  });

  it("limits selectors per hook and refuses a policy without hooks", () => {
    assert.deepEqual(errorsOf({ kprobes: [{ call: "x", selectors: [{}, {}, {}, {}, {}, {}] }] }), [
      "spec.kprobes[0].selectors: has 6 selectors; Tetragon reads at most 5 per hook",
    ]);
    assert.deepEqual(errorsOf({}), ["spec: declares no kprobes, fentries, tracepoints, lsmhooks, uprobes, usdts: the policy would trace nothing"]);
  });
});
