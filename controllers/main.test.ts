// Unit tests of `membrane operator` flag parsing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseArgs, parseDuration } from "./main.ts";

test("durations accept ms, s, m and h", () => {
  assert.equal(parseDuration("15m"), 900_000);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("soon"), undefined);
});

test("defaults: leader election on, 15 minute identity grace", () => {
  const r = parseArgs([]);
  assert.ok("config" in r);
  assert.equal(r.config.leaderElect, true);
  assert.equal(r.config.identityGcGraceMs, 900_000);
  assert.deepEqual([...r.config.controllers].sort(), ["identity", "node", "policy"]);
});

test("flags in both --flag=value and --flag value form", () => {
  const r = parseArgs(["--identity-gc-grace=5s", "--health-port", "0", "--controllers", "identity", "--leader-elect=false"]);
  assert.ok("config" in r);
  assert.equal(r.config.identityGcGraceMs, 5000);
  assert.equal(r.config.healthPort, 0);
  assert.equal(r.config.leaderElect, false);
  assert.deepEqual([...r.config.controllers], ["identity"]);
});

test("bad flags are errors naming the flag", () => {
  assert.deepEqual(parseArgs(["--identity-gc-grace", "later"]), { error: '--identity-gc-grace: "later" is not a duration (e.g. 15m, 30s)' });
  assert.match((parseArgs(["--controllers", "identity,bogus"]) as { error: string }).error, /unknown controller\(s\) bogus/);
  assert.match((parseArgs(["--nope", "1"]) as { error: string }).error, /unknown flag --nope/);
  assert.match((parseArgs(["--kubeconfig"]) as { error: string }).error, /a value is required/);
});

test("the agent stream needs all TLS material; a bad pod CIDR pool is refused up front", () => {
  assert.match((parseArgs(["--distribution-port", "0", "--tls-ca", "ca.crt"]) as { error: string }).error, /needs --tls-cert, --tls-key/);
  const ok = parseArgs(["--distribution-port", "0", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"]);
  assert.ok("config" in ok);
  assert.deepEqual(ok.config.distribution, { port: 0, caFile: "a", certFile: "b", keyFile: "c" });
  assert.match((parseArgs(["--pod-cidr-pool", "10.0.0.0/16", "--node-cidr-mask-size", "8"]) as { error: string }).error, /mask size 8/);
});
