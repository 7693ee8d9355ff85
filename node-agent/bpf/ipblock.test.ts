// Real packets: NetworkPolicy ipBlock matches pods by address (same node, across nodes with the identity from the VNI, egress), a CNP fromCIDR does not, a toNodes deny beats an allow of remote-node by the node's address, and the kernel agrees with core's lookup.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";
import { PROTO_NUMBER, type LabelSet, type Policy } from "../../core/model.ts";
import { LocalCIDRAllocator, IDENTITY, RESERVED_IDENTITIES } from "../../core/identity.ts";
import { securityLabels } from "../../core/labels.ts";
import { parsePolicyObject } from "../../core/parser/index.ts";
import { compileAll, policyPrefixes, type PolicyCompiler } from "../../core/compiler.ts";
import { lookup } from "../../core/policy/mapstate.ts";
import { verdict } from "../../core/evaluator.ts";
import { ipBlockLabels, ipBlockPrefixes, isPodIdentity, longestBlock } from "../../core/ipblock.ts";
import { MIN_NODE_HOST_IDENTITY, nodeHostLabels } from "../../core/host-endpoint.ts";
import { Datapath } from "./datapath.ts";
import { NetnsFixture, execIn, ifindexIn, ipIn, waitForLine } from "./netns.ts";
import type { VerdictEvent } from "./layout.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const PROBE = path.join(here, "probe.ts");

const tag = `m5b${process.pid % 100000}`;
const UNDERLAY = { node1: "192.168.78.1", node2: "192.168.78.2" };
interface Pod {
  readonly name: string;
  readonly ip: string;
  readonly gw: string;
  readonly identity: number;
  readonly node: "node1" | "node2";
}
/** a and c share node1, b is on node2. */
const A: Pod = { name: "a", ip: "10.211.1.1", gw: "10.211.1.254", identity: 1001, node: "node1" };
const C: Pod = { name: "c", ip: "10.211.3.1", gw: "10.211.3.254", identity: 1003, node: "node1" };
const B: Pod = { name: "b", ip: "10.211.2.1", gw: "10.211.2.254", identity: 2001, node: "node2" };
const POD_LIST = [A, B, C];
const PORT = 7000;

const ns = { node1: `${tag}-n1`, node2: `${tag}-n2`, a: `${tag}-pa`, b: `${tag}-pb`, c: `${tag}-pc` };
const fx = new NetnsFixture();
const dps: Record<"node1" | "node2", Datapath | undefined> = { node1: undefined, node2: undefined };
const hostIf: Record<string, number> = {};
const vxIf: Record<string, number> = {};
const events: VerdictEvent[] = [];
const drains: (() => number)[] = [];

const podLabels = (p: Pod): LabelSet => securityLabels({ podLabels: { app: p.name }, namespace: "x", namespaceLabels: {} });

/** Whether a UDP probe from a pod (or node2's own netns) to a pod (or an address) gets its answer. */
async function reaches(from: Pod | "node2", to: Pod | string): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", from === "node2" ? ns.node2 : ns[from.name as "a"], process.execPath, "--import", "tsx", PROBE, "connect", "udp", typeof to === "string" ? to : to.ip, String(PORT), "1500"], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

function parse(yaml: string): Policy[] {
  return parseAllDocuments(yaml).flatMap((d) => {
    const r = parsePolicyObject(d.toJS());
    if (!r.ok) assert.fail(JSON.stringify(r.errors));
    return r.value;
  });
}

interface Installed {
  readonly compiled: PolicyCompiler;
  readonly ids: ReadonlyMap<number, LabelSet>;
  readonly blocks: readonly [string, number][];
}

/**
 * What the operator and agent would write for `policies` on both nodes: the compiled policy of the
 * hosted pods, the ipcache (pods, the other node, CIDR identities) and the ipBlock map. `nodes`: a node's underlay
 * address → the node identity its address carries in the ipBlock map (core/node-peers.ts); `identities`: more
 * identities the policies may select (node identities, reserved ones).
 */
