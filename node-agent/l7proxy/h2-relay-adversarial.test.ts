// The h2c relay (h2-relay.ts) against a hostile client, in raw frames over TCP to a raw HTTP/2 destination: no request reaches the destination unjudged or in a form it may read otherwise than it was judged, and malformed input closes that connection only (a GOAWAY with its code), never the proxy.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS, type ProxyConfig } from "./config.ts";
import { encodeBlock, HpackDecoder } from "../../core/l7/hpack.ts";
import {
  ErrorCode,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  frame,
  FrameType,
  headerFrames,
  rstStream,
  Setting,
  settingsFrame,
  windowUpdate,
} from "../../core/l7/h2-frame.ts";
import { H2_PREFACE } from "./h2-proxy.ts";
import { RESET_BURST } from "./rapid-reset.ts";
import { h2c, request } from "./testing/h2c-client.ts";

const PORT = 24080 + (process.pid % 1000);

interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Buffer;
}

/** Frames off a byte stream as they complete. */
function frameReader(skip: number, onFrame: (f: Frame) => void): (d: Buffer) => void {
  let buf = Buffer.alloc(0);
  let left = skip;
  return (d) => {
    buf = Buffer.concat([buf, d]);
    const n = Math.min(left, buf.length);
    left -= n;
    buf = buf.subarray(n);
    while (buf.length >= 9) {
      const length = buf.readUIntBE(0, 3);
      if (buf.length < 9 + length) break;
      onFrame({ type: buf[3]!, flags: buf[4]!, stream: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + length) });
      buf = buf.subarray(9 + length);
    }
  };
}

/** What the destination got: every frame, and every header block decoded (the relay's encoder uses no dynamic table). */
const atDestination: { frames: Frame[]; blocks: { stream: number; raw: string[] }[] } = { frames: [], blocks: [] };

/**
 * A minimal HTTP/2 server: its SETTINGS, ACKs, and a 200 that ends the stream for each request block (none for a path
 * with "hang"; for one with "half", the first frame of a block it never finishes; after one with "mute", no more ACKs;
 * for "/ok/fill-N", N octets of body as fast as the connection window the proxy granted it allows, "/ok/fillpad-N" in
 * DATA frames padded with 7 octets each).
 */
const destination = net.createServer((s) => {
  s.on("error", () => {});
  const decoder = new HpackDecoder();
  let block: { stream: number; parts: Buffer[] } | undefined;
  let mute = false;
  // The connection window the proxy granted, and the bodies waiting for it.
  let window = 65535;
  const filling: { stream: number; left: number; pad: boolean }[] = [];
  const fill = (): void => {
    while (filling.length > 0) {
      const b = filling[0]!;
      const cost = b.pad ? 8 : 0;
      const n = Math.min(b.left, 16384 - cost, window - cost);
      if (n <= 0 && b.left > 0) return;
      const end = n === b.left ? FLAG_END_STREAM : 0;
      s.write(b.pad ? frame(FrameType.DATA, end | FLAG_PADDED, b.stream, Buffer.concat([Buffer.from([7]), Buffer.alloc(n, 0x61), Buffer.alloc(7)])) : frame(FrameType.DATA, end, b.stream, Buffer.alloc(n, 0x61)));
      window -= n + cost;
      b.left -= n;
      if (end) filling.shift();
    }
  };
  s.write(frame(FrameType.SETTINGS, 0, 0));
  s.on(
    "data",
    frameReader(H2_PREFACE.length, (f) => {
      atDestination.frames.push(f);
      if (f.type === FrameType.SETTINGS && !(f.flags & 1) && !mute) s.write(frame(FrameType.SETTINGS, 1, 0));
      if (f.type === FrameType.WINDOW_UPDATE && f.stream === 0) {
        window += f.payload.readUInt32BE(0);
        fill();
      }
      if (f.type === FrameType.HEADERS) block = { stream: f.stream, parts: [f.payload] };
      else if (f.type === FrameType.CONTINUATION) block?.parts.push(f.payload);
      else return;
      if (!(f.flags & FLAG_END_HEADERS) || !block) return;
      const raw = decoder.decode(Buffer.concat(block.parts)).raw;
      atDestination.blocks.push({ stream: block.stream, raw });
      const path = raw[raw.indexOf(":path") + 1] ?? "";
      mute ||= path.includes("mute");
      const filled = /^\/ok\/fill(pad)?-(\d+)$/.exec(path);
      if (filled) {
        s.write(headerFrames(block.stream, encodeBlock([":status", "200"]), false, 16384));
        filling.push({ stream: block.stream, left: Number(filled[2]), pad: filled[1] !== undefined });
        fill();
      } else if (path.includes("half")) s.write(frame(FrameType.HEADERS, 0, block.stream, encodeBlock([":status", "200"])));
      else if (raw.includes(":path") && !path.includes("hang"))
        s.write(headerFrames(block.stream, encodeBlock([":status", "200"]), true, 16384));
      block = undefined;
    }),
  );
});

