// The frame-level h2c relay (h2-relay.ts) on loopback between Node's own HTTP/2 client and server: both peers' HPACK tables and flow-control windows stay in step across denied and allowed streams, bodies both ways, trailers, resets and header actions.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { once } from "node:events";
import { HttpProxy, type HttpFlow } from "./http-proxy.ts";
import { DEFAULT_LIMITS, type ProxyConfig } from "./config.ts";
import { h2c, request, until } from "./testing/h2c-client.ts";

const PORT = 21080 + (process.pid % 1000);
const RULE = 9;
const flows: HttpFlow[] = [];
let server: http2.Http2Server;
let serverPort = 0;
/** Upstream connections the server has seen: the relay opens one per client connection. */
let sessions = 0;
/** Where the datapath's record says clients were going: the HTTP/2 server, or for one test an HTTP/1.1-only one. */
let destination = 0;
const seen: {
  path: string;
  headers: http2.IncomingHttpHeaders;
  body: number;
  trailers?: http2.IncomingHttpHeaders;
  rstCode?: number;
}[] = [];

/** A proxy on `proxyPort` whose every client "was going to" `destination` (the datapath's record), its flows kept. */
function proxyOn(proxyPort: number): HttpProxy {
  return new HttpProxy({
    redirects: {
      originalDestination: () => ({
        ip: "127.0.0.1",
        port: destination,
        proxyPort,
        subject: 1000,
        ruleId: RULE,
      }),
    },
    onFlow: (f) => flows.push(f),
    connectUpstream: (ip, port) => net.connect(port, ip),
  });
}
const proxy = proxyOn(PORT);

const CONFIG: ProxyConfig = {
  address: "127.0.0.1",
  limits: { ...DEFAULT_LIMITS, maxHeaderBytes: 8192 },
  ports: [
    {
      port: PORT,
      http: [
        { ruleId: RULE, index: 0, rule: { method: "GET|POST", path: "/ok/.*" } },
        {
          ruleId: RULE,
          index: 1,
          rule: {
            method: "GET",
            path: "/actions",
            headerMatches: [
              { name: "x-role", value: "pilot", mismatch: "REPLACE" },
              { name: "x-added", value: "yes", mismatch: "ADD" },
              { name: "x-debug", value: "never", mismatch: "DELETE" },
            ],
          },
        },
      ],
    },
  ],
};

