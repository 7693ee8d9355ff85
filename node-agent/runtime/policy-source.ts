// The files `membrane runtime` is driven by: the TracingPolicies to enforce (YAML documents, as `kubectl apply -f`
// takes them) and the node's pods (JSON: network namespace, namespace, name, labels), each read and then polled
// against the version last read, so a change is never missed; a file that does not parse keeps the last good one.
import fs from "node:fs";
import { parseAllDocuments } from "yaml";
import type { PodContainer } from "../../core/container.ts";
import type { PodRef } from "./events.ts";

export type Read<T> = { ok: true; value: T } | { ok: false; error: string };

const KINDS = new Set(["TracingPolicy", "TracingPolicyNamespaced"]);

/** The TracingPolicy objects of a YAML file (a List's items too); empty documents are skipped. */
export function parsePolicies(text: string, file: string): Read<unknown[]> {
  const out: unknown[] = [];
  const docs = parseAllDocuments(text);
  for (let i = 0; i < docs.length; i++) {
    const doc = docs[i]!;
    if (doc.errors.length > 0) return { ok: false, error: `${file}: document ${i + 1}: ${doc.errors[0]!.message}` };
    const v: unknown = doc.toJS();
    if (v === null || v === undefined) continue;
    const items = isObject(v) && v.kind === "List" && Array.isArray(v.items) ? (v.items as unknown[]) : [v];
    for (const item of items) {
      if (!isObject(item) || !KINDS.has(String(item.kind))) {
        return { ok: false, error: `${file}: document ${i + 1}: kind ${JSON.stringify(isObject(item) ? item.kind : item)} is not TracingPolicy or TracingPolicyNamespaced` };
      }
      out.push(item);
    }
  }
  return { ok: true, value: out };
}

/** The node's pods: `{"pods": [{"netns": "/var/run/netns/NAME" or an inode number, "namespace", "name", "labels", "containers"?: [{"id", "name", "image", "imageId", "startedAt"}]}]}`, keyed by netns inode. */
export function parsePods(text: string, file: string): Read<Map<number, PodRef>> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `${file}: ${(err as Error).message}` };
  }
  if (!isObject(v) || !Array.isArray(v.pods)) return { ok: false, error: `${file}: pods: required, a list` };
  const out = new Map<number, PodRef>();
  for (const [i, p] of (v.pods as unknown[]).entries()) {
    const at = `${file}: pods[${i}]`;
    if (!isObject(p)) return { ok: false, error: `${at}: must be an object` };
    if (typeof p.namespace !== "string" || p.namespace === "") return { ok: false, error: `${at}.namespace: required` };
    if (typeof p.name !== "string" || p.name === "") return { ok: false, error: `${at}.name: required` };
    let inode: number;
    if (typeof p.netns === "number" && Number.isInteger(p.netns) && p.netns > 0) inode = p.netns;
    else if (typeof p.netns === "string" && p.netns.startsWith("/")) {
      try {
        inode = fs.statSync(p.netns).ino;
      } catch {
        continue; // the pod's namespace is gone: it has no processes to judge
      }
    } else return { ok: false, error: `${at}.netns: a network namespace path or inode number` };
    const labels = isObject(p.labels) ? Object.fromEntries(Object.entries(p.labels).filter((e): e is [string, string] => typeof e[1] === "string")) : {};
    const containers: PodContainer[] = [];
    if (p.containers !== undefined) {
      if (!Array.isArray(p.containers)) return { ok: false, error: `${at}.containers: must be a list` };
      for (const [j, c] of (p.containers as unknown[]).entries()) {
        if (!isObject(c) || typeof c.id !== "string" || c.id === "" || typeof c.name !== "string" || c.name === "") return { ok: false, error: `${at}.containers[${j}]: id and name required` };
        containers.push({ id: c.id, name: c.name, image: typeof c.image === "string" ? c.image : "", imageId: typeof c.imageId === "string" ? c.imageId : "", ...(typeof c.startedAt === "string" ? { startedAt: c.startedAt } : {}) });
      }
    }
    out.set(inode, { namespace: p.namespace, name: p.name, labels, ...(p.containers !== undefined ? { containers } : {}) });
  }
  return { ok: true, value: out };
}

/** A file polled for changes (inode, mtime, size) against the version last read. Reads are asynchronous: the
 * process answering fanotify permission events must never wait on an open itself (the file may be in a marked
 * directory). */
export class PolledFile {
  private seen: { ino: number; mtimeMs: number; size: number } | "absent" | undefined;
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(
    private readonly file: string,
    private readonly onChange: (text: string) => void,
    private readonly intervalMs = 250,
  ) {}

  /** Reads the file now (resolves once onChange saw it) and then whenever it changes. */
  async start(): Promise<void> {
    await this.check();
    this.timer = setInterval(() => void this.check(), this.intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async check(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      let stamp: PolledFile["seen"];
      let text = "";
      try {
        const st = await fs.promises.stat(this.file);
        stamp = { ino: st.ino, mtimeMs: st.mtimeMs, size: st.size };
        const s = this.seen;
        if (s !== undefined && s !== "absent" && s.ino === stamp.ino && s.mtimeMs === stamp.mtimeMs && s.size === stamp.size) return;
        text = await fs.promises.readFile(this.file, "utf8");
      } catch {
        stamp = "absent";
        if (this.seen === "absent") return;
      }
      this.seen = stamp;
      this.onChange(text);
    } finally {
      this.busy = false;
    }
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