function install(policies: readonly Policy[], nodes: ReadonlyMap<string, number> = new Map(), identities: ReadonlyMap<number, LabelSet> = new Map()): Installed {
  const ids = new Map<number, LabelSet>([...POD_LIST.map((p): [number, LabelSet] => [p.identity, podLabels(p)]), ...identities]);
  const alloc = new LocalCIDRAllocator();
  const cidrs: [string, number][] = [];
  for (const prefix of policyPrefixes(policies)) {
    const r = alloc.acquire(prefix);
    assert.ok(r.ok);
    ids.set(r.value.id, r.value.labels);
    cidrs.push([prefix, r.value.id]);
  }
  const blocks: [string, number][] = [];
  for (const prefix of ipBlockPrefixes(policies)) {
    const r = alloc.acquire(prefix, ipBlockLabels);
    assert.ok(r.ok);
    ids.set(r.value.id, r.value.labels);
    blocks.push([prefix, r.value.id]);
  }
  const compiled = compileAll(policies, ids);
  for (const node of ["node1", "node2"] as const) {
    const dp = dps[node]!;
    dp.clearAll();
    const other = node === "node1" ? UNDERLAY.node2 : UNDERLAY.node1;
    dp.setIpcache({ cidr: `${other}/32`, identity: IDENTITY.remoteNode, node: true });
    const otherNode = nodes.get(other);
    if (otherNode !== undefined) dp.setIPBlock({ cidr: `${other}/32`, identity: otherNode });
    for (const [cidr, identity] of cidrs) dp.setIpcache({ cidr, identity });
    for (const [cidr, identity] of blocks) dp.setIPBlock({ cidr, identity });
    for (const p of POD_LIST) {
      if (p.node === node) dp.setSubjectPolicy(compiled.snapshot(p.identity), [{ ip: p.ip, ifindex: hostIf[p.name]! }]);
      else dp.setIpcache({ cidr: `${p.ip}/32`, identity: p.identity, tunnelEndpoint: UNDERLAY[p.node] });
    }
    for (const p of POD_LIST) if (p.node === node) dp.setIpcache({ cidr: `${p.ip}/32`, identity: p.identity });
  }
  return { compiled, ids, blocks };
}

/** core's answer for from → to: the compiled lookup with the datapath's second look, and the evaluator. */
function coreSays(policies: readonly Policy[], inst: Installed, from: Pod, to: Pod): { compiled: boolean; evaluated: boolean } {
  const blockOf = (p: Pod): number | undefined => (isPodIdentity(p.identity) ? longestBlock(p.ip, inst.blocks) : undefined);
  const eg = lookup(inst.compiled.snapshot(from.identity), "egress", to.identity, PROTO_NUMBER.UDP, PORT, blockOf(to));
  const ig = lookup(inst.compiled.snapshot(to.identity), "ingress", from.identity, PROTO_NUMBER.UDP, PORT, blockOf(from));
  const ep = (p: Pod) => ({ id: p.identity, labels: inst.ids.get(p.identity)!, address: p.ip });
  const v = verdict({ policies, src: ep(from), dst: ep(to), protocol: PROTO_NUMBER.UDP, port: PORT });
  return { compiled: eg.verdict === "allow" && ig.verdict === "allow", evaluated: v.verdict === "allow" };
}

/** Sends every pair's probe and checks the packets against `want` and against core. */
async function expectReach(policies: readonly Policy[], inst: Installed, want: Record<string, boolean>): Promise<void> {
  for (const dp of Object.values(dps)) dp?.clearConntrack();
  drained(); // the events of earlier probes
  for (const [pair, expected] of Object.entries(want)) {
    const [from, to] = pair.split(">").map((n) => POD_LIST.find((p) => p.name === n)!) as [Pod, Pod];
    const got = await reaches(from, to);
    assert.equal(got, expected, `${pair}: packets`);
    assert.deepEqual(coreSays(policies, inst, from, to), { compiled: expected, evaluated: expected }, `${pair}: core`);
  }
}

function drained(): VerdictEvent[] {
  for (const d of drains) d();
  return events.splice(0);
}

