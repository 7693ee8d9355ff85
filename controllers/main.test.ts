// Unit tests of `membrane operator` flag parsing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseArgs } from "./main.ts";

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
  assert.deepEqual(parseArgs(["--identity-gc-concurrency", "0"]), { error: '--identity-gc-concurrency: "0" is not an integer from 1 to 1024' });
  assert.deepEqual(parseArgs(["--identity-gc-concurrency", "8x"]), { error: '--identity-gc-concurrency: "8x" is not an integer from 1 to 1024' });
  const c = parseArgs(["--identity-gc-concurrency", "64"]);
  assert.ok("config" in c && c.config.identityGcConcurrency === 64);
  assert.deepEqual(parseArgs(["--agent-reconnect-grace", "soon"]), { error: '--agent-reconnect-grace: "soon" is not a duration (e.g. 1m, 30s)' });
  const g = parseArgs(["--agent-reconnect-grace", "0s"]);
  assert.ok("config" in g && g.config.agentReconnectGraceMs === 0);
  assert.match((parseArgs(["--controllers", "identity,bogus"]) as { error: string }).error, /unknown controller\(s\) bogus/);
  assert.match((parseArgs(["--nope", "1"]) as { error: string }).error, /unknown flag --nope/);
  assert.match((parseArgs(["--kubeconfig"]) as { error: string }).error, /a value is required/);
});