/** Every flow the proxy reported. */
const flows: HttpFlow[] = [];

const proxy = new HttpProxy({
  onFlow: (f) => flows.push(f),
  redirects: {
    originalDestination: () => ({
      ip: "127.0.0.1",
      port: (destination.address() as net.AddressInfo).port,
      proxyPort: PORT,
      subject: 1000,
      ruleId: 9,
    }),
  },
  connectUpstream: (ip, port) => net.connect(port, ip),
});

const CONFIG: ProxyConfig = {
  address: "127.0.0.1",
  limits: { ...DEFAULT_LIMITS, maxHeaderBytes: 8192, headersTimeoutMs: 2000 },
  ports: [{ port: PORT, http: [{ ruleId: 9, index: 0, rule: { method: "GET|POST", path: "/ok/.*" } }] }],
};

before(async () => {
  destination.listen(0, "127.0.0.1");
  await once(destination, "listening");
  await proxy.apply(CONFIG);
});

after(async () => {
  await proxy.stop();
  destination.close();
});

/** A client speaking raw frames to the proxy port: its preface and an empty SETTINGS sent, what it gets kept. */
class RawClient {
  readonly frames: Frame[] = [];
  closed = false;
  /** Its port: its flows' source port. */
  readonly port: number;
  private constructor(readonly socket: net.Socket) {
    this.port = socket.localPort ?? 0;
    socket.on("error", () => {});
    socket.on("data", frameReader(0, (f) => this.frames.push(f)));
    socket.on("close", () => (this.closed = true));
  }

  /** `settings`: the entries of the client's first SETTINGS (none by default). */
  static async open(settings: [number, number][] = []): Promise<RawClient> {
    const socket = net.connect(PORT, "127.0.0.1");
    await once(socket, "connect");
    socket.write(Buffer.concat([H2_PREFACE, settingsFrame(Buffer.alloc(0), settings)]));
    return new RawClient(socket);
  }

  send(...frames: Buffer[]): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.concat(frames));
  }

  /** The first frame `match` takes, waited for up to 3 s. */
  async next(match: (f: Frame) => boolean, what: string): Promise<Frame> {
    for (let t = 0; t < 300; t++) {
      const f = this.frames.find(match);
      if (f) return f;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`no ${what} (got types ${this.frames.map((f) => `${f.type}@${f.stream}`).join(" ")})`);
  }

  reset(stream: number): Promise<Frame> {
    return this.next((f) => f.type === FrameType.RST_STREAM && f.stream === stream, `RST_STREAM on ${stream}`);
  }

  answer(stream: number): Promise<Frame> {
    return this.next((f) => f.type === FrameType.HEADERS && f.stream === stream, `HEADERS on ${stream}`);
  }

  goaway(): Promise<Frame> {
    return this.next((f) => f.type === FrameType.GOAWAY, "GOAWAY");
  }

  close(): void {
    this.socket.destroy();
  }
}

