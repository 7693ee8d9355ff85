// The request path normalized as Cilium's Envoy normalizes it before judging and forwarding (Chromium's path canonicalization, merge_slashes, UNESCAPE_AND_REDIRECT): dot segments, backslashes, unreserved escapes, nested escapes, merged slashes, escaped slashes redirected, fragments and NULs refused; a table of bypass attempts against the rules they would slip past.
import { test } from "node:test";
import assert from "node:assert/strict";
import { compileHttpRule, matchHttpRule } from "./http-rule.ts";
import { admitH2Request, normalizeH2Path, normalizeTarget } from "./path-normalize.ts";

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

test("an escaped slash or backslash is a redirect to the unescaped, normalized path (a backslash read as /)", () => {
  assert.deepEqual(normalizeTarget("/public/%2Fx"), { location: "/public/x" });
  assert.deepEqual(normalizeTarget("/a%2fb?q=1"), { location: "/a/b?q=1" });
  assert.deepEqual(normalizeTarget("/public/..%2Fadmin"), { location: "/admin" });
  assert.deepEqual(normalizeTarget("/a%5Cb"), { location: "/a/b" });
  assert.deepEqual(normalizeTarget("/a%5c..%5cb"), { location: "/b" });
  // Unescaped once, as Envoy's unescapeSlashes: %252F is an escaped %, kept.
  assert.equal(normalizeTarget("/a%252Fb"), "/a%252Fb");
});

test("backslashes are separators, as in Envoy's normalize_path (Chromium: `/a/..\\c` is `/c`)", () => {
  assert.equal(normalizeTarget("/a/..\\c"), "/c");
  assert.equal(normalizeTarget("/a\\..\\b"), "/b");
  assert.equal(normalizeTarget("/a\\b\\"), "/a/b/");
  assert.equal(normalizeTarget("\\a"), "\\a", "not origin-form: left as the proxy takes it");
});

test("escapes other than unreserved ones keep their text (hex case too: Envoy does not change it); characters a path may not hold are escaped", () => {
  assert.equal(normalizeTarget("/caf%c3%a9/%C3%A9"), "/caf%c3%a9/%C3%A9");
  assert.equal(normalizeTarget("/%7e%7E/%41"), "/~~/A");
  assert.equal(normalizeTarget('/a{b}|c"d<e>^`'), "/a%7Bb%7D%7Cc%22d%3Ce%3E%5E%60");
  assert.equal(normalizeTarget("/a b\tc"), "/a%20b%09c");
  assert.equal(normalizeTarget("/caf\u00e9\u007f"), "/caf%E9%7F", "latin1: one character per octet");
  assert.equal(normalizeTarget("/ok?a b"), "/ok?a b", "the query is not the path's");
});

test("an unreserved escape that completes an escape with a stray % before it does not make a new one (Chromium's nested escapes)", () => {
  assert.equal(normalizeTarget("/public/%%32e%%32e/admin"), "/public/%252e%252e/admin");
  assert.equal(normalizeTarget("/%%30%30"), "/%2500");
  assert.equal(normalizeTarget("/%%34%31"), "/%2541");
  // Not hex after the %: nothing to guard.
  assert.equal(normalizeTarget("/%%7a"), "/%z");
});

test("a fragment or a NUL is refused (Envoy's 400), the fragment whatever the switch says", () => {
  assert.deepEqual(normalizeTarget("/public/x#/../../admin"), { invalid: "a fragment (#) in the request target" });
  assert.deepEqual(normalizeTarget("/a?b#c"), { invalid: "a fragment (#) in the request target" });
  assert.deepEqual(normalizeTarget("/a#b", false), { invalid: "a fragment (#) in the request target" });
  for (const t of ["/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc", "/a\u0000b"]) assert.deepEqual(normalizeTarget(t), { invalid: "a NUL (%00) in the request path" }, t);
});

