// Policy audit mode with real packets between two netns: would-be policy drops pass as AUDIT (node-wide and per endpoint), other drops stay drops, switching off enforces.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER, type PolicyEntry } from "../../core/model.ts";
import { Datapath } from "./datapath.ts";
import { NetnsFixture, ifindexIn, ipIn, waitForLine } from "./netns.ts";
import { CONST, DROP_REASON_CODES, LAYOUT, type VerdictEvent } from "./layout.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const PROBE = path.join(here, "probe.ts");

const tag = `aud${process.pid % 100000}`;
const NS_POD = `${tag}-pod`;
const NS_HOST = `${tag}-host`;
const POD_IF = `${tag}p`;
const HOST_IF = `${tag}h`;
const POD_IP = "10.204.0.1";
const SPOOFED_IP = "10.204.0.9"; // a second address in the pod: not its endpoint's
const HOST_IP = "10.204.0.2";
const POD_ID = 1000;
const PEER_ID = 2000;
const ALLOWED = 8080;
const DEFAULT_DENIED = 8081; // no entry: egress default deny
const DENIED = 8082; // an explicit deny entry
const DENY_RULE = 77;
const INGRESS_DEFAULT_DENIED = 9090; // the pod's server; ingress enforced, nothing allowed

const CONST_SPOOFED = 3 as const; // DROP_SPOOFED_SOURCE (the layout test checks the number)

const fx = new NetnsFixture();
let dp: Datapath | undefined;
let hostIfindex = 0;
const events: VerdictEvent[] = [];
let drain: () => number = () => 0;

async function connect(fromNetns: string, host: string, port: number, source?: string): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", fromNetns, process.execPath, "--import", "tsx", PROBE, "connect", "tcp", host, String(port), "1000", ...(source ? [source] : [])], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

/** The events of new connections to port after its packets settled, then forgets them. */
async function takeEvents(port: number): Promise<VerdictEvent[]> {
  await new Promise((r) => setTimeout(r, 200));
  drain();
  const mine = events.filter((e) => e.dport === port);
  events.length = 0;
  return mine;
}

const show = (xs: readonly VerdictEvent[]): string => JSON.stringify(xs.map((e) => `${e.verdict} ${e.reason ?? ""} ${e.src}:${e.sport}>${e.dst}:${e.dport}`));

const entry = (p: Pick<PolicyEntry, "direction" | "port" | "verdict" | "ruleId">): PolicyEntry => ({
  subject: POD_ID, peer: PEER_ID, proto: PROTO_NUMBER.TCP, portPrefixLen: 16, proxyPort: 0, ...p,
});

function setEndpointAudit(on: boolean): void {
  dp!.setEndpoint({ ip: POD_IP, ifindex: hostIfindex, identity: POD_ID, ingressEnforced: true, egressEnforced: true, auditMode: on });
}

