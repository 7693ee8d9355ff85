// serverNames as the proxy applies them to a TLS handshake's SNI: exact names, wildcards, a missing SNI.
import assert from "node:assert/strict";
import { test } from "node:test";
import { serverNameAllowed } from "./server-names.ts";

test("no serverNames admits every handshake, with or without SNI", () => {
  assert.equal(serverNameAllowed(undefined, []), true);
  assert.equal(serverNameAllowed("anything.example", []), true);
});

test("a listed name admits that name only, whatever its case or trailing dot; no SNI is refused", () => {
  const names = ["api.example.com"];
  assert.equal(serverNameAllowed("api.example.com", names), true);
  assert.equal(serverNameAllowed("API.Example.com.", names), true);
  assert.equal(serverNameAllowed("www.example.com", names), false);
  assert.equal(serverNameAllowed("api.example.com.evil.test", names), false);
  assert.equal(serverNameAllowed(undefined, names), false);
  assert.equal(serverNameAllowed("", names), false);
});

test("*. stands for one label and **. for one or more, neither for the bare suffix", () => {
  assert.equal(serverNameAllowed("a.example.org", ["*.example.org"]), true);
  assert.equal(serverNameAllowed("a.b.example.org", ["*.example.org"]), false);
  assert.equal(serverNameAllowed("example.org", ["*.example.org"]), false);
  assert.equal(serverNameAllowed("a.b.example.org", ["**.example.org"]), true);
  assert.equal(serverNameAllowed("example.org", ["**.example.org"]), false);
});
