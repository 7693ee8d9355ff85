// The runtime's pin scopes under /sys/fs/bpf/membrane, named from its --bpf-scope (default "runtime": the names every
// runtime used before the flag, so pins an older runtime left are adopted): the sensor's maps, the connect programs'
// and the tracepoint programs'. Tests give each run a scope of its own, so two runs never touch each other's pins.
import fs from "node:fs";
import path from "node:path";
import { BPFFS_ROOT } from "../bpf/loader.ts";
import { removeConnectPins } from "./connect-enforcer.ts";
import { removeTracepointPins } from "./tracepoint-enforcer.ts";

export const DEFAULT_RUNTIME_BPF_SCOPE = "runtime";

export interface RuntimePinScopes {
  /** The process sensor's maps (its programs end with the process). */
  readonly sensor: string;
  /** The connect programs' links and rules (they outlive the process). */
  readonly connect: string;
  /** The tracepoint programs' links and rules (they outlive the process). */
  readonly tracepoint: string;
}

/** A scope as bpffs directory names allow it, or the error naming the flag that gave it. */
export function checkRuntimeBpfScope(flag: string, scope: string): string | undefined {
  return /^[A-Za-z0-9._-]+$/.test(scope) ? undefined : `${flag}: must be letters, digits, '.', '_' or '-', got ${JSON.stringify(scope)}`;
}

export function runtimePinScopes(scope: string = DEFAULT_RUNTIME_BPF_SCOPE): RuntimePinScopes {
  return { sensor: scope, connect: `${scope}-connect`, tracepoint: `${scope}-tracepoint` };
}

/** Removes what a runtime of this scope that is gone left pinned (its programs detach with their links); the scopes removed. */
export function removeRuntimePins(scope: string = DEFAULT_RUNTIME_BPF_SCOPE): string[] {
  const s = runtimePinScopes(scope);
  const removed = [removeConnectPins(s.connect) ? s.connect : [], removeTracepointPins(s.tracepoint) ? s.tracepoint : []].flat();
  fs.rmSync(path.join(BPFFS_ROOT, s.sensor), { recursive: true, force: true });
  return removed;
}
