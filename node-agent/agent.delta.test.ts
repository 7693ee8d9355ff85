// A delta from the operator becomes map operations as it is: its added entries upserted before the switch, its removed keys deleted after, other subjects untouched (recording datapath, real stream).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { PROTO_NUMBER, type PolicyEntry, type SubjectPolicy } from "../core/model.ts";
import type { NodeState } from "../core/wire.ts";
import { IDENTITY, unknownAddressIdentity } from "../core/identity.ts";
import { makePki, type TestPki } from "../kube/testing/pki.ts";
import { DistributionServer } from "../controllers/distribution/server.ts";
import { type AgentDatapath, NodeAgent } from "./agent.ts";
import { capturingLogger, until } from "./testing/agent.ts";

const NODE = "delta-node";
const A = 1100;
const B = 1200;
const PEER = 2100;

const policy = (subject: number, ports: number[]): SubjectPolicy => ({
  subject,
  ingressEnforced: false,
  egressEnforced: true,
  entries: ports.map((port): PolicyEntry => ({ subject, direction: "egress", peer: PEER, proto: PROTO_NUMBER.TCP, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 })),
});

const state = (a: number[], b: number[], generation: number): NodeState => ({
  policies: [policy(A, a), policy(B, b)],
  ipcache: [{ prefix: "10.202.0.1/32", identity: A }, { prefix: "10.202.0.2/32", identity: PEER }],
  identities: [],
  rules: [{ id: 1, origin: { policyKind: "CiliumNetworkPolicy", namespace: "default", name: "p", ruleIndex: 0, path: "spec.egress[0]" } }],
  policyGenerations: [{ key: "CiliumNetworkPolicy/default/p", uid: "u", generation }],
});

