// The request path normalized as Cilium's Envoy normalizes it before judging and forwarding: dot segments, unreserved escapes, merged slashes, escaped slashes redirected.
import { test } from "node:test";
import assert from "node:assert/strict";
import { normalizeH2Path, normalizeTarget } from "./path-normalize.ts";

test("dot segments are removed (RFC 3986 §5.2.4)", () => {
  assert.equal(normalizeTarget("/a/./b"), "/a/b");
  assert.equal(normalizeTarget("/a/../b"), "/b");
  assert.equal(normalizeTarget("/../a"), "/a");
  assert.equal(normalizeTarget("/a/b/.."), "/a/");
  assert.equal(normalizeTarget("/a/b/."), "/a/b/");
  assert.equal(normalizeTarget("/."), "/");
  assert.equal(normalizeTarget("/a/b/../../../.."), "/");
  assert.equal(normalizeTarget("/public/../admin"), "/admin");
  // Not dot segments: dots inside a segment.
  assert.equal(normalizeTarget("/a/.b/..c/d."), "/a/.b/..c/d.");
});

test("percent-encoded dots are dot segments; only unreserved characters are decoded", () => {
  assert.equal(normalizeTarget("/%2e%2e/a"), "/a");
  assert.equal(normalizeTarget("/public/%2e%2e/admin"), "/admin");
  assert.equal(normalizeTarget("/public/%2E%2e/admin"), "/admin");
  assert.equal(normalizeTarget("/a/%2E/b"), "/a/b");
  assert.equal(normalizeTarget("/%41%7e%5F%2d"), "/A~_-");
  // Reserved and other characters stay escaped as sent; a broken escape stays as sent.
  assert.equal(normalizeTarget("/a%20b%3F%25"), "/a%20b%3F%25");
  assert.equal(normalizeTarget("/a%zz/%4"), "/a%zz/%4");
});

test("adjacent slashes are merged, after dot segments", () => {
  assert.equal(normalizeTarget("//admin"), "/admin");
  assert.equal(normalizeTarget("/a///b//"), "/a/b/");
  assert.equal(normalizeTarget("/a//../b"), "/a/b");
});

test("the query is kept as sent", () => {
  assert.equal(normalizeTarget("/a/../b?x=/../y//z&%2e=%2F"), "/b?x=/../y//z&%2e=%2F");
  assert.equal(normalizeTarget("/ok?../..//"), "/ok?../..//");
});

test("an escaped slash or backslash is a redirect to the unescaped, normalized path", () => {
  assert.deepEqual(normalizeTarget("/public/%2Fx"), { location: "/public/x" });
  assert.deepEqual(normalizeTarget("/a%2fb?q=1"), { location: "/a/b?q=1" });
  assert.deepEqual(normalizeTarget("/public/..%2Fadmin"), { location: "/admin" });
  assert.deepEqual(normalizeTarget("/a%5Cb"), { location: "/a\\b" });
  assert.deepEqual(normalizeTarget("/a%5c..%5cb"), { location: "/a\\..\\b" });
});

test("backslashes are not separators", () => {
  assert.equal(normalizeTarget("/a\\..\\b"), "/a\\..\\b");
});

test("an already normal path, and a target not in origin-form, are returned as the same string", () => {
  for (const t of ["/", "/a/b", "/pkg.Service/Method", "/a/b/?x=1", "/a.b/c..d/.e", "*", "http://h/a/../b", ""]) {
    const s = `${t}`;
    assert.equal(normalizeTarget(s), s);
  }
  // Changed nothing although it had to look (an escape that stays): the same text.
  assert.equal(normalizeTarget("/a%20b"), "/a%20b");
});

test("an HTTP/2 header list gets the normalized :path, itself when nothing changes", () => {
  const raw = [":method", "GET", ":scheme", "http", ":path", "/public/./ships", ":authority", "h"];
  const out = normalizeH2Path(raw);
  assert.deepEqual(out, [":method", "GET", ":scheme", "http", ":path", "/public/ships", ":authority", "h"]);
  assert.equal(raw[5], "/public/./ships");
  const normal = [":method", "POST", ":path", "/pkg.Svc/Call"];
  assert.equal(normalizeH2Path(normal), normal);
  assert.deepEqual(normalizeH2Path([":path", "/a%2Fb"]), { location: "/a/b" });
});
