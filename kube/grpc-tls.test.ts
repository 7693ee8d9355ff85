// TLS to a gRPC target given as an IP address verifies the certificate against that address, or against the name given.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { sslChannelOptions, sslCredentials, targetHost } from "./grpc-tls.ts";
import { issueCA, issueCert } from "./pki.ts";

test("targetHost takes the host out of IPv4, IPv6 and DNS targets", () => {
  assert.equal(targetHost("127.0.0.1:4240"), "127.0.0.1");
  assert.equal(targetHost("[::1]:4240"), "::1");
  assert.equal(targetHost("dns:membrane-operator.membrane-system.svc:4240"), "membrane-operator.membrane-system.svc");
  assert.equal(targetHost("membrane-operator:4240"), "membrane-operator");
  assert.equal(targetHost("localhost"), "localhost");
});

test("a Service dialled at its ClusterIP: with serverName the certificate is checked for that name, not for the address", async () => {
  const ca = await issueCA({ commonName: "test-ca", days: 1 });
  const server = await issueCert(ca, { commonName: "membrane-operator", usage: "server", dnsNames: ["membrane-operator.membrane-system.svc"], days: 1 });
  const grpcServer = new grpc.Server();
  const port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createSsl(Buffer.from(ca.cert), [{ cert_chain: Buffer.from(server.cert), private_key: Buffer.from(server.key) }], false), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const ready = (serverName?: string): Promise<boolean> => {
    const target = `127.0.0.1:${port}`;
    const client = new grpc.Client(target, sslCredentials(target, Buffer.from(ca.cert), undefined, undefined, serverName), sslChannelOptions(target, serverName));
    return new Promise<boolean>((resolve) => client.waitForReady(Date.now() + 3_000, (err) => resolve(err === undefined || err === null))).finally(() => client.close());
  };
  try {
    assert.equal(await ready("membrane-operator.membrane-system.svc"), true, "the Service's name is in the certificate");
    assert.equal(await ready("other.membrane-system.svc"), false, "another name is refused");
    assert.equal(await ready(), false, "without a name the address is checked, and the certificate does not carry it");
  } finally {
    grpcServer.forceShutdown();
  }
});
