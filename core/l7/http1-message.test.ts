// The L7 proxy's HTTP/1.1 reader: heads parsed with their field lines' places, body framing followed, and every request-smuggling shape refused with the status the client gets.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BodyFramer, HeadScanner, parseRequestHead, parseResponseHead, type BodyFraming } from "./http1-message.ts";

/** The whole head of `text` through the scanner and the parser, as the proxy reads it. */
function request(text: string) {
  const buf = Buffer.from(text, "latin1");
  const scanner = new HeadScanner();
  const end = scanner.scan(buf);
  if (end === "more") return { more: true as const };
  if (typeof end !== "number") return { error: end };
  const r = parseRequestHead(buf, scanner.start, end);
  return r.ok ? { head: r.head, end } : { error: r.error };
}

function refused(text: string): { status: number; reason: string } {
  const r = request(text);
  assert.ok("error" in r && r.error, `expected a refusal for ${JSON.stringify(text)}, got ${JSON.stringify(r)}`);
  return r.error;
}

test("a request head: method, target, version, fields in order (names lowercased, values trimmed) and each field line's place", () => {
  const text = "\r\nGET /v1/ships?x=1 HTTP/1.1\r\nHost: deathstar\r\nX-Empty:\r\nX-Pad:  a b \t\r\n\r\nrest";
  const r = request(text);
  assert.ok("head" in r && r.head);
  const h = r.head;
  assert.deepEqual([h.method, h.target, h.version, h.start, h.keepAlive, h.body], ["GET", "/v1/ships?x=1", "HTTP/1.1", 2, true, { kind: "none" }]);
  assert.deepEqual(h.fields, [{ name: "host", value: "deathstar" }, { name: "x-empty", value: "" }, { name: "x-pad", value: "a b" }]);
  assert.equal(text.slice(h.lineStarts[1], h.lineStarts[2]), "X-Empty:\r\n");
  assert.equal(text.slice(r.end), "rest");
});

test("the scanner finds a head that arrives a byte at a time, and says how much it has seen", () => {
  const text = "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
  const scanner = new HeadScanner();
  let end: number | "more" | { status: number } = "more";
  for (let n = 1; n <= text.length && end === "more"; n++) end = scanner.scan(Buffer.from(text.slice(0, n)));
  assert.equal(end, text.indexOf("abc"));
  const slow = new HeadScanner();
  assert.equal(slow.scan(Buffer.from("GET / HTTP/1.1\r\nX-A: 1")), "more");
  assert.equal(slow.seen(23), 23);
});

