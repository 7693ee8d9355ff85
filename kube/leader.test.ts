// Leader election against a scripted Lease endpoint: one leader at a time, takeover after expiry,
// optimistic concurrency on writes, release on stop (also with a renewal in flight), step-down when renewals fail, and the poll alone
// when the standby may not watch. The watch against a real API server: controllers/shutdown.cluster.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { KubeClient } from "./kube.ts";
import { LeaderElector, type LeaderElectionOptions } from "./leader.ts";
import { writeKubeconfig } from "../controllers/testing/kubeconfig.ts";

const log = pino({ level: "silent" });
const TIMING = { leaseDurationMs: 1000, renewDeadlineMs: 600, retryPeriodMs: 100 };

type FakeLease = { metadata: Record<string, unknown>; spec: Record<string, unknown> };

class FakeLeases {
  lease: FakeLease | undefined;
  rv = 0;
  down = false;
  /** As a Role without `list`/`watch` on leases: the standby's watch is refused, its poll must do. */
  forbidWatch = false;
  writes = 0;
  /** When set, the next PUT naming this holder is written at once but answered only when `releaseHeld` is called: a try in flight. */
  holdNextPutBy: string | undefined;
  heldAnswer: (() => void) | undefined;
  releaseHeld(): void {
    const answer = this.heldAnswer;
    this.heldAnswer = undefined;
    answer?.();
  }
  /** Every write with its resourceVersion, replayed to a watch from the version it asks for. */
  private readonly history: { rv: number; type: "ADDED" | "MODIFIED"; object: FakeLease }[] = [];
  private readonly watchers = new Set<http.ServerResponse>();
  server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      const send = (code: number, obj: unknown): void => {
        res.writeHead(code, { "content-type": "application/json" });
        res.end(JSON.stringify(obj));
      };
      if (this.down) return send(503, { kind: "Status", code: 503, reason: "ServiceUnavailable", message: "down" });
      const url = new URL(req.url ?? "/", "http://fake");
      if (req.method === "GET" && url.pathname.endsWith("/leases")) {
        if (this.forbidWatch) return send(403, { kind: "Status", code: 403, reason: "Forbidden", message: "leases is forbidden" });
        if (url.searchParams.get("watch") !== "true") return send(200, { metadata: { resourceVersion: String(this.rv) }, items: this.lease ? [this.lease] : [] });
        res.writeHead(200, { "content-type": "application/json" });
        const from = Number(url.searchParams.get("resourceVersion") ?? "0");
        for (const ev of this.history) if (ev.rv > from) res.write(`${JSON.stringify({ type: ev.type, object: ev.object })}\n`);
        this.watchers.add(res);
        res.on("close", () => this.watchers.delete(res));
        return;
      }
      if (req.method === "GET") return this.lease ? send(200, this.lease) : send(404, { kind: "Status", code: 404, reason: "NotFound", message: "not found" });
      const obj = JSON.parse(body) as FakeLease;
      if (req.method === "POST" && this.lease) return send(409, { kind: "Status", code: 409, reason: "AlreadyExists", message: "exists" });
      if (req.method === "PUT" && obj.metadata.resourceVersion !== this.lease?.metadata.resourceVersion) {
        return send(409, { kind: "Status", code: 409, reason: "Conflict", message: "the object has been modified" });
      }
      this.writes++;
      const type = this.lease ? "MODIFIED" : "ADDED";
      this.lease = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(++this.rv) } };
      this.history.push({ rv: this.rv, type, object: this.lease });
      for (const w of this.watchers) w.write(`${JSON.stringify({ type, object: this.lease })}\n`);
      const written = this.lease;
      if (req.method === "PUT" && this.holdNextPutBy !== undefined && written.spec.holderIdentity === this.holdNextPutBy) {
        this.holdNextPutBy = undefined;
        this.heldAnswer = () => send(200, written);
        return;
      }
      send(200, written);
    });
  });

  async start(): Promise<{ kubeconfig: string; cleanup: () => Promise<void> }> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    const kc = writeKubeconfig(`http://127.0.0.1:${(this.server.address() as AddressInfo).port}`);
    return {
      kubeconfig: kc.path,
      cleanup: async () => {
        this.server.closeAllConnections();
        await new Promise<void>((r) => this.server.close(() => r()));
        kc.remove();
      },
    };
  }
}

const elector = (client: KubeClient, identity: string, timing: Partial<LeaderElectionOptions> = {}): LeaderElector =>
  new LeaderElector(client, { namespace: "ns", name: "lease", identity, ...TIMING, ...timing }, log);

/** A fake Lease endpoint and a client of it for one test, removed after it whatever happens. */
async function withLeases(fn: (api: FakeLeases, client: KubeClient) => Promise<void>): Promise<void> {
  const api = new FakeLeases();
  const { kubeconfig, cleanup } = await api.start();
  const client = await KubeClient.fromKubeconfig(kubeconfig);
  try {
    await fn(api, client);
  } finally {
    api.releaseHeld();
    client.close();
    await cleanup();
  }
}

/** An elector running, once it leads. */
async function leading(client: KubeClient, identity: string): Promise<{ elector: LeaderElector; run: Promise<"lost" | "stopped"> }> {
  const e = elector(client, identity);
  let leads = false;
  const run = e.run(() => (leads = true));
  while (!leads) await new Promise((r) => setTimeout(r, 10));
  return { elector: e, run };
}


