// Extended IP protocols in the kernel: a parsed and compiled VRRP/GRE policy against real frames via BPF_PROG_TEST_RUN.
import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { compileAll } from "../../core/compiler.ts";
import { label, labelSetFrom } from "../../core/labels.ts";
import { EXTENDED_PROTO_NUMBER, PROTO_NUMBER, type LabelSet, type SubjectPolicy } from "../../core/model.ts";
import { parsePolicyObject } from "../../core/parser/index.ts";
import { lookup } from "../../core/policy/mapstate.ts";
import { Datapath, PROGRAMS } from "./datapath.ts";
import { testRun } from "./loader.ts";
import { frame } from "./frames.ts";

const SCOPE = `test-extproto-${process.pid}`;
const LO = 1; // BPF_PROG_TEST_RUN runs tc programs on the loopback device
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;

const VRRP = EXTENDED_PROTO_NUMBER.VRRP;
const GRE = EXTENDED_PROTO_NUMBER.GRE;
const TCP = PROTO_NUMBER.TCP;

// The router pod (the subject), its VRRP partner and another pod, all on other nodes but the router.
const ROUTER = { ip: "10.0.0.1", ip6: "fd00::1", identity: 1000, app: "router" };
const PARTNER = { ip: "10.1.0.5", ip6: "fd00:1::5", identity: 3000, app: "router-peer" };
const OTHER = { ip: "10.1.1.5", ip6: "fd00:1:0:1::5", identity: 3001, app: "other" };

const labels = (app: string): LabelSet =>
  labelSetFrom([
    label("k8s", "io.kubernetes.pod.namespace", "net"),
    label("k8s", "app", app),
    label("k8s", "io.cilium.k8s.policy.cluster", "default"),
  ]);
const IDENTITIES = new Map([ROUTER, PARTNER, OTHER].map((p) => [p.identity, labels(p.app)]));

/** The router's policy as a user writes it: VRRP in from its partner, GRE out to it. */
const POLICY = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "router", namespace: "net" },
  spec: {
    endpointSelector: { matchLabels: { app: "router" } },
    ingress: [{ fromEndpoints: [{ matchLabels: { app: "router-peer" } }], toPorts: [{ ports: [{ protocol: "VRRP" }] }] }],
    egress: [{ toEndpoints: [{ matchLabels: { app: "router-peer" } }], toPorts: [{ ports: [{ protocol: "GRE" }] }] }],
  },
};

function compiled(spec: typeof POLICY): SubjectPolicy {
  const r = parsePolicyObject(spec, { enableExtendedIPProtocols: true });
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return compileAll(r.value, IDENTITIES).snapshot(ROUTER.identity);
}

let dp: Datapath;

before(() => {
  dp = Datapath.load(SCOPE);
});
after(() => {
  dp?.clearAll();
  dp?.close();
  dp?.unpin();
});
beforeEach(() => {
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
  dp.setIpcache({ cidr: "10.1.0.0/24", identity: PARTNER.identity });
  dp.setIpcache({ cidr: "fd00:1::/64", identity: PARTNER.identity });
  dp.setIpcache({ cidr: "10.1.1.0/24", identity: OTHER.identity });
  dp.setIpcache({ cidr: "fd00:1:0:1::/64", identity: OTHER.identity });
});

function install(policy: SubjectPolicy): void {
  dp.setSubjectPolicy(policy, [
    { ip: ROUTER.ip, ifindex: LO },
    { ip: ROUTER.ip6, ifindex: LO },
  ]);
}

function verdictOf(retval: number): "allow" | "deny" {
  if (retval === TC_ACT_OK) return "allow";
  assert.equal(retval, TC_ACT_SHOT, `unexpected tc return ${retval}`);
  return "deny";
}

/**
 * One packet of a new flow. The 8 bytes after the IP header are what the frame builder writes as
 * "ports": for VRRP we write version 3/advertisement and VRID 1, then priority 100; for GRE no flags
 * and protocol type IPv4 — the datapath must not read any of it as a port.
 */