test("--http-normalize-path=false: the target is judged and forwarded as sent", () => {
  for (const t of ["/public/../admin", "//admin", "/a%2Fb", "/a\\..\\b", "/%61dmin", "/a%00"]) assert.equal(normalizeTarget(t, false), t);
  const raw = [":method", "GET", ":scheme", "http", ":path", "/public/../admin", ":authority", "h"];
  assert.deepEqual(admitH2Request(raw, false), { raw });
  assert.deepEqual(admitH2Request(raw), { raw: [":method", "GET", ":scheme", "http", ":path", "/admin", ":authority", "h"] });
});

/**
 * Each attempt reaches a server that reads it as `served` (a path outside the rule) while the rule matches it as sent.
 * Normalized, it is judged as the server reads it (the rule no longer matches), or answered without being forwarded.
 */
const BYPASSES: readonly { readonly attempt: string; readonly rule: string; readonly served: string; readonly judged: string | { readonly location: string } | { readonly invalid: string } }[] = [
  { attempt: "/public/../admin", rule: "/public/.*", served: "/admin", judged: "/admin" },
  { attempt: "/public/./../admin", rule: "/public/.*", served: "/admin", judged: "/admin" },
  { attempt: "/public/%2e%2e/admin", rule: "/public/.*", served: "/admin", judged: "/admin" },
  { attempt: "/public/%2E%2e/admin", rule: "/public/.*", served: "/admin", judged: "/admin" },
  { attempt: "/public/.%2e/admin", rule: "/public/.*", served: "/admin", judged: "/admin" },
  { attempt: "/public\\..\\admin", rule: "/public.*", served: "/admin (IIS: \\ is a separator)", judged: "/admin" },
  { attempt: "/public/..\\admin", rule: "/public/.*", served: "/admin (IIS)", judged: "/admin" },
  { attempt: "/public/%5C..%5Cadmin", rule: "/public/.*", served: "/admin (a server that decodes, then splits on \\)", judged: { location: "/public/admin" } },
  { attempt: "/public/..%2Fadmin", rule: "/public/.*", served: "/admin (a server that decodes %2F)", judged: { location: "/admin" } },
  { attempt: "/public/..%5cadmin", rule: "/public/.*", served: "/admin", judged: { location: "/admin" } },
  { attempt: "/public/%%32e%%32e/admin", rule: "/public/.*", served: "/admin (a server that decodes twice the escapes one pass made)", judged: "/public/%252e%252e/admin" },
  { attempt: "/public//../../admin", rule: "/public/.*", served: "/admin", judged: "/admin" },
  { attempt: "/public//../admin", rule: "/public/.*", served: "/admin (a server that merges slashes first)", judged: "/public/admin" },
  { attempt: "/public/x#/../../admin", rule: "/public/.*", served: "a server that keeps # in the path", judged: { invalid: "a fragment (#) in the request target" } },
  { attempt: "/public/%00/../../admin", rule: "/public/.*", served: "C string handling: /public/", judged: { invalid: "a NUL (%00) in the request path" } },
];
/** Attempts a deny-by-omission list (allow `/public/.*` and `/api/.*`, never `/admin`) must not let through to /admin by an escaped spelling. */
const SPELLINGS: readonly { readonly attempt: string; readonly rule: string }[] = [
  { attempt: "/%61dmin", rule: "/admin" },
  { attempt: "/%41dmin", rule: "/Admin" },
  { attempt: "/adm%69n", rule: "/admin" },
  { attempt: "/%7Euser", rule: "/~user" },
];

const matches = (rule: string, path: string): boolean => matchHttpRule(compileHttpRule({ path: rule }), { method: "GET", path, host: "", headers: [] }).matches;