describe("agent delta write", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-delta-"));
  const calls: string[] = [];
  const ports = (es: readonly PolicyEntry[]): string => es.map((e) => e.port).join(",");
  const datapath: AgentDatapath = {
    object: { map: () => ({ keys: () => [], forEachKey: () => undefined }) } as unknown as AgentDatapath["object"],
    setSubjectPolicy: (p) => {
      calls.push(`set ${p.subject} [${ports(p.entries)}]`);
      return { installed: true };
    },
    addSubjectEntries: (p, added) => {
      calls.push(`add ${p.subject} [${ports(added)}]`);
      return true;
    },
    removeSubjectEntries: (p, removed) => void calls.push(`remove ${p.subject} [${ports(removed)}]`),
    setIpcache: (e) => void calls.push(`ipcache ${e.cidr}`),
    setIpcacheMany: (es) => void calls.push(...es.map((e) => `ipcache ${e.cidr}`)),
    deleteIpcache: (cidr) => void calls.push(`ipcache-delete ${cidr}`),
    pruneIpcache: () => undefined,
    setIPBlock: (e) => void calls.push(`ipblock ${e.cidr}`),
    deleteIPBlock: (cidr) => void calls.push(`ipblock-delete ${cidr}`),
    pruneIPBlocks: () => undefined,
    setEndpoint: () => undefined,
    deleteEndpoint: () => undefined,
    attachEndpoint: () => undefined,
    detachEndpoint: () => undefined,
    // A dual-stack node's datapath (bpf/lib/ipcache.h ipcache_unknown_identity).
    unknownAddressIdentity: (family) => unknownAddressIdentity(family, true),
  };
  let pki: TestPki | undefined;
  let server: DistributionServer | undefined;
  let agent: NodeAgent | undefined;
  const report = () => server?.reports().find((r) => r.node === NODE);

  before(async () => {
    pki = await makePki([NODE]);
    server = new DistributionServer({ ca: pki.read("ca.crt"), cert: pki.read("operator.crt"), key: pki.read("operator.key") }, capturingLogger([]));
    const port = await server.listen(0);
    server.publish(NODE, state([8080], [9090], 1));
    agent = new NodeAgent({
      nodeName: NODE,
      operator: `127.0.0.1:${port}`,
      tls: { ca: pki.read("ca.crt"), cert: pki.read(`${NODE}.crt`), key: pki.read(`${NODE}.key`) },
      datapath,
      cniSocket: path.join(dir, "agent.sock"),
      log: capturingLogger([]),
      backoff: { baseMs: 50, maxMs: 400, jitter: 0.2 },
      hostLinks: { list: () => [], remove: () => undefined },
    });
    await agent.start();
    await until("snapshot acked", () => report()?.acked?.policyGenerations[0]?.generation === 1);
  });

  after(async () => {
    await agent?.stop();
    await server?.close();
    pki?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("a proxy's peer is named as the datapath names it: its ipcache identity, else (dual-stack) reserved:world-ipv4 / -ipv6 by its family", () => {
    const lookups = agent!.enrichLookups();
    assert.deepEqual(["10.202.0.2", "203.0.113.7", "2001:db8::7"].map((ip) => lookups.identityByIp?.(ip)), [PEER, IDENTITY.worldIPv4, IDENTITY.worldIPv6]);
  });

  it("a snapshot onto empty maps installs every subject whole, once (no second write of the same entries after the ipcache switch)", () => {
    assert.deepEqual(calls.filter((c) => c.startsWith("set")), [`set ${A} [8080]`, `set ${B} [9090]`]);
    assert.ok(calls.indexOf(`set ${B} [9090]`) < calls.indexOf("ipcache 10.202.0.1/32"), "the subjects are in before the ipcache names their identities");
  });

  it("a delta upserts only the added entries before the ipcache switch and deletes only the removed keys after it; an unchanged subject is not written", async () => {
    calls.length = 0;
    server!.publish(NODE, state([8081], [9090], 2));
    await until("delta acked", () => report()?.acked?.policyGenerations[0]?.generation === 2);
    assert.deepEqual(calls, [`add ${A} [8081]`, `remove ${A} [8080]`]);
  });

  it("a new address in the same delta is written between the adds and the removals", async () => {
    calls.length = 0;
    const next = state([8080], [9090], 3);
    server!.publish(NODE, { ...next, ipcache: [...next.ipcache, { prefix: "10.202.0.3/32", identity: PEER }] });
    await until("delta acked", () => report()?.acked?.policyGenerations[0]?.generation === 3);
    assert.deepEqual(calls, [`add ${A} [8080]`, "ipcache 10.202.0.3/32", `remove ${A} [8081]`]);
  });

  it("the ipcache takes only what the delta names: a moved address is rewritten, a removed one deleted, the rest untouched", async () => {
    calls.length = 0;
    const next = state([8080], [9090], 4);
    // 10.202.0.2 gets another identity, 10.202.0.3 (added before) goes, 10.202.0.1 stays as it is.
    server!.publish(NODE, { ...next, ipcache: [next.ipcache[0]!, { prefix: "10.202.0.2/32", identity: B }] });
    await until("delta acked", () => report()?.acked?.policyGenerations[0]?.generation === 4);
    assert.deepEqual(calls, ["ipcache 10.202.0.2/32", "ipcache-delete 10.202.0.3/32"]);
  });

  it("a new NetworkPolicy ipBlock prefix reaches the ipBlock map after the adds, a prefix that left goes after the removals", async () => {
    calls.length = 0;
    const withBlock = (s: NodeState, prefix: string, ipBlockIdentity: number): NodeState => ({ ...s, ipcache: [...s.ipcache, { prefix, identity: (1 << 24) + 1, ipBlockIdentity }] });
    const at = (c: string): number => {
      const i = calls.indexOf(c);
      assert.ok(i >= 0, `${c} in ${JSON.stringify(calls)}`);
      return i;
    };
    server!.publish(NODE, withBlock(state([8081], [9090], 5), "10.202.0.0/16", (1 << 24) + 2));
    await until("delta acked", () => report()?.acked?.policyGenerations[0]?.generation === 5);
    assert.ok(at(`add ${A} [8081]`) < at("ipblock 10.202.0.0/16") && at("ipblock 10.202.0.0/16") < at(`remove ${A} [8080]`), JSON.stringify(calls));
    calls.length = 0;
    server!.publish(NODE, withBlock(state([8080], [9090], 6), "10.203.0.0/16", (1 << 24) + 3));
    await until("delta acked", () => report()?.acked?.policyGenerations[0]?.generation === 6);
    assert.ok(at(`add ${A} [8080]`) < at("ipblock 10.203.0.0/16") && at("ipblock 10.203.0.0/16") < at(`remove ${A} [8081]`), JSON.stringify(calls));
    assert.ok(at(`remove ${A} [8081]`) < at("ipblock-delete 10.202.0.0/16"), JSON.stringify(calls));
    assert.ok(!calls.includes("ipblock 10.203.0.0/16", at("ipblock 10.203.0.0/16") + 1), "written once");
  });
});