before(async () => {
  for (const n of Object.values(ns)) fx.addNetns(n);
  fx.addVeth({ netns: ns.node1, ifname: `${tag}u1`, cidr: `${UNDERLAY.node1}/24` }, { netns: ns.node2, ifname: `${tag}u2`, cidr: `${UNDERLAY.node2}/24` });
  for (const node of ["node1", "node2"] as const) {
    const vx = `${tag}v${node.slice(-1)}`;
    ipIn(ns[node], "link", "add", vx, "type", "vxlan", "external", "dstport", "4789", "nolearning");
    ipIn(ns[node], "link", "set", vx, "up");
    for (const k of ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", `net.ipv4.conf.${vx}.rp_filter=0`]) execIn(ns[node], "sysctl", ["-qw", k]);
    vxIf[node] = ifindexIn(ns[node], vx);
  }
  for (const p of POD_LIST) {
    const podNs = ns[p.name as "a"];
    fx.addVeth({ netns: podNs, ifname: `${tag}p${p.name}`, cidr: `${p.ip}/24` }, { netns: ns[p.node], ifname: `${tag}h${p.name}`, cidr: `${p.gw}/24` });
    ipIn(podNs, "route", "add", "default", "via", p.gw);
    hostIf[p.name] = ifindexIn(ns[p.node], `${tag}h${p.name}`);
  }
  for (const node of ["node1", "node2"] as const) {
    const dp = (dps[node] = Datapath.load(`test-${tag}-${node}`));
    dp.clearAll();
    drains.push(dp.onEvents((e) => events.push(e)));
    for (const p of POD_LIST) if (p.node === node) dp.attachEndpoint(hostIf[p.name]!, ns[node]);
    dp.setConfig({ vxlanIfindex: vxIf[node]!, monitorAggregation: "medium" }); // a forwarded event per new connection
    dp.attachOverlay(vxIf[node]!, ns[node]);
  }
  for (const podNs of [...POD_LIST.map((p) => ns[p.name as "a"]), ns.node2]) {
    const server = fx.spawn(podNs, process.execPath, ["--import", "tsx", PROBE, "serve", "udp", String(PORT)]);
    await waitForLine(server, /^listening/, 15000);
  }
  // node2's own server answers a's probe by the underlay (pod-to-pod traffic takes the overlay, not this route).
  ipIn(ns.node2, "route", "add", `${A.ip.replace(/\.\d+$/, ".0")}/24`, "via", UNDERLAY.node1);
});

after(() => {
  fx.cleanup(); // deleting the node netns removes their links and tc programs
  for (const dp of Object.values(dps)) {
    dp?.close();
    dp?.unpin();
  }
});

const ingressExceptC = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: into-a-except-c, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from:
    - ipBlock: {cidr: 10.211.0.0/16, except: [${C.ip}/32]}
`;

test("ingress ipBlock over the pod network except one pod's /32: the pod across nodes (identity from the VNI) is allowed, the excepted pod on the same node is not", async () => {
  const policies = parse(ingressExceptC);
  const inst = install(policies);
  await expectReach(policies, inst, { "b>a": true, "c>a": false, "a>b": true, "a>c": true });
  const evs = drained();
  const allowed = evs.find((e) => e.verdict === "forwarded" && e.direction === "ingress" && e.src === B.ip && e.dst === A.ip);
  assert.equal(allowed?.srcIdentity, B.identity, "the flow names the pod's own identity");
  assert.equal(inst.compiled.ruleOrigin(allowed.ruleId!)?.name, "into-a-except-c", "and the NetworkPolicy that allowed it");
  const dropped = evs.find((e) => e.verdict === "dropped" && e.src === C.ip && e.dst === A.ip);
  assert.equal(dropped?.reason, "policy denied (default deny)");
});

test("an address in one ipBlock's except and in another ipBlock is allowed (same node)", async () => {
  const policies = parse(`${ingressExceptC}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: into-a-from-c, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from:
    - ipBlock: {cidr: 10.211.3.0/24}
`);
  await expectReach(policies, install(policies), { "b>a": true, "c>a": true });
});

test("egress ipBlock to one pod's /32 across nodes: that pod only; the pod on the same node is denied", async () => {
  const policies = parse(`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: ${B.ip}/32}
    ports:
    - {protocol: UDP, port: ${PORT}}
`);
  const inst = install(policies);
  await expectReach(policies, inst, { "a>b": true, "a>c": false, "b>a": true, "c>a": true });
  const evs = drained();
  const allowed = evs.find((e) => e.verdict === "forwarded" && e.direction === "egress" && e.src === A.ip && e.dst === B.ip);
  assert.equal(inst.compiled.ruleOrigin(allowed!.ruleId!)?.name, "a-to-b");
});

test("a CNP fromCIDR/toCIDR covering the pod network matches no pod (Cilium's meaning is kept)", async () => {
  const policies = parse(`
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cidr-pods, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromCIDR: [10.211.0.0/16]
  egress:
  - toCIDRSet: [{cidr: 10.211.0.0/16}]
