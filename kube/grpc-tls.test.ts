// TLS to a gRPC target given as an IP address verifies the certificate against that address.
import { test } from "node:test";
import assert from "node:assert/strict";
import { targetHost } from "./grpc-tls.ts";

test("targetHost takes the host out of IPv4, IPv6 and DNS targets", () => {
  assert.equal(targetHost("127.0.0.1:4240"), "127.0.0.1");
  assert.equal(targetHost("[::1]:4240"), "::1");
  assert.equal(targetHost("dns:membrane-operator.membrane-system.svc:4240"), "membrane-operator.membrane-system.svc");
  assert.equal(targetHost("membrane-operator:4240"), "membrane-operator");
  assert.equal(targetHost("localhost"), "localhost");
});
