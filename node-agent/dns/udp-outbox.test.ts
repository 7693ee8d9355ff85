// The proxy's UDP sends on loopback: every datagram arrives once, whole, at its own address; a lone one leaves at once, a busy turn's in one sendmmsg per socket.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { UdpOutbox, sockaddrOf, udpSocketFd } from "./udp-outbox.ts";

const sockets: dgram.Socket[] = [];
after(() => {
  for (const s of sockets) s.close();
});

async function bound(type: "udp4" | "udp6", address: string): Promise<{ sock: dgram.Socket; got: Buffer[] }> {
  const sock = dgram.createSocket(type);
  sockets.push(sock);
  const got: Buffer[] = [];
  sock.on("message", (m) => got.push(m));
  await new Promise<void>((r) => sock.bind(0, address, r));
  return { sock, got };
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (const end = Date.now() + 2_000; !ok(); ) {
    if (Date.now() > end) assert.fail(`not within 2 s: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("Node 26's dgram socket gives up its fd (else every datagram would fall back to Node's own send)", async () => {
  const { sock } = await bound("udp4", "127.0.0.1");
  assert.equal(typeof udpSocketFd(sock), "number");
});

const turnEnd = (): Promise<void> => new Promise((r) => setImmediate(r));

test("a burst to two receivers: its first datagram leaves at once, the other 99 at the turn's end in one sendmmsg per 64, each whole at its own address and in order", async () => {
  const a = await bound("udp4", "127.0.0.1");
  const b = await bound("udp4", "127.0.0.1");
  const tx = await bound("udp4", "127.0.0.1");
  const outbox = new UdpOutbox();
  const sent: Record<"a" | "b", string[]> = { a: [], b: [] };
  for (let i = 0; i < 100; i++) {
    const to = i % 3 === 0 ? "b" : "a";
    const payload = `${to}-${i}-${"x".repeat(i * 7)}`;
    sent[to].push(payload);
    outbox.send(tx.sock, Buffer.from(payload), (to === "a" ? a : b).sock.address().port, "127.0.0.1");
  }
  assert.deepEqual(outbox.stats, { batched: 1, calls: 1, byNode: 0, atOnce: 1 }, "only the first has left before the turn ends");
  await until("all 100 arrive", () => a.got.length + b.got.length === 100);
  assert.deepEqual(a.got.map(String), sent.a);
  assert.deepEqual(b.got.map(String), sent.b);
  assert.deepEqual(outbox.stats, { batched: 100, calls: 3, byNode: 0, atOnce: 1 });
});

test("at a low rate each datagram leaves within send(), without waiting for the turn's end", async () => {
  const rx = await bound("udp4", "127.0.0.1");
  const tx = await bound("udp4", "127.0.0.1");
  const outbox = new UdpOutbox();
  for (let i = 0; i < 5; i++) {
    outbox.send(tx.sock, Buffer.from(`q${i}`), rx.sock.address().port, "127.0.0.1");
    assert.equal(outbox.stats.calls, i + 1, `datagram ${i} handed to the kernel before send() returned`);
    await until(`q${i} arrives`, () => rx.got.length === i + 1);
  }
  assert.deepEqual(rx.got.map(String), ["q0", "q1", "q2", "q3", "q4"]);
  assert.deepEqual(outbox.stats, { batched: 5, calls: 5, byNode: 0, atOnce: 5 });
});

test("after a turn that sent several, the next turn batches from its first datagram; a turn that sent one lets the next send at once again", async () => {
  const rx = await bound("udp4", "127.0.0.1");
  const tx = await bound("udp4", "127.0.0.1");
  const outbox = new UdpOutbox();
  const port = rx.sock.address().port;
  // Turn 1: three datagrams (the first at once, two at its end).
  for (const m of ["t1a", "t1b", "t1c"]) outbox.send(tx.sock, Buffer.from(m), port, "127.0.0.1");
  await turnEnd();
  assert.deepEqual(outbox.stats, { batched: 3, calls: 2, byNode: 0, atOnce: 1 });
  // Turn 2 follows a backlog: its lone datagram waits for the turn's end.
  outbox.send(tx.sock, Buffer.from("t2"), port, "127.0.0.1");
  assert.equal(outbox.stats.calls, 2, "held until the turn ends");
  await turnEnd();
  assert.deepEqual(outbox.stats, { batched: 4, calls: 3, byNode: 0, atOnce: 1 });
  // Turn 3 follows a turn of one: at once.
  outbox.send(tx.sock, Buffer.from("t3"), port, "127.0.0.1");
  assert.equal(outbox.stats.calls, 4);
  await until("all 5 arrive", () => rx.got.length === 5);
  assert.deepEqual(rx.got.map(String), ["t1a", "t1b", "t1c", "t2", "t3"]);
  assert.equal(outbox.stats.atOnce, 2);
});

test("a connected socket's datagrams go to its peer; one larger than a slot is sent by Node", async () => {
  const server = await bound("udp4", "127.0.0.1");
  const tx = await bound("udp4", "127.0.0.1");
  await new Promise<void>((r) => tx.sock.connect(server.sock.address().port, "127.0.0.1", r));
  const outbox = new UdpOutbox();
  outbox.send(tx.sock, Buffer.from("small"));
  outbox.send(tx.sock, Buffer.alloc(5_000, 0x61));
  await until("both arrive", () => server.got.length === 2);
  assert.deepEqual(server.got.map((m) => m.length).sort((x, y) => x - y), [5, 5_000]);
  assert.deepEqual(outbox.stats, { batched: 1, calls: 1, byNode: 1, atOnce: 1 });
});

test("IPv6: a receiver on ::1, and an IPv4-mapped address from a dual-stack socket", async () => {
  const six = await bound("udp6", "::1");
  const four = await bound("udp4", "127.0.0.1");
  const tx = await bound("udp6", "::");
  const outbox = new UdpOutbox();
  outbox.send(tx.sock, Buffer.from("to six"), six.sock.address().port, "::1");
  outbox.send(tx.sock, Buffer.from("to four"), four.sock.address().port, "::ffff:127.0.0.1");
  await until("both arrive", () => six.got.length === 1 && four.got.length === 1);
  assert.equal(String(six.got[0]), "to six");
  assert.equal(String(four.got[0]), "to four");
  assert.equal(outbox.stats.byNode, 0);
});

test("sockaddr bytes of IPv4 and IPv6 addresses; a zone id or a name is left to Node", () => {
  assert.equal(sockaddrOf("10.203.0.1")?.subarray(0, 8).toString("hex"), "02000000" + "0acb0001");
  const hex = (ip: string): string | undefined => sockaddrOf(ip)?.subarray(8, 24).toString("hex");
  assert.equal(sockaddrOf("fd00::1")?.readUInt16LE(0), 10);
  assert.equal(hex("fd00::1"), "fd000000000000000000000000000001");
  assert.equal(hex("::1"), "00000000000000000000000000000001");
  assert.equal(hex("::"), "00000000000000000000000000000000");
  assert.equal(hex("2001:db8:0:1::2:3"), "20010db8000000010000000000020003");
  assert.equal(hex("1:2:3:4:5:6:7:8"), "00010002000300040005000600070008");
  assert.equal(hex("fe80::"), "fe800000000000000000000000000000");
  assert.equal(hex("::ffff:10.0.0.1"), "00000000000000000000ffff0a000001");
  assert.equal(sockaddrOf("fe80::1%eth0"), undefined);
  assert.equal(sockaddrOf("example.test"), undefined);
});