test("the agent stream needs all TLS material; a bad pod CIDR pool is refused up front", () => {
  assert.match((parseArgs(["--distribution-port", "0", "--tls-ca", "ca.crt"]) as { error: string }).error, /needs --tls-cert, --tls-key/);
  const ok = parseArgs(["--distribution-port", "0", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"]);
  assert.ok("config" in ok);
  assert.deepEqual(ok.config.distribution, { port: 0, caFile: "a", certFile: "b", keyFile: "c", agentAuth: { mode: "cert" } });
  assert.match((parseArgs(["--pod-cidr-pool", "10.0.0.0/16", "--node-cidr-mask-size", "8"]) as { error: string }).error, /mask size 8/);
});

test("--ipam: cluster-pool by default, kubernetes on request, anything else refused naming the flag", () => {
  const d = parseArgs([]);
  assert.ok("config" in d);
  assert.equal(d.config.ipamMode, "cluster-pool");
  const k = parseArgs(["--ipam", "kubernetes"]);
  assert.ok("config" in k);
  assert.equal(k.config.ipamMode, "kubernetes");
  assert.match((parseArgs(["--ipam", "eni"]) as { error: string }).error, /--ipam: "eni" is not one of cluster-pool, kubernetes/);
});

test("--bind-address and --identity-gc-interval: defaults keep everything on loopback and a 15 minute sweep", () => {
  const d = parseArgs([]);
  assert.ok("config" in d);
  assert.equal(d.config.bindAddress, "127.0.0.1");
  assert.equal(d.config.identityGcIntervalMs, 900_000);
  const r = parseArgs(["--bind-address=0.0.0.0", "--identity-gc-interval", "1m"]);
  assert.ok("config" in r);
  assert.equal(r.config.bindAddress, "0.0.0.0");
  assert.equal(r.config.identityGcIntervalMs, 60_000);
  assert.deepEqual(parseArgs(["--bind-address", "localhost"]), { error: '--bind-address: "localhost" is not an IP address' });
  assert.deepEqual(parseArgs(["--identity-gc-interval", "0s"]), { error: '--identity-gc-interval: "0s" is not a positive duration (e.g. 1m, 30s)' });
});

test("--agent-auth token needs the agents' ServiceAccount; audience defaults to membrane-operator; bad values are named", () => {
  const dist = ["--distribution-port", "0", "--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"];
  const r = parseArgs([...dist, "--agent-auth", "token", "--agent-service-account", "kube-system/membrane-agent"]);
  assert.ok("config" in r);
  assert.deepEqual(r.config.distribution?.agentAuth, { mode: "token", serviceAccount: "kube-system/membrane-agent", audience: "membrane-operator" });
  const aud = parseArgs([...dist, "--agent-auth=token", "--agent-service-account=ns/sa", "--agent-token-audience=other"]);
  assert.ok("config" in aud);
  assert.deepEqual(aud.config.distribution?.agentAuth, { mode: "token", serviceAccount: "ns/sa", audience: "other" });
  assert.deepEqual(parseArgs([...dist, "--agent-auth", "token"]), { error: "--agent-auth token needs --agent-service-account NAMESPACE/NAME" });
  assert.deepEqual(parseArgs([...dist, "--agent-auth", "psk"]), { error: '--agent-auth: "psk" is not cert or token' });
  assert.deepEqual(parseArgs([...dist, "--agent-auth", "token", "--agent-service-account", "just-a-name"]), {
    error: '--agent-service-account: "just-a-name" is not NAMESPACE/NAME of a ServiceAccount',
  });
  assert.match((parseArgs(["--agent-auth", "token", "--agent-service-account", "a/b"]) as { error: string }).error, /need --distribution-port/);
});

test("service map flags: the map is off unless --servicemap-port is given; it reads through the relay or given Hubble servers; bad values name the flag", () => {
  const off = parseArgs(["--health-port", "0"]);
  assert.ok("config" in off && off.servicemap === undefined);
  const on = parseArgs(["--servicemap-port=0", "--servicemap-hubble-server", "unix:/run/a.sock", "--servicemap-hubble-server=127.0.0.1:4245", "--id", "x"]);
  assert.ok("config" in on);
  assert.deepEqual(on.servicemap, { port: 0, hubbleServers: ["unix:/run/a.sock", "127.0.0.1:4245"] });
  assert.equal(on.config.id, "x");
  const relayOnly = parseArgs(["--servicemap-port=0", "--hubble-relay-address", "127.0.0.1:0"]);
  assert.ok("config" in relayOnly && relayOnly.relay !== undefined);
  assert.deepEqual(relayOnly.servicemap, { port: 0, hubbleServers: [] });
  assert.match((parseArgs(["--servicemap-port", "0"]) as { error: string }).error, /^--servicemap-port: needs --hubble-relay-address \(the map reads flows through the relay\)/);
  assert.deepEqual(parseArgs(["--servicemap-port", "x"]), { error: '--servicemap-port: "x" is not a port number' });
  assert.deepEqual(parseArgs(["--servicemap-port", "0", "--servicemap-hubble-server", "http://x:1"]), { error: '--servicemap-hubble-server: "http://x:1" is not unix:/PATH or HOST:PORT' });
  assert.match((parseArgs(["--servicemap-hubble-server", "unix:/a"]) as { error: string }).error, /needs --servicemap-port/);
  assert.match((parseArgs(["--servicemap-discover", "true", "--servicemap-port", "0"]) as { error: string }).error, /unknown flag --servicemap-discover/);
  assert.match((parseArgs(["--servicemap-port"]) as { error: string }).error, /a value is required/);
});

test("--enable-extended-ip-protocols: bare or =true turns the parse option on, off by default, a bad value is refused naming the flag", () => {
  const off = parseArgs([]);
  assert.ok("config" in off);
  assert.equal(off.config.parseOptions?.enableExtendedIPProtocols ?? false, false);
  for (const args of [["--enable-extended-ip-protocols", "--cluster-name", "c1"], ["--enable-extended-ip-protocols=true"]]) {
    const r = parseArgs(args);
    assert.ok("config" in r, JSON.stringify(r));
    assert.equal(r.config.parseOptions?.enableExtendedIPProtocols, true);
  }
  const same = parseArgs(["--enable-extended-ip-protocols", "--cluster-name", "c1"]);
  assert.ok("config" in same);
  assert.equal(same.config.clusterName, "c1", "the switch takes no value from the next argument");
  const bad = parseArgs(["--enable-extended-ip-protocols=yes"]);
  assert.ok("error" in bad);
  assert.match(bad.error, /^--enable-extended-ip-protocols: "yes"/);
});

test("--skip-crd-creation: bare or =true turns CRD registration off, on by default, a bad value is refused naming the flag", () => {
  const on = parseArgs([]);
  assert.ok("config" in on);
  assert.notEqual(on.config.registerCRDs, false, "CRDs are registered by default");
  for (const args of [["--skip-crd-creation", "--cluster-name", "c1"], ["--skip-crd-creation=true"]]) {
    const r = parseArgs(args);
    assert.ok("config" in r, JSON.stringify(r));
    assert.equal(r.config.registerCRDs, false);
  }
  const explicit = parseArgs(["--skip-crd-creation=false"]);
  assert.ok("config" in explicit);
  assert.equal(explicit.config.registerCRDs, true);
  const bad = parseArgs(["--skip-crd-creation=no"]);
  assert.ok("error" in bad);
  assert.match(bad.error, /^--skip-crd-creation: "no" is not true or false/);
});

test("--policy-secrets-namespace: Secrets are read from that namespace only, unset none; a bad name and the replaced --enable-policy-secrets are refused naming the flags", () => {
  const off = parseArgs([]);
  assert.ok("config" in off);
  assert.equal(off.config.policySecretsNamespace, undefined);
  const on = parseArgs(["--policy-secrets-namespace", "membrane-secrets"]);
  assert.ok("config" in on);
  assert.equal(on.config.policySecretsNamespace, "membrane-secrets");
  assert.deepEqual(parseArgs(["--policy-secrets-namespace=Secrets"]), {
    error: `--policy-secrets-namespace: "Secrets" is not a namespace name: it must consist of lower case letters, digits and '-', and start and end with a letter or digit`,
  });
  for (const old of [["--enable-policy-secrets", "true"], ["--enable-policy-secrets=false"]]) {
    assert.deepEqual(parseArgs(old), { error: "--enable-policy-secrets: replaced by --policy-secrets-namespace NS (the operator reads TLS rules' Secrets from that one namespace only)" });
  }
});
