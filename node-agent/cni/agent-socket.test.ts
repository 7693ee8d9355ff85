// The endpoint socket between plugin and agent: requests, replies, refusals and an agent that is not there.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import {
  AgentUnreachable,
  callAgent,
  EndpointSocketServer,
  parseAgentRequest,
  type AgentRequest,
} from "./agent-socket.ts";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-agent-socket-test-"));
const servers: { stop(): Promise<void> }[] = [];
const children: ChildProcess[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const s of servers) await s.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const add: AgentRequest = {
  op: "endpoint-add",
  containerId: "c1",
  namespace: "prod",
  pod: "web-0",
  ifname: "eth0",
  netns: "/var/run/netns/c1",
  hostIfname: "mbr0123456789a",
  hostIfindex: 7,
  ips: ["10.0.0.2"],
};

async function serve(
  name: string,
  handler: ConstructorParameters<typeof EndpointSocketServer>[1],
): Promise<string> {
  const sock = path.join(tmp, name);
  const server = new EndpointSocketServer(sock, handler);
  servers.push(server);
  await server.start();
  return sock;
}

describe("endpoint socket", () => {
  it("carries a request to the agent's handler and its answer back", async () => {
    const seen: AgentRequest[] = [];
    const sock = await serve("ok.sock", (r) => {
      seen.push(r);
      return { ok: true };
    });
    assert.deepEqual(await callAgent(sock, add), { ok: true });
    assert.deepEqual(seen, [add]);
    // The MTU the plugin wired with travels too (the agent corrects one that is not its mode's).
    assert.deepEqual(await callAgent(sock, { ...add, mtu: 1450 }), { ok: true });
    assert.deepEqual(seen[1], { ...add, mtu: 1450 });
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
  });

  it("turns a refusal or a handler failure into ok:false with the reason", async () => {
    const sock = await serve("refuse.sock", (r) => {
      if (r.op === "endpoint-del") throw new Error("no such endpoint table");
      return { ok: false, error: "policy map full" };
    });
    assert.deepEqual(await callAgent(sock, add), { ok: false, error: "policy map full" });
    assert.deepEqual(
      await callAgent(sock, {
        op: "endpoint-del",
        containerId: "c1",
        ifname: "eth0",
        hostIfname: "mbr0123456789a",
      }),
      {
        ok: false,
        error: "no such endpoint table",
      },
    );
  });

  it("rejects malformed requests naming the field", () => {
    assert.deepEqual(parseAgentRequest(JSON.stringify({ ...add, hostIfindex: 0 })), {
      ok: false,
      error: "hostIfindex: must be a positive integer",
    });
    assert.deepEqual(parseAgentRequest(JSON.stringify({ ...add, ips: [] })), {
      ok: false,
      error: "ips: must be a non-empty list of addresses",
    });
    assert.deepEqual(parseAgentRequest(JSON.stringify({ ...add, containerId: "" })), {
      ok: false,
      error: "containerId: must be a non-empty string",
    });
    assert.deepEqual(parseAgentRequest(JSON.stringify({ ...add, mtu: 100 })), {
      ok: false,
      error: "mtu: must be an integer from 576 to 65535",
    });
    assert.deepEqual(parseAgentRequest(JSON.stringify({ op: "endpoint-list" })), {
      ok: false,
      error: 'op: must be "endpoint-add" or "endpoint-del", got "endpoint-list"',
    });
    assert.deepEqual(parseAgentRequest("[]"), { ok: false, error: "request is not a JSON object" });
  });

  it("reports an agent that is not there, or does not answer, as unreachable", async () => {
    await assert.rejects(
      callAgent(path.join(tmp, "missing.sock"), add),
      (e: unknown) => e instanceof AgentUnreachable && /ENOENT/.test(e.message),
    );
    const silentPath = path.join(tmp, "silent.sock");
    const silent = net.createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(silentPath, () => r()));
    servers.push({ stop: () => new Promise<void>((r) => silent.close(() => r())) });
    const conns: net.Socket[] = [];
    silent.on("connection", (c) => conns.push(c));
    await assert.rejects(
      callAgent(silentPath, add, 200),
      (e: unknown) =>
        e instanceof AgentUnreachable && /did not answer endpoint-add within 200 ms/.test(e.message),
    );
    for (const c of conns) c.destroy();
  });

  it("a restarted agent takes over the socket file a killed predecessor left, never a live one or a non-socket", async () => {
    const sock = path.join(tmp, "restart.sock");
    const script = `require("net").createServer().listen(process.argv[1], () => console.log("up"))`;
    const predecessor = spawn(process.execPath, ["-e", script, sock], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    children.push(predecessor);
    await new Promise<void>((r) => predecessor.stdout.once("data", () => r()));
    predecessor.kill("SIGKILL");
    await new Promise((r) => predecessor.once("exit", r));
    assert.ok(fs.lstatSync(sock).isSocket(), "the killed process left its socket file");
    const s = await serve("restart.sock", () => ({ ok: true }));
    assert.deepEqual(await callAgent(s, add), { ok: true });
    await assert.rejects(
      new EndpointSocketServer(sock, () => ({ ok: true })).start(),
      /another process is serving/,
    );
    assert.deepEqual(await callAgent(s, add), { ok: true }, "the live agent keeps its socket");

    const plain = path.join(tmp, "plain-file");
    fs.writeFileSync(plain, "keep me");
    await assert.rejects(new EndpointSocketServer(plain, () => ({ ok: true })).start(), /EADDRINUSE/);
    assert.equal(fs.readFileSync(plain, "utf8"), "keep me");
  });
});