const GET = [":method", "GET", ":scheme", "http", ":authority", "deathstar", ":path"];

/** A request's HEADERS (a fresh block, no dynamic table), ending the stream unless `open`. */
function headers(stream: number, raw: readonly string[], open = false): Buffer {
  return headerFrames(stream, encodeBlock(raw), !open, 16384);
}

function blocksOn(stream: number, since: number): string[][] {
  return atDestination.blocks.slice(since).filter((b) => b.stream === stream).map((b) => b.raw);
}

test("a request block two readings could take differently is reset, never judged on one and sent on: :path twice, uppercase names, pseudo-headers misplaced or unknown, Host against :authority, connection fields, CR/LF in a value", async () => {
  const c = await RawClient.open();
  const since = atDestination.blocks.length;
  const malformed: (readonly string[])[] = [
    [":method", "GET", ":scheme", "http", ":authority", "deathstar", ":path", "/admin", ":path", "/ok/x"],
    [...GET, "/ok/x", "X-Role", "admin"],
    [":method", "GET", ":scheme", "http", ":authority", "deathstar", "x-a", "1", ":path", "/ok/x"],
    [...GET, "/ok/x", ":status", "200"],
    [...GET, "/ok/x", ":protocol", "websocket"],
    [...GET, "/ok/x", "host", "admin.internal"],
    [":method", "GET", ":scheme", "http", ":path", "/ok/x", "host", "deathstar", "host", "admin.internal"],
    [...GET, "/ok/x", "connection", "close"],
    [...GET, "/ok/x", "te", "gzip"],
    [...GET, "/ok/x", "x-a", "1\r\nx-role: admin"],
    [":method", "GET", ":scheme", "http", ":authority", "deathstar"],
    [":method", "CONNECT", ":authority", "deathstar:80", ":path", "/ok/x"],
  ];
  malformed.forEach((raw, i) => c.send(headers(2 * i + 1, raw)));
  for (let i = 0; i < malformed.length; i++) {
    const rst = await c.reset(2 * i + 1);
    assert.equal(rst.payload.readUInt32BE(0), ErrorCode.PROTOCOL_ERROR, `case ${i}`);
  }
  // The connection goes on: a good request after them is forwarded.
  const ok = 2 * malformed.length + 1;
  c.send(headers(ok, [...GET, "/ok/after", "host", "DeathStar"]));
  await c.answer(ok);
  assert.deepEqual(
    atDestination.blocks.slice(since).map((b) => b.stream),
    [ok],
    "only the well-formed request reached the destination",
  );
  c.close();
});

test("a second header block on a forwarded stream is trailers only as RFC 9113 has them: one without END_STREAM, one with pseudo-headers, one after the request ended are reset both ways, never passed on", async () => {
  const c = await RawClient.open();
  const since = atDestination.blocks.length;
  // Stream 1: allowed, its body still coming; a block that would open another request on it.
  c.send(headers(1, [...GET, "/ok/upload"], true));
  await c.answer(1);
  c.send(headers(1, [...GET, "/admin"], true));
  // Stream 3: the same with END_STREAM (trailers carrying pseudo-headers).
  c.send(headers(3, [...GET, "/ok/upload"], true));
  await c.answer(3);
  c.send(headers(3, [":path", "/admin", "x-checksum", "1"]));
  // Stream 5: the request ended (no answer yet), then a block anyway.
  c.send(headers(5, [...GET, "/ok/hang"]));
  c.send(headers(5, ["x-late", "1"]));
  for (const id of [1, 3, 5]) assert.equal((await c.reset(id)).payload.readUInt32BE(0), ErrorCode.PROTOCOL_ERROR);
  // Well-formed trailers still go on.
  c.send(headers(7, [...GET, "/ok/trailers"], true), headers(7, ["x-checksum", "0"]));
  c.send(headers(9, [...GET, "/ok/last"]));
  await c.answer(9);
  for (const id of [1, 3, 5]) assert.equal(blocksOn(id, since).length, 1, `stream ${id}: only the judged request`);
  assert.deepEqual(blocksOn(7, since).at(-1), ["x-checksum", "0"]);
  const resets = atDestination.frames.filter((f) => f.type === FrameType.RST_STREAM).map((f) => f.stream);
  for (const id of [1, 3, 5]) assert.ok(resets.includes(id), `the destination's stream ${id} reset`);
  c.close();
});

