// Informer tests against a scripted HTTP API server: relist after a dropped watch and after 410 Gone
// delivers every change made meanwhile, and failures back off instead of looping.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { KubeClient, type KubeObject } from "./kube.ts";
import { Informer, type InformerEvent } from "./informer.ts";
import { IDENTITIES } from "./resources.ts";
import { writeKubeconfig } from "../controllers/testing/kubeconfig.ts";

const log = pino({ level: "silent" });

/** A fake collection: objects with resourceVersions, a list endpoint and a watch endpoint the test drives. */
class FakeApi {
  rv = 1;
  objects = new Map<string, KubeObject>();
  watches: http.ServerResponse[] = [];
  requests: { kind: "list" | "watch"; at: number; rv?: string }[] = [];
  failLists = 0;
  goneNextWatch = false;
  server = http.createServer((req, res) => this.handle(req, res));

  put(name: string, meta: Partial<KubeObject["metadata"]> = {}): KubeObject {
    const obj: KubeObject = { metadata: { name, resourceVersion: String(++this.rv), ...meta } };
    const type = this.objects.has(name) ? "MODIFIED" : "ADDED";
    this.objects.set(name, obj);
    for (const w of this.watches) w.write(JSON.stringify({ type, object: obj }) + "\n");
    return obj;
  }

  remove(name: string, notify = true): void {
    const obj = this.objects.get(name);
    this.objects.delete(name);
    this.rv++;
    if (notify && obj) for (const w of this.watches) w.write(JSON.stringify({ type: "DELETED", object: obj }) + "\n");
  }

