// The benchmark's load generator against the real admission server: every answer is matched to its request, the policy is admitted, and the open loop keeps its schedule and counts queueing.
import assert from "node:assert/strict";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { reviewFor } from "../../webhooks/admission.ts";
import { DEFAULT_CERT_OPTIONS, issueBundle } from "../../webhooks/certs.ts";
import { VALIDATE_PATH } from "../../webhooks/server.ts";
import { startTestServer } from "../../webhooks/testing.ts";
import { closedLoop, openLoop, percentile } from "./loadgen.ts";
import { POLICY } from "./policy.ts";

describe("webhook bench load generator", () => {
  it("keeps N connections busy for the given time, each answer carrying its request's uid, the bench policy admitted", async () => {
    const server = await startTestServer();
    try {
      let made = 0;
      const run = await closedLoop({
        host: "127.0.0.1",
        port: server.port,
        ca: server.bundle.caBundle,
        path: VALIDATE_PATH,
        connections: 4,
        seconds: 0.5,
        record: true,
        body: (uid) => {
          made++;
          return reviewFor(POLICY, { uid });
        },
      });
      assert.ok(run.requests > 4, `${run.requests} requests in 0.5 s`);
      assert.equal(run.requests, made, "every request made was answered and counted");
      assert.equal(run.denied, 0, "the benchmark's policy is valid");
      assert.equal(run.latenciesMs.length, run.requests);
      assert.ok(run.elapsedSeconds >= 0.5);
      for (let i = 1; i < run.latenciesMs.length; i++) assert.ok((run.latenciesMs[i - 1] ?? 0) <= (run.latenciesMs[i] ?? 0), "sorted");
    } finally {
      await server.close();
    }
  });

  it("counts a denial when the server denies", async () => {
    const server = await startTestServer();
    try {
      const bad = { ...POLICY, spec: { ...POLICY.spec, egressDeny: [{ toCIDR: ["169.254.169.254/33"] }] } };
      const run = await closedLoop({
        host: "127.0.0.1",
        port: server.port,
        ca: server.bundle.caBundle,
        path: VALIDATE_PATH,
        connections: 2,
        seconds: 0.2,
        record: false,
        body: (uid) => reviewFor(bad, { uid }),
      });
      assert.ok(run.requests > 0);
      assert.equal(run.denied, run.requests);
      assert.equal(run.latenciesMs.length, 0, "nothing recorded during warm-up");
    } finally {
      await server.close();
    }
  });

  it("open loop: sends rate × seconds requests on schedule, each answered with its uid, the bench policy admitted", async () => {
    const server = await startTestServer();
    try {
      const run = await openLoop({
        host: "127.0.0.1",
        port: server.port,
        ca: server.bundle.caBundle,
        path: VALIDATE_PATH,
        connections: 4,
        rate: 200,
        seconds: 0.5,
        body: (uid) => reviewFor(POLICY, { uid }),
      });
      assert.equal(run.scheduled, 100);
      assert.equal(run.requests, 100, "every scheduled request was sent and answered");
      assert.equal(run.unanswered, 0);
      assert.equal(run.denied, 0);
      assert.equal(run.latenciesMs.length, 100);
      assert.equal(run.sendDelaysMs.length, 100);
      // The last request is due 495 ms after the start: the schedule was not compressed.
      assert.ok(run.elapsedSeconds >= 0.49, `${run.elapsedSeconds} s`);
      for (let i = 1; i < run.latenciesMs.length; i++) assert.ok((run.latenciesMs[i - 1] ?? 0) <= (run.latenciesMs[i] ?? 0), "sorted");
      assert.ok((run.latenciesMs[0] ?? 0) > 0);
    } finally {
      await server.close();
    }
  });

  it("open loop: a server slower than the offered load shows its queue in the latency (no coordinated omission)", async () => {
    // One connection to a server that takes 20 ms per answer, offered 100 requests/s: it can answer
    // 50/s, so request i waits for the ones before it. A closed loop would report ≈ 20 ms.
    const slow = await slowServer(20);
    try {
      const run = await openLoop({
        host: "127.0.0.1",
        port: slow.port,
        ca: slow.ca,
        path: VALIDATE_PATH,
        connections: 1,
        rate: 100,
        seconds: 0.5,
        body: (uid) => reviewFor(POLICY, { uid }),
      });
      assert.equal(run.requests, 50);
      const p99 = percentile(run.latenciesMs, 99);
      assert.ok(p99 > 300, `p99 ${p99} ms: the last requests waited ≈ 50 × 20 ms − 490 ms for the connection`);
      assert.ok(percentile(run.sendDelaysMs, 99) > 250, "the wait for the connection is reported as lateness");
      assert.ok(percentile(run.latenciesMs, 1) < 100, "the first requests were answered in about the service time");
    } finally {
      await slow.close();
    }
  });

  it("open loop: answers that do not come count as unanswered, with the time they waited as their latency", async () => {
    const silent = await slowServer(60_000);
    try {
      const run = await openLoop({
        host: "127.0.0.1",
        port: silent.port,
        ca: silent.ca,
        path: VALIDATE_PATH,
        connections: 1,
        rate: 20,
        seconds: 0.1,
        drainSeconds: 0.3,
        body: (uid) => reviewFor(POLICY, { uid }),
      });
      assert.equal(run.scheduled, 2);
      assert.equal(run.requests, 0);
      assert.equal(run.unanswered, 2);
      assert.ok((run.latenciesMs[0] ?? 0) >= 300, `waited ${run.latenciesMs[0]} ms, at least the drain time`);
      // The second one never got the only connection: its whole wait is lateness.
      assert.ok((run.sendDelaysMs[1] ?? 0) >= 300);
    } finally {
      await silent.close();
    }
  });

  it("open loop: refuses a rate, length or pool that cannot run", async () => {
    const base = { host: "127.0.0.1", port: 1, ca: "", path: VALIDATE_PATH, body: (uid: string) => uid };
    await assert.rejects(openLoop({ ...base, rate: 0, seconds: 1, connections: 1 }), /rate > 0/);
    await assert.rejects(openLoop({ ...base, rate: 10, seconds: 1, connections: 0 }), /connections >= 1/);
  });

  it("takes percentiles by nearest rank", () => {
    const sorted = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(percentile(sorted, 50), 5);
    assert.equal(percentile(sorted, 99), 10);
    assert.equal(percentile(sorted, 100), 10);
    assert.ok(Number.isNaN(percentile(new Float64Array(0), 50)));
  });
});

/** An HTTPS server that answers every AdmissionReview allowed, `delayMs` after it arrived, one at a time per connection. */
async function slowServer(delayMs: number): Promise<{ port: number; ca: string; close(): Promise<void> }> {
  const bundle = await issueBundle(DEFAULT_CERT_OPTIONS);
  const timers = new Set<NodeJS.Timeout>();
  const server: Server = createServer({ cert: bundle.cert, key: bundle.key }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const uid = (JSON.parse(Buffer.concat(chunks).toString("utf8")) as { request: { uid: string } }).request.uid;
      const answer = JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: { uid, allowed: true } });
      const t = setTimeout(() => {
        timers.delete(t);
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(answer) }).end(answer);
      }, delayMs);
      timers.add(t);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    ca: bundle.caBundle,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