test("bypass attempts: each matches its rule as sent, but is judged as the server reads it (or answered without forwarding)", () => {
  for (const b of BYPASSES) {
    assert.ok(matches(b.rule, b.attempt), `${b.attempt} matches ${b.rule} as sent (the bypass)`);
    const n = normalizeTarget(b.attempt);
    assert.deepEqual(n, b.judged, `${b.attempt}: served as ${b.served}`);
    if (typeof n === "string" && !n.startsWith("/public/%25")) assert.ok(!n.startsWith("/public/..") && !n.includes("\\"), n);
  }
  // Judged as the server reads them: a rule for /admin does not see the escaped spelling as anything else.
  for (const s of SPELLINGS) {
    assert.ok(!matches(s.rule, s.attempt), `${s.attempt} as sent does not match ${s.rule}`);
    const n = normalizeTarget(s.attempt);
    assert.ok(typeof n === "string" && matches(s.rule, n), `${s.attempt} is judged as ${String(n)}, which ${s.rule} matches`);
  }
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

test("a dot segment with parameters is refused (Tomcat, Jetty and Spring strip `;…` first: /public/..;/admin is their /admin)", () => {
  const refused = { invalid: "a dot segment with parameters (..;) in the request path" };
  for (const t of ["/public/..;/admin", "/public/.;/../admin", "/public/..;x=1/admin", "/public/%2e%2e;/admin", "/public/.%2E;/admin", "/a/..;", "/a\\..;\\b"]) {
    assert.ok(matches("/public/.*", t) || !t.startsWith("/public"), t);
    assert.deepEqual(normalizeTarget(t), refused, t);
  }
  // Parameters elsewhere are a segment's own: `/admin;x/../public` is /public for them too; `...;` is no dot segment.
  assert.equal(normalizeTarget("/admin;x/../public"), "/public");
  assert.equal(normalizeTarget("/a/...;/b;c/.d;"), "/a/...;/b;c/.d;");
  assert.equal(normalizeTarget("/public/..;/admin", false), "/public/..;/admin", "the switch off: as sent");
});

test("the query is cut at the first `?`: dot segments after it are the query's, an escaped `?` stays in the path", () => {
  assert.equal(normalizeTarget("/public?/../../admin"), "/public?/../../admin");
  assert.equal(normalizeTarget("/a%3F/../b"), "/b");
  assert.equal(normalizeTarget("/public/%3F/../x"), "/public/x");
  assert.equal(normalizeTarget("/a%3fb/./c?d"), "/a%3fb/c?d");
  assert.equal(normalizeTarget("/?"), "/?");
});

/** Linear in the path's length: a 256 KiB path of the costliest shapes (each escape, dot segment or nested escape once made the output string again: seconds). */
test("normalizing takes time linear in the path: 256 KiB of nested escapes, dot segments, stray % or slashes, each in milliseconds, not the seconds a quadratic pass took", () => {
  const K = 1 << 18;
  const shapes = { nested: "%%32e", nestedPairs: "%%61", dotSegments: "a/./", dotDots: "../", strayPercents: "%", escapes: "%20", slashes: "/", backslashUp: "a\\..\\" };
  for (const [name, unit] of Object.entries(shapes)) {
    const path = `/${unit.repeat(Math.ceil(K / unit.length))}`;
    const t0 = process.hrtime.bigint();
    normalizeTarget(path);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    // 1-10 ms here; the quadratic pass took 6.5 s for the nested escapes. The bound leaves room for a loaded CI machine.
    assert.ok(ms < 2000, `${name}: ${ms.toFixed(0)} ms for ${path.length} characters`);
  }
});

/**
 * Differential: the path as the WHATWG URL parser (Node's, for an http: URL) canonicalizes it, which for a special
 * scheme removes dot segments as Chromium does (`%2e` either case, `.%2e`, `\` a separator), with this normalizer's
 * documented differences (Envoy's): unreserved escapes decoded, `|` and `^` escaped too (Chromium's path table), slashes
 * merged, `%2F`/`%5C` a redirect to the path with them unescaped once, NUL, `#` and dot segments with parameters
 * refused; where a `%` begins no escape, the two agree on what a destination that decodes once reads (nested escapes).
 */
const hex2 = (c: number): string => `%${c.toString(16).toUpperCase().padStart(2, "0")}`;
const decodeUnreserved = (s: string): string => s.replace(/%([0-9a-f]{2})/gi, (e, h: string) => (/[A-Za-z0-9._~-]/.test(String.fromCharCode(parseInt(h, 16))) ? String.fromCharCode(parseInt(h, 16)) : e));
const decodeOnce = (s: string): string => s.replace(/%([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
function whatwgPath(path: string): string {
  // URL would strip tabs and newlines and encode octets over 0x7F as UTF-8: given their escapes instead (the proxy escapes each octet).
  let encoded = "";
  for (let i = 0; i < path.length; i++) encoded += path.charCodeAt(i) < 0x21 || path.charCodeAt(i) > 0x7e ? hex2(path.charCodeAt(i)) : path[i]!;
  return new URL(`http://h${encoded}`).pathname.replace(/[|^]/g, (c) => hex2(c.charCodeAt(0)));
}
type Expected = string | { readonly location: string } | { readonly invalid: true };
function expected(target: string): { readonly judged: Expected; readonly strayPercent: boolean } {
  if (target.includes("#")) return { judged: { invalid: true }, strayPercent: false };
  const q = target.indexOf("?");
  const path = q < 0 ? target : target.slice(0, q);
  const unescaped = path.replace(/%2f|%5c/gi, (e) => ((e.charCodeAt(2) | 0x20) === 0x66 ? "/" : "\\"));
  if (/\0|%00/.test(unescaped) || /(^|[/\\])(\.|%2e){1,2};/i.test(unescaped)) return { judged: { invalid: true }, strayPercent: false };
  const strayPercent = /%(?![0-9a-f]{2})/i.test(unescaped);
  const canonical = strayPercent ? whatwgPath(unescaped.replace(/%(?![0-9a-f]{2})/gi, "%25")) : decodeUnreserved(whatwgPath(unescaped));
  const normalized = canonical.replace(/\/{2,}/g, "/") + (q < 0 ? "" : target.slice(q));
  return { judged: unescaped === path ? normalized : { location: normalized }, strayPercent };
}

test("differential: 20,000 seeded random targets agree with the WHATWG URL parser but for Envoy's documented differences; normalizing twice changes nothing; a redirect's target is final", () => {
  let seed = 0x5eed;
  const random = (n: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff), seed % n);
  const alphabet = ["/", "\\", ".", "%", "2", "e", "E", "5", "c", "C", "f", "F", "a", "0", ";", "?", "#", ":", "\u0080", "\u00e9", "\u00ff", "%2e", "%2E", "%2f", "%5C", "%%", "..", "|", "^", " ", "%7e", "%41", "%3f", "%32"];
  const known = [...BYPASSES.map((b) => b.attempt), ...SPELLINGS.map((s) => s.attempt), "/admin;x/../public", "/public/..;/admin", "/a/%2E./b"];
  for (let n = 0; n < 20_000; n++) {
    let target: string;
    if (n % 4 === 0) {
      // A known bypass attempt with one character inserted or replaced.
      const m = known[random(known.length)]!;
      const at = 1 + random(m.length);
      target = m.slice(0, at) + alphabet[random(alphabet.length)]! + m.slice(at + random(2));
    } else {
      target = "/";
      for (let len = 1 + random(14); len > 0; len--) target += alphabet[random(alphabet.length)]!;
    }
    const ours = normalizeTarget(target);
    const { judged, strayPercent } = expected(target);
    const shown = `${JSON.stringify(target)} -> ${JSON.stringify(ours)}, expected ${JSON.stringify(judged)}`;
    if (typeof judged === "object" && "invalid" in judged) {
      assert.ok(typeof ours === "object" && "invalid" in ours, shown);
      continue;
    }
    const final = typeof ours === "string" ? ours : "location" in ours ? ours.location : assert.fail(shown);
    assert.equal(typeof ours === "string", typeof judged === "string", shown);
    const want = typeof judged === "string" ? judged : judged.location;
    if (strayPercent) assert.equal(decodeOnce(final), decodeOnce(want), shown);
    else assert.equal(final, want, shown);
    // The destination may normalize again; the client asks again after a redirect: neither may read it otherwise.
    assert.equal(normalizeTarget(final), final, `${shown}: normalized again`);
  }
});