test("frames of unknown types and PRIORITY are not passed on, nor DATA after a stream's END_STREAM", async () => {
  const c = await RawClient.open();
  const count = atDestination.frames.length;
  c.send(frame(0x20, 0, 1, Buffer.from("extension")), frame(FrameType.PRIORITY, 0, 1, Buffer.alloc(5)));
  c.send(headers(3, [...GET, "/ok/hang"]), frame(FrameType.DATA, FLAG_END_STREAM, 3, Buffer.from("smuggled")));
  c.send(headers(5, [...GET, "/ok/next"]));
  await c.answer(5);
  const got = atDestination.frames.slice(count);
  assert.ok(!got.some((f) => f.type === 0x20 || f.type === FrameType.PRIORITY), "no unknown or PRIORITY frame");
  assert.ok(!got.some((f) => f.type === FrameType.DATA && f.stream === 3), "no DATA after END_STREAM");
  c.close();
});

test("a header block in a flood of empty CONTINUATION frames closes the connection with ENHANCE_YOUR_CALM at once, the proxy serving others", async () => {
  const c = await RawClient.open();
  const empty = frame(FrameType.CONTINUATION, 0, 1);
  // HEADERS without END_HEADERS: CONTINUATIONs follow.
  const flood = frame(FrameType.HEADERS, FLAG_END_STREAM, 1, encodeBlock([...GET, "/ok/x"]));
  const t0 = Date.now();
  c.send(flood, ...Array<Buffer>(20000).fill(empty));
  const goaway = await c.goaway();
  assert.equal(goaway.payload.readUInt32BE(4), ErrorCode.ENHANCE_YOUR_CALM);
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  await stillServes();
  c.close();
});

test("rapid reset (CVE-2023-44487): streams cancelled before their answer past the budget (rapid-reset.ts) close the connection with ENHANCE_YOUR_CALM and a flow saying why; the destination got no more than the budget, a client cancelling a few goes on", async () => {
  const calm = await RawClient.open();
  for (let id = 1; id < 400; id += 2) calm.send(headers(id, [...GET, "/ok/hang"]), rstStream(id, ErrorCode.CANCEL));
  calm.send(headers(401, [...GET, "/ok/after"]));
  await calm.answer(401);
  calm.close();

  const c = await RawClient.open();
  const since = atDestination.blocks.length;
  const pairs: Buffer[] = [];
  for (let i = 0; i < 1500; i++) pairs.push(headers(2 * i + 1, [...GET, "/ok/hang"]), rstStream(2 * i + 1, ErrorCode.CANCEL));
  c.send(...pairs);
  assert.equal((await c.goaway()).payload.readUInt32BE(4), ErrorCode.ENHANCE_YOUR_CALM);
  await new Promise((r) => setTimeout(r, 50));
  const forwarded = atDestination.blocks.length - since;
  assert.ok(forwarded <= RESET_BURST + 50, `${forwarded} requests reached the destination`);
  const f = await flowOf(c, (f) => f.reason?.startsWith("rapid reset") === true);
  assert.equal(f.verdict, "error");
  assert.equal(f.status, 0);
  assert.equal(f.path, "/ok/hang");
  await stillServes();
});

