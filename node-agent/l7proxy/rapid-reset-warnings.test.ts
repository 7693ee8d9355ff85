// The agent's rapid-reset warning (rapid-reset-warnings.ts): one structured line naming the pod per closed connection, rate-limited per client so a flood of connections is not a flood of lines.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Flow } from "../../flowapi/flow.ts";
import { capturingLogger } from "../testing/agent.ts";
import type { HttpFlow } from "./http-proxy.ts";
import { RAPID_RESET_WARN_INTERVAL_MS, RapidResetWarnings } from "./rapid-reset-warnings.ts";
import { REFUSAL_REASON } from "./request-flow.ts";

/** The proxy's record of a stream on the connection from `ip`, with `reason`, and its flows as enrichment names the client (a pod, or none). */
function record(ip: string, pod: string | undefined, reason?: string): [HttpFlow, Flow[]] {
  const r: HttpFlow = {
    time: new Date().toISOString(),
    source: { ip, port: 40000, identity: 1000 },
    destination: { ip: "10.0.0.2", port: 80 },
    proxyPort: 10080,
    ruleId: 7,
    ingress: false,
    protocol: "HTTP/2",
    method: "GET",
    path: "/v1/ships",
    host: "deathstar",
    verdict: "error",
    status: 0,
    latencyMs: 1,
    ...(reason !== undefined ? { reason } : {}),
  };
  const source = { identity: 1000, labels: [], ip, port: 40000, ...(pod !== undefined ? { namespace: "default", pod } : {}) };
  return [r, [{ source } as unknown as Flow]];
}

test("a connection closed for rapid reset is one warn line naming the client's pod (namespace, pod, address, identity, destination); other records none", () => {
  const lines: Record<string, unknown>[] = [];
  const w = new RapidResetWarnings(capturingLogger(lines));
  try {
    w.observe(...record("10.0.0.1", "xwing", REFUSAL_REASON.malformedH2));
    w.observe(...record("10.0.0.1", "xwing"));
    assert.equal(lines.length, 0);
    w.observe(...record("10.0.0.1", "xwing", REFUSAL_REASON.rapidReset));
    assert.equal(lines.length, 1);
    const { level, namespace, pod, ip, identity, destination, msg } = lines[0]!;
    assert.deepEqual({ level, namespace, pod, ip, identity, destination }, { level: 40, namespace: "default", pod: "xwing", ip: "10.0.0.1", identity: 1000, destination: "10.0.0.2:80" });
    assert.match(String(msg), /rapid reset.*CVE-2023-44487/);
    // A client no pod is known for (from outside the cluster) is named by its address.
    w.observe(...record("192.0.2.9", undefined, REFUSAL_REASON.rapidReset));
    assert.equal(lines.length, 2);
    assert.deepEqual([lines[1]!.ip, lines[1]!.pod], ["192.0.2.9", undefined]);
  } finally {
    w.stop();
  }
});

test("a pod flooding connection after connection: its first close logged at once, the rest counted and said in one line per interval while they go on; a quiet interval forgets it", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const lines: Record<string, unknown>[] = [];
  const w = new RapidResetWarnings(capturingLogger(lines));
  try {
    for (let i = 0; i < 500; i++) w.observe(...record("10.0.0.1", "xwing", REFUSAL_REASON.rapidReset));
    w.observe(...record("10.0.0.3", "tie-fighter", REFUSAL_REASON.rapidReset));
    assert.deepEqual(lines.map((l) => [l.pod, l.more]), [["xwing", undefined], ["tie-fighter", undefined]], "one line per pod, the flood's first");
    t.mock.timers.tick(RAPID_RESET_WARN_INTERVAL_MS);
    assert.deepEqual(lines.slice(2).map((l) => [l.pod, l.more, l.intervalMs]), [["xwing", 499, RAPID_RESET_WARN_INTERVAL_MS]], "the 499 after the first in one line; none for a pod with no more");
    for (let i = 0; i < 10; i++) w.observe(...record("10.0.0.1", "xwing", REFUSAL_REASON.rapidReset));
    w.observe(...record("10.0.0.3", "tie-fighter", REFUSAL_REASON.rapidReset));
    assert.deepEqual(lines.slice(3).map((l) => [l.pod, l.more]), [["tie-fighter", undefined]], "a forgotten pod's next close is logged at once; a counted one waits");
    t.mock.timers.tick(RAPID_RESET_WARN_INTERVAL_MS);
    assert.deepEqual(lines.slice(4).map((l) => [l.pod, l.more]), [["xwing", 10]]);
    t.mock.timers.tick(RAPID_RESET_WARN_INTERVAL_MS);
    w.observe(...record("10.0.0.1", "xwing", REFUSAL_REASON.rapidReset));
    assert.deepEqual(lines.slice(5).map((l) => [l.pod, l.more]), [["xwing", undefined]], "after a quiet interval, at once again");
  } finally {
    w.stop();
  }
});

test("clients are counted up to a bound: past 1,024 at once, the others share one line", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const lines: Record<string, unknown>[] = [];
  const w = new RapidResetWarnings(capturingLogger(lines));
  try {
    for (let i = 0; i < 1100; i++) w.observe(...record(`10.1.${i >> 8}.${i & 255}`, undefined, REFUSAL_REASON.rapidReset));
    assert.equal(lines.length, 1025);
    assert.equal(lines[1024]!.clients, "more than 1024");
    t.mock.timers.tick(RAPID_RESET_WARN_INTERVAL_MS);
    assert.deepEqual(lines.slice(1025).map((l) => [l.clients, l.more]), [["more than 1024", 75]]);
  } finally {
    w.stop();
  }
});
