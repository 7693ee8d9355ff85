// The benchmark's load generator against the real admission server: every answer is matched to its request, and the policy is admitted.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { reviewFor } from "../../webhooks/admission.ts";
import { VALIDATE_PATH } from "../../webhooks/server.ts";
import { startTestServer } from "../../webhooks/testing.ts";
import { closedLoop, percentile } from "./loadgen.ts";
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

  it("takes percentiles by nearest rank", () => {
    const sorted = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(percentile(sorted, 50), 5);
    assert.equal(percentile(sorted, 99), 10);
    assert.equal(percentile(sorted, 100), 10);
    assert.ok(Number.isNaN(percentile(new Float64Array(0), 50)));
  });
});
