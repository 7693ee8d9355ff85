// Real packets: the agent's supervisor runs the L7 proxy from a node's compiled policies, serves its ports once it listens, outlives an agent restart and restarts a killed proxy.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { PROTO_NUMBER, type SubjectPolicy } from "../../core/model.ts";
import { configText, parseProxyConfig } from "./config.ts";
import { L7ProxySupervisor, desiredProxy } from "./supervisor.ts";
import { ADDR, L7Topology } from "./testing/topology.ts";

const tag = `m7s${process.pid % 100000}`;
const XWING = 1000;
const DEATHSTAR = 2000;
const RULE = 7;
const PROXY_PORT = 10081;

// As the operator sends it: the x-wing's egress entry with a proxy port, and that rule's HTTP rules.
const XWING_POLICY: SubjectPolicy = {
  subject: XWING,
  ingressEnforced: false,
  egressEnforced: true,
  entries: [{ subject: XWING, direction: "egress", verdict: "allow", peer: DEATHSTAR, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, proxyPort: PROXY_PORT, ruleId: RULE }],
  http: [{ ruleId: RULE, direction: "egress", rules: [{ method: "POST", path: "/v1/request-landing" }] }],
};
const DEATHSTAR_POLICY: SubjectPolicy = {
  subject: DEATHSTAR,
  ingressEnforced: true,
  egressEnforced: false,
  entries: [{ subject: DEATHSTAR, direction: "ingress", verdict: "allow", peer: XWING, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, proxyPort: 0, ruleId: 9 }],
};

const topo = new L7Topology(tag);
let supervisor: L7ProxySupervisor;
const newSupervisor = (): L7ProxySupervisor =>
  new L7ProxySupervisor(topo.dp.redirect, { stateDir: path.join(topo.dir, "state"), address: ADDR.node, bpfScope: topo.scope, checkIntervalMs: 200, logFlows: true, launcher: ["nsenter", `--net=/var/run/netns/${topo.ns.host}`] });

before(async () => {
  await topo.setUp({ policies: [XWING_POLICY, DEATHSTAR_POLICY] });
  supervisor = newSupervisor();
});

after(async () => {
  await supervisor?.shutdown();
  await topo.cleanup();
});

const status = (method: string, p: string): Promise<number | undefined> => topo.xwingStatus(method, p);

test("the proxy's configuration from a node's policies: proxied entries serve their rule's HTTP rules, ingress ones marked as the destination's", () => {
  const ingress: SubjectPolicy = {
    ...DEATHSTAR_POLICY,
    entries: [{ ...DEATHSTAR_POLICY.entries[0]!, proxyPort: PROXY_PORT + 1 }],
    http: [{ ruleId: 9, direction: "ingress", rules: [{ method: "GET" }] }],
  };
  const d = desiredProxy([XWING_POLICY, ingress], { address: ADDR.node });
  assert.deepEqual(d.config.ports, [
    { port: PROXY_PORT, http: [{ ruleId: RULE, index: 0, rule: { method: "POST", path: "/v1/request-landing" } }] },
    { port: PROXY_PORT + 1, direction: "ingress", http: [{ ruleId: 9, index: 0, rule: { method: "GET" } }] },
  ]);
  // A rule's HTTP part of the other direction (or none) serves nothing.
  assert.deepEqual(desiredProxy([{ ...ingress, http: [{ ruleId: 9, direction: "egress", rules: [{}] }] }], { address: ADDR.node }).config.ports, []);
  // --http-normalize-path: written only when off (a proxy that does not know the field takes the default's configuration).
  assert.equal("httpNormalizePath" in d.config, false);
  const off = desiredProxy([XWING_POLICY], { address: ADDR.node }, undefined, undefined, false).config;
  assert.equal(off.httpNormalizePath, false);
  assert.deepEqual(parseProxyConfig(configText(off)), { ok: true, value: off });
});

