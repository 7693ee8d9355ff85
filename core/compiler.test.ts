// Compiler tests: compiled lookup agrees with the reference evaluator; incremental equals full; deltas replay.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import type {
  LabelRequirement,
  LabelSet,
  Peer,
  Policy,
  PolicyEntry,
  PortProtocol,
  PortRule,
  Protocol,
  Rule,
  Selector,
} from "./model.ts";
import { canonicalSelector } from "./selector.ts";
import { label, labelSetFrom } from "./labels.ts";
import { CLUSTER_CLASS_PEER, EVERY_POD_CLASS_PEER, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER, cidrLabels, inWorldClass, RESERVED_IDENTITIES, worldFamilyOf } from "./identity.ts";
import { ipBlockLabels } from "./ipblock.ts";
import { compileAll, DeltaCollector, policyKey, PolicyCompiler, RULE_ID_DEFAULT_DENY, type Delta } from "./compiler.ts";
import { directionVerdict, httpInspection } from "./evaluator.ts";
import { httpPartsAt } from "./policy/http-rules.ts";
import { compareEntries, entryKeyString, lookup } from "./policy/mapstate.ts";

/** fc.assert, but the failure shows the assertion message first and the counterexample's ops, not every label. */
function checkProperty<T>(prop: fc.IProperty<T>, params: fc.Parameters<T>): void {
  const r = fc.check(prop, params);
  if (!r.failed) return;
  const err = r.errorInstance instanceof Error ? r.errorInstance.message : String(r.errorInstance);
  const ce = JSON.stringify(r.counterexample, (_k, v: unknown) =>
    v instanceof Map ? [...v.keys()] : v,
  ).slice(0, 6000);
  assert.fail(`${err.slice(0, 3000)}\nseed ${r.seed} path ${r.counterexamplePath}\ncounterexample: ${ce}`);
}

// ----- a small universe of identities --------------------------------------------------------

const podLabel = fc.record({
  app: fc.constantFrom("a", "b", "c"),
  team: fc.constantFrom("x", "y"),
  ns: fc.constantFrom("n1", "n2"),
  // Now and then a pod of another cluster: in the cluster's number range but not in the `cluster` entity (no class entries then).
  cluster: fc.constantFrom("default", "default", "default", "default", "default", "other"),
  // Now and then an identity in the pods' number range without a namespace: not in the every-pod selectors (no every-pod entries then).
  namespaced: fc.constantFrom(true, true, true, true, true, true, true, false),
});
function podLabels(p: { app: string; team: string; ns: string; cluster: string; namespaced: boolean }): LabelSet {
  return labelSetFrom([
    label("k8s", "app", p.app),
    label("k8s", "team", p.team),
    ...(p.namespaced ? [label("k8s", "io.kubernetes.pod.namespace", p.ns)] : []),
    label("k8s", "io.cilium.k8s.policy.cluster", p.cluster),
  ]);
}
const CIDR_IDS: [number, LabelSet][] = [
  [(1 << 24) + 1, cidrLabels("10.0.0.0/8")],
  [(1 << 24) + 2, cidrLabels("10.1.0.0/16")],
  [(1 << 24) + 3, cidrLabels("10.1.2.0/24")],
  [(1 << 24) + 4, cidrLabels("192.168.1.1/32")],
  [(1 << 24) + 5, labelSetFrom([...cidrLabels("1.2.3.4/32").labels, label("fqdn", "api.example.com")])],
];
const FIXED_IDS: [number, LabelSet][] = [
  ...RESERVED_IDENTITIES.filter((r) => [1, 2, 6, 9].includes(r.id)).map((r): [number, LabelSet] => [
    r.id,
    r.labels,
  ]),
  ...CIDR_IDS,
];

const identitiesArb = fc.array(podLabel, { minLength: 2, maxLength: 7 }).map((pods) => {
  const m = new Map<number, LabelSet>(FIXED_IDS);
  pods.forEach((p, i) => m.set(256 + i, podLabels(p)));
  return m;
});

// ----- random policies -----------------------------------------------------------------------

