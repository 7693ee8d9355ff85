// Leader election against a scripted Lease endpoint: one leader at a time, takeover after expiry,
// optimistic concurrency on writes, release on stop, step-down when renewals fail.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { KubeClient } from "./kube.ts";
import { LeaderElector } from "./leader.ts";
import { writeKubeconfig } from "../controllers/testing/kubeconfig.ts";

const log = pino({ level: "silent" });
const TIMING = { leaseDurationMs: 1000, renewDeadlineMs: 600, retryPeriodMs: 100 };

class FakeLeases {
  lease: { metadata: Record<string, unknown>; spec: Record<string, unknown> } | undefined;
  rv = 0;
  down = false;
  writes = 0;
  server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      const send = (code: number, obj: unknown): void => {
        res.writeHead(code, { "content-type": "application/json" });
        res.end(JSON.stringify(obj));
      };
      if (this.down) return send(503, { kind: "Status", code: 503, reason: "ServiceUnavailable", message: "down" });
      if (req.method === "GET") return this.lease ? send(200, this.lease) : send(404, { kind: "Status", code: 404, reason: "NotFound", message: "not found" });
      const obj = JSON.parse(body) as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
      if (req.method === "POST" && this.lease) return send(409, { kind: "Status", code: 409, reason: "AlreadyExists", message: "exists" });
      if (req.method === "PUT" && obj.metadata.resourceVersion !== this.lease?.metadata.resourceVersion) {
        return send(409, { kind: "Status", code: 409, reason: "Conflict", message: "the object has been modified" });
      }
      this.writes++;
      this.lease = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(++this.rv) } };
      send(200, this.lease);
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

const elector = (client: KubeClient, identity: string): LeaderElector => new LeaderElector(client, { namespace: "ns", name: "lease", identity, ...TIMING }, log);

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