test("two rules allowing one key with HTTP rules: their port serves the union (every rule listing it), each rule naming itself", () => {
  const e = { ...DEATHSTAR_POLICY.entries[0]!, proxyPort: PROXY_PORT + 2, ruleId: 9 };
  const union: SubjectPolicy = {
    ...DEATHSTAR_POLICY,
    entries: [e, { ...e, peer: 3000, proxyPort: PROXY_PORT + 3, ruleId: 11 }],
    http: [
      { ruleId: 9, direction: "ingress", rules: [{ path: "/a" }], proxyPorts: [PROXY_PORT + 2] },
      { ruleId: 11, direction: "ingress", rules: [{ path: "/b" }, { path: "/b2" }], proxyPorts: [PROXY_PORT + 2, PROXY_PORT + 3] },
    ],
  };
  assert.deepEqual(desiredProxy([union], { address: ADDR.node }).config.ports, [
    {
      port: PROXY_PORT + 2,
      direction: "ingress",
      http: [
        { ruleId: 9, index: 0, rule: { path: "/a" } },
        { ruleId: 11, index: 0, rule: { path: "/b" } },
        { ruleId: 11, index: 1, rule: { path: "/b2" } },
      ],
    },
    { port: PROXY_PORT + 3, direction: "ingress", http: [{ ruleId: 11, index: 0, rule: { path: "/b" } }, { ruleId: 11, index: 1, rule: { path: "/b2" } }] },
  ]);
});

test("started from the policies: the port is served once the proxy listens, and the rules are enforced", async () => {
  await supervisor.start();
  assert.deepEqual(supervisor.servedPorts(), []);
  await supervisor.setPolicies([XWING_POLICY, DEATHSTAR_POLICY]);
  assert.deepEqual(supervisor.servedPorts(), [PROXY_PORT]);
  assert.deepEqual(topo.dp.redirect.servedPorts(), [PROXY_PORT]);
  assert.equal(await status("POST", "/v1/request-landing"), 200);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403);
});

test("an agent restart keeps the same proxy process (its connections are not dropped) and its served ports", async () => {
  const pid = supervisor.pid();
  assert.ok(pid);
  supervisor.stop();
  supervisor = newSupervisor();
  await supervisor.start();
  assert.equal(supervisor.pid(), pid, "adopted, not restarted");
  assert.deepEqual(supervisor.servedPorts(), [PROXY_PORT]);
  await supervisor.setPolicies([XWING_POLICY, DEATHSTAR_POLICY]);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403);
});

test("a killed proxy: the port stays served and its connections fail until it is back; the supervisor restarts it", async () => {
  const pid = supervisor.pid()!;
  supervisor.stop(); // no restart until the failure is seen
  process.kill(pid, "SIGKILL");
  while (supervisor.pid() !== undefined) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await status("POST", "/v1/request-landing"), undefined, "fails closed while down");
  supervisor = newSupervisor();
  await supervisor.start();
  assert.notEqual(supervisor.pid(), pid);
  assert.equal(await status("POST", "/v1/request-landing"), 200);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 403);
  // And while the supervisor runs, it notices a killed proxy by itself.
  const second = supervisor.pid()!;
  process.kill(second, "SIGKILL");
  let now: number | undefined;
  for (let i = 0; i < 150 && (now === undefined || now === second); i++) {
    await new Promise((r) => setTimeout(r, 20));
    now = supervisor.pid();
  }
  assert.ok(now !== undefined && now !== second, "restarted within 3 s");
  let ok: number | undefined;
  for (let i = 0; i < 50 && ok !== 200; i++) ok = await status("POST", "/v1/request-landing");
  assert.equal(ok, 200);
});

test("when the HTTP rules go, the port is unserved first and the entry is a plain allow again", async () => {
  await supervisor.setPolicies([{ ...XWING_POLICY, http: undefined }, DEATHSTAR_POLICY]);
  assert.deepEqual(topo.dp.redirect.servedPorts(), []);
  assert.equal(await status("PUT", "/v1/exhaust-port"), 200, "no proxy: the L4 allow lets every request through");
});