before(async () => {
  fx.addNetns(NS_POD);
  fx.addNetns(NS_HOST);
  fx.addVeth({ netns: NS_POD, ifname: POD_IF, cidr: `${POD_IP}/24` }, { netns: NS_HOST, ifname: HOST_IF, cidr: `${HOST_IP}/24` });
  ipIn(NS_POD, "addr", "add", `${SPOOFED_IP}/24`, "dev", POD_IF);
  hostIfindex = ifindexIn(NS_HOST, HOST_IF);
  dp = Datapath.load(`test-${tag}`);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  dp.setIpcache({ cidr: `${HOST_IP}/32`, identity: PEER_ID });
  dp.setSubjectPolicy(
    {
      subject: POD_ID, ingressEnforced: true, egressEnforced: true,
      entries: [entry({ direction: "egress", port: ALLOWED, verdict: "allow", ruleId: 76 }), entry({ direction: "egress", port: DENIED, verdict: "deny", ruleId: DENY_RULE })],
    },
    [{ ip: POD_IP, ifindex: hostIfindex }],
  );
  drain = dp.onEvents((e) => events.push(e));
  dp.attachEndpoint(hostIfindex, NS_HOST);
  const servers = [
    fx.spawn(NS_HOST, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", String(ALLOWED), String(DEFAULT_DENIED), String(DENIED)]),
    fx.spawn(NS_POD, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", String(INGRESS_DEFAULT_DENIED)]),
  ];
  await Promise.all(servers.map((s) => waitForLine(s, /^listening/, 15000)));
});

after(() => {
  try {
    if (dp && hostIfindex) dp.detachEndpoint(hostIfindex, NS_HOST);
  } catch {
    // the netns may already be gone
  }
  fx.cleanup();
  dp?.close();
  dp?.unpin();
});

test("enforcing: default deny and an explicit deny drop, the allowed port connects", async () => {
  assert.equal(dp!.policyAuditMode(), false);
  assert.ok(await connect(NS_POD, HOST_IP, ALLOWED));
  assert.equal(await connect(NS_POD, HOST_IP, DEFAULT_DENIED), false);
  assert.ok((await takeEvents(DEFAULT_DENIED)).every((e) => e.verdict === "dropped"));
  assert.equal(await connect(NS_POD, HOST_IP, DENIED), false);
  assert.equal(await connect(NS_HOST, POD_IP, INGRESS_DEFAULT_DENIED), false);
  events.length = 0;
});

test("node audit mode: every would-be policy drop connects and is reported once as an audit with its reason and rule", async () => {
  const auditsBefore = dp!.auditCounters();
  dp!.setPolicyAuditMode(true);
  assert.equal(dp!.policyAuditMode(), true);
  const flags = dp!.object.map("membrane_config").lookup(Buffer.alloc(4))!.readUInt32LE(LAYOUT.config_value.fields.flags.offset);
  assert.equal(flags & ~CONST.CONFIG_F_POLICY_AUDIT, CONST.CONFIG_F_EVENTS_FORWARDED, "the monitor aggregation bits stay");

  assert.ok(await connect(NS_POD, HOST_IP, DEFAULT_DENIED), "egress default deny passes");
  const dd = await takeEvents(DEFAULT_DENIED);
  assert.deepEqual(dd.map((e) => [e.verdict, e.direction, e.reasonCode, e.ruleId, e.srcIdentity, e.dstIdentity]), [["audit", "egress", DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY, undefined, POD_ID, PEER_ID]]);
  assert.equal(dd[0]!.reason, "policy denied (default deny)");

  assert.ok(await connect(NS_POD, HOST_IP, DENIED), "an explicit deny passes too");
  const d = await takeEvents(DENIED);
  assert.deepEqual(d.map((e) => [e.verdict, e.reasonCode, e.ruleId]), [["audit", DROP_REASON_CODES.DROP_POLICY_DENY, DENY_RULE]]);

  assert.ok(await connect(NS_HOST, POD_IP, INGRESS_DEFAULT_DENIED), "ingress default deny passes");
  const ing = await takeEvents(INGRESS_DEFAULT_DENIED);
  assert.deepEqual(ing.map((e) => [e.verdict, e.direction, e.srcIdentity, e.dstIdentity]), [["audit", "ingress", PEER_ID, POD_ID]]);

  const audits = dp!.auditCounters();
  const grew = (name: string): bigint => (audits[name] ?? 0n) - (auditsBefore[name] ?? 0n);
  assert.equal(grew("policy denied (default deny)"), 2n);
  assert.equal(grew("policy denied"), 1n);
});

test("audit mode passes only policy: a spoofed source is still dropped", async () => {
  const before = dp!.dropCount(CONST_SPOOFED);
  assert.equal(await connect(NS_POD, HOST_IP, ALLOWED, SPOOFED_IP), false);
  const evs = await takeEvents(ALLOWED);
  assert.ok(evs.some((e) => e.verdict === "dropped" && e.reasonCode === DROP_REASON_CODES.DROP_SPOOFED_SOURCE), show(evs));
  assert.ok(!evs.some((e) => e.verdict === "audit"));
  assert.ok(dp!.dropCount(CONST_SPOOFED) > before);
});

test("switching node audit mode off enforces the next connection, without reloading or re-attaching anything", async () => {
  dp!.setPolicyAuditMode(false);
  assert.equal(await connect(NS_POD, HOST_IP, DEFAULT_DENIED), false);
  const evs = await takeEvents(DEFAULT_DENIED);
  assert.ok(evs.length > 0 && evs.every((e) => e.verdict === "dropped" && e.reasonCode === DROP_REASON_CODES.DROP_POLICY_DEFAULT_DENY), show(evs));
  assert.equal(await connect(NS_POD, HOST_IP, DENIED), false);
});

test("endpoint audit mode: only the flagged endpoint audits, and clearing the flag enforces again", async () => {
  setEndpointAudit(true);
  assert.ok(await connect(NS_POD, HOST_IP, DEFAULT_DENIED));
  assert.deepEqual((await takeEvents(DEFAULT_DENIED)).map((e) => e.verdict), ["audit"]);
  assert.ok(await connect(NS_HOST, POD_IP, INGRESS_DEFAULT_DENIED));
  assert.deepEqual((await takeEvents(INGRESS_DEFAULT_DENIED)).map((e) => e.verdict), ["audit"]);
  setEndpointAudit(false);
  assert.equal(await connect(NS_POD, HOST_IP, DEFAULT_DENIED), false);
  assert.ok((await takeEvents(DEFAULT_DENIED)).every((e) => e.verdict === "dropped"));
});
