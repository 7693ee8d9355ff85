// The L7 proxy's flows reach the agent over its unix socket: delivered in order, malformed lines refused, lost (and counted) while no agent listens, delivered again after an agent restart.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { FlowSocketServer, FlowSocketWriter, parseFlowLine } from "./flow-socket.ts";
import type { HttpFlow } from "./http-proxy.ts";
import { until } from "../testing/agent.ts";

const log = pino({ level: "silent" });

const flow = (n: number): HttpFlow => ({
  time: new Date(1_700_000_000_000 + n).toISOString(),
  source: { ip: "10.0.0.7", port: 40000 + n, identity: 1000 },
  destination: { ip: "10.0.1.9", port: 80 },
  proxyPort: 10082,
  ruleId: 7,
  ingress: false,
  protocol: "HTTP/1.1",
  method: "GET",
  path: `/r/${n}`,
  host: "web",
  verdict: n % 2 ? "denied" : "forwarded",
  status: n % 2 ? 403 : 200,
  latencyMs: 1.5,
});

test("flows reach the agent in order; a line that is not a flow is refused naming the field; an agent restart is followed by reconnecting", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-flowsock-"));
  const sock = path.join(dir, "flows.sock");
  const got: HttpFlow[] = [];
  let server = new FlowSocketServer(sock, (f) => got.push(f), log);
  const writer = new FlowSocketWriter(sock, log);
  t.after(async () => {
    writer.stop();
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  writer.write(flow(0));
  assert.equal(writer.lost, 1, "no agent yet: lost, not queued");
  await server.start();
  assert.equal(fs.statSync(sock).mode & 0o777, 0o600, "only root may send flows");
  writer.start();
  await until("the proxy connected", () => writer.connected, 5000);
  const before = got.length;
  for (let i = 2; i < 102; i++) writer.write(flow(i));
  await until("100 flows delivered", () => got.length === before + 100, 5000);
  assert.deepEqual(got.slice(before).map((f) => f.path), Array.from({ length: 100 }, (_, i) => `/r/${i + 2}`));
  assert.deepEqual(got.at(-1), flow(101));
  // A malformed line from whoever connects is skipped, the next good one delivered.
  const rogue = net.createConnection(sock);
  await new Promise((r) => rogue.once("connect", r));
  rogue.end(`{"time":"x"}\n${JSON.stringify(flow(500))}\n`);
  await until("the good line after the bad one", () => got.at(-1)?.path === "/r/500", 5000);
  assert.equal(server.refused, 1);
  // The agent goes away and comes back: flows meanwhile are lost and counted, later ones delivered.
  await server.stop();
  const lostBefore = writer.lost;
  await until("the proxy saw the agent go", () => !writer.connected, 5000);
  writer.write(flow(600));
  assert.equal(writer.lost, lostBefore + 1);
  server = new FlowSocketServer(sock, (f) => got.push(f), log);
  await server.start();
  await until("reconnected after the agent's restart", () => writer.connected, 5000);
  writer.write(flow(700));
  await until("delivered after the restart", () => got.at(-1)?.path === "/r/700", 5000);
  assert.ok(!got.some((f) => f.path === "/r/600"), "a flow sent while no agent listened is not delivered later");
});

test("parseFlowLine names the first wrong field", () => {
  const good = JSON.stringify(flow(0));
  assert.deepEqual(parseFlowLine(good), { ok: true, flow: flow(0) });
  const bad = (over: Record<string, unknown>): string => {
    const r = parseFlowLine(JSON.stringify({ ...flow(0), ...over }));
    return r.ok ? "" : r.error;
  };
  assert.equal(bad({ verdict: "maybe" }), "verdict: must be forwarded, denied or error");
  assert.equal(bad({ source: { ip: "10.0.0.1" } }), "source: must be {ip, port, identity}");
  assert.equal(bad({ status: "200" }), "status: must be a number");
  assert.equal(bad({ ingress: 1 }), "ingress: must be a boolean");
  assert.equal(bad({ headers: [{ name: "x-a", value: 1 }] }), "headers: must be a list of {name, value}");
  assert.equal(bad({ headers: [{ name: "x-a", value: "1" }] }), "", "the request's headers pass");
  assert.match(parseFlowLine("{").ok ? "" : (parseFlowLine("{") as { error: string }).error, /^not JSON/);
});
