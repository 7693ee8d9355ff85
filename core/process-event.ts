// Tetragon's process event shapes (process_exec, process_exit as `tetra getevents -o json` prints them) and the
// filters of `membrane observe --type process`: what the agent exports and the CLI reads.

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
  pod?: { namespace: string; name: string };
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

export function matchesProcessFilter(e: ProcessEvent, f: ProcessFilter): boolean {
  const p = "process_exec" in e ? e.process_exec.process : e.process_exit.process;
  if (f.namespace !== undefined && p.pod?.namespace !== f.namespace) return false;
  if (f.pod !== undefined && p.pod?.name !== f.pod) return false;
  if (f.binary !== undefined && p.binary !== f.binary && !p.binary.endsWith(`/${f.binary}`)) return false;
  return true;
}
