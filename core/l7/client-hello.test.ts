import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { once } from "node:events";
import { readClientHello } from "./client-hello.ts";

/** The first bytes Node's TLS client sends (its real ClientHello), naming `servername` ("" for none). */
async function clientHello(servername: string): Promise<Buffer> {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const got = new Promise<Buffer>((resolve) => server.once("connection", (s) => s.once("data", (d: Buffer) => (resolve(d), s.destroy()))));
  const c = tls.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port, servername, ALPNProtocols: ["h2", "http/1.1"] });
  c.on("error", () => {});
  const hello = await got;
  c.destroy();
  server.close();
  return hello;
}

test("the server name of a real ClientHello, and none when the client sends no SNI", async () => {
  assert.deepEqual(readClientHello(await clientHello("api.example.com")), { kind: "hello", serverName: "api.example.com" });
  assert.deepEqual(readClientHello(await clientHello("")), { kind: "hello" });
});

test("a ClientHello arriving a byte at a time is 'more' until it is whole", async () => {
  const hello = await clientHello("a.b.example");
  for (let n = 0; n < hello.length; n++) assert.equal(readClientHello(hello.subarray(0, n)).kind, "more", `at ${n} bytes`);
  assert.deepEqual(readClientHello(hello), { kind: "hello", serverName: "a.b.example" });
});

test("a ClientHello split over two TLS records is read across them", async () => {
  const hello = await clientHello("split.example");
  const body = hello.subarray(5);
  const record = (b: Buffer): Buffer => Buffer.concat([Buffer.from([22, 3, 1, b.length >> 8, b.length & 0xff]), b]);
  const twoRecords = Buffer.concat([record(body.subarray(0, 40)), record(body.subarray(40))]);
  assert.deepEqual(readClientHello(twoRecords), { kind: "hello", serverName: "split.example" });
});

test("what is not a ClientHello is invalid, saying why: plain HTTP, another record type, another handshake message, a truncated extension", async () => {
  assert.deepEqual(readClientHello(Buffer.from("GET / HTTP/1.1\r\n")), { kind: "invalid", reason: "not a TLS handshake" });
  assert.equal(readClientHello(Buffer.from([23, 3, 3, 0, 1, 0])).kind, "invalid");
  assert.deepEqual(readClientHello(Buffer.from([22, 3, 3, 0, 4, 2, 0, 0, 0])), { kind: "invalid", reason: "the first handshake message is not a ClientHello" });
  const hello = await clientHello("x.example");
  const broken = Buffer.from(hello);
  // Claim a longer extensions block than the body holds.
  const bodyLen = broken.readUIntBE(6, 3);
  broken.writeUIntBE(bodyLen, 6, 3);
  const sidLen = broken[9 + 2 + 32]!;
  let off = 9 + 2 + 32 + 1 + sidLen;
  off += 2 + broken.readUInt16BE(off);
  off += 1 + broken[off]!;
  broken.writeUInt16BE(0xffff, off);
  assert.deepEqual(readClientHello(broken), { kind: "invalid", reason: "a malformed ClientHello" });
});
