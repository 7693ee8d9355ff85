// Unit tests of kubeconfig loading on client-node's KubeConfig: the current context, files and exec commands relative to the kubeconfig, tokens, client-go's tokenFile re-read after a 401, errors naming the field.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { loadKubeConfig } from "./kubeconfig.ts";
import { KubeClient } from "./kube.ts";

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kubeconfig-test-"));
  try {
    await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** What a request made with this kubeconfig would carry. */
async function applied(kc: ReturnType<typeof loadKubeConfig>): Promise<{ ca?: string; cert?: string; key?: string; authorization?: string; rejectUnauthorized?: boolean }> {
  const opts: { ca?: unknown; cert?: unknown; key?: unknown; headers?: Record<string, unknown>; rejectUnauthorized?: boolean } = {};
  await kc.applyToHTTPSOptions(opts);
  return {
    ...(opts.ca !== undefined ? { ca: String(opts.ca) } : {}),
    ...(opts.cert !== undefined ? { cert: String(opts.cert) } : {}),
    ...(opts.key !== undefined ? { key: String(opts.key) } : {}),
    ...(opts.headers?.Authorization !== undefined ? { authorization: String(opts.headers.Authorization) } : {}),
    ...(opts.rejectUnauthorized !== undefined ? { rejectUnauthorized: opts.rejectUnauthorized } : {}),
  };
}

test("reads the current context's cluster and user; files are relative to the kubeconfig", () =>
  withDir(async (dir) => {
    fs.writeFileSync(path.join(dir, "ca.crt"), "CA");
    fs.writeFileSync(path.join(dir, "kc"), [
      "apiVersion: v1",
      "current-context: b",
      "clusters: [{name: one, cluster: {server: 'https://a'}}, {name: two, cluster: {server: 'https://127.0.0.1:6443', certificate-authority: ca.crt}}]",
      `users: [{name: u, user: {client-certificate-data: ${Buffer.from("CERT").toString("base64")}, client-key-data: ${Buffer.from("KEY").toString("base64")}}}]`,
      "contexts: [{name: a, context: {cluster: one, user: u}}, {name: b, context: {cluster: two, user: u}}]",
    ].join("\n"));
    const kc = loadKubeConfig(path.join(dir, "kc"));
    assert.equal(kc.getCurrentCluster()?.server, "https://127.0.0.1:6443");
    assert.deepEqual(await applied(kc), { ca: "CA", cert: "CERT", key: "KEY" });
  }));

test("a bearer token is sent; insecure-skip-tls-verify turns verification off", () =>
  withDir(async (dir) => {
    const kc = path.join(dir, "kc");
    fs.writeFileSync(kc, "current-context: x\nclusters: [{name: c, cluster: {server: 'https://s', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: abc}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n");
    assert.deepEqual(await applied(loadKubeConfig(kc)), { authorization: "Bearer abc", rejectUnauthorized: false });
  }));

test("an exec plugin's token is sent; a command with a path is relative to the kubeconfig's folder, as kubectl has it", () =>
  withDir(async (dir) => {
    fs.mkdirSync(path.join(dir, "bin"));
    fs.writeFileSync(path.join(dir, "bin", "plugin.sh"), `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-plugin"}}'\n`, { mode: 0o755 });
    const kc = path.join(dir, "kc");
    fs.writeFileSync(kc, "current-context: x\nclusters: [{name: c, cluster: {server: 'https://s'}}]\nusers: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: ./bin/plugin.sh}}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n");
    assert.notEqual(process.cwd(), dir);
    assert.deepEqual(await applied(loadKubeConfig(kc)), { authorization: "Bearer from-plugin" });
  }));

test("errors name the kubeconfig and the missing field", () =>
  withDir((dir) => {
    const kc = path.join(dir, "kc");
    fs.writeFileSync(kc, "current-context: nope\ncontexts: []\n");
    assert.throws(() => loadKubeConfig(kc), new RegExp(`kubeconfig ${kc}: current-context "nope" not found in contexts`));
    fs.writeFileSync(kc, "current-context: x\nclusters: [{name: c, cluster: {}}]\ncontexts: [{name: x, context: {cluster: c}}]\n");
    assert.throws(() => loadKubeConfig(kc), /clusters\[0\]\.cluster\.server is missing/);
    fs.writeFileSync(kc, "current-context: x\nclusters: [{name: c, cluster: {server: 'https://s'}}]\ncontexts: [{name: x, context: {cluster: other}}]\n");
    assert.throws(() => loadKubeConfig(kc), /contexts\[x\]\.context\.cluster "other" not found in clusters/);
    assert.throws(() => loadKubeConfig(path.join(dir, "missing")), /kubeconfig .*missing: ENOENT/);
  }));

test("no kubeconfig anywhere is an error saying where one is looked for, not a silent http://localhost:8080", () =>
  withDir((dir) => {
    const saved = { HOME: process.env.HOME, KUBECONFIG: process.env.KUBECONFIG };
    process.env.HOME = dir;
    delete process.env.KUBECONFIG;
    try {
      if (fs.existsSync("/var/run/secrets/kubernetes.io/serviceaccount/token")) return; // in a pod the service account is the default
      assert.throws(() => loadKubeConfig(), /no kubeconfig: pass --kubeconfig, set \$KUBECONFIG or create ~\/\.kube\/config/);
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }));

test("client-go's tokenFile is sent, and a replaced token file is used as soon as the old token is rejected", () =>
  withDir(async (dir) => {
    let accepted = "first";
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(req.headers.authorization ?? "");
      const ok = req.headers.authorization === `Bearer ${accepted}`;
      res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
      res.end(JSON.stringify(ok ? { kind: "Namespace", metadata: { name: "default" } } : { kind: "Status", code: 401, reason: "Unauthorized", message: "Unauthorized" }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const kc = path.join(dir, "kc");
    fs.writeFileSync(path.join(dir, "token"), "first\n"); // a trailing newline, as `kubectl create token > file` leaves it
    fs.writeFileSync(kc, `current-context: x\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:${(server.address() as AddressInfo).port}', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {tokenFile: token}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n`);
    const client = await KubeClient.fromKubeconfig(kc);
    try {
      assert.equal((await client.get<{ metadata: { name: string } }>("/api/v1/namespaces/default")).metadata.name, "default");
      fs.writeFileSync(path.join(dir, "token"), "second");
      accepted = "second"; // the old token is revoked
      assert.equal((await client.get<{ metadata: { name: string } }>("/api/v1/namespaces/default")).metadata.name, "default");
      assert.deepEqual(seen, ["Bearer first", "Bearer first", "Bearer second"]);
      accepted = "nobody";
      await assert.rejects(client.get("/api/v1/namespaces/default"), (e: Error & { status?: number }) => e.status === 401 && /Unauthorized/.test(e.message));
    } finally {
      client.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  }));