const requirement: fc.Arbitrary<LabelRequirement> = fc.oneof(
  fc.record({
    key: fc.constantFrom("k8s:app", "any:app"),
    operator: fc.constantFrom("In" as const, "NotIn" as const),
    values: fc.subarray(["a", "b", "c"], { minLength: 1 }),
  }),
  fc.record({
    key: fc.constant("k8s:team"),
    operator: fc.constantFrom("In" as const, "NotIn" as const),
    values: fc.subarray(["x", "y"], { minLength: 1 }),
  }),
  fc.record({
    key: fc.constant("k8s:io.kubernetes.pod.namespace"),
    operator: fc.constant("In" as const),
    values: fc.subarray(["n1", "n2"], { minLength: 1 }),
  }),
  fc.record({
    key: fc.constantFrom("k8s:team", "k8s:app"),
    operator: fc.constantFrom("Exists" as const, "DoesNotExist" as const),
    values: fc.constant([]),
  }),
);
const selector: fc.Arbitrary<Selector> = fc
  .array(requirement, { maxLength: 2 })
  .map((rs) => canonicalSelector(rs));
/** Selectors of every pod (the every-pod class's): a NetworkPolicy's `namespaceSelector: {}`, and the same naming the cluster. */
const everyPod: fc.Arbitrary<Peer> = fc.constantFrom(
  canonicalSelector([{ key: "k8s:io.kubernetes.pod.namespace", operator: "Exists", values: [] }]),
  canonicalSelector([
    { key: "k8s:io.kubernetes.pod.namespace", operator: "Exists", values: [] },
    { key: "k8s:io.cilium.k8s.policy.cluster", operator: "In", values: ["default"] },
  ]),
).map((s): Peer => ({ kind: "selector", selector: s }));
const peer: fc.Arbitrary<Peer> = fc.oneof(
  { weight: 5, arbitrary: selector.map((s): Peer => ({ kind: "selector", selector: s })) },
  { weight: 2, arbitrary: everyPod },
  { weight: 1, arbitrary: fc.constant<Peer>({ kind: "any" }) },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom("world", "cluster", "host", "all", "remote-node", "none")
      .map((e): Peer => ({ kind: "entity", entity: e as "world" })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({
        cidr: fc.constantFrom("10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "0.0.0.0/0"),
        except: fc.subarray(["10.1.0.0/16", "10.1.2.0/24"]),
      })
      .map((c): Peer => ({ kind: "cidr", cidr: c.cidr, except: c.cidr === "0.0.0.0/0" ? [] : c.except })),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom<Peer>(
      { kind: "fqdn", matchName: "api.example.com" },
      { kind: "fqdn", matchPattern: "*.example.com" },
    ),
  },
);
const portProtocol: fc.Arbitrary<PortProtocol> = fc
  .record({
    port: fc.constantFrom(0, 80, 81, 443, 1000),
    span: fc.constantFrom(0, 0, 1, 24, 1000),
    protocol: fc.constantFrom<Protocol>("TCP", "UDP", "ANY"),
    named: fc.boolean(),
  })
  .map(({ port, span, protocol, named }) =>
    named && port !== 0
      ? { port: 0, endPort: 0, name: `p${port}`, protocol }
      : { port, endPort: port === 0 ? 0 : port + span, protocol },
  );
const portRule: fc.Arbitrary<PortRule> = fc
  .record({ ports: fc.array(portProtocol, { maxLength: 2 }), l7: fc.boolean() })
  .map(({ ports, l7 }) =>
    l7 ? { ports, rules: { kind: "http" as const, http: [{ path: "/" }] } } : { ports },
  );

function ruleArb(name: string, idx: number, peers: fc.Arbitrary<Peer> = peer): fc.Arbitrary<Rule> {
  return fc
    .record({
      direction: fc.constantFrom("ingress" as const, "egress" as const),
      verdict: fc.constantFrom("allow" as const, "allow" as const, "deny" as const),
      peers: fc.array(peers, { minLength: 1, maxLength: 2 }),
      ports: fc.array(portRule, { maxLength: 2 }),
      icmp: fc.boolean(),
      requires: fc.oneof(
        { weight: 4, arbitrary: fc.constant([] as Selector[]) },
        { weight: 1, arbitrary: fc.array(selector, { minLength: 1, maxLength: 1 }) },
      ),
    })
    .map((r) => ({
      direction: r.direction,
      verdict: r.verdict,
      peers: r.peers,
      ports: r.verdict === "deny" ? r.ports.map((p) => ({ ports: p.ports })) : r.ports,
      icmps: r.icmp ? [{ family: "IPv4" as const, type: "EchoRequest" }] : [],
      requires: r.requires,
      origin: {
        policyKind: "CiliumClusterwideNetworkPolicy" as const,
        name,
        ruleIndex: idx,
        path: `spec.${r.direction}[${idx}]`,
      },
    }));
}

function policyArb(name: string, peers: fc.Arbitrary<Peer> = peer): fc.Arbitrary<Policy> {
  return fc
    .record({
      subject: selector,
      rules: fc
        .tuple(ruleArb(name, 0, peers), ruleArb(name, 1, peers), ruleArb(name, 2, peers))
        .chain((rs) => fc.subarray(rs, { minLength: 0 })),
      dd: fc.record({ ingress: fc.boolean(), egress: fc.boolean() }),
    })
    .map((p) => ({
      kind: "CiliumClusterwideNetworkPolicy" as const,
      name,
      subject: p.subject,
      rules: p.rules,
      defaultDeny: {
        ingress: p.dd.ingress && p.rules.some((r) => r.direction === "ingress"),
        egress: p.dd.egress || p.rules.length === 0,
      },
    }));
}

/** One to four policies, each drawing its rules' peers from `peers`. */
const policiesOf = (peers: fc.Arbitrary<Peer>): fc.Arbitrary<Policy[]> =>
  fc
    .array(fc.constantFrom("p0", "p1", "p2", "p3"), { minLength: 1, maxLength: 4 })
    .chain((names) => fc.tuple(...[...new Set(names)].map((n) => policyArb(n, peers))));

const policiesArb = policiesOf(peer);

/** Policies whose peers are often the classes' (every pod, the `cluster` entity), beside selectors, the wildcard and the world. */
const classPoliciesArb = policiesOf(
  fc.oneof(
    { weight: 3, arbitrary: everyPod },
    { weight: 3, arbitrary: fc.constant<Peer>({ kind: "entity", entity: "cluster" }) },
    { weight: 2, arbitrary: selector.map((s): Peer => ({ kind: "selector", selector: s })) },
    { weight: 1, arbitrary: fc.constantFrom<Peer>({ kind: "any" }, { kind: "entity", entity: "world" }, { kind: "entity", entity: "host" }) },
  ),
);

/** Pods of this cluster, each with a namespace: nothing turns a class off. */
const classIdentitiesArb = fc.array(podLabel, { minLength: 2, maxLength: 6 }).map((pods) => {
  const m = new Map<number, LabelSet>(FIXED_IDS);
  pods.forEach((p, i) => m.set(256 + i, podLabels({ ...p, cluster: "default", namespaced: true })));
  return m;
});

/**
 * The world class's side: IPv6 CIDR identities and world-ipv6 beside the IPv4 ones, and ipBlock identities, which
 * share the CIDR identities' number range without the world label (a packet's peer is never one: the datapath tries
 * their own keys only, as the second look for a pod's address).
 */
const IPBLOCK_IDS: [number, LabelSet][] = [
  [(1 << 24) + 20, ipBlockLabels("10.1.0.0/16")],
  [(1 << 24) + 21, ipBlockLabels("192.168.0.0/16")],
];
const WORLD_EXTRA_IDS: [number, LabelSet][] = [
  [10, RESERVED_IDENTITIES.find((r) => r.id === 10)!.labels],
  [(1 << 24) + 10, cidrLabels("fd00::/8")],
  [(1 << 24) + 11, cidrLabels("2001:db8::1/128")],
  ...IPBLOCK_IDS,
];
/** Now and then a local identity the `world` entity does not select (no world label, not an ipBlock's): no world class entries then. */
const STRAY_LOCAL: [number, LabelSet] = [(1 << 24) + 30, labelSetFrom([label("cidr", "10.9.0.0/16")])];
/** Now and then a local identity in the world entity with no family of its own (reserved:world alone): no world-ipv4/-ipv6 class entries then. */
const STRAY_FAMILY: [number, LabelSet] = [(1 << 24) + 31, labelSetFrom([label("reserved", "world")])];
const worldIdentitiesArb = fc
  .tuple(fc.oneof(identitiesArb, classIdentitiesArb), fc.constantFrom<[number, LabelSet][]>([], [], [], [STRAY_LOCAL], [STRAY_FAMILY]))
  .map(([m, stray]) => new Map([...m, ...WORLD_EXTRA_IDS, ...stray]));

/** Policies whose peers are often the `world` entity, beside the CIDRs and ipBlocks it covers, its families' entities and the other classes'. */
const worldPoliciesArb = policiesOf(
  fc.oneof(
    { weight: 4, arbitrary: fc.constant<Peer>({ kind: "entity", entity: "world" }) },
    { weight: 2, arbitrary: fc.constantFrom<Peer>({ kind: "entity", entity: "world-ipv4" }, { kind: "entity", entity: "world-ipv6" }) },
    { weight: 1, arbitrary: fc.constantFrom<Peer>({ kind: "entity", entity: "cluster" }, { kind: "any" }) },
    { weight: 1, arbitrary: everyPod },
    {
      weight: 2,
      arbitrary: fc
        .record({ cidr: fc.constantFrom("10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "fd00::/8", "0.0.0.0/0"), podAddresses: fc.boolean() })
        .map((c): Peer => ({ kind: "cidr", cidr: c.cidr, except: [], ...(c.podAddresses ? { podAddresses: true as const } : {}) })),
    },
    { weight: 1, arbitrary: selector.map((s): Peer => ({ kind: "selector", selector: s })) },
  ),
);

// Named ports: identity N exposes "pX" as port X only when N is even (so resolution differs per peer).
const namedPorts = (id: number, name: string): readonly number[] =>
  id % 2 === 0 ? [Number(name.slice(1))] : [];

const PROBES: [number, number][] = [
  [6, 80],
  [6, 81],
  [6, 82],
  [6, 443],
  [6, 1000],
  [6, 1024],
  [6, 2000],
  [6, 65535],
  [17, 80],
  [17, 443],
  [17, 1000],
  [132, 81],
  [1, 8],
  [1, 0],
];

function checkAgainstEvaluator(
  policies: readonly Policy[],
  ids: Map<number, LabelSet>,
  c: PolicyCompiler,
): void {
  for (const [subject, sl] of ids) {
    const sp = c.snapshot(subject);
    for (const [peerId, pl] of ids) {
      for (const direction of ["ingress", "egress"] as const) {
        for (const [proto, port] of PROBES) {
          const question = { policies, direction, subject: { id: subject, labels: sl }, peer: { id: peerId, labels: pl }, protocol: proto, port, namedPorts };
          const want = directionVerdict(question);
          const got = lookup(sp, direction, peerId, proto, port);
          if (got.verdict !== want.verdict) {
            assert.fail(
              `subject ${subject} ${direction} peer ${peerId} proto ${proto} port ${port}: lookup ${got.verdict} (entry ${JSON.stringify(got.entry)}) ≠ evaluator ${want.verdict} (${JSON.stringify(want.rule)})`,
            );
          }
          if (got.verdict !== "allow") continue;
          // The HTTP side, as Cilium means it: through the proxy exactly when the allowing rules have HTTP rules for this
          // flow and none of them allows it without L7 rules, and then with the HTTP rules of every allowing toPorts entry
          // (ORed), no more, no fewer.
          const where = `subject ${subject} ${direction} peer ${peerId} proto ${proto} port ${port}`;
          const origin = (o: { name: string; path: string } | undefined, portRule: number | undefined): string => `${o?.name}/${o?.path}/toPorts[${portRule}]`;
          const served = got.entry ? httpPartsAt(sp, got.entry).map((r) => origin(c.ruleOrigin(r.ruleId), r.portRule)) : [];
          const l7 = httpInspection(question);
          const expected = l7.kind === "http" ? l7.parts.map((p) => origin(p.rule.origin, p.portRule)) : [];
          assert.deepEqual([...new Set(served)].sort(), [...new Set(expected)].sort(), `${where}: the HTTP parts on proxy port ${got.entry?.proxyPort ?? 0} (evaluator: ${l7.kind})`);
        }
      }
    }
  }
}

/** A pod identity the cluster or every-pod class would answer for wrongly: another cluster's, or one without a namespace. */
function isStrayPod(id: number, labels: LabelSet): boolean {
  if (id < 256 || id > 65535) return false;
  const has = (key: string, value?: string): boolean => labels.labels.some((l) => l.key === key && (value === undefined || l.value === value));
  return !has("io.cilium.k8s.policy.cluster", "default") || !has("io.kubernetes.pod.namespace");
}

/** Whether any subject of a compile holds entries for a class peer. */
function holdsClass(c: PolicyCompiler, classPeer: number): boolean {
  return c.subjectIds().some((s) => c.snapshot(s).entries.some((e) => e.peer === classPeer));
}

test("property: a lookup in the compiled entries gives the reference evaluator's verdict", () => {
  let withPods = 0;
  checkProperty(
    fc.property(fc.oneof({ weight: 3, arbitrary: identitiesArb }, { weight: 1, arbitrary: classIdentitiesArb }), fc.oneof({ weight: 3, arbitrary: policiesArb }, { weight: 1, arbitrary: classPoliciesArb }), (ids, policies) => {
      const c = compileAll(policies, ids, { namedPorts });
      if (holdsClass(c, EVERY_POD_CLASS_PEER)) withPods++;
      checkAgainstEvaluator(policies, ids, c);
    }),
    { numRuns: 100 },
  );
  assert.ok(withPods > 0, "some runs compiled every-pod class entries");
});

test("property: with the classes, every lookup finds the same entry (verdict, rule, proxy) as the per-peer compile, denies included", () => {
  let withBoth = 0;
  let withWorld = 0;
  let withFamily = 0;
  const ipBlockIds = new Set(IPBLOCK_IDS.map(([id]) => id));
  checkProperty(
    fc.property(
      fc.oneof({ weight: 1, arbitrary: identitiesArb }, { weight: 3, arbitrary: classIdentitiesArb }, { weight: 3, arbitrary: worldIdentitiesArb }),
      fc.oneof({ weight: 1, arbitrary: policiesArb }, { weight: 3, arbitrary: classPoliciesArb }, { weight: 3, arbitrary: worldPoliciesArb }),
      (ids, policies) => {
        const classes = compileAll(policies, ids, { namedPorts });
        const perPeer = compileAll(policies, ids, { namedPorts });
        perPeer.setEveryPodClass(false);
        perPeer.setClusterClass(false);
        perPeer.setWorldClass(false);
        perPeer.setWorldFamilyClass(false);
        assert.ok(![EVERY_POD_CLASS_PEER, CLUSTER_CLASS_PEER, WORLD_CLASS_PEER, WORLD_IPV4_CLASS_PEER, WORLD_IPV6_CLASS_PEER].some((c) => holdsClass(perPeer, c)), "the per-peer compile has no class entry");
        if (holdsClass(classes, EVERY_POD_CLASS_PEER) && holdsClass(classes, CLUSTER_CLASS_PEER)) withBoth++;
        if (holdsClass(classes, WORLD_CLASS_PEER)) withWorld++;
        if (holdsClass(classes, WORLD_IPV4_CLASS_PEER) || holdsClass(classes, WORLD_IPV6_CLASS_PEER)) withFamily++;
        const what = (r: ReturnType<typeof lookup>): string => `${r.verdict} rule ${r.entry?.ruleId} proxy ${r.entry?.proxyPort} ${r.entry?.proto}/${r.entry?.port}/${r.entry?.portPrefixLen}`;
        // A stray peer's own keys hide its class's with what the wildcard's or the default decide there (strayPeerTemplates):
        // the same verdict, rule and proxy port on another key; its entry naming no rule stands for the default, as a miss does.
        const decided = (r: ReturnType<typeof lookup>): string => (r.entry === undefined || r.entry.ruleId === RULE_ID_DEFAULT_DENY ? `${r.verdict} by default` : `${r.verdict} rule ${r.entry.ruleId} proxy ${r.entry.proxyPort}`);
        for (const subject of ids.keys()) {
          const a = classes.snapshot(subject);
          const b = perPeer.snapshot(subject);
          for (const peerId of ids.keys()) {
            // An ipBlock identity is only ever the second look's peer (below), as in the datapath.
            if (ipBlockIds.has(peerId)) continue;
            for (const direction of ["ingress", "egress"] as const) {
              // The packet's family, as the datapath has it: a world peer's own; one without (reserved:world, a stray) in either.
              const own = worldFamilyOf(peerId, ids.get(peerId));
              for (const family of own !== undefined || !inWorldClass(peerId) ? [own] : ([4, 6] as const))
              for (const [proto, port] of PROBES) {
                const got = lookup(a, direction, peerId, proto, port, undefined, family);
                const want = lookup(b, direction, peerId, proto, port, undefined, family);
                const seen = isStrayPod(peerId, ids.get(peerId)!) ? decided : what;
                assert.equal(seen(got), seen(want), `subject ${subject} ${direction} peer ${peerId} proto ${proto} port ${port}: entry ${JSON.stringify(got.entry)}`);
                // A stray pod (none of the operator's) meets its entry standing for the default deny before the second look.
                if (peerId < 256 || peerId > 65535 || isStrayPod(peerId, ids.get(peerId)!)) continue;
                for (const ipBlockPeer of ipBlockIds) {
                  if (!ids.has(ipBlockPeer)) continue;
                  const got2 = lookup(a, direction, peerId, proto, port, ipBlockPeer);
                  const want2 = lookup(b, direction, peerId, proto, port, ipBlockPeer);
                  assert.equal(what(got2), what(want2), `subject ${subject} ${direction} pod ${peerId} at ipBlock ${ipBlockPeer} proto ${proto} port ${port}`);
                }
              }
            }
          }
        }
      },
    ),
    { numRuns: 200 },
  );
  assert.ok(withBoth > 0, "some runs compiled entries of both classes");
  assert.ok(withWorld > 0, "some runs compiled world class entries");
  assert.ok(withFamily > 0, "some runs compiled world-ipv4/-ipv6 class entries");
});

/** Entries with ruleId replaced by the rule's origin path, comparable across compiler instances. */
function normalized(c: PolicyCompiler, subject: number): string[] {
  const sp = c.snapshot(subject);
  return [
    `enforced ${sp.ingressEnforced} ${sp.egressEnforced}`,
    ...sp.entries.map(
      (e) =>
        `${entryKeyString(e)} ${e.verdict} proxy=${e.proxyPort !== 0} ${c.ruleOrigin(e.ruleId)?.name}/${c.ruleOrigin(e.ruleId)?.path}`,
    ),
  ];
}

type Op =
  | { kind: "upsertPolicy"; policy: Policy }
  | { kind: "removePolicy"; name: string }
  | { kind: "upsertIdentity"; id: number; labels: LabelSet }
  | { kind: "removeIdentity"; id: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc
    .constantFrom("p0", "p1", "p2")
    .chain((n) => policyArb(n).map((policy): Op => ({ kind: "upsertPolicy", policy }))),
  fc.constantFrom("p0", "p1", "p2").map((name): Op => ({ kind: "removePolicy", name })),
  fc
    .record({ i: fc.integer({ min: 0, max: 8 }), p: podLabel })
    .map(({ i, p }): Op => ({ kind: "upsertIdentity", id: 256 + i, labels: podLabels(p) })),
  fc.integer({ min: 0, max: 8 }).map((i): Op => ({ kind: "removeIdentity", id: 256 + i })),
);

/** Applies deltas as an agent does: added (insert or update) first, then removed (delete). */
function applyDeltas(mirror: Map<number, Map<string, PolicyEntry>>, deltas: readonly Delta[]): void {
  for (const d of deltas) {
    let m = mirror.get(d.subject);
    if (!m) mirror.set(d.subject, (m = new Map()));
    const added = new Set(d.added.map(entryKeyString));
    for (const e of d.added) m.set(entryKeyString(e), e);
    for (const e of d.removed) {
      const k = entryKeyString(e);
      assert.ok(!added.has(k), `delta both adds and removes ${k}`);
      assert.ok(m.has(k), `delta removes an entry the mirror does not hold: ${k}`);
      m.delete(k);
    }
  }
}

test("property: incremental updates equal a full recompute, and deltas replay to the snapshot", () => {
  checkProperty(
    fc.property(
      identitiesArb,
      policiesArb,
      fc.array(opArb, { minLength: 1, maxLength: 12 }),
      (ids, initial, ops) => {
        const inc = compileAll(initial, ids, { namedPorts });
        const mirror = new Map<number, Map<string, PolicyEntry>>();
        for (const s of inc.subjectIds())
          mirror.set(s, new Map(inc.snapshot(s).entries.map((e) => [entryKeyString(e), e])));
        const policies = new Map(initial.map((p) => [p.name, p]));
        const idsNow = new Map(ids);
        for (const op of ops) {
          let deltas: Delta[];
          if (op.kind === "upsertPolicy") {
            policies.set(op.policy.name, op.policy);
            deltas = inc.upsertPolicy(policyKey(op.policy), [op.policy]);
          } else if (op.kind === "removePolicy") {
            const p = policies.get(op.name);
            policies.delete(op.name);
            deltas = p ? inc.removePolicy(policyKey(p)) : [];
          } else if (op.kind === "upsertIdentity") {
            idsNow.set(op.id, op.labels);
            deltas = inc.upsertIdentity(op.id, op.labels);
          } else {
            idsNow.delete(op.id);
            deltas = inc.removeIdentity(op.id);
          }
          applyDeltas(mirror, deltas);
        }
        const full = compileAll([...policies.values()], idsNow, { namedPorts });
        for (const id of idsNow.keys()) {
          assert.deepEqual(normalized(inc, id), normalized(full, id), `subject ${id}`);
          // Whole entries, not just keys: verdict, proxy port and rule must replay too.
          const replayed = [...(mirror.get(id)?.values() ?? [])].sort(compareEntries);
          assert.deepEqual(replayed, inc.snapshot(id).entries, `replayed deltas for ${id}`);
        }
        checkAgainstEvaluator([...policies.values()], idsNow, inc);
      },
    ),
    { numRuns: 100 },
  );
});

test("property: a batch of changes recorded into one collector replays to the snapshot (what the distribution sends)", () => {
  checkProperty(
    fc.property(identitiesArb, policiesArb, fc.array(opArb, { minLength: 1, maxLength: 12 }), (ids, initial, ops) => {
      const inc = compileAll(initial, ids, { namedPorts });
      const mirror = new Map<number, Map<string, PolicyEntry>>();
      for (const s of inc.subjectIds()) mirror.set(s, new Map(inc.snapshot(s).entries.map((e) => [entryKeyString(e), e])));
      const policies = new Map(initial.map((p) => [p.name, p]));
      const into = new DeltaCollector();
      for (const op of ops) {
        if (op.kind === "upsertPolicy") {
          policies.set(op.policy.name, op.policy);
          assert.deepEqual(inc.upsertPolicy(policyKey(op.policy), [op.policy], into), []);
        } else if (op.kind === "removePolicy") {
          const p = policies.get(op.name);
          policies.delete(op.name);
          if (p) inc.removePolicy(policyKey(p), into);
        } else if (op.kind === "upsertIdentity") inc.upsertIdentity(op.id, op.labels, into);
        else inc.removeIdentity(op.id, into);
      }
      const deltas = into.deltas(inc.enforcementOf);
      applyDeltas(mirror, deltas);
      for (const d of deltas) {
        assert.equal(d.ingressEnforced, inc.snapshot(d.subject).ingressEnforced);
        assert.equal(d.egressEnforced, inc.snapshot(d.subject).egressEnforced);
      }
      for (const [id, m] of mirror) assert.deepEqual([...m.values()].sort(compareEntries), inc.snapshot(id).entries, `batched deltas for ${id}`);
    }),
    { numRuns: 200 },
  );
});

test("the same input compiles to the same sorted entries", () => {
  const [ids, policies] = fc.sample(fc.tuple(identitiesArb, policiesArb), { numRuns: 1, seed: 42 })[0]!;
  const a = compileAll(policies, ids);
  const b = compileAll(policies, ids);
  for (const id of ids.keys()) assert.deepEqual(a.snapshot(id), b.snapshot(id));
});
