// The benchmark's in-process certificates: openssl accepts the chain, and a mutual-TLS handshake on loopback sees the node name as the client CN.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import tls from "node:tls";
import { makeBenchPki } from "./pki.ts";

test("openssl verifies the server and client certificates against the CA", async () => {
  const pki = await makeBenchPki();
  const dir = mkdtempSync(join(tmpdir(), "bench-pki-test-"));
  try {
    writeFileSync(join(dir, "ca.pem"), pki.ca);
    writeFileSync(join(dir, "server.pem"), pki.serverCert);
    writeFileSync(join(dir, "client.pem"), await pki.clientCert("node-42"));
    const out = execFileSync("openssl", ["verify", "-CAfile", join(dir, "ca.pem"), join(dir, "server.pem"), join(dir, "client.pem")]).toString();
    assert.match(out, /server\.pem: OK/);
    assert.match(out, /client\.pem: OK/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a mutual-TLS handshake to 127.0.0.1 succeeds and the server sees CN = node name", async () => {
  const pki = await makeBenchPki();
  const clientCert = await pki.clientCert("bench-node-7");
  const server = tls.createServer({ ca: pki.ca, cert: pki.serverCert, key: pki.serverKey, requestCert: true, rejectUnauthorized: true }, (s) => {
    s.end(String(s.getPeerCertificate().subject.CN));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const port = (server.address() as { port: number }).port;
    const cn = await new Promise<string>((resolve, reject) => {
      const c = tls.connect({ host: "127.0.0.1", port, ca: pki.ca, cert: clientCert, key: pki.clientKey }, () => undefined);
      let data = "";
      c.on("data", (d: Buffer) => (data += d.toString()));
      c.on("end", () => resolve(data));
      c.on("error", reject);
    });
    assert.equal(cn, "bench-node-7");
  } finally {
    server.close();
  }
});
