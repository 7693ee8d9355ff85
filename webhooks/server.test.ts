// The HTTPS server: real TLS round trips, the body limit, the per-request timeout, routes and certificate swaps.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Writable } from "node:stream";
import { connect } from "node:tls";
import { pino } from "pino";
import { reviewFor } from "./admission.ts";
import { issueServingCert, DEFAULT_CERT_OPTIONS } from "./certs.ts";
import { servedSerial, startTestServer, type TestServer } from "./testing.ts";

const badCnp = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "bad", namespace: "default" },
  spec: { endpointSelector: {}, egress: [{ toPorts: [{ ports: [{ port: "70000", protocol: "TCP" }] }] }] },
};


describe("webhook HTTPS server", () => {
  let t: TestServer;
  const lines: Record<string, unknown>[] = [];
  before(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    t = await startTestServer({ maxBodyBytes: 64 * 1024, requestTimeoutMs: 500, logger: pino({}, sink) });
  });
  after(async () => t.close());

  it("answers a real AdmissionReview over TLS and logs one line for it", async () => {
    const before = lines.length;
    const res = await t.post(reviewFor(badCnp, { uid: "tls-1" }));
    assert.equal(res.status, 200);
    const review = JSON.parse(res.body);
    assert.equal(review.response.uid, "tls-1");
    assert.equal(review.response.allowed, false);
    assert.match(review.response.status.message, /^spec\.egress\[0\]\.toPorts\[0\]\.ports\[0\]\.port: /);
    const logged = lines.slice(before).filter((l) => l.msg === "admission review");
    assert.equal(logged.length, 1);
    assert.equal(logged[0]?.uid, "tls-1");
    assert.equal(logged[0]?.kind, "CiliumNetworkPolicy");
    assert.equal(logged[0]?.object, "default/bad");
    assert.equal(logged[0]?.allowed, false);
    assert.equal(typeof logged[0]?.ms, "number");
  });

  it("denies a body over the size limit with the uid, without reading it all", async () => {
    const huge = reviewFor({ ...badCnp, metadata: { name: "x".repeat(200_000) } }, { uid: "big-1" });
    const res = await t.post(huge);
    const review = JSON.parse(res.body);
    assert.equal(review.response.uid, "big-1");
    assert.equal(review.response.allowed, false);
    assert.equal(review.response.status.message, "the request body is larger than 65536 bytes");
  });

  it("denies a request whose body does not arrive within the timeout", async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port: t.port, ca: t.bundle.caBundle, servername: "localhost" }, () => {
        socket.write('POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"request":{"uid":"slow-1"');
      });
      let data = "";
      socket.on("data", (d: Buffer) => (data += d.toString()));
      socket.on("end", () => resolve(data));
      socket.on("error", reject);
    });
    const body = answer.slice(answer.indexOf("\r\n\r\n") + 4);
    const review = JSON.parse(body);
    assert.equal(review.response.uid, "slow-1");
    assert.equal(review.response.allowed, false);
    assert.equal(review.response.status.message, "timed out after 500 ms reading the request");
  });

  it("serves /healthz and refuses other paths", async () => {
    assert.equal((await t.post("{}", "/mutate")).status, 404);
  });

  it("swaps its certificate for new connections without a restart", async () => {
    const first = await servedSerial(t.port, t.bundle.caBundle);
    assert.equal(first, new X509Certificate(t.bundle.cert).serialNumber);
    const next = await issueServingCert(t.bundle, DEFAULT_CERT_OPTIONS);
    t.server.setCertificate(next.cert, next.key);
    const second = await servedSerial(t.port, t.bundle.caBundle);
    assert.equal(second, new X509Certificate(next.cert).serialNumber);
    assert.notEqual(second, first);
    const res = await t.post(reviewFor(badCnp, { uid: "after-swap" }));
    assert.equal(JSON.parse(res.body).response.uid, "after-swap");
  });
});

describe("webhook HTTPS server with --enable-extended-ip-protocols", () => {
  const vrrp = {
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "keepalived", namespace: "default" },
    spec: { endpointSelector: {}, ingress: [{ toPorts: [{ ports: [{ protocol: "VRRP" }] }] }] },
  };

  it("admits a port-less VRRP rule that the server without the option refuses", async () => {
    const on = await startTestServer({ parseOptions: { enableExtendedIPProtocols: true } });
    const off = await startTestServer();
    try {
      const admitted = JSON.parse((await on.post(reviewFor(vrrp, { uid: "on" }))).body);
      assert.equal(admitted.response.allowed, true, admitted.response.status?.message);
      const refused = JSON.parse((await off.post(reviewFor(vrrp, { uid: "off" }))).body);
      assert.equal(refused.response.allowed, false);
      assert.match(refused.response.status.message, /ports\[0\]\.protocol: .*--enable-extended-ip-protocols/);
    } finally {
      await on.close();
      await off.close();
    }
  });
});

describe("webhook HTTPS server with --policy-secrets-namespace", () => {
  const tls = (secret: Record<string, string>) => ({
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "front", namespace: "shop" },
    spec: {
      endpointSelector: { matchLabels: { app: "front" } },
      egress: [{ toEntities: ["world"], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }], terminatingTLS: { secret }, rules: { http: [{ method: "GET" }] } }] }],
    },
  });

  it("admits a TLS rule whose Secret is outside the namespace with a warning naming the Secret and where it must live; none for one inside", async () => {
    const server = await startTestServer({ parseOptions: { policySecretsNamespace: "membrane-secrets" } });
    try {
      const outside = JSON.parse((await server.post(reviewFor(tls({ name: "front-tls" }), { uid: "outside" }))).body);
      assert.equal(outside.response.allowed, true);
      assert.deepEqual(outside.response.warnings, [
        "spec.egress[0].toPorts[0].terminatingTLS: Secret shop/front-tls is not read: TLS rules' Secrets must live in the policy secrets namespace membrane-secrets (name it with secret.namespace: membrane-secrets): connections to the port are refused",
      ]);
      const inside = JSON.parse((await server.post(reviewFor(tls({ namespace: "membrane-secrets", name: "front-tls" }), { uid: "inside" }))).body);
      assert.equal(inside.response.allowed, true);
      assert.equal(inside.response.warnings, undefined);
    } finally {
      await server.close();
    }
  });
});
