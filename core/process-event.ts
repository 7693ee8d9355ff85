// Tetragon's process event shapes (process_exec, process_exit as `tetra getevents -o json` prints them) and the
// filters of `membrane observe --type process`: what the agent exports and the CLI reads.

import type { TetragonContainer } from "./container.ts";

/** Tetragon's Process message, the fields Membrane fills. */
export interface TetragonProcess {
  exec_id: string;
  pid: number;
  uid: number;
  cwd: string;
  binary: string;
  arguments: string;
  flags: string;
  start_time: string;
  /** The pod, and the container where the node knows it (real nodes; a process-based pod has none). */
  pod?: { namespace: string; name: string; container?: TetragonContainer };
  parent_exec_id?: string;
  tid: number;
}

export interface ProcessExecEvent {
  process_exec: { process: TetragonProcess; parent?: TetragonProcess; ancestors?: TetragonProcess[] };
  node_name: string;
  time: string;
}

export interface ProcessExitEvent {
  process_exit: { process: TetragonProcess; parent?: TetragonProcess; signal?: string; status: number; time: string };
  node_name: string;
  time: string;
}

export type ProcessEvent = ProcessExecEvent | ProcessExitEvent;

/** `observe --type process` filters: pod name, namespace, binary (exact path or a trailing /name). */
export interface ProcessFilter {
  readonly pod?: string;
  readonly namespace?: string;
  readonly binary?: string;
}

export function matchesProcessFilter(e: RuntimeEvent, f: ProcessFilter): boolean {
  const p = processOf(e);
  if (f.namespace !== undefined && p.pod?.namespace !== f.namespace) return false;
  if (f.pod !== undefined && p.pod?.name !== f.pod) return false;
  if (f.binary !== undefined && p.binary !== f.binary && !p.binary.endsWith(`/${f.binary}`)) return false;
  return true;
}

/** One argument of a hooked call, as Tetragon's events carry it (only the kinds Membrane fills). */
export type TetragonArg =
  | { file_arg: { path: string } }
  | { path_arg: { path: string } }
  | { string_arg: string }
  | { linux_binprm_arg: { path: string } }
  | { sock_arg: { family: string; protocol: string; daddr: string; dport: number } }
  | { sockaddr_arg: { family: string; addr: string; port: number } }
  // Integers as Tetragon's JSON carries them: 32-bit ones as numbers, 64-bit ones as strings (protojson's rule).
  | { int_arg: number }
  | { uint_arg: number }
  | { long_arg: string }
  | { size_arg: string };

/** What a policy's hook reports (Tetragon's process_kprobe and process_lsm). */
export interface HookCall {
  process: TetragonProcess;
  parent?: TetragonProcess;
  ancestors?: TetragonProcess[];
  function_name: string;
  args: TetragonArg[];
  /** KPROBE_ACTION_POST, KPROBE_ACTION_SIGKILL, KPROBE_ACTION_OVERRIDE, KPROBE_ACTION_SIGNAL. */
  action: string;
  policy_name: string;
}

export interface ProcessKprobeEvent {
  process_kprobe: HookCall;
  node_name: string;
  time: string;
}

export interface ProcessLsmEvent {
  process_lsm: HookCall;
  node_name: string;
  time: string;
}

/** What a policy's tracepoint reports (Tetragon's process_tracepoint). */
export interface TracepointCall {
  process: TetragonProcess;
  parent?: TetragonProcess;
  ancestors?: TetragonProcess[];
  subsys: string;
  event: string;
  args: TetragonArg[];
  /** KPROBE_ACTION_POST, KPROBE_ACTION_SIGKILL, KPROBE_ACTION_SIGNAL (Tetragon's names for every hook type). */
  action: string;
  policy_name: string;
}

export interface ProcessTracepointEvent {
  process_tracepoint: TracepointCall;
  node_name: string;
  time: string;
}

export type RuntimeEvent = ProcessEvent | ProcessKprobeEvent | ProcessLsmEvent | ProcessTracepointEvent;

/** The Tetragon event type of an event (its one top-level key besides node_name and time). */
export type RuntimeEventType = "process_exec" | "process_exit" | "process_kprobe" | "process_lsm" | "process_tracepoint";
export const RUNTIME_EVENT_TYPES: readonly RuntimeEventType[] = ["process_exec", "process_exit", "process_kprobe", "process_lsm", "process_tracepoint"];

export function eventType(e: RuntimeEvent): RuntimeEventType {
  return "process_exec" in e ? "process_exec" : "process_exit" in e ? "process_exit" : "process_kprobe" in e ? "process_kprobe" : "process_lsm" in e ? "process_lsm" : "process_tracepoint";
}

/** The process an event is about, whatever its type. */
export function processOf(e: RuntimeEvent): TetragonProcess {
  if ("process_exec" in e) return e.process_exec.process;
  if ("process_exit" in e) return e.process_exit.process;
  if ("process_kprobe" in e) return e.process_kprobe.process;
  if ("process_lsm" in e) return e.process_lsm.process;
  return e.process_tracepoint.process;
}