test("one leader at a time; the standby takes over after the lease expires; stop releases", async () => {
  const api = new FakeLeases();
  const { kubeconfig, cleanup } = await api.start();
  const client = await KubeClient.fromKubeconfig(kubeconfig);
  try {
    const a = elector(client, "a");
    let aLeads = 0;
    const aRun = a.run(() => aLeads++);
    while (aLeads === 0) await new Promise((r) => setTimeout(r, 10));
    assert.equal(api.lease?.spec.holderIdentity, "a");

    const b = elector(client, "b");
    let bLedAt = 0;
    const bRun = b.run(() => (bLedAt = Date.now()));
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(bLedAt, 0, "b waits while a renews");

    // a stops renewing without releasing (as if killed): take its loop down and freeze the lease.
    api.down = true;
    const stoppedAt = Date.now();
    assert.equal(await aRun, "lost", "a steps down when it cannot renew within the renew deadline");
    // Counted from its last successful renewal, which happened up to one retry period before the outage.
    assert.ok(Date.now() - stoppedAt >= TIMING.renewDeadlineMs - 2 * TIMING.retryPeriodMs, "not before the renew deadline");
    api.down = false;
    while (bLedAt === 0) await new Promise((r) => setTimeout(r, 10));
    assert.equal(api.lease?.spec.holderIdentity, "b");
    assert.equal(api.lease?.spec.leaseTransitions, 1);

    await b.stop();
    assert.equal(await bRun, "stopped");
    assert.equal(api.lease?.spec.holderIdentity, null, "released on stop");
    // After a release the next candidate acquires without waiting for expiry.
    const c = elector(client, "c");
    const t0 = Date.now();
    let cLeads = false;
    const cRun = c.run(() => (cLeads = true));
    while (!cLeads) await new Promise((r) => setTimeout(r, 10));
    assert.ok(Date.now() - t0 < TIMING.leaseDurationMs, "no wait after a release");
    await c.stop();
    await cRun;
  } finally {
    client.close();
    await cleanup();
  }
});

test("a standby that may not watch the Lease (a Role without list/watch) still takes over a released Lease at its next poll", async () => {
  const api = new FakeLeases();
  api.forbidWatch = true;
  const { kubeconfig, cleanup } = await api.start();
  const client = await KubeClient.fromKubeconfig(kubeconfig);
  try {
    const a = elector(client, "a");
    let aLeads = false;
    const aRun = a.run(() => (aLeads = true));
    while (!aLeads) await new Promise((r) => setTimeout(r, 10));
    const b = elector(client, "b");
    let bLeads = false;
    const bRun = b.run(() => (bLeads = true));
    while (b.stats.polls === 0) await new Promise((r) => setTimeout(r, 10));
    await a.stop();
    assert.equal(await aRun, "stopped");
    while (!bLeads) await new Promise((r) => setTimeout(r, 10));
    assert.equal(api.lease?.spec.holderIdentity, "b");
    assert.equal(b.stats.wakes, 0, "nothing watched: the poll took it");
    assert.equal(b.stats.leaseEvents, 0);
    await b.stop();
    await bRun;
  } finally {
    client.close();
    await cleanup();
  }
});

test("stop while a renewal is in flight: the renewal is written but not yet answered, and the Lease is still released", () =>
  withLeases(async (api, client) => {
    // The renewal's answer arrives within stop()'s wait for it (the release names the version the renewal wrote),
    // and after that wait (the release conflicts, reads the Lease, finds it still ours and releases it).
    for (const answerAfterMs of [50, 2_000]) {
      const a = await leading(client, "a");
      api.holdNextPutBy = "a";
      while (!api.heldAnswer) await new Promise((r) => setTimeout(r, 5));
      const answer = setTimeout(() => api.releaseHeld(), answerAfterMs);
      try {
        await a.elector.stop(1_000);
        assert.equal(api.lease?.spec.holderIdentity, null, `released on stop (the renewal answered after ${String(answerAfterMs)} ms)`);
      } finally {
        clearTimeout(answer);
        api.releaseHeld();
      }
      assert.equal(await a.run, "stopped");
      assert.equal(api.lease?.spec.holderIdentity, null, "the renewal in flight took nothing back");
    }
  }));

test("a standby stopped while its acquire is in flight releases what that acquire wrote and never starts leading", () =>
  withLeases(async (api, client) => {
    const a = await leading(client, "a");
    const b = elector(client, "b");
    let bLeads = false;
    const bRun = b.run(() => (bLeads = true));
    while (b.stats.tries === 0) await new Promise((r) => setTimeout(r, 10));
    // a releases; b's next try (woken by its watch) writes the Lease, and its answer is held while b is stopped.
    api.holdNextPutBy = "b";
    await a.elector.stop();
    assert.equal(await a.run, "stopped");
    while (!api.heldAnswer) await new Promise((r) => setTimeout(r, 5));
    assert.equal(api.lease?.spec.holderIdentity, "b", "b's acquire is written");
    const answer = setTimeout(() => api.releaseHeld(), 50);
    await b.stop(1_000);
    clearTimeout(answer);
    assert.equal(await bRun, "stopped");
    assert.equal(bLeads, false, "b never started leading");
    assert.equal(api.lease?.spec.holderIdentity, null, "b released what its acquire wrote");
  }));