test("the proxy's own answers keep to the client's windows: SETTINGS_INITIAL_WINDOW_SIZE 0 holds a 403's body until the stream's WINDOW_UPDATE, 5 lets 5 octets through first", async () => {
  const c = await RawClient.open([[Setting.INITIAL_WINDOW_SIZE, 0]]);
  c.send(headers(1, [...GET, "/no/denied"]));
  await c.answer(1);
  await new Promise((r) => setTimeout(r, 100));
  const data = (): Frame[] => c.frames.filter((f) => f.type === FrameType.DATA && f.stream === 1);
  assert.equal(data().length, 0, "no DATA into a window of 0");
  c.send(windowUpdate(1, 5));
  const first = await c.next((f) => f.type === FrameType.DATA && f.stream === 1, "DATA on 1");
  assert.equal(first.payload.length, 5);
  assert.equal(first.flags & FLAG_END_STREAM, 0);
  c.send(windowUpdate(1, 1000));
  await c.next((f) => f.type === FrameType.DATA && f.stream === 1 && (f.flags & FLAG_END_STREAM) !== 0, "the body's end");
  assert.equal(Buffer.concat(data().map((f) => f.payload)).toString(), "Access denied");
  c.close();
});

/** Polls `ready` until it holds: no deadline of its own (a stall is the test's timeout, never a wall-clock assert). */
async function whenReady(ready: () => boolean): Promise<void> {
  while (!ready()) await new Promise((r) => setTimeout(r, 2));
}

/** The octets of DATA `c` got (padding included: what counts against its connection window), on every stream. */
function dataOctets(c: RawClient): number {
  return c.frames.reduce((n, f) => n + (f.type === FrameType.DATA ? f.payload.length : 0), 0);
}

/** The body `c` got on `stream` (padding removed), and whether it ended. */
function bodyOf(c: RawClient, stream: number): { body: Buffer; ended: boolean } {
  const data = c.frames.filter((f) => f.type === FrameType.DATA && f.stream === stream);
  const body = Buffer.concat(data.map((f) => (f.flags & FLAG_PADDED ? f.payload.subarray(1, f.payload.length - f.payload[0]!) : f.payload)));
  return { body, ended: data.some((f) => (f.flags & FLAG_END_STREAM) !== 0) };
}

for (const variant of ["fill", "fillpad"])
  test(`the client never gets more DATA than its connection window granted, however the proxy's own 403 bodies and a destination streaming as fast as its window allows interleave; every octet it granted comes (${variant === "fill" ? "plain" : "padded"} DATA)`, { timeout: 20_000 }, async () => {
    const c = await RawClient.open([[Setting.INITIAL_WINDOW_SIZE, 1 << 30]]);
    let granted = 65535;
    const overruns: string[] = [];
    const check = (when: string): void => {
      if (dataOctets(c) > granted) overruns.push(`${when}: got ${dataOctets(c)} of DATA, granted ${granted}`);
    };
    const SIZE = 200_000;
    const denied: number[] = [1];
    // A 403's body takes 13 octets of the client's window the destination was also granted; then the destination fills all it has.
    c.send(headers(1, [...GET, "/no/denied"]));
    await whenReady(() => bodyOf(c, 1).ended);
    c.send(headers(3, [...GET, `/ok/${variant}-${SIZE}`]));
    for (let round = 0, id = 5; !bodyOf(c, 3).ended; round++, id += 2) {
      // Filled to the octet: the client got all it granted (none held back: a client that waits for its window to run out before it grants would stall otherwise).
      await whenReady(() => dataOctets(c) >= granted || bodyOf(c, 3).ended);
      // What the relay still had in flight arrives within this (on main: the destination's DATA past the window).
      await new Promise((r) => setTimeout(r, round === 0 ? 50 : 5));
      check(`round ${round}`);
      // Denied requests between the grants: their bodies take window too.
      c.send(headers(id, [...GET, "/no/denied"]));
      denied.push(id);
      granted += 20_000;
      c.send(windowUpdate(0, 20_000));
    }
    await whenReady(() => denied.every((id) => bodyOf(c, id).ended));
    check("at the end");
    assert.deepEqual(overruns, []);
    assert.equal(bodyOf(c, 3).body.length, SIZE);
    for (const id of denied) assert.equal(bodyOf(c, id).body.toString(), "Access denied");
    c.close();
  });

