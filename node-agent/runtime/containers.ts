// Which container a process is in, on a node whose kubelet gives each container a cgroup named by its ID: a live
// process's /proc/PID/cgroup (v2 line first, then v1's), a gone one's cgroup v2 id (the sensor's record) through
// the cgroup tree, and the cgroup v2 id of a container for rules the kernel judges by cgroup.
import fs from "node:fs";
import path from "node:path";
import { containerIdFromCgroupPath, containerIdFromProcCgroup, type PodContainer } from "../../core/container.ts";
import { CGROUP2_ROOT } from "./connect-enforcer.ts";
import type { PodRef } from "./events.ts";
/** How deep the tree is walked for containers' cgroups (`/<node>/kubepods/<qos>/pod<uid>/<id>` is 5). */
const MAX_DEPTH = 8;
/** A miss rescans the tree at most this often. */
const RESCAN_MS = 1000;

export interface ContainerCgroupsOptions {
  readonly procRoot?: string;
  readonly cgroupRoot?: string;
}

export class ContainerCgroups {
  private readonly proc: string;
  private readonly root: string;
  /** cgroup v2 id → container ID, and back, from the last scan (and live processes read since). */
  private byCgroup = new Map<bigint, string>();
  private byContainer = new Map<string, bigint>();
  /** container ID → its cgroup v2 directory, from the last scan. */
  private dirs = new Map<string, string>();
  /** container ID → the process whose root stands for the container's (kept while it lives in that container). */
  private anchors = new Map<string, number>();
  private scannedAt = 0;

  constructor(opts: ContainerCgroupsOptions = {}) {
    this.proc = opts.procRoot ?? "/proc";
    this.root = opts.cgroupRoot ?? CGROUP2_ROOT;
  }

  /** The container ID of a live process, or undefined (gone, or in no container's cgroup). */
  ofPid(pid: number): string | undefined {
    try {
      return containerIdFromProcCgroup(fs.readFileSync(`${this.proc}/${pid}/cgroup`, "utf8"));
    } catch {
      return undefined;
    }
  }

  /** The container ID of a cgroup v2 id (a record of a process that may be gone by now); rescans once a second on a miss. */
  ofCgroupId(id: bigint): string | undefined {
    if (id === 0n) return undefined;
    const hit = this.byCgroup.get(id);
    if (hit !== undefined || !this.rescan()) return hit;
    return this.byCgroup.get(id);
  }

  /** The cgroup v2 id of a container's cgroup, or undefined when the tree has none (not started, or not in the v2 tree). */
  cgroupIdOf(containerId: string): bigint | undefined {
    const hit = this.byContainer.get(containerId);
    if (hit !== undefined || !this.rescan()) return hit;
    return this.byContainer.get(containerId);
  }

  /**
   * A process of the container, the lowest pid in its cgroup v2 directory (its first, as a rule), kept while it lives
   * there: `/proc/PID/root` is the container's own root filesystem, which a process in another mount namespace (the
   * runtime in the agent's container) reaches only through it. Undefined when the container has no process in the tree.
   */
  processIn(containerId: string): number | undefined {
    const kept = this.anchors.get(containerId);
    if (kept !== undefined && this.ofPid(kept) === containerId) return kept;
    this.anchors.delete(containerId);
    if (!this.dirs.has(containerId)) this.rescan();
    const dir = this.dirs.get(containerId);
    if (dir === undefined) return undefined;
    let pids: number[];
    try {
      pids = fs.readFileSync(path.join(dir, "cgroup.procs"), "utf8").split("\n").filter((l) => l !== "").map(Number);
    } catch {
      return undefined;
    }
    if (pids.length === 0) return undefined;
    const pid = Math.min(...pids);
    this.anchors.set(containerId, pid);
    return pid;
  }

  /** Walks the cgroup v2 tree now (the next miss rescans at once). */
  refresh(): void {
    this.scannedAt = 0;
    this.rescan();
  }

  private rescan(): boolean {
    const now = Date.now();
    if (now - this.scannedAt < RESCAN_MS) return false;
    this.scannedAt = now;
    const byCgroup = new Map<bigint, string>();
    const byContainer = new Map<string, bigint>();
    const dirs = new Map<string, string>();
    const walk = (dir: string, depth: number): void => {
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        if (!e.isDirectory()) continue;
        const full = path.join(dir, e.name);
        const id = containerIdFromCgroupPath(e.name);
        if (id !== undefined) {
          try {
            // A cgroup v2 directory's inode number is its cgroup id (what bpf_get_current_cgroup_id returns).
            const ino = fs.statSync(full, { bigint: true }).ino;
            byCgroup.set(ino, id);
            if (!byContainer.has(id)) {
              byContainer.set(id, ino);
              dirs.set(id, full);
            }
          } catch {
            // removed meanwhile
          }
          continue;
        }
        if (depth < MAX_DEPTH) walk(full, depth + 1);
      }
    };
    walk(this.root, 0);
    this.byCgroup = byCgroup;
    this.byContainer = byContainer;
    this.dirs = dirs;
    return true;
  }
}

/** The pod's container of that ID, if the pod's status lists it. */
export function podContainer(pod: PodRef | undefined, containerId: string | undefined): PodContainer | undefined {
  if (pod === undefined || containerId === undefined) return undefined;
  return pod.containers?.find((c) => c.id === containerId);
}
