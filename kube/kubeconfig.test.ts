// Unit tests of kubeconfig loading: current context, inline data vs files relative to the kubeconfig, tokens, errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadKubeconfig } from "./kubeconfig.ts";

function withDir(fn: (dir: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kubeconfig-test-"));
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("reads the current context's cluster and user; files are relative to the kubeconfig", () =>
  withDir((dir) => {
    fs.writeFileSync(path.join(dir, "ca.crt"), "CA");
    fs.writeFileSync(path.join(dir, "kc"), [
      "apiVersion: v1",
      "current-context: b",
      "clusters: [{name: one, cluster: {server: 'https://a'}}, {name: two, cluster: {server: 'https://127.0.0.1:6443', certificate-authority: ca.crt}}]",
      `users: [{name: u, user: {client-certificate-data: ${Buffer.from("CERT").toString("base64")}, client-key-data: ${Buffer.from("KEY").toString("base64")}}}]`,
      "contexts: [{name: a, context: {cluster: one, user: u}}, {name: b, context: {cluster: two, user: u}}]",
    ].join("\n"));
    const c = loadKubeconfig(path.join(dir, "kc"));
    assert.equal(c.server, "https://127.0.0.1:6443");
    assert.equal(c.ca?.toString(), "CA");
    assert.equal(c.cert?.toString(), "CERT");
    assert.equal(c.key?.toString(), "KEY");
    assert.equal(c.insecureSkipTLSVerify, false);
  }));

test("a bearer token is read; a missing context is an error naming it", () =>
  withDir((dir) => {
    const kc = path.join(dir, "kc");
    fs.writeFileSync(kc, "current-context: x\nclusters: [{name: c, cluster: {server: 'https://s'}}]\nusers: [{name: u, user: {token: abc}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n");
    assert.equal(loadKubeconfig(kc).token, "abc");
    fs.writeFileSync(kc, "current-context: nope\ncontexts: []\n");
    assert.throws(() => loadKubeconfig(kc), /current-context "nope" not found/);
    fs.writeFileSync(kc, "current-context: x\nclusters: [{name: c, cluster: {}}]\ncontexts: [{name: x, context: {cluster: c}}]\n");
    assert.throws(() => loadKubeconfig(kc), /cluster\.server is required/);
  }));
