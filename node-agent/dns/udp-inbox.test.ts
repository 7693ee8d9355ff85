// The proxy's UDP receives on loopback: every datagram of a burst reaches the receiver once, whole, in order and with its own sender, the rest of a wake-up read by recvmmsg; IPv6 sockets are Node's alone.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { UdpInbox } from "./udp-inbox.ts";

const sockets: dgram.Socket[] = [];
after(() => {
  for (const s of sockets) s.close();
});

async function bound(type: "udp4" | "udp6", address: string): Promise<dgram.Socket> {
  // Room for a whole burst (the kernel drops what does not fit; its limit here is net.core.rmem_max).
  const sock = dgram.createSocket({ type, recvBufferSize: 2 << 20 });
  sockets.push(sock);
  await new Promise<void>((r) => sock.bind(0, address, r));
  return sock;
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (const end = Date.now() + 5_000; !ok(); ) {
    if (Date.now() > end) assert.fail(`not within 5 s: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Sends every payload before the receiver's process can read any, so they wait in its socket together. */
async function burst(from: dgram.Socket, to: dgram.Socket, payloads: readonly Buffer[]): Promise<void> {
  await Promise.all(payloads.map((p) => new Promise<void>((resolve, reject) => from.send(p, to.address().port, "127.0.0.1", (err) => (err ? reject(err) : resolve())))));
}

test("a burst from two senders: each datagram once, whole and in order, with its own sender; all but a wake-up's first read by recvmmsg", async () => {
  const rx = await bound("udp4", "127.0.0.1");
  const one = await bound("udp4", "127.0.0.1");
  const two = await bound("udp4", "127.0.0.2");
  const got: { from: string; data: Buffer; read: number }[] = [];
  const inbox = new UdpInbox();
  inbox.attach(rx, (msg, address, port, read) => got.push({ from: `${address}:${port}`, data: msg, read }));
  // Sizes from one byte to a datagram near the largest UDP payload: none may be cut.
  const sent = { one: [] as Buffer[], two: [] as Buffer[] };
  for (let i = 0; i < 150; i++) sent[i % 2 ? "two" : "one"].push(Buffer.alloc(i === 75 ? 60_000 : 1 + i * 13, i));
  await Promise.all([burst(one, rx, sent.one), burst(two, rx, sent.two)]);
  await until("all 150 arrive", () => got.length === 150);
  const from = (s: dgram.Socket): string => `${s.address().address}:${s.address().port}`;
  assert.deepEqual(got.filter((g) => g.from === from(one)).map((g) => g.data), sent.one, "the first sender's, whole and in order");
  assert.deepEqual(got.filter((g) => g.from === from(two)).map((g) => g.data), sent.two, "the second sender's, from 127.0.0.2");
  assert.equal(inbox.stats.byNode + inbox.stats.drained, 150, "each once");
  assert.ok(inbox.stats.drained > 0, `the rest of a burst is read by recvmmsg (${JSON.stringify(inbox.stats)})`);
  // The read each came in: one number per datagram Node delivered and per recvmmsg call that returned any, never going back.
  const reads = got.map((g) => g.read);
  assert.ok(
    reads.every((r, i) => i === 0 || r >= reads[i - 1]!),
    "reads in order",
  );
  const perRead = new Map<number, number>();
  for (const r of reads) perRead.set(r, (perRead.get(r) ?? 0) + 1);
  assert.ok(perRead.size >= inbox.stats.byNode && perRead.size <= inbox.stats.byNode + inbox.stats.calls, `${perRead.size} reads for ${JSON.stringify(inbox.stats)}`);
  assert.ok([...perRead.values()].some((n) => n > 1), "a recvmmsg read hands several datagrams with one number");
  // Each datagram is the receiver's own: overwriting one changes no other.
  const others = got.slice(1).map((g) => Buffer.from(g.data));
  got[0]!.data.fill(0xff);
  assert.deepEqual(got.slice(1).map((g) => g.data), others);
});

test("an IPv6 socket is read by Node alone", async () => {
  const rx = await bound("udp6", "::1");
  const tx = await bound("udp6", "::1");
  const got: string[] = [];
  const inbox = new UdpInbox();
  inbox.attach(rx, (msg, address) => got.push(`${address} ${String(msg)}`));
  await Promise.all(["a", "b", "c"].map((m) => new Promise<void>((r) => tx.send(m, rx.address().port, "::1", () => r()))));
  await until("all 3 arrive", () => got.length === 3);
  assert.deepEqual(got, ["::1 a", "::1 b", "::1 c"]);
  assert.deepEqual(inbox.stats, { byNode: 3, drained: 0, calls: 0 });
});