  dropWatches(): void {
    for (const w of this.watches.splice(0)) w.destroy();
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.searchParams.get("watch") === "true") {
      this.requests.push({ kind: "watch", at: Date.now(), rv: url.searchParams.get("resourceVersion") ?? undefined });
      res.writeHead(200, { "content-type": "application/json" });
      if (this.goneNextWatch) {
        this.goneNextWatch = false;
        res.end(JSON.stringify({ type: "ERROR", object: { kind: "Status", code: 410, reason: "Expired", message: "too old resource version" } }) + "\n");
        return;
      }
      res.write("");
      this.watches.push(res);
      res.on("close", () => (this.watches = this.watches.filter((w) => w !== res)));
      return;
    }
    this.requests.push({ kind: "list", at: Date.now() });
    if (this.failLists > 0) {
      this.failLists--;
      res.writeHead(503, { "content-type": "application/json" });
      res.end(JSON.stringify({ kind: "Status", code: 503, reason: "ServiceUnavailable", message: "unavailable" }));
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ metadata: { resourceVersion: String(this.rv) }, items: [...this.objects.values()] }));
  }

  async start(): Promise<{ path: string; remove: () => void }> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return writeKubeconfig(`http://127.0.0.1:${(this.server.address() as AddressInfo).port}`);
  }

  async stop(): Promise<void> {
    this.dropWatches();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function setup(): Promise<{ api: FakeApi; informer: Informer<KubeObject>; events: InformerEvent<KubeObject>[]; cleanup: () => Promise<void> }> {
  const api = new FakeApi();
  const kubeconfig = await api.start();
  const client = await KubeClient.fromKubeconfig(kubeconfig.path);
  const informer = new Informer<KubeObject>(client, IDENTITIES, log, { backoff: { baseMs: 50, maxMs: 400, jitter: 0 } });
  const events: InformerEvent<KubeObject>[] = [];
  informer.on((ev) => events.push(ev));
  return {
    api,
    informer,
    events,
    cleanup: async () => {
      await informer.stop();
      client.close();
      await api.stop();
      kubeconfig.remove();
    },
  };
}

const names = (evs: InformerEvent<KubeObject>[], type: string): string[] => evs.filter((e) => e.type === type).map((e) => e.obj.metadata.name);

test("a dropped watch is followed by a relist that delivers every change made while it was down", async () => {
  const { api, informer, events, cleanup } = await setup();
  try {
    api.put("a");
    api.put("b");
    informer.start();
    await informer.waitForSync();
    await until(() => api.watches.length === 1);
    api.put("c"); // seen on the watch
    await until(() => names(events, "add").includes("c"));
    api.dropWatches();
    // While the connection is down: one added, one changed, one deleted without any watch to tell.
    api.put("d");
    api.put("a");
    api.remove("b", false);
    await until(() => names(events, "add").includes("d") && names(events, "delete").includes("b") && names(events, "update").includes("a"));
    assert.deepEqual(informer.list().map((o) => o.metadata.name).sort(), ["a", "c", "d"]);
    assert.ok(informer.stats.lists >= 2, "relisted");
  } finally {
    await cleanup();
  }
});

test("410 Gone on the watch leads to a relist, not a silent stop", async () => {
  const { api, informer, events, cleanup } = await setup();
  try {
    api.put("a");
    api.goneNextWatch = true;
    informer.start();
    await informer.waitForSync();
    await until(() => api.watches.length === 1);
    assert.equal(informer.stats.lists, 2);
    api.put("e");
    await until(() => names(events, "add").includes("e"));
  } finally {
    await cleanup();
  }
});

test("a failing list is retried with growing delays, never in a tight loop", async () => {
  const { api, informer, cleanup } = await setup();
  try {
    api.failLists = 4;
    informer.start();
    await informer.waitForSync();
    const lists = api.requests.filter((r) => r.kind === "list").map((r) => r.at);
    assert.equal(lists.length, 5);
    const gaps = lists.slice(1).map((t, i) => t - (lists[i] ?? 0));
    // Backoff 50, 100, 200, 400 ms (no jitter in this test).
    for (const [i, g] of gaps.entries()) assert.ok(g >= 50 * 2 ** i - 5, `gap ${i}: ${g} ms`);
  } finally {
    await cleanup();
  }
});

test("a watch resumes from the last resourceVersion it saw", async () => {
  const { api, informer, cleanup } = await setup();
  try {
    informer.start();
    await informer.waitForSync();
    await until(() => api.watches.length === 1);
    const last = api.put("x");
    await until(() => informer.get("x") !== undefined);
    // A clean server-side end of the watch (as at timeoutSeconds) re-watches without relisting.
    for (const w of api.watches.splice(0)) w.end();
    await until(() => api.requests.filter((r) => r.kind === "watch").length === 2);
    const watches = api.requests.filter((r) => r.kind === "watch");
    assert.equal(watches[1]?.rv, last.metadata.resourceVersion);
    assert.equal(informer.stats.lists, 1);
  } finally {
    await cleanup();
  }
});

test("the cache holds objects without their managedFields, from the list and from the watch, and everything else as served", async () => {
  const { api, informer, events, cleanup } = await setup();
  const managed = [{ manager: "kubectl", operation: "Apply", fieldsType: "FieldsV1", fieldsV1: { "f:metadata": { "f:labels": { "f:app": {} } } } }];
  try {
    api.put("listed", { labels: { app: "web" }, uid: "u1", managedFields: managed });
    informer.start();
    await informer.waitForSync();
    await until(() => api.watches.length === 1);
    api.put("watched", { labels: { app: "db" }, annotations: { a: "b" }, managedFields: managed });
    await until(() => informer.get("watched") !== undefined);
    for (const name of ["listed", "watched"]) {
      const obj = informer.get(name)!;
      assert.equal(obj.metadata.managedFields, undefined, `${name}: managedFields dropped`);
      assert.ok(!JSON.stringify(obj).includes("managedFields"), `${name}: nothing of them is serialised`);
      assert.equal(obj.metadata.name, name);
      assert.ok(obj.metadata.resourceVersion);
    }
    assert.deepEqual(informer.get("listed")!.metadata.labels, { app: "web" });
    assert.equal(informer.get("listed")!.metadata.uid, "u1");
    assert.deepEqual(informer.get("watched")!.metadata.annotations, { a: "b" });
    // Handlers see the objects as cached.
    assert.ok(events.every((e) => e.obj.metadata.managedFields === undefined));
  } finally {
    await cleanup();
  }
});