test("framing: Content-Length, chunked, none; keep-alive by version and Connection; WebSocket upgrade and 100-continue noticed; hop-by-hop names", () => {
  const h = (t: string) => {
    const r = request(t);
    assert.ok("head" in r && r.head, JSON.stringify(r));
    return r.head;
  };
  assert.deepEqual(h("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n").body, { kind: "length", length: 10 });
  assert.deepEqual(h("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body, { kind: "none" });
  assert.deepEqual(h("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").body, { kind: "chunked" });
  assert.equal(h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keepAlive, false);
  assert.equal(h("GET / HTTP/1.0\r\n\r\n").keepAlive, false);
  assert.equal(h("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keepAlive, true);
  const ws = h("GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\n\r\n");
  assert.equal(ws.upgrade, "websocket");
  assert.equal(ws.expectContinue, true);
  assert.equal(h("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").upgrade, undefined, "Upgrade without Connection: upgrade is no upgrade");
  const named = h("GET / HTTP/1.1\r\nConnection: X-Drop\r\n\r\n").hopByHop;
  assert.ok(named.has("x-drop") && named.has("keep-alive") && named.has("upgrade") && !named.has("transfer-encoding"));
});

test("request smuggling shapes are refused: both Content-Length and Transfer-Encoding, duplicate or malformed Content-Length, a coding other than chunked", () => {
  assert.deepEqual(refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), { status: 400, reason: "both Transfer-Encoding and Content-Length" });
  assert.deepEqual(refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), { status: 400, reason: "more than one Content-Length" });
  assert.equal(refused("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n").status, 400);
  assert.equal(refused("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n").status, 400);
  assert.equal(refused("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n").status, 400);
  assert.equal(refused("POST / HTTP/1.1\r\nContent-Length: 1234567890123456\r\n\r\n").status, 400, "longer than 15 digits");
  assert.equal(refused("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").status, 501);
  assert.equal(refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n").status, 501);
  assert.equal(refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").status, 501, "chunked twice");
  assert.equal(refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").status, 400);
  assert.deepEqual(refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), { status: 400, reason: "more than one Host" });
});

test("malformed lines are refused: obs-fold, a bare LF, a bare CR, whitespace before the colon, a control byte, a bad request line, another version, CONNECT", () => {
  assert.match(refused("GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n").reason, /obsolete line folding/);
  assert.deepEqual(refused("GET / HTTP/1.1\nHost: a\n\n"), { status: 400, reason: "a line ends in LF without CR" });
  assert.equal(refused("GET / HTTP/1.1\r\nHost: a\r\nX-B: 1\n\r\n").status, 400, "a bare LF after a good line");
  assert.match(refused("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n").reason, /control byte \(0x0d\)/);
  assert.match(refused("GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n").reason, /whitespace between a field name and its colon/);
  assert.match(refused("GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n").reason, /control byte \(0x00\)/);
  assert.equal(refused("GET / HTTP/1.1\r\n: novalue\r\n\r\n").status, 400);
  assert.equal(refused("GET  / HTTP/1.1\r\n\r\n").status, 400, "two spaces");
  assert.equal(refused("GET /a b HTTP/1.1\r\n\r\n").status, 400, "a space in the target");
  assert.equal(refused("GET /\x7f HTTP/1.1\r\n\r\n").status, 400);
  assert.equal(refused("GET / HTTP/1.1 \r\n\r\n").status, 400);
  assert.equal(refused("GET / HTTP/2.0\r\n\r\n").status, 505);
  assert.equal(refused("GET / http/1.1\r\n\r\n").status, 400);
  assert.equal(refused("CONNECT deathstar:443 HTTP/1.1\r\n\r\n").status, 400);
});

test("a target not in origin-form is refused (400), as HTTP/2's :path: the destination would read an absolute-form target's authority, which the rules judge by the Host field", () => {
  for (const target of ["http://admin.internal/secret", "http://allowed/public/../admin", "HTTPS://a/", "admin", "\\admin", "*"])
    assert.deepEqual(refused(`GET ${target} HTTP/1.1\r\nHost: allowed\r\n\r\n`), { status: 400, reason: "the request target is not in origin-form" }, target);
  const options = request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal("head" in options ? options.head?.target : undefined, "*");
});

test("a too-long head: the scanner's count of bytes seen is what the proxy compares with its limit (431)", () => {
  const scanner = new HeadScanner();
  const big = Buffer.from(`GET / HTTP/1.1\r\nX-Big: ${"a".repeat(20000)}`);
  assert.equal(scanner.scan(big), "more");
  assert.ok(scanner.seen(big.length) > 16384);
});

test("a response head: status, framing by method and status, keep-alive, and refusals of ambiguous framing", () => {
  const resp = (text: string, method = "GET") => {
    const buf = Buffer.from(text, "latin1");
    const s = new HeadScanner();
    const end = s.scan(buf);
    assert.equal(typeof end, "number");
    return parseResponseHead(buf, s.start, end as number, method);
  };
  const body = (text: string, method?: string): BodyFraming | string => {
    const r = resp(text, method);
    return r.ok ? r.head.body : r.error.reason;
  };
  assert.deepEqual(body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), { kind: "length", length: 5 });
  assert.deepEqual(body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD"), { kind: "none" });
  assert.deepEqual(body("HTTP/1.1 204 No Content\r\n\r\n"), { kind: "none" });
  assert.deepEqual(body("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"), { kind: "none" });
  assert.deepEqual(body("HTTP/1.1 100 Continue\r\n\r\n"), { kind: "none" });
  assert.deepEqual(body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), { kind: "chunked" });
  assert.deepEqual(body("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), { kind: "close" });
  assert.deepEqual(body("HTTP/1.0 200 OK\r\n\r\n"), { kind: "close" });
  assert.deepEqual(body("HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n"), { kind: "length", length: 1 }, "no reason phrase");
  assert.equal(body("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), "both Transfer-Encoding and Content-Length");
  assert.equal(body("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), "more than one Content-Length");
  assert.match(String(body("HTTP/1.1 2000 OK\r\n\r\n")), /status line/);
  const ka = resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  assert.ok(ka.ok && ka.head.keepAlive === false);
});

test("a response's status line is HTTP/1.0 or 1.1, one space, three digits, then nothing or a space and a reason of field-value bytes; long field lines read whole", () => {
  const resp = (text: string) => {
    const buf = Buffer.from(text, "latin1");
    const s = new HeadScanner();
    return parseResponseHead(buf, s.start, s.scan(buf) as number, "GET");
  };
  for (const line of ["HTTP/1.1 200", "HTTP/1.0 404 Not Found", "HTTP/1.1 599 \tx\xe9\xff", "HTTP/1.1 200 "]) assert.ok(resp(`${line}\r\nContent-Length: 0\r\n\r\n`).ok, line);
  const status = resp("HTTP/1.0 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
  assert.ok(status.ok && status.head.status === 404 && status.head.keepAlive);
  for (const line of ["HTTP/1.2 200 OK", "HTTP/2.0 200 OK", "http/1.1 200 OK", "HTTP/1.1 20", "HTTP/1.1 20x OK", "HTTP/1.1  200 OK", "HTTP/1.1 200x", "HTTP/1.1 200\tOK", "HTTP/1.1 200 O\x7fK", "HTTP/1.1 200 O\x00K", "HTTP/1.1"]) {
    const r = resp(`${line}\r\n\r\n`);
    assert.ok(!r.ok && /status line/.test(r.error.reason), line);
  }
  // Names and values of any length, as sent (a name lowercased only where it had capitals).
  const long = `v${"é".repeat(40)} ${"x".repeat(300)}`;
  const r = resp(`HTTP/1.1 200 OK\r\nX-A-Rather-Long-Field-Name: ${long}\r\nx-lower: 1\r\nDate: Mon, 07 Dec 2026 00:10:00 GMT\r\nContent-Length: 0\r\n\r\n`);
  assert.ok(r.ok);
  assert.deepEqual(r.head.fields, [{ name: "x-a-rather-long-field-name", value: long }, { name: "x-lower", value: "1" }, { name: "date", value: "Mon, 07 Dec 2026 00:10:00 GMT" }, { name: "content-length", value: "0" }]);
});

/** Feeds `text` to a framer in pieces of `step` bytes: how many bytes it took and what it said. */
function frame(framing: BodyFraming, text: string, step = text.length): { taken: number; done: boolean; error?: string } {
  const f = new BodyFramer(framing, 64);
  const buf = Buffer.from(text, "latin1");
  let taken = 0;
  for (let i = 0; i < buf.length; i += step) {
    const piece = buf.subarray(i, Math.min(buf.length, i + step));
    const n = f.take(piece);
    taken += n;
    if (n < piece.length || f.done || f.error !== undefined) break;
  }
  return { taken, done: f.done, ...(f.error !== undefined ? { error: f.error } : {}) };
}

test("body framing: a Content-Length body ends at its length, the next request's bytes are not taken", () => {
  assert.deepEqual(frame({ kind: "length", length: 5 }, "helloGET / HTTP/1.1"), { taken: 5, done: true });
  assert.deepEqual(frame({ kind: "length", length: 5 }, "hel"), { taken: 3, done: false });
});

test("body framing: a chunked body with extensions and trailers, whole or a byte at a time, ends exactly at its last CRLF", () => {
  const body = "5;name=v\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Checksum: abc\r\n\r\n";
  for (const step of [body.length, 1, 3]) assert.deepEqual(frame({ kind: "chunked" }, `${body}GET / HTTP/1.1\r\n`, step), { taken: body.length, done: true }, `step ${step}`);
  assert.deepEqual(frame({ kind: "chunked" }, "0\r\n\r\n"), { taken: 5, done: true });
});

test("body framing: chunked smuggling shapes are errors (bare LF, a size that is not hex, whitespace after the size, data longer than its size, an overlong size, an endless extension)", () => {
  const err = (text: string) => frame({ kind: "chunked" }, text).error;
  assert.match(err("5\nhello\r\n0\r\n\r\n") ?? "", /byte/);
  assert.match(err("5\r\nhello\n0\r\n\r\n") ?? "", /CRLF/);
  assert.match(err("g\r\n") ?? "", /hexadecimal/);
  assert.match(err("5 \r\nhello\r\n") ?? "", /after a chunk size/);
  assert.match(err("-5\r\n") ?? "", /hexadecimal/);
  assert.match(err("3\r\nhello\r\n") ?? "", /CRLF/);
  assert.match(err("fffffffffffffff\r\n") ?? "", /too large/);
  assert.match(err(`1;${"x".repeat(100)}\r\n`) ?? "", /extension too long/);
  assert.match(err("0\r\nX-A: 1\n\r\n") ?? "", /control byte|CRLF/);
  assert.match(err("0\r\n folded\r\n\r\n") ?? "", /without a name/);
  assert.match(err(`0\r\nX-A: ${"a".repeat(100)}\r\n\r\n`) ?? "", /trailers too long/);
});

test("body framing: a close-delimited body takes everything until the connection ends", () => {
  const f = new BodyFramer({ kind: "close" });
  assert.equal(f.take(Buffer.from("abc")), 3);
  assert.equal(f.done, false);
  f.ended();
  assert.equal(f.done, true);
});
