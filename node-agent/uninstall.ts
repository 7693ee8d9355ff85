// Uninstall on the node: an agent stopping because its own DaemonSet is gone (helm uninstall, kubectl delete) removes what Membrane put on the node; any other stop (rolling upgrade, pod deleted, restart) keeps it, so the pinned programs go on enforcing while no agent runs.
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { Informer } from "../kube/informer.ts";
import { type KubeClient, type KubeObject, KubeError, resourcePath } from "../kube/kube.ts";
import { DAEMONSETS } from "../kube/resources.ts";
import { detachTcx, type TcTarget } from "./bpf/loader.ts";

/** What the agent knows of its DaemonSet when it stops: from its watch, and a last read when the watch saw nothing. */
export type DaemonSetSeen = "present" | "deleting" | "gone" | "unknown";

/**
 * Whether a stopping agent removes the node's state. Only proof that the DaemonSet is gone or being deleted
 * counts: an API server that cannot be asked (or refuses: the uninstall may already have removed the agent's
 * RBAC) keeps the node enforcing, since removing it wrongly would open every pod. Pure.
 */
export function uninstalling(watched: DaemonSetSeen, read: DaemonSetSeen): boolean {
  return watched === "gone" || watched === "deleting" || read === "gone" || read === "deleting";
}

/** A DaemonSet object's state as seen: one with a deletionTimestamp is being deleted (foreground cascade). Pure. */
export function seenOf(ds: KubeObject | undefined): DaemonSetSeen {
  if (!ds) return "gone";
  return (ds.metadata as { deletionTimestamp?: string }).deletionTimestamp ? "deleting" : "present";
}

export interface OwnDaemonSetOptions {
  readonly client: KubeClient;
  readonly namespace: string;
  readonly name: string;
  readonly log: Logger;
}

/**
 * Watches the agent's own DaemonSet (a field selector: one object; get, list and watch on it by name). The watch
 * is opened at start, so its delete event arrives even when the uninstall removes the agent's RBAC and
 * ServiceAccount right after the DaemonSet: an open watch is not authorized again.
 */
export class OwnDaemonSet {
  private readonly informer: Informer<KubeObject>;
  private watched: DaemonSetSeen = "unknown";

  constructor(private readonly o: OwnDaemonSetOptions) {
    this.informer = new Informer<KubeObject>(o.client, DAEMONSETS, o.log, { namespace: o.namespace, fieldSelector: `metadata.name=${o.name}` });
    this.informer.on((ev) => {
      this.watched = ev.type === "delete" ? "gone" : seenOf(ev.obj);
      if (this.watched !== "present") o.log.info({ namespace: o.namespace, name: o.name, seen: this.watched }, "the agent's DaemonSet is being removed: the node's state goes with the agent");
    });
  }

  start(): void {
    this.informer.start();
    void this.informer.waitForSync().then(() => {
      if (this.watched === "unknown") this.watched = seenOf(this.informer.get(`${this.o.namespace}/${this.o.name}`));
    });
  }

  async stop(): Promise<void> {
    await this.informer.stop();
  }

  /** At the agent's stop: whether the DaemonSet is gone or being deleted (one bounded read when the watch saw neither). */
  async removed(timeoutMs = 1_500): Promise<boolean> {
    if (uninstalling(this.watched, "unknown")) return true;
    let read: DaemonSetSeen = "unknown";
    const p = resourcePath(DAEMONSETS, this.o.namespace, this.o.name);
    try {
      const ds = await Promise.race([this.o.client.get<KubeObject>(p), new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs).unref())]);
      read = seenOf(ds);
    } catch (err) {
      if (err instanceof KubeError && err.status === 404) read = "gone";
      else this.o.log.warn({ namespace: this.o.namespace, name: this.o.name, error: (err as Error).message }, "the agent's DaemonSet could not be read at stop: the node's state is kept");
    }
    return uninstalling(this.watched, read);
  }
}

export interface NodeStateRemovalOptions {
  /** The pin directories (/sys/fs/bpf/membrane/<scope>): the datapath's, whose link pins name every tcx attachment,
   *  and the socket translation's (its cgroup links go with their pins once the agent's fds are closed). */
  readonly pinDirs: readonly string[];
  /** Directories only Membrane writes (the agent's state, the L7 proxy's sockets): removed, or emptied when one is a mount point (a hostPath). */
  readonly dirs: readonly string[];
  /** Files of the agent's elsewhere (its CNI and Hubble sockets); their directory goes too when that leaves it empty. */
  readonly files: readonly string[];
  readonly log: Logger;
}

/**
 * Removes the agent's node state after the agent has stopped: every tcx link it pinned is detached (pod veths,
 * node device, overlay, host firewall devices; a clsact filter of a kernel without tcx too), then the maps' pins
 * and the files it kept. The pods' veths, addresses and routes stay: running pods keep a plain, unenforced network,
 * as with Cilium. The CNI plugin and conflist stay too: the container runtime tears a pod's sandbox down through
 * them (the plugin's DEL needs no agent), and with no conflist it refuses to, leaving every pod the node still runs
 * (the chart's webhook among them) stuck Terminating. Returns what was removed, one line each.
 */
export function removeNodeState(o: NodeStateRemovalOptions): string[] {
  const removed: string[] = [];
  for (const pinDir of o.pinDirs) removed.push(...removePins(pinDir, o.log));
  for (const dir of o.dirs) {
    const entries = listDir(dir);
    for (const f of entries) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
    removeIfEmpty(dir);
    if (entries.length > 0) removed.push(`files ${dir} (${entries.length})`);
  }
  for (const file of o.files) {
    if (!fs.existsSync(file)) continue;
    fs.rmSync(file, { force: true });
    removeIfEmpty(path.dirname(file));
    removed.push(`file ${file}`);
  }
  o.log.info({ removed }, "uninstalled: Membrane's programs, pins and state removed from the node");
  return removed;
}

/** Detaches the tcx links pinned in pinDir/links, then removes every pin there (maps, other links); `membrane node cleanup` uses it too. */
export function removePins(pinDir: string, log: Logger): string[] {
  const removed: string[] = [];
  const linksDir = path.join(pinDir, "links");
  for (const name of listDir(linksDir)) {
    const target = linkTarget(name);
    if (!target) continue;
    try {
      detachTcx(target, path.join(linksDir, name));
      removed.push(`tcx ${target.netns ?? "host"} ifindex ${target.ifindex} ${target.direction}`);
    } catch (err) {
      log.error({ pin: name, error: (err as Error).message }, "detaching a program failed");
    }
  }
  if (fs.existsSync(pinDir)) {
    fs.rmSync(pinDir, { recursive: true, force: true });
    removed.push(`pins ${pinDir}`);
  }
  removeIfEmpty(path.dirname(pinDir)); // /sys/fs/bpf/membrane: other scopes (the runtime's) stay when still there
  return removed;
}

/** The target a link pin names (datapath.ts linkPin: `<netns>-<ifindex>-<direction>`, the netns %-escaped, "host" for none). */
export function linkTarget(pinName: string): TcTarget | undefined {
  const m = /^(.+)-(\d+)-(ingress|egress)$/.exec(pinName);
  if (!m) return undefined;
  const netns = decodeURIComponent(m[1]!);
  return { ifindex: Number(m[2]), direction: m[3] as TcTarget["direction"], ...(netns === "host" ? {} : { netns }) };
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function removeIfEmpty(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    // not empty, or already gone
  }
}
