// Hubble's redaction of HTTP L7 flows, with credentials held back unless allowed by name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DEFAULT_HTTP_REDACTION, REDACTED, httpRedaction, parseHeaderNames, redactHeaders, redactUrl, type HttpRedaction } from "./redaction.ts";

const headers = [
  { name: "user-agent", value: "curl/8" },
  { name: "authorization", value: "Bearer s3cret" },
  { name: "cookie", value: "session=abc" },
  { name: "x-has-force", value: "true" },
  { name: "accept", value: "*/*" },
  { name: "x-has-force", value: "false" },
];
const shown = (r: HttpRedaction): string[] => redactHeaders(headers, r).map((h) => `${h.key}: ${h.value}`);
const redaction = (over: Partial<HttpRedaction>): HttpRedaction => ({ ...DEFAULT_HTTP_REDACTION, ...over });

test("by default every header is shown, sorted by name with repeated ones in order, except the credential headers", () => {
  assert.deepEqual(shown(DEFAULT_HTTP_REDACTION), [
    "accept: */*",
    `authorization: ${REDACTED}`,
    `cookie: ${REDACTED}`,
    "user-agent: curl/8",
    "x-has-force: true",
    "x-has-force: false",
  ]);
});

test("an allow list shows only the headers it names; naming a credential header lets it out", () => {
  const r = redaction({ headers: { allow: ["x-has-force", "authorization"], deny: [] } });
  assert.deepEqual(shown(r), ["accept: HUBBLE_REDACTED", "authorization: Bearer s3cret", "cookie: HUBBLE_REDACTED", "user-agent: HUBBLE_REDACTED", "x-has-force: true", "x-has-force: false"]);
});

test("a deny list redacts the headers it names, and the credential headers still", () => {
  const r = redaction({ headers: { allow: [], deny: ["user-agent"] } });
  assert.deepEqual(shown(r), ["accept: */*", `authorization: ${REDACTED}`, `cookie: ${REDACTED}`, `user-agent: ${REDACTED}`, "x-has-force: true", "x-has-force: false"]);
});

test("with redaction off the lists do nothing (as Hubble's), but credentials still stay on the node", () => {
  const r = redaction({ enabled: false, headers: { allow: ["authorization"], deny: ["user-agent"] } });
  assert.deepEqual(shown(r), ["accept: */*", `authorization: ${REDACTED}`, `cookie: ${REDACTED}`, "user-agent: curl/8", "x-has-force: true", "x-has-force: false"]);
});

test("URLs: the query and fragment go with urlQuery; a user-info password is replaced by default and with redaction off", () => {
  const url = "http://luke:hunter2@deathstar.default/v1/exhaust-port?token=abc#top";
  assert.equal(redactUrl(url, DEFAULT_HTTP_REDACTION), `http://luke:${REDACTED}@deathstar.default/v1/exhaust-port?token=abc#top`);
  assert.equal(redactUrl(url, redaction({ urlQuery: true })), `http://luke:${REDACTED}@deathstar.default/v1/exhaust-port`);
  assert.equal(redactUrl(url, redaction({ userInfo: false })), url);
  assert.equal(redactUrl(url, redaction({ enabled: false, urlQuery: true, userInfo: false })), `http://luke:${REDACTED}@deathstar.default/v1/exhaust-port?token=abc#top`);
  assert.equal(redactUrl("http://luke@deathstar/x?a=1", redaction({ urlQuery: true })), "http://luke@deathstar/x", "no password, nothing to replace");
  assert.equal(redactUrl("http://10.0.0.1:80/a?b", DEFAULT_HTTP_REDACTION), "http://10.0.0.1:80/a?b", "a port is no password");
});

test("settings: header names are tokens, lowercased; allow and deny are not given together", () => {
  assert.deepEqual(parseHeaderNames("--x", " Authorization, X-Has-Force ,"), { ok: true, value: ["authorization", "x-has-force"] });
  assert.deepEqual(parseHeaderNames("--x", "x-a,bad name"), { ok: false, error: '--x: "bad name" is not a header name' });
  const both = httpRedaction(redaction({ headers: { allow: ["a"], deny: ["b"] } }));
  assert.equal(both.ok ? "" : both.error, "--hubble-redact-http-headers-deny: not together with --hubble-redact-http-headers-allow (one list decides which headers are shown)");
});
