// Certificates: issuing (kube/pki.ts), reuse checks, rotation of the serving cert and of the CA, and rotation under a live server.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { describe, it } from "node:test";
import { pino } from "pino";
import {
  DEFAULT_CERT_OPTIONS,
  bundleFromSecretData,
  bundleToSecretData,
  issueBundle,
  issueServingCert,
  notAfter,
  rotate,
  rotationDelayMs,
  usableFor,
  type CertBundle,
} from "./certs.ts";
import { CertRotator } from "./registration.ts";
import { reviewFor } from "./admission.ts";
import { servedSerial, startTestServer } from "./testing.ts";

const DAY = 86_400_000;
const silent = pino({ level: "silent" });


describe("webhook certificates", () => {
  it("issues a CA and a serving certificate for loopback that verifies against it", async () => {
    const b = await issueBundle(DEFAULT_CERT_OPTIONS);
    const cert = new X509Certificate(b.cert);
    const ca = new X509Certificate(b.caCert);
    assert.ok(cert.verify(ca.publicKey));
    assert.ok(ca.ca);
    assert.match(cert.subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
    assert.match(cert.subjectAltName ?? "", /DNS:localhost/);
    assert.equal(b.caBundle, b.caCert);
    const days = (notAfter(b.cert).getTime() - Date.now()) / DAY;
    assert.ok(days > 29 && days <= 30, `serving cert valid ${days} days`);
    assert.ok(usableFor(b, DEFAULT_CERT_OPTIONS, DAY));
    assert.ok(!usableFor(b, DEFAULT_CERT_OPTIONS, 31 * DAY), "not usable once inside the renewal window");
    assert.ok(!usableFor(b, { ...DEFAULT_CERT_OPTIONS, dnsNames: ["webhook.membrane-system.svc"] }, DAY), "not for other names");
    assert.ok(!usableFor({ ...b, key: (await issueBundle(DEFAULT_CERT_OPTIONS)).key }, DEFAULT_CERT_OPTIONS, DAY), "not with a foreign key");
  });

  it("round-trips through Secret data", async () => {
    const b = await issueBundle(DEFAULT_CERT_OPTIONS);
    assert.deepEqual(bundleFromSecretData(bundleToSecretData(b)), b);
    assert.equal(bundleFromSecretData({ "tls.crt": "eA==" }), undefined);
  });

  it("rotates only the serving certificate while the CA has time left", async () => {
    const b = await issueBundle(DEFAULT_CERT_OPTIONS);
    const next = await rotate(b, DEFAULT_CERT_OPTIONS, 7 * DAY);
    assert.equal(next.caCert, b.caCert);
    assert.equal(next.caBundle, b.caCert);
    assert.notEqual(next.cert, b.cert);
    assert.ok(new X509Certificate(next.cert).verify(new X509Certificate(b.caCert).publicKey));
  });

  it("rotates the CA when it is due, trusting old and new CA until the next rotation", async () => {
    const opts = { ...DEFAULT_CERT_OPTIONS, caDays: 2, certDays: 1 };
    const b = await issueBundle(opts);
    const next = await rotate(b, opts, DAY);
    assert.notEqual(next.caCert, b.caCert);
    assert.ok(next.caBundle.includes(b.caCert.trim()) && next.caBundle.includes(next.caCert.trim()));
    assert.ok(new X509Certificate(next.cert).verify(new X509Certificate(next.caCert).publicKey));
    assert.ok(rotationDelayMs(next, 0) <= DAY);
  });

  it("rotates a live server's certificate before expiry without a restart, trusting first and serving second", async () => {
    const t = await startTestServer();
    const opts = { ...DEFAULT_CERT_OPTIONS, certDays: 1 };
    // A one-day serving certificate from the same CA, served from now on.
    const start: CertBundle = { ...t.bundle, ...(await issueServingCert(t.bundle, opts)) };
    t.server.setCertificate(start.cert, start.key);
    const events: string[] = [];
    // Renew when less than (1 day - 1 s) is left: the first rotation is due about a second from now.
    const rotator = new CertRotator(
      start,
      opts,
      DAY - 1_000,
      {
        trust: async () => void events.push("trust"),
        serve: (b) => {
          events.push("serve");
          t.server.setCertificate(b.cert, b.key);
        },
        persist: async () => void events.push("persist"),
      },
      silent,
      500,
    );
    try {
      const before = await servedSerial(t.port, start.caBundle);
      let answered = 0;
      rotator.start();
      const deadline = Date.now() + 20_000;
      while (rotator.rotations === 0 && Date.now() < deadline) {
        // The server keeps answering throughout.
        const res = await t.post(reviewFor({ kind: "x" }, { uid: `r${answered}` }));
        assert.equal(JSON.parse(res.body).response.uid, `r${answered}`);
        answered++;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(rotator.rotations >= 1, "rotated within 20 s");
      assert.deepEqual(events.slice(0, 3), ["trust", "serve", "persist"]);
      const after = await servedSerial(t.port, rotator.current().caBundle);
      assert.notEqual(after, before);
      assert.equal(after, new X509Certificate(rotator.current().cert).serialNumber);
      assert.ok(answered > 0);
    } finally {
      rotator.stop();
      await t.close();
    }
  });
});
