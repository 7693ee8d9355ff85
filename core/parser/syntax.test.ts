// Field syntax accepted and refused: DNS names and patterns, CIDRs, label keys and values, port names.
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkPrefix } from "./cidr.ts";
import { ianaServiceNameProblem, labelKeyProblem, labelValueProblem } from "./fields.ts";
import { dnsNameProblem, dnsPatternProblem } from "./fqdn.ts";

test("DNS names: plain names with an optional trailing dot are accepted", () => {
  for (const n of ["example.com", "example.com.", "a-b_c.example.io", "localhost", "xn--bcher-kva.example"])
    assert.equal(dnsNameProblem(n), undefined, n);
  for (const n of ["", ".example.com", "a..b", "exa mple.com", "*.example.com", `${"a".repeat(64)}.com`])
    assert.ok(dnsNameProblem(n), n);
});

test("DNS patterns: * within labels, a lone *, and **. as the first label", () => {
  for (const p of [
    "*",
    "*.example.com",
    "api-*.example.com",
    "*.*.example.com",
    "**.example.com",
    "example.com.",
  ])
    assert.equal(dnsPatternProblem(p), undefined, p);
  for (const p of [
    "",
    "a..b",
    "api.**.example.com",
    "**",
    "a**.example.com",
    "example.com/*",
    "ex ample.com",
  ])
    assert.ok(dnsPatternProblem(p), p);
});

test("CIDRs: prefixes are normalised; a bare IP only where allowed", () => {
  const ok = checkPrefix("10.1.2.3/8", false);
  assert.ok(typeof ok !== "string" && ok.text === "10.0.0.0/8");
  const v6 = checkPrefix("2001:DB8::1/32", false);
  assert.ok(typeof v6 !== "string" && v6.text === "2001:db8::/32");
  const bare = checkPrefix("192.168.1.1", true);
  assert.ok(typeof bare !== "string" && bare.text === "192.168.1.1/32");
  for (const bad of [
    "",
    "10.0.0.0/33",
    "10.0.0/8",
    "010.0.0.0/8",
    "1.2.3.4/-1",
    "::/129",
    "fe80::1%eth0/64",
    "10.0.0.0/08",
  ]) {
    assert.equal(typeof checkPrefix(bad, true), "string", bad);
  }
  assert.equal(typeof checkPrefix("192.168.1.1", false), "string");
});

test("label keys: Cilium sources, prefixes and the $ shorthand", () => {
  for (const k of [
    "app",
    "k8s:app",
    "reserved:host",
    "$host",
    "any:io.kubernetes.pod.namespace",
    "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
    "node-role.kubernetes.io/control-plane",
    "cidrgroup:io.cilium.policy.cidrgroupname/office",
  ]) {
    assert.equal(labelKeyProblem(k), undefined, k);
  }
  for (const k of ["", "my app", "a/b/c", "-app", "app-", "Example.com/app", "K8S:app", `${"a".repeat(64)}`])
    assert.ok(labelKeyProblem(k), k);
});

test("label values: empty or up to 63 letters, digits, - _ .", () => {
  for (const v of ["", "web", "v1.2_3-rc"]) assert.equal(labelValueProblem(v), undefined, v);
  for (const v of ["-web", "web-", "a b", "x".repeat(64)]) assert.ok(labelValueProblem(v), v);
});

test("port names follow IANA service-name rules", () => {
  for (const n of ["http", "https-alt", "dns-tcp", "h2c"])
    assert.equal(ianaServiceNameProblem(n, true), undefined, n);
  for (const n of ["", "80", "http_alt", "-http", "http-", "a--b", "averyveryverylongname"])
    assert.ok(ianaServiceNameProblem(n, true), n);
  assert.ok(ianaServiceNameProblem("HTTP", true));
  assert.equal(ianaServiceNameProblem("HTTP", false), undefined);
});