test("a fresh connection never stalls on the proxy's own bodies: with no WINDOW_UPDATE from the client ever, a denied request's body, an allowed streamed response and another denied body all come whole", { timeout: 20_000 }, async () => {
  const c = await RawClient.open();
  c.send(headers(1, [...GET, "/no/first"]));
  await whenReady(() => bodyOf(c, 1).ended);
  c.send(headers(3, [...GET, "/ok/fill-30000"]), headers(5, [...GET, "/no/then"]));
  await whenReady(() => bodyOf(c, 3).ended && bodyOf(c, 5).ended);
  assert.equal(bodyOf(c, 3).body.length, 30_000);
  assert.equal(bodyOf(c, 5).body.toString(), "Access denied");
  // The window the client granted at the start, all of it used: 13 + 30,000 + 13 octets, nothing past it.
  c.send(headers(7, [...GET, "/ok/fill-40000"]));
  await whenReady(() => dataOctets(c) >= 65535);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(dataOctets(c), 65535, "the window filled to the octet, not past it");
  // Its next WINDOW_UPDATE lets the rest come: the octets held back first, then what the destination was granted of it.
  c.send(windowUpdate(0, 10_000));
  await whenReady(() => bodyOf(c, 7).ended);
  assert.equal(bodyOf(c, 7).body.length, 40_000);
  assert.equal(dataOctets(c), 13 + 30_000 + 13 + 40_000);
  c.close();
});

test("the proxy's own frames held behind a destination's half-sent header block are bounded: a flood of denied requests closes the connection with ENHANCE_YOUR_CALM, memory flat", async (t) => {
  const c = await RawClient.open();
  c.send(headers(1, [...GET, "/ok/half"]));
  await c.next((f) => f.type === FrameType.HEADERS && f.stream === 1, "the half-sent block");
  const before = process.memoryUsage();
  const denied = encodeBlock([...GET, "/no/flood"]);
  for (let round = 0; round < 20 && !c.closed; round++) {
    c.send(...Array.from({ length: 1000 }, (_, i) => headerFrames(3 + 2 * (round * 1000 + i), denied, true, 16384)));
    await new Promise((r) => setTimeout(r, 5));
  }
  const code = await c.goaway().then((g) => g.payload.readUInt32BE(4), () => undefined);
  const after = process.memoryUsage();
  t.diagnostic(`heap ${((after.heapUsed - before.heapUsed) / 1e6).toFixed(1)} MB, external ${((after.external - before.external) / 1e6).toFixed(1)} MB after the flood`);
  assert.equal(code, ErrorCode.ENHANCE_YOUR_CALM);
  c.close();
});

test("client SETTINGS the destination never acknowledges are bounded: past 32 of them, GOAWAY ENHANCE_YOUR_CALM", async () => {
  const c = await RawClient.open();
  c.send(headers(1, [...GET, "/ok/mute"]));
  await c.answer(1);
  c.send(...Array<Buffer>(100).fill(settingsFrame(Buffer.alloc(0), [[Setting.HEADER_TABLE_SIZE, 1024]])));
  assert.equal((await c.goaway()).payload.readUInt32BE(4), ErrorCode.ENHANCE_YOUR_CALM);
  c.close();
});

