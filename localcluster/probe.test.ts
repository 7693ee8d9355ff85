// probe.ts `--serve` on loopback: many probes in flight on one process, each answer tagged with its request id, exit when input ends.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { createServer, type AddressInfo } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import type { ProbeAnswer } from "./probe.ts";

const probeSource = fileURLToPath(new URL("./probe.ts", import.meta.url));

test("--serve answers every request by id: connected with the reply, refused, UDP reply; exits once its input ends", { timeout: 30_000 }, async (t) => {
  const tcp = createServer((s) => s.end("tcp-peer\n"));
  await new Promise<void>((r) => tcp.listen(0, "127.0.0.1", r));
  t.after(() => tcp.close());
  const udp = createSocket("udp4");
  udp.on("message", (_m, from) => udp.send("udp-peer\n", from.port, from.address));
  await new Promise<void>((r) => udp.bind(0, "127.0.0.1", r));
  t.after(() => udp.close());
  // A port nobody listens on: bind, read the number, close.
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
  const closedPort = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));

  const child = spawn(process.execPath, ["--import", "tsx", probeSource, "--serve"], { stdio: ["pipe", "pipe", "inherit"] });
  t.after(() => child.kill());
  const answers: ProbeAnswer[] = [];
  createInterface({ input: child.stdout }).on("line", (l) => answers.push(JSON.parse(l) as ProbeAnswer));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));

  const requests = [
    { id: 1, host: "127.0.0.1", port: (tcp.address() as AddressInfo).port, timeoutMs: 2_000 },
    { id: 2, host: "127.0.0.1", port: closedPort, timeoutMs: 2_000 },
    { id: 3, host: "127.0.0.1", port: (udp.address() as AddressInfo).port, udp: true, timeoutMs: 2_000 },
  ];
  for (const r of requests) child.stdin.write(JSON.stringify(r) + "\n");
  child.stdin.write("not json\n");
  child.stdin.end();

  assert.equal(await exited, 0);
  const byId = new Map(answers.map((a) => [a.id, a]));
  assert.deepEqual(byId.get(1), { id: 1, verdict: "connected", reply: "tcp-peer" });
  assert.deepEqual(byId.get(2), { id: 2, verdict: "refused" });
  assert.deepEqual(byId.get(3), { id: 3, verdict: "connected", reply: "udp-peer" });
  assert.equal(byId.get(-1)?.verdict, "error", "a line that is not JSON is answered with an error, not a crash");
});