`);
  await expectReach(policies, install(policies), { "b>a": false, "c>a": false, "a>b": false, "a>c": false });
});

test("an explicit deny of the pod's identity wins over an ipBlock that holds its address, and names its rule", async () => {
  const policies = parse(`${ingressExceptC}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deny-b, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: b}}]
`);
  const inst = install(policies);
  await expectReach(policies, inst, { "b>a": false, "c>a": false });
  const dropped = drained().find((e) => e.verdict === "dropped" && e.src === B.ip && e.dst === A.ip);
  assert.equal(dropped?.reason, "policy denied");
  assert.equal(inst.compiled.ruleOrigin(dropped.ruleId!)?.name, "deny-b");
});

test("the ipBlock map changing under a running policy: a new except denies at once, its removal allows again, with no policy entry written", async () => {
  const policies = parse(ingressExceptC.replace(`except: [${C.ip}/32]`, "except: []"));
  const inst = install(policies);
  await expectReach(policies, inst, { "b>a": true, "c>a": true });
  // What a policy that excepts b's /32 adds: an ipBlock identity that no allow names.
  const dp = dps.node1!;
  dp.setIPBlock({ cidr: `${B.ip}/32`, identity: (1 << 24) + 999 });
  dp.clearConntrack();
  assert.equal(await reaches(B, A), false, "b's address now resolves to an identity without an allow");
  dp.deleteIPBlock(`${B.ip}/32`);
  dp.clearConntrack();
  assert.equal(await reaches(B, A), true);
});

/**
 * A node selector in a deny section of a's policy, beside an allow of remote-node, selecting node2 (zone b) or no node
 * (zone c), probed by a to node2's own address (egress) or by node2 to a (ingress, the address looked up as the source).
 */
async function expectNodeDeny(direction: "egress" | "ingress"): Promise<void> {
  const node2 = MIN_NODE_HOST_IDENTITY;
  const remoteNode = RESERVED_IDENTITIES.find((r) => r.id === IDENTITY.remoteNode)!;
  const identities = new Map([[node2, nodeHostLabels({ zone: "b" })], [remoteNode.id, remoteNode.labels]]);
  const [peers, nodes] = direction === "egress" ? ["toEntities", "toNodes"] : ["fromEntities", "fromNodes"];
  const [src, dst] = direction === "egress" ? [A.ip, UNDERLAY.node2] : [UNDERLAY.node2, A.ip];
  for (const [zone, want] of [["b", false], ["c", true]] as const) {
    const policies = parse(`
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-deny-nodes, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ${direction}:
  - ${peers}: [remote-node]
  ${direction}Deny:
  - ${nodes}: [{matchLabels: {zone: ${zone}}}]
    toPorts: [{ports: [{port: "${PORT}", protocol: UDP}]}]
`);
    const inst = install(policies, new Map([[UNDERLAY.node2, node2]]), identities);
    for (const dp of Object.values(dps)) dp?.clearConntrack();
    drained();
    const got = direction === "egress" ? await reaches(A, UNDERLAY.node2) : await reaches("node2", A);
    const seen = drained();
    assert.equal(got, want, `deny of zone ${zone}: packets`);
    const core = lookup(inst.compiled.snapshot(A.identity), direction, IDENTITY.remoteNode, PROTO_NUMBER.UDP, PORT, node2).verdict;
    assert.equal(core, want ? "allow" : "deny", `deny of zone ${zone}: core`);
    if (want) continue;
    const dropped = seen.find((e) => e.verdict === "dropped" && e.src === src && e.dst === dst);
    assert.equal(dropped?.reason, "policy denied");
    assert.equal(inst.compiled.ruleOrigin(dropped.ruleId!)?.name, "a-deny-nodes");
  }
}

test("toNodes in egressDeny: a pod's packet to the selected node's address drops as policy denied, naming the deny, over an allow of remote-node; a deny selecting no node leaves it allowed", async () => {
  await expectNodeDeny("egress");
});

test("fromNodes in ingressDeny: the selected node's packet to a pod drops as policy denied, naming the deny, over an allow of remote-node; a deny selecting no node leaves it allowed", async () => {
  await expectNodeDeny("ingress");
});