test("requests the proxy refuses without judging have a flow with the reason: malformed (reset), an escaped slash (307; gRPC INTERNAL), trailers that are not (reset)", async () => {
  const c = await RawClient.open();
  c.send(headers(1, [...GET, "/ok/x", "host", "admin.internal"]));
  c.send(headers(3, [...GET, "/ok/a%2Fb"]));
  c.send(headers(5, [...GET, "/ok/hang"], true));
  c.send(headers(7, [":method", "POST", ":scheme", "http", ":authority", "deathstar", ":path", "/pkg.Svc%2FGet", "content-type", "application/grpc"]));
  await c.answer(3);
  await c.answer(7);
  c.send(headers(5, [":path", "/admin"]));
  for (const id of [1, 5]) await c.reset(id);
  const malformed = await flowOf(c, (f) => f.path === "/ok/x");
  assert.deepEqual([malformed.verdict, malformed.status, malformed.reason], ["denied", 0, "malformed HTTP/2 request"]);
  const redirected = await flowOf(c, (f) => f.path === "/ok/a%2Fb");
  assert.deepEqual([redirected.verdict, redirected.status], ["denied", 307]);
  assert.match(redirected.reason ?? "", /escaped slash/);
  assert.ok(redirected.responseHeaders?.some((h) => h.name === "location" && h.value === "/ok/a/b"));
  const grpc = await flowOf(c, (f) => f.path === "/pkg.Svc%2FGet");
  assert.deepEqual([grpc.verdict, grpc.status], ["denied", 200]);
  assert.ok(grpc.responseHeaders?.some((h) => h.name === "grpc-status" && h.value === "13"));
  const trailers = await flowOf(c, (f) => f.path === "/ok/hang");
  assert.deepEqual([trailers.verdict, trailers.status], ["error", 0]);
  assert.equal(trailers.reason, "malformed HTTP/2 trailers");
  c.close();
});

