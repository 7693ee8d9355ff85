// A kubeconfig whose client certificate files are replaced (rotated) against a real kube-apiserver: the next request authenticates with the new certificate, on a new connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { startControlPlane } from "../localcluster/cluster.ts";
import { KubeClient } from "./kube.ts";

const openssl = (args: string[], cwd: string): Promise<unknown> => promisify(execFile)("openssl", args, { cwd });

test("a rotated client certificate is used by the next request without a restart", { timeout: 300_000 }, async (t) => {
  const cp = await startControlPlane({ name: "clientcert-test" });
  t.after(() => cp.stop());
  const pki = path.join(cp.dir, "pki");
  const dir = fs.mkdtempSync(path.join(cp.dir, "user-"));
  fs.copyFileSync(path.join(pki, "admin.crt"), path.join(dir, "user.crt"));
  fs.copyFileSync(path.join(pki, "admin.key"), path.join(dir, "user.key"));
  const kubeconfig = path.join(dir, "kubeconfig");
  fs.writeFileSync(
    kubeconfig,
    stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "c", cluster: { server: cp.server, "certificate-authority": cp.caFile } }],
      users: [{ name: "u", user: { "client-certificate": "user.crt", "client-key": "user.key" } }],
      contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
      "current-context": "x",
    }),
  );
  const client = await KubeClient.fromKubeconfig(kubeconfig);
  t.after(() => client.close());
  assert.equal((await client.get<{ metadata: { name: string } }>("/api/v1/namespaces/default")).metadata.name, "default");

  // A certificate for another user (no RBAC grants, so what it may do tells which certificate was sent).
  await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "new.key"], dir);
  await openssl(["req", "-new", "-key", "new.key", "-subj", "/CN=rotated-user", "-out", "new.csr"], dir);
  await openssl(["x509", "-req", "-in", "new.csr", "-CA", path.join(pki, "ca.crt"), "-CAkey", path.join(pki, "ca.key"), "-CAserial", path.join(dir, "ca.srl"), "-CAcreateserial", "-days", "1", "-out", "new.crt"], dir);
  fs.renameSync(path.join(dir, "new.key"), path.join(dir, "user.key"));
  fs.renameSync(path.join(dir, "new.crt"), path.join(dir, "user.crt"));

  await assert.rejects(client.get("/api/v1/namespaces/default"), (e: Error & { status?: number }) => {
    assert.equal(e.status, 403);
    assert.match(e.message, /User "rotated-user" cannot get resource "namespaces"/);
    return true;
  });
});
