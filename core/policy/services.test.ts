// toServices: Services and their EndpointSlice addresses select pod identities (or CIDR identities), and the compiled entries follow them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PolicyCompiler, type Delta } from "../compiler.ts";
import { securityLabels } from "../labels.ts";
import { cidrLabels } from "../identity.ts";
import { lookup } from "./mapstate.ts";
import { directionVerdict } from "../evaluator.ts";
import type { LabelSet, Policy } from "../model.ts";
import { parsePolicyObject } from "../parser/index.ts";
import { ServiceIndex, serviceBackends, serviceSelects, type ServiceBackends, type ServiceEndpoints } from "./services.ts";

const CLIENT = 300;
const DB1 = 301;
const DB2 = 302;
const OTHER = 303;
const EXT = (1 << 24) + 5; // the CIDR identity of 203.0.113.7/32

const pod = (app: string, namespace = "shop"): LabelSet => securityLabels({ podLabels: { app }, namespace, namespaceLabels: {} });
const identities = new Map<number, LabelSet>([
  [CLIENT, pod("client")],
  [DB1, pod("db")],
  [DB2, pod("db-canary")],
  [OTHER, pod("other")],
]);

/** A CNP in `namespace`, or a CCNP for null. */
function parse(spec: object, namespace: string | null = "shop"): Policy[] {
  const r = parsePolicyObject({
    apiVersion: "cilium.io/v2",
    kind: namespace === null ? "CiliumClusterwideNetworkPolicy" : "CiliumNetworkPolicy",
    metadata: { name: "client-egress", ...(namespace === null ? {} : { namespace }) },
    spec: { endpointSelector: { matchLabels: { app: "client" } }, ...spec },
  });
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

function compiler(policies: Policy[], services: readonly ServiceBackends[] = []): PolicyCompiler {
  const c = new PolicyCompiler();
  for (const [id, labels] of identities) c.upsertIdentity(id, labels);
  c.setServices(services);
  c.upsertPolicy("p", policies);
  return c;
}

const svc = (name: string, over: Partial<ServiceBackends> = {}): ServiceBackends => ({
  namespace: "shop",
  name,
  labels: {},
  identities: [],
  prefixes: [],
  ...over,
});

const egress = (c: PolicyCompiler, peer: number, port = 5432, proto = 6): string => lookup(c.snapshot(CLIENT), "egress", peer, proto, port).verdict;
const added = (ds: Delta[]): number[] => ds.flatMap((d) => d.added.map((e) => e.peer)).sort((a, b) => a - b);
const removed = (ds: Delta[]): number[] => ds.flatMap((d) => d.removed.map((e) => e.peer)).sort((a, b) => a - b);

describe("serviceBackends: a Service's EndpointSlice addresses as backends", () => {
  const podOf = new Map([
    ["10.0.1.5", DB1],
    ["fd00::5", DB2],
  ]);
  const endpoints = (over: Partial<ServiceEndpoints>): ServiceEndpoints => ({ namespace: "shop", name: "db", labels: {}, selectsPods: true, addresses: [], ...over });

  it("a pod's address stands for the pod's identity; an unknown address of a Service with a selector selects nothing", () => {
    const b = serviceBackends(endpoints({ addresses: ["10.0.1.5", "FD00:0::5", "10.0.9.9", "not-an-ip"] }), (ip) => podOf.get(ip === "FD00:0::5" ? "fd00::5" : ip));
    assert.deepEqual(b.identities, [DB1, DB2]);
    assert.deepEqual(b.prefixes, []);
  });

  it("a Service without a selector: addresses that are no pod's become CIDR host prefixes (IPv6 canonical), pods stay identities", () => {
    const b = serviceBackends(endpoints({ selectsPods: false, addresses: ["203.0.113.7", "2001:DB8::1", "10.0.1.5", "203.0.113.7"] }), (ip) => podOf.get(ip));
    assert.deepEqual(b.identities, [DB1]);
    assert.deepEqual(b.prefixes, ["2001:db8::1/128", "203.0.113.7/32"]);
  });
});

describe("serviceSelects: which Services a toServices entry names", () => {
  const [byName] = parse({ egress: [{ toServices: [{ k8sService: { serviceName: "db" } }] }] })[0]!.rules[0]!.peers;
  const [bySelector] = parse({ egress: [{ toServices: [{ k8sServiceSelector: { selector: { matchLabels: { tier: "data" } } } }] }] })[0]!.rules[0]!.peers;
  const [clusterwide] = parse({ egress: [{ toServices: [{ k8sService: { serviceName: "db" } }] }] }, null)[0]!.rules[0]!.peers;
  const [otherNs] = parse({ egress: [{ toServices: [{ k8sService: { serviceName: "db", namespace: "data" } }] }] })[0]!.rules[0]!.peers;

  it("k8sService in a CNP without a namespace names the Service of the policy's namespace", () => {
    assert.ok(byName?.kind === "service");
    assert.equal(serviceSelects(byName, svc("db")), true);
    assert.equal(serviceSelects(byName, svc("db", { namespace: "data" })), false);
    assert.equal(serviceSelects(byName, svc("db2")), false);
  });

  it("k8sService with a namespace names that namespace's Service", () => {
    assert.ok(otherNs?.kind === "service");
    assert.equal(serviceSelects(otherNs, svc("db", { namespace: "data" })), true);
    assert.equal(serviceSelects(otherNs, svc("db")), false);
  });

  it("k8sService in a CCNP without a namespace names the Service of that name in every namespace (as Cilium)", () => {
    assert.ok(clusterwide?.kind === "service");
    assert.equal(serviceSelects(clusterwide, svc("db")), true);
    assert.equal(serviceSelects(clusterwide, svc("db", { namespace: "data" })), true);
  });

  it("k8sServiceSelector matches the Service's own labels, in the policy's namespace", () => {
    assert.ok(bySelector?.kind === "service");
    assert.equal(serviceSelects(bySelector, svc("a", { labels: { tier: "data" } })), true);
    assert.equal(serviceSelects(bySelector, svc("a", { labels: { tier: "web" } })), false);
    assert.equal(serviceSelects(bySelector, svc("a", { namespace: "data", labels: { tier: "data" } })), false);
  });

  it("the index gives the union of the selected Services' backends, and tells whether a change moved anything", () => {
    const index = new ServiceIndex();
    assert.ok(bySelector?.kind === "service");
    assert.equal(index.set([svc("a", { labels: { tier: "data" }, identities: [DB1] }), svc("b", { labels: { tier: "data" }, identities: [DB2], prefixes: ["203.0.113.7/32"] })]), true);
    assert.deepEqual([...index.selection(bySelector).identities].sort(), [DB1, DB2]);
    assert.deepEqual([...index.selection(bySelector).prefixes], ["203.0.113.7/32"]);
    assert.equal(index.set([svc("a", { labels: { tier: "data" }, identities: [DB1] }), svc("b", { labels: { tier: "data" }, identities: [DB2], prefixes: ["203.0.113.7/32"] })]), false, "the same Services: no change");
    assert.equal(index.set([svc("a", { labels: { tier: "data" }, identities: [DB1] })]), true);
    assert.deepEqual([...index.selection(bySelector).identities], [DB1]);
  });
});

describe("the compiler resolves toServices through the Services' backends", () => {
  const toDb = (): Policy[] => parse({ egress: [{ toServices: [{ k8sService: { serviceName: "db" } }] }] });

  it("allows egress to the backend pods' identities on every port, and to no other pod", () => {
    const c = compiler(toDb(), [svc("db", { identities: [DB1] })]);
    assert.equal(c.snapshot(CLIENT).egressEnforced, true);
    assert.equal(egress(c, DB1), "allow");
    assert.equal(egress(c, DB1, 80), "allow", "toServices has no toPorts: every port");
    assert.equal(egress(c, DB1, 53, 17), "allow", "and every protocol");
    assert.equal(egress(c, OTHER), "deny");
    assert.equal(egress(c, DB2), "deny");
    assert.ok(c.snapshot(CLIENT).entries.every((e) => e.ruleId !== 0 || e.verdict === "deny"), "entries name their rule");
  });

  it("a Service that does not exist (yet) selects nothing, and the subject stays in default deny", () => {
    const c = compiler(toDb());
    assert.equal(c.snapshot(CLIENT).egressEnforced, true);
    assert.equal(egress(c, DB1), "deny");
    assert.deepEqual(c.snapshot(CLIENT).entries.filter((e) => e.direction === "egress"), []);
  });

  it("follows the backends: a new backend is added, a gone one removed, in one delta each", () => {
    const c = compiler(toDb(), [svc("db", { identities: [DB1] })]);
    const grow = c.setServices([svc("db", { identities: [DB1, DB2] })]);
    assert.deepEqual(added(grow), [DB2]);
    assert.deepEqual(removed(grow), []);
    assert.equal(egress(c, DB2), "allow");
    const move = c.setServices([svc("db", { identities: [DB2] })]);
    assert.deepEqual(removed(move), [DB1]);
    assert.deepEqual(added(move), []);
    assert.equal(egress(c, DB1), "deny");
    assert.equal(egress(c, DB2), "allow");
  });

  it("a deleted Service (or one whose EndpointSlices went) selects nothing: never allow-all", () => {
    const c = compiler(toDb(), [svc("db", { identities: [DB1] })]);
    const gone = c.setServices([]);
    assert.deepEqual(removed(gone), [DB1]);
    assert.equal(egress(c, DB1), "deny");
    assert.equal(egress(c, 0), "deny", "no wildcard entry appears");
    assert.equal(c.snapshot(CLIENT).egressEnforced, true);
    c.setServices([svc("db", { identities: [] })]);
    assert.equal(egress(c, DB1), "deny");
  });

  it("k8sServiceSelector follows the Services' labels", () => {
    const c = compiler(parse({ egress: [{ toServices: [{ k8sServiceSelector: { selector: { matchLabels: { tier: "data" } } } }] }] }), [
      svc("db", { labels: { tier: "data" }, identities: [DB1] }),
      svc("cache", { labels: { tier: "cache" }, identities: [DB2] }),
    ]);
    assert.equal(egress(c, DB1), "allow");
    assert.equal(egress(c, DB2), "deny");
    const relabel = c.setServices([svc("db", { labels: { tier: "old" }, identities: [DB1] }), svc("cache", { labels: { tier: "data" }, identities: [DB2] })]);
    assert.deepEqual(added(relabel), [DB2]);
    assert.deepEqual(removed(relabel), [DB1]);
  });

  it("a Service without a selector selects the CIDR identities of its addresses, as toCIDR /32 would, and asks for them", () => {
    const c = compiler(parse({ egress: [{ toServices: [{ k8sService: { serviceName: "external-db" } }] }] }), [
      svc("external-db", { prefixes: ["203.0.113.7/32"] }),
      svc("unused", { prefixes: ["198.51.100.1/32"] }),
    ]);
    assert.deepEqual(c.servicePrefixes(), ["203.0.113.7/32"], "only the prefixes a toServices entry in force selects need CIDR identities");
    const ds = c.upsertIdentity(EXT, cidrLabels("203.0.113.7/32"));
    assert.deepEqual(added(ds), [EXT]);
    assert.equal(egress(c, EXT), "allow");
    const wider = (1 << 24) + 6;
    c.upsertIdentity(wider, cidrLabels("203.0.113.0/24"));
    assert.equal(egress(c, wider), "deny", "only the /32 itself");
    c.removePolicy("p");
    assert.deepEqual(c.servicePrefixes(), [], "no entry in force: no CIDR identity needed");
  });

  it("toServices in egressDeny denies the backends, and wins over an allow", () => {
    const c = compiler(
      parse({ egress: [{ toEndpoints: [{}] }], egressDeny: [{ toServices: [{ k8sService: { serviceName: "db" } }] }] }),
      [svc("db", { identities: [DB1] })],
    );
    assert.equal(egress(c, DB1), "deny");
    assert.equal(egress(c, OTHER), "allow");
    c.setServices([svc("db", { identities: [DB2] })]);
    assert.equal(egress(c, DB1), "allow");
    assert.equal(egress(c, DB2), "deny");
  });

  it("a backend pod's identity that appears after the Service is selected when it appears", () => {
    const c = new PolicyCompiler();
    c.upsertIdentity(CLIENT, identities.get(CLIENT)!);
    c.upsertPolicy("p", toDb());
    c.setServices([svc("db", { identities: [DB1] })]);
    assert.equal(egress(c, DB1), "deny");
    const ds = c.upsertIdentity(DB1, identities.get(DB1)!);
    assert.deepEqual(added(ds), [DB1]);
    assert.equal(egress(c, DB1), "allow");
  });
});

describe("the reference evaluator agrees with the compiled entries for toServices", () => {
  it("for every peer, allowed and denied egress, with the same Services", () => {
    const policies = parse({
      egress: [{ toServices: [{ k8sService: { serviceName: "db" } }, { k8sServiceSelector: { selector: { matchLabels: { tier: "ext" } } } }] }],
      egressDeny: [{ toServices: [{ k8sService: { serviceName: "blocked" } }] }],
    });
    const services = [
      svc("db", { identities: [DB1, DB2] }),
      svc("ext", { labels: { tier: "ext" }, prefixes: ["203.0.113.7/32"] }),
      svc("blocked", { identities: [DB2] }),
    ];
    const c = compiler(policies, services);
    const all = new Map(identities);
    all.set(EXT, cidrLabels("203.0.113.7/32"));
    c.upsertIdentity(EXT, all.get(EXT)!);
    const want = new Map([[DB1, "allow"], [DB2, "deny"], [OTHER, "deny"], [EXT, "allow"]]);
    for (const [peer, verdict] of want) {
      assert.equal(egress(c, peer), verdict, `compiled, peer ${peer}`);
      const v = directionVerdict({ policies, direction: "egress", subject: { id: CLIENT, labels: identities.get(CLIENT)! }, peer: { id: peer, labels: all.get(peer)! }, protocol: 6, port: 5432, services });
      assert.equal(v.verdict, verdict, `evaluator, peer ${peer}`);
    }
  });
});