/** The first flow of `c`'s connection that `match` takes, waited for up to 3 s (a flow is reported after the answer). */
async function flowOf(c: RawClient, match: (f: HttpFlow) => boolean): Promise<HttpFlow> {
  const port = c.port;
  for (let t = 0; t < 300; t++) {
    const f = flows.find((f) => f.source.port === port && match(f));
    if (f) return f;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no such flow (got ${flows.filter((f) => f.source.port === port).map((f) => `${f.path} ${f.verdict} ${f.status}`).join(", ")})`);
}

/** Each input, on a connection of its own, ends it with a GOAWAY of that code; the proxy then still serves a good client. */
const BROKEN: [string, Buffer, number][] = [
  ["a frame over the size limit", Buffer.from([1, 0, 1, 0, 0, 0, 0, 0, 1]), ErrorCode.PROTOCOL_ERROR],
  ["HEADERS on stream 0", headers(0, [...GET, "/ok/x"]), ErrorCode.PROTOCOL_ERROR],
  ["padding longer than the frame", frame(FrameType.HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, Buffer.from([9, 0x82])), ErrorCode.PROTOCOL_ERROR],
  ["CONTINUATION without HEADERS", frame(FrameType.CONTINUATION, FLAG_END_HEADERS, 1, Buffer.from([0x82])), ErrorCode.PROTOCOL_ERROR],
  ["PING inside a header block", Buffer.concat([frame(FrameType.HEADERS, 0, 1, Buffer.from([0x82])), frame(FrameType.PING, 0, 0, Buffer.alloc(8))]), ErrorCode.PROTOCOL_ERROR],
  ["SETTINGS inside a header block", Buffer.concat([frame(FrameType.HEADERS, 0, 1, Buffer.from([0x82])), frame(FrameType.SETTINGS, 0, 0)]), ErrorCode.PROTOCOL_ERROR],
  ["SETTINGS of 5 octets", frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(5)), ErrorCode.FRAME_SIZE_ERROR],
  ["HPACK index 0", frame(FrameType.HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0x80])), ErrorCode.COMPRESSION_ERROR],
  ["HPACK index beyond the table", frame(FrameType.HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0xbe])), ErrorCode.COMPRESSION_ERROR],
  ["a table size update above SETTINGS_HEADER_TABLE_SIZE", frame(FrameType.HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0x3f, 0xe1, 0x3f])), ErrorCode.COMPRESSION_ERROR],
  ["a table size update after a field", frame(FrameType.HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0x82, 0x20])), ErrorCode.COMPRESSION_ERROR],
  ["an integer over 2^28", frame(FrameType.HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), ErrorCode.COMPRESSION_ERROR],
  ["a string past the block", frame(FrameType.HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0x00, 0x05, 0x61])), ErrorCode.COMPRESSION_ERROR],
  ["Huffman with EOS", frame(FrameType.HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x01, 0x61])), ErrorCode.COMPRESSION_ERROR],
  ["Huffman padded with zeros", frame(FrameType.HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0x00, 0x81, 0x00, 0x01, 0x61])), ErrorCode.COMPRESSION_ERROR],
];

for (const [what, input, code] of BROKEN)
  test(`malformed input closes its connection with a GOAWAY: ${what}`, async () => {
    const c = await RawClient.open();
    c.send(input);
    assert.equal((await c.goaway()).payload.readUInt32BE(4), code);
    c.close();
  });

/** A good client still gets its answers through the proxy. */
async function stillServes(): Promise<void> {
  const session = h2c(PORT);
  try {
    assert.equal((await request(session, { ":path": "/ok/alive" })).status, 200);
    assert.equal((await request(session, { ":path": "/no/denied" })).status, 403);
  } finally {
    session.destroy();
  }
}

/** A small deterministic PRNG (mulberry32): a failing seed can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("fuzz: random and mutated frames on 200 connections never take the proxy down; a good client is served after", async (t) => {
  const seed = Number(process.env.H2_FUZZ_SEED ?? Date.now() % 1e9);
  t.diagnostic(`seed ${seed} (H2_FUZZ_SEED replays it)`);
  const rand = prng(seed);
  const int = (n: number): number => Math.floor(rand() * n);
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  const valid = (): Buffer[] => [
    headers(1, [...GET, "/ok/a", "x-a", "b"], true),
    frame(FrameType.DATA, 0, 1, bytes(int(40))),
    headers(1, ["x-t", "1"]),
    frame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.from([0, 0, 1, 0])),
    frame(FrameType.PING, 0, 0, Buffer.alloc(8)),
    frame(FrameType.SETTINGS, 0, 0, Buffer.from([0, 1, 0, 0, 0x10, 0])),
    headers(3, [...GET, "/no/b"], true),
    frame(FrameType.DATA, FLAG_END_STREAM, 3, bytes(5)),
    frame(FrameType.RST_STREAM, 0, 1, Buffer.from([0, 0, 0, 8])),
    frame(FrameType.CONTINUATION, FLAG_END_HEADERS, 5, Buffer.from([0x82])),
  ];
  const input = (): Buffer => {
    const frames = valid()
      .filter(() => rand() < 0.6)
      .map((f): Buffer => {
        const m = Buffer.from(f);
        // Mutate: a byte of the header or payload flipped, or the frame cut short, or random bytes instead.
        const r = rand();
        if (r < 0.3) m[int(m.length)] = int(256);
        else if (r < 0.4) return m.subarray(0, int(m.length));
        else if (r < 0.5) return Buffer.concat([m.subarray(0, 9), bytes(int(30))]);
        return m;
      });
    if (rand() < 0.2) frames.push(frame(int(12), int(256), int(8), bytes(int(20))));
    return Buffer.concat(frames);
  };
  const one = async (): Promise<void> => {
    const c = await RawClient.open();
    c.send(input());
    await new Promise((r) => setTimeout(r, 20 + int(30)));
    c.close();
  };
  for (let round = 0; round < 20; round++) await Promise.all(Array.from({ length: 10 }, one));
  await stillServes().catch((err: Error) => assert.fail(`seed ${seed}: ${err.message}`));
});
