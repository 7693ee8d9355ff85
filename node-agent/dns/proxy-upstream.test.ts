// The proxy's upstream exchange over loopback (no datapath): the pod's query id comes back, a late server is given up on after the timeout, and only the server asked may answer.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import dnsPacket from "dns-packet";
import { DnsProxy, type DnsFlow } from "./proxy.ts";

const PROXY_PORT = 20_000 + (process.pid % 20_000);
const sockets: dgram.Socket[] = [];

async function udp(onMessage?: (sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo) => void): Promise<dgram.Socket> {
  const sock = dgram.createSocket("udp4");
  sockets.push(sock);
  if (onMessage) sock.on("message", (msg, rinfo) => onMessage(sock, msg, rinfo));
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
  return sock;
}

function answerOf(query: Buffer): Buffer {
  const q = dnsPacket.decode(query);
  return dnsPacket.encode({ type: "response", id: q.id ?? 0, questions: q.questions ?? [], answers: [{ name: q.questions?.[0]?.name ?? "", type: "A", ttl: 30, data: "192.0.2.1" }] });
}

/** The proxy on loopback, every query steered (as the datapath would) to `server`. */
async function proxyTo(server: dgram.Socket, flows: DnsFlow[], upstreamTimeoutMs = 300): Promise<DnsProxy> {
  const port = server.address().port;
  const proxy = new DnsProxy({
    address: "127.0.0.1",
    originalDestination: () => ({ ip: "127.0.0.1", port, proxyPort: PROXY_PORT, subject: 1000, ruleId: 7 }),
    rules: () => [{ ruleId: 7, index: 0, matchPattern: "*" }],
    learn: () => undefined,
    onFlow: (f) => flows.push(f),
    upstreamTimeoutMs,
  });
  await proxy.listen(PROXY_PORT);
  return proxy;
}

/** One query from a client socket: the answer's id, or undefined after `waitMs`. */
async function ask(id: number, waitMs: number): Promise<number | undefined> {
  const client = await udp();
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), waitMs);
    client.on("message", (m) => {
      clearTimeout(timer);
      resolve(m.readUInt16BE(0));
    });
    client.send(dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name: "a.test" }] }), PROXY_PORT, "127.0.0.1");
  });
}

after(() => {
  for (const s of sockets) s.close();
});

test("the server sees the proxy's own id and the pod gets its answer under its own id", async () => {
  const seen: number[] = [];
  const server = await udp((sock, msg, rinfo) => {
    seen.push(msg.readUInt16BE(0));
    sock.send(answerOf(msg), rinfo.port, rinfo.address);
  });
  const flows: DnsFlow[] = [];
  const proxy = await proxyTo(server, flows);
  try {
    for (const id of [0x1234, 0xbeef, 7]) assert.equal(await ask(id, 2000), id);
    assert.equal(seen.length, 3);
    assert.deepEqual(flows.map((f) => [f.verdict, f.addresses]), [["allowed", ["192.0.2.1"]], ["allowed", ["192.0.2.1"]], ["allowed", ["192.0.2.1"]]]);
  } finally {
    await proxy.stop();
  }
});

test("a server that does not answer: the pod gets nothing, and the flow says so after the timeout", async () => {
  const server = await udp(() => undefined);
  const flows: DnsFlow[] = [];
  const proxy = await proxyTo(server, flows);
  try {
    assert.equal(await ask(42, 800), undefined, "no answer is made up");
    const f = flows[0];
    assert.equal(f?.verdict, "error");
    assert.match(f?.error ?? "", /no answer from 127\.0\.0\.1:\d+ within 300 ms/);
    assert.ok(f!.latencyMs >= 300 && f!.latencyMs < 700, `given up on after the timeout (${f!.latencyMs} ms)`);
  } finally {
    await proxy.stop();
  }
});

test("an answer from another address or port than the server asked is ignored", async () => {
  const spoofer = await udp();
  const server = await udp((_sock, msg, rinfo) => spoofer.send(answerOf(msg), rinfo.port, rinfo.address)); // the right id, the wrong source
  const flows: DnsFlow[] = [];
  const proxy = await proxyTo(server, flows);
  try {
    assert.equal(await ask(9, 800), undefined);
    assert.equal(flows[0]?.verdict, "error");
  } finally {
    await proxy.stop();
  }
});

test("a server whose port is closed: the query fails at once (its ICMP error on the connected socket), not after the timeout", async () => {
  const gone = await udp();
  const flows: DnsFlow[] = [];
  const proxy = await proxyTo(gone, flows, 5_000);
  const port = gone.address().port;
  gone.close(); // nothing listens there any more: the kernel answers port unreachable
  sockets.splice(sockets.indexOf(gone), 1);
  try {
    assert.equal(await ask(11, 2_000), undefined, "no answer is made up");
    for (const end = Date.now() + 2_000; flows.length === 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
    const f = flows[0];
    assert.equal(f?.verdict, "error");
    assert.match(f?.error ?? "", /ECONNREFUSED/);
    assert.ok(f!.latencyMs < 1_000, `failed before the 5 s timeout (${f!.latencyMs} ms)`);
    // The server comes back on its port: the same connected socket carries the next query.
    const back = dgram.createSocket("udp4");
    sockets.push(back);
    back.on("message", (msg, rinfo) => back.send(answerOf(msg), rinfo.port, rinfo.address));
    await new Promise<void>((r) => back.bind(port, "127.0.0.1", r));
    assert.equal(await ask(12, 2_000), 12, "answered once the server is back");
  } finally {
    await proxy.stop();
  }
});