before(async () => {
  server = http2.createServer();
  server.on("session", () => sessions++);
  server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    const path = String(headers[":path"]);
    const entry: (typeof seen)[number] = { path, headers, body: 0 };
    seen.push(entry);
    stream.on("data", (d: Buffer) => (entry.body += d.length));
    stream.on("trailers", (t: http2.IncomingHttpHeaders) => (entry.trailers = t));
    stream.on("error", () => {});
    stream.on("close", () => (entry.rstCode = stream.rstCode));
    if (path === "/ok/reset") return void stream.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    if (path === "/ok/hang") return;
    if (path === "/ok/die") return void stream.session?.destroy();
    stream.on("end", () => {
      if (path.startsWith("/ok/download/")) {
        const total = Number(path.split("/").at(-1));
        stream.respond({ ":status": 200, "x-served-by": "relay-test" });
        const chunk = Buffer.alloc(1 << 16, 97);
        let left = total;
        const pump = (): void => {
          while (left > 0) {
            const n = Math.min(left, chunk.length);
            left -= n;
            if (!stream.write(chunk.subarray(0, n))) return void stream.once("drain", pump);
          }
          stream.end();
        };
        return pump();
      }
      // The same custom response headers each time: the server's encoder indexes them, the client's decoder must follow.
      stream.respond(
        { ":status": 200, "content-type": "text/plain", "x-served-by": "relay-test", "x-request-path": path },
        { waitForTrailers: true },
      );
      stream.on("wantTrailers", () => stream.sendTrailers({ "x-checksum": String(entry.body) }));
      stream.end(`ok ${path} ${entry.body}`);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  serverPort = (server.address() as net.AddressInfo).port;
  destination = serverPort;
  await proxy.apply(CONFIG);
});

after(async () => {
  await proxy.stop();
  server.close();
});

/** Runs `fn` on a new h2c session, destroyed after. */
async function withSession(
  session: http2.ClientHttp2Session,
  fn: (session: http2.ClientHttp2Session) => Promise<void>,
): Promise<void> {
  try {
    await fn(session);
  } finally {
    session.destroy();
  }
}

test("denied and allowed streams alternate on one connection with the client's HPACK table in use: every allowed one arrives with its headers, every answer decodes", async () => {
  const sessionsBefore = sessions;
  await withSession(h2c(PORT), async (session) => {
    for (let i = 0; i < 20; i++) {
      // The same custom headers each time (the client's encoder indexes them), one that changes (new entries evict old ones).
      const common = { "x-tenant": "rebels", "x-trace-note": "a".repeat(40), "x-seq": String(i) };
      const denied = await request(session, { ":path": `/no/${i}`, ...common });
      assert.equal(denied.status, 403);
      assert.equal(denied.body, "Access denied");
      const allowed = await request(session, { ":path": `/ok/${i}`, ...common });
      assert.equal(allowed.status, 200);
      assert.equal(allowed.headers["x-served-by"], "relay-test");
      assert.equal(allowed.headers["x-request-path"], `/ok/${i}`);
      const at = seen.at(-1)!;
      assert.equal(at.path, `/ok/${i}`);
      assert.equal(at.headers["x-tenant"], "rebels");
      assert.equal(at.headers["x-seq"], String(i));
    }
    assert.equal(
      seen.filter((s) => s.path.startsWith("/no/")).length,
      0,
      "no denied stream reached the server",
    );
    assert.equal(sessions - sessionsBefore, 1, "one upstream connection for the client connection");
    const last = flows.filter((f) => f.path === "/ok/19" || f.path === "/no/19");
    assert.deepEqual(
      last.map((f) => [f.path, f.verdict, f.status, f.rule?.index]),
      [
        ["/no/19", "denied", 403, undefined],
        ["/ok/19", "forwarded", 200, 0],
      ],
    );
    assert.equal(last[1]!.protocol, "HTTP/2");
    assert.ok(last[1]!.responseHeaders?.some((h) => h.name === "x-served-by" && h.value === "relay-test"));
  });
});

test("a denied stream's request body does not stall the connection: the client's window is given back and a large allowed upload follows", async () => {
  await withSession(h2c(PORT), async (session) => {
    // Larger than the connection's initial window (65,535) several times over.
    const body = Buffer.alloc(400_000, 98);
    const denied = await request(session, { ":method": "POST", ":path": "/no/upload" }, body);
    assert.equal(denied.status, 403);
    const again = await request(session, { ":method": "POST", ":path": "/no/upload2" }, body);
    assert.equal(again.status, 403);
    const allowed = await request(session, { ":method": "POST", ":path": "/ok/upload" }, body);
    assert.equal(allowed.status, 200);
    assert.equal(allowed.body, `ok /ok/upload ${body.length}`);
  });
});

test("trailers go both ways, as sent", async () => {
  await withSession(h2c(PORT), async (session) => {
    const a = await request(session, { ":method": "POST", ":path": "/ok/trailers" }, "twelve bytes", {
      "x-client-sum": "12",
    });
    assert.equal(a.status, 200);
    assert.equal(a.trailers["x-checksum"], "12");
    assert.equal(seen.at(-1)!.trailers?.["x-client-sum"], "12");
  });
});

test("a reset from the destination before it answered is the proxy's 503 (gRPC: UNAVAILABLE); a client's cancel resets the destination's stream; the connection goes on", async () => {
  await withSession(h2c(PORT), async (session) => {
    const reset = await request(session, { ":path": "/ok/reset" });
    assert.equal(reset.status, 503);
    const grpcReset = await request(
      session,
      { ":method": "POST", ":path": "/ok/reset", "content-type": "application/grpc" },
      Buffer.alloc(5),
    );
    assert.equal(grpcReset.headers["grpc-status"], "14");
    assert.deepEqual(
      flows.filter((x) => x.path === "/ok/reset").map((f) => [f.verdict, f.status]),
      [
        ["error", 503],
        ["error", 200],
      ],
    );

    const cancelled = session.request({ ":method": "POST", ":path": "/ok/cancelled" });
    cancelled.on("error", () => {});
    cancelled.write("part");
    await until(() => seen.at(-1)?.path === "/ok/cancelled");
    const at = seen.at(-1)!;
    assert.equal(at.path, "/ok/cancelled");
    cancelled.close(http2.constants.NGHTTP2_CANCEL);
    await until(() => at.rstCode !== undefined);
    assert.equal(at.rstCode, http2.constants.NGHTTP2_CANCEL, "the server's stream was cancelled");
    assert.equal((await request(session, { ":path": "/ok/after" })).status, 200);
  });
});

test("the destination's connection gone with streams unanswered: each gets the proxy's 503 and the client connection ends", async () => {
  await withSession(h2c(PORT), async (session) => {
    const hanging = request(session, { ":path": "/ok/hang" });
    await until(() => seen.at(-1)?.path === "/ok/hang");
    const dying = await request(session, { ":path": "/ok/die" });
    assert.equal(dying.status, 503);
    assert.equal((await hanging).status, 503);
    if (!session.closed) await once(session, "close");
  });
});

test("a large streamed response (32 MiB) arrives whole", async () => {
  await withSession(h2c(PORT), async (session) => {
    const total = 32 << 20;
    const a = await request(session, { ":path": `/ok/download/${total}` });
    assert.equal(a.status, 200);
    assert.equal(a.bytes, total);
  });
});

test("header actions: REPLACE, ADD and DELETE are applied to what the destination gets", async () => {
  await withSession(h2c(PORT), async (session) => {
    const a = await request(session, {
      ":path": "/actions",
      "x-role": "stormtrooper",
      "x-debug": "yes",
      "x-keep": "1",
    });
    assert.equal(a.status, 200);
    const got = seen.at(-1)!.headers;
    assert.equal(got["x-role"], "pilot");
    assert.equal(got["x-added"], "yes");
    assert.equal(got["x-debug"], undefined);
    assert.equal(got["x-keep"], "1");
    const f = flows.find((x) => x.path === "/actions")!;
    assert.deepEqual(
      f.mismatches?.map((m) => m.action),
      ["REPLACE", "ADD", "DELETE"],
    );
  });
});

test("gRPC-shaped denial: trailers-only PERMISSION_DENIED, no DATA; the next allowed call on the connection decodes", async () => {
  await withSession(h2c(PORT), async (session) => {
    const headers = { ":method": "POST", "content-type": "application/grpc", te: "trailers" };
    const denied = await request(session, { ...headers, ":path": "/pkg.Svc/Denied" }, Buffer.alloc(5));
    assert.equal(denied.status, 200);
    assert.equal(denied.headers["grpc-status"], "7");
    assert.equal(denied.headers["grpc-message"], "Access denied");
    assert.equal(denied.bytes, 0);
    const ok = await request(session, { ...headers, ":path": "/ok/grpc" }, Buffer.alloc(5));
    assert.equal(ok.status, 200);
  });
});

test("a client that lowered its header table size gets the size update in the proxy's own answer when that is the first block after its SETTINGS took effect", async () => {
  await withSession(h2c(PORT, { headerTableSize: 512 }), async (session) => {
    // The destination acknowledged the client's SETTINGS: from now on the client's decoder expects the update.
    await once(session, "localSettings");
    const denied = await request(session, { ":path": "/no/first" });
    assert.equal(denied.status, 403);
    for (let i = 0; i < 5; i++) {
      const ok = await request(session, { ":path": `/ok/small-table/${i}` });
      assert.equal(ok.headers["x-request-path"], `/ok/small-table/${i}`);
      assert.equal((await request(session, { ":path": `/no/${i}` })).status, 403);
    }
  });
});

test("a destination that does not speak h2c (an HTTP/1.1 server): the connection is served as before the relay, a denied stream still 403", async () => {
  const h1 = http.createServer((_req, res) => res.end("h1"));
  h1.listen(0, "127.0.0.1");
  await once(h1, "listening");
  destination = (h1.address() as net.AddressInfo).port;
  const session = h2c(PORT);
  try {
    const denied = await request(session, { ":method": "PUT", ":path": "/no/exhaust-port" });
    assert.equal(denied.status, 403);
    assert.equal(denied.body, "Access denied");
  } finally {
    session.destroy();
    destination = serverPort;
    h1.close();
  }
});

test("slowloris over h2c: a header block left unfinished (HEADERS without END_HEADERS, no CONTINUATION) closes the connection at the head timeout", async () => {
  const port = PORT + 1;
  const quick = proxyOn(port);

  await quick.apply({
    ...CONFIG,
    limits: { ...CONFIG.limits, headersTimeoutMs: 300 },
    ports: [{ port, http: CONFIG.ports[0]!.http }],
  });
  try {
    const c = net.connect(port, "127.0.0.1");
    c.on("error", () => {});
    c.resume();
    await once(c, "connect");
    const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    // HEADERS on stream 1, flags END_STREAM only: its block goes on in CONTINUATION frames that never come.
    const block = Buffer.from([0x82, 0x86, 0x84]);
    const headers = Buffer.concat([Buffer.from([0, 0, block.length, 1, 0x1, 0, 0, 0, 1]), block]);
    c.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"), settings, headers]));
    const t0 = Date.now();
    await once(c, "close");
    const took = Date.now() - t0;
    assert.ok(took >= 250 && took < 3000, `closed after ${took} ms (head timeout 300 ms)`);
  } finally {
    await quick.stop();
  }
});