function send(direction: "ingress" | "egress", peer: typeof PARTNER, proto: number, v6 = false): "allow" | "deny" {
  dp.clearConntrack();
  const [sport, dport] = proto === VRRP ? [0x3101, 0x6400] : proto === GRE ? [0x0000, 0x0800] : [40000, 80];
  const [pod, other] = v6 ? [ROUTER.ip6, peer.ip6] : [ROUTER.ip, peer.ip];
  const spec = direction === "egress" ? { src: pod, dst: other } : { src: other, dst: pod };
  const prog = dp.programFd(direction === "egress" ? PROGRAMS.fromContainer : PROGRAMS.toContainer);
  return verdictOf(testRun(prog, frame({ ...spec, proto, sport, dport }), { ifindex: LO }).retval);
}

test("a VRRP advertisement from the partner is allowed by the entry for protocol 112, and dropped without it", () => {
  const policy = compiled(POLICY);
  install(policy);
  for (const v6 of [false, true]) {
    assert.equal(send("ingress", PARTNER, VRRP, v6), "allow", `VRRP from the partner (v6 ${v6})`);
    assert.equal(send("ingress", OTHER, VRRP, v6), "deny", "VRRP from a pod the rule does not select");
    assert.equal(send("ingress", PARTNER, GRE, v6), "deny", "GRE in: only VRRP is allowed in");
    assert.equal(send("ingress", PARTNER, TCP, v6), "deny", "TCP is not allowed by the VRRP entry");
  }
  assert.equal(lookup(policy, "ingress", PARTNER.identity, VRRP, 0).verdict, "allow", "core agrees");
  assert.equal(lookup(policy, "ingress", PARTNER.identity, TCP, 80).verdict, "deny", "core agrees");

  // The same policy without its VRRP rule: ingress stays default-deny, VRRP is dropped.
  install(compiled({ ...POLICY, spec: { ...POLICY.spec, ingress: [{ fromEndpoints: [{ matchLabels: { app: "router-peer" } }], toPorts: [{ ports: [{ protocol: "IGMP" }] }] }] } }));
  assert.equal(send("ingress", PARTNER, VRRP), "deny", "no entry for 112: dropped");
  assert.equal(send("ingress", PARTNER, EXTENDED_PROTO_NUMBER.IGMP), "allow", "IGMP now is");
});

test("a GRE packet to the partner is allowed by the entry for protocol 47; VRRP and TCP out are not", () => {
  install(compiled(POLICY));
  for (const v6 of [false, true]) {
    assert.equal(send("egress", PARTNER, GRE, v6), "allow", `GRE to the partner (v6 ${v6})`);
    assert.equal(send("egress", OTHER, GRE, v6), "deny", "GRE to a pod the rule does not select");
    assert.equal(send("egress", PARTNER, VRRP, v6), "deny", "VRRP out: only GRE is allowed out");
    assert.equal(send("egress", PARTNER, TCP, v6), "deny", "TCP is not allowed by the GRE entry");
  }
});

test("an allowed GRE flow is connection-tracked like UDP: the partner's GRE back passes the enforced ingress", () => {
  install(compiled(POLICY));
  dp.clearConntrack();
  const from = dp.programFd(PROGRAMS.fromContainer);
  const to = dp.programFd(PROGRAMS.toContainer);
  const out = frame({ src: ROUTER.ip, dst: PARTNER.ip, proto: GRE, sport: 0, dport: 0x0800 });
  const back = frame({ src: PARTNER.ip, dst: ROUTER.ip, proto: GRE, sport: 0, dport: 0x0800 });
  const fromOther = frame({ src: OTHER.ip, dst: ROUTER.ip, proto: GRE, sport: 0, dport: 0x0800 });
  assert.equal(verdictOf(testRun(to, back, { ifindex: LO }).retval), "deny", "unsolicited GRE in: policy allows only VRRP in");
  assert.equal(verdictOf(testRun(from, out, { ifindex: LO }).retval), "allow");
  assert.equal(verdictOf(testRun(to, back, { ifindex: LO }).retval), "allow", "the reply of the tracked GRE flow");
  assert.equal(verdictOf(testRun(to, fromOther, { ifindex: LO }).retval), "deny", "another pod's GRE is no reply");
});
