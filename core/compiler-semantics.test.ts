// Compiler behaviours a user notices: deny wins, default deny, requires, FQDN identities, proxy ports, rule names.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LabelSet, Policy } from "./model.ts";
import { label, labelSetFrom } from "./labels.ts";
import { cidrLabels, fqdnIdentityLabels } from "./identity.ts";
import { parsePolicyObject } from "./parser/index.ts";
import { PolicyCompiler, compileAll, policyKey } from "./compiler.ts";
import { lookup } from "./policy/mapstate.ts";

const pod = (ns: string, app: string): LabelSet =>
  labelSetFrom([
    label("k8s", "io.kubernetes.pod.namespace", ns),
    label("k8s", "app", app),
    label("k8s", "io.cilium.k8s.policy.cluster", "default"),
  ]);

function parse(obj: unknown): Policy[] {
  const r = parsePolicyObject(obj);
  if (!r.ok) assert.fail(JSON.stringify(r.errors));
  return r.value;
}

const WEB = 300;
const CLIENT = 301;
const BAD = 302;
const ids = new Map<number, LabelSet>([
  [WEB, pod("prod", "web")],
  [CLIENT, pod("prod", "client")],
  [BAD, pod("prod", "bad")],
]);

const cnp = (name: string, spec: unknown) => ({
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name, namespace: "prod" },
  spec,
});

test("deny in one policy wins over an allow in another for the same peer and port", () => {
  const policies = [
    ...parse(
      cnp("allow-all-prod", {
        endpointSelector: { matchLabels: { app: "web" } },
        ingress: [{ fromEndpoints: [{}] }],
      }),
    ),
    ...parse(
      cnp("deny-bad-80", {
        endpointSelector: { matchLabels: { app: "web" } },
        ingressDeny: [
          {
            fromEndpoints: [{ matchLabels: { app: "bad" } }],
            toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }],
          },
        ],
      }),
    ),
  ];
  const c = compileAll(policies, ids);
  const sp = c.snapshot(WEB);
  assert.equal(lookup(sp, "ingress", CLIENT, 6, 80).verdict, "allow");
  const denied = lookup(sp, "ingress", BAD, 6, 80);
  assert.equal(denied.verdict, "deny");
  assert.equal(
    c.ruleOrigin(denied.entry!.ruleId)?.name,
    "deny-bad-80",
    "the verdict names the denying policy",
  );
  assert.equal(lookup(sp, "ingress", BAD, 6, 81).verdict, "allow");
});

test("a subject selected in a direction is default-deny there and allow-all in the other", () => {
  const c = compileAll(
    parse(
      cnp("web-from-client", {
        endpointSelector: { matchLabels: { app: "web" } },
        ingress: [{ fromEndpoints: [{ matchLabels: { app: "client" } }] }],
      }),
    ),
    ids,
  );
  const sp = c.snapshot(WEB);
  assert.equal(sp.ingressEnforced, true);
  assert.equal(sp.egressEnforced, false);
  assert.deepEqual(lookup(sp, "ingress", BAD, 6, 80), { verdict: "deny" });
  assert.equal(lookup(sp, "ingress", CLIENT, 6, 80).verdict, "allow");
  assert.equal(lookup(sp, "egress", BAD, 6, 80).verdict, "allow");
  assert.equal(c.snapshot(CLIENT).entries.length, 0, "an unselected identity has no entries");
});

test("fromRequires in one policy narrows the fromEndpoints of another policy for the same subject", () => {
  const policies = [
    ...parse(
      cnp("web-from-all", {
        endpointSelector: { matchLabels: { app: "web" } },
        ingress: [{ fromEndpoints: [{ matchLabels: { "io.kubernetes.pod.namespace": "prod" } }] }],
      }),
    ),
    ...parse(
      cnp("require-client", {
        endpointSelector: { matchLabels: { app: "web" } },
        ingress: [{ fromRequires: [{ matchLabels: { app: "client" } }] }],
      }),
    ),
  ];
  const sp = compileAll(policies, ids).snapshot(WEB);
  assert.equal(lookup(sp, "ingress", CLIENT, 6, 80).verdict, "allow");
  assert.equal(lookup(sp, "ingress", BAD, 6, 80).verdict, "deny");
});

test("toFQDNs peers fill in as DNS-learned identities arrive, and drain when they go", () => {
  const c = new PolicyCompiler();
  for (const [id, l] of ids) c.upsertIdentity(id, l);
  const policies = parse(
    cnp("to-api", {
      endpointSelector: { matchLabels: { app: "client" } },
      egress: [{ toFQDNs: [{ matchPattern: "*.example.com" }] }],
    }),
  );
  c.upsertPolicy(policyKey(policies[0]!), policies);
  const learned = (1 << 24) + 7;
  const deltas = c.upsertIdentity(learned, fqdnIdentityLabels("192.0.2.7", ["API.example.com."]));
  assert.equal(deltas.length, 1);
  assert.equal(deltas[0]!.subject, CLIENT);
  assert.ok(deltas[0]!.added.some((e) => e.peer === learned && e.verdict === "allow"));
  assert.equal(lookup(c.snapshot(CLIENT), "egress", learned, 6, 443).verdict, "allow");
  const gone = c.removeIdentity(learned);
  assert.ok(gone[0]!.removed.some((e) => e.peer === learned));
  assert.equal(lookup(c.snapshot(CLIENT), "egress", learned, 6, 443).verdict, "deny");
});

test("an L7 rule redirects to a proxy port that stays stable across recompiles", () => {
  const policies = parse(
    cnp("web-http", {
      endpointSelector: { matchLabels: { app: "web" } },
      ingress: [
        {
          fromEndpoints: [{ matchLabels: { app: "client" } }],
          toPorts: [
            { ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/" }] } },
          ],
        },
      ],
    }),
  );
  const c = compileAll(policies, ids);
  const hit = lookup(c.snapshot(WEB), "ingress", CLIENT, 6, 80);
  assert.equal(hit.verdict, "allow");
  assert.ok(hit.entry!.proxyPort >= 10000);
  const again = c.upsertPolicy(policyKey(policies[0]!), policies);
  assert.equal(
    again.every((d) => d.added.length === 0 && d.removed.length === 0),
    true,
  );
  assert.equal(lookup(c.snapshot(WEB), "ingress", CLIENT, 6, 80).entry!.proxyPort, hit.entry!.proxyPort);
});

const httpFromClient = (name: string, http: unknown[]) =>
  cnp(name, {
    endpointSelector: { matchLabels: { app: "web" } },
    ingress: [{ fromEndpoints: [{ matchLabels: { app: "client" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http } }] }],
  });

test("an L4-only allow of the same peer and port makes every request allowed: the entry is a plain allow, whichever policy came first (Cilium's docs)", () => {
  const l4 = cnp("web-l4", {
    endpointSelector: { matchLabels: { app: "web" } },
    ingress: [{ fromEndpoints: [{ matchLabels: { app: "client" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }],
  });
  for (const order of [[httpFromClient("web-http", [{ method: "GET" }]), l4], [l4, httpFromClient("web-http", [{ method: "GET" }])]]) {
    const c = compileAll(order.flatMap(parse), ids);
    const hit = lookup(c.snapshot(WEB), "ingress", CLIENT, 6, 80);
    assert.equal(hit.verdict, "allow");
    assert.equal(hit.entry!.proxyPort, 0, "not redirected: no request is refused");
    assert.equal(c.ruleOrigin(hit.entry!.ruleId)?.name, "web-l4", "the L4-only rule decides");
  }
  // Another peer of the HTTP rule keeps its redirect.
  const wider = parse(
    cnp("web-http-all", {
      endpointSelector: { matchLabels: { app: "web" } },
      ingress: [{ fromEndpoints: [{ matchLabels: { app: "client" } }, { matchLabels: { app: "bad" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } }] }],
    }),
  );
  const c = compileAll([...wider, ...parse(l4)], ids);
  assert.equal(lookup(c.snapshot(WEB), "ingress", CLIENT, 6, 80).entry!.proxyPort, 0);
  assert.ok(lookup(c.snapshot(WEB), "ingress", BAD, 6, 80).entry!.proxyPort >= 10000, "the bad pod has only the HTTP rule: through the proxy");
});

test("an L4-only allow of port 53 does not take DNS lookups away from the DNS proxy (it learns the toFQDNs addresses there)", () => {
  const dns = cnp("dns", {
    endpointSelector: { matchLabels: { app: "client" } },
    egress: [{ toEndpoints: [{ matchLabels: { app: "web" } }], toPorts: [{ ports: [{ port: "53", protocol: "UDP" }], rules: { dns: [{ matchPattern: "*" }] } }] }],
  });
  const l4 = cnp("dns-l4", {
    endpointSelector: { matchLabels: { app: "client" } },
    egress: [{ toEndpoints: [{ matchLabels: { app: "web" } }], toPorts: [{ ports: [{ port: "53", protocol: "UDP" }] }] }],
  });
  const c = compileAll([...parse(l4), ...parse(dns)], ids);
  assert.ok(lookup(c.snapshot(CLIENT), "egress", WEB, 17, 53).entry!.proxyPort >= 10000);
});

test(
  "toCIDRSet 0.0.0.0/0 with except 10.0.0.0/8 does not allow a CIDR identity inside 10.0.0.0/8",
  () => {
    const inside = (1 << 24) + 1;
    const all = new Map(ids);
    all.set(inside, cidrLabels("10.1.2.0/24"));
    const policies = parse(
      cnp("egress-world-but-10", {
        endpointSelector: { matchLabels: { app: "client" } },
        egress: [{ toCIDRSet: [{ cidr: "0.0.0.0/0", except: ["10.0.0.0/8"] }] }],
      }),
    );
    const sp = compileAll(policies, all).snapshot(CLIENT);
    assert.equal(lookup(sp, "egress", inside, 6, 443).verdict, "deny");
  },
);

test("toEntities cluster selects the pods of the compiler's own cluster, not another's", () => {
  const east = labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "prod"), label("k8s", "app", "client"), label("k8s", "io.cilium.k8s.policy.cluster", "east")]);
  const west = labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", "prod"), label("k8s", "app", "client"), label("k8s", "io.cilium.k8s.policy.cluster", "west")]);
  const policies = parse(cnp("from-cluster", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEntities: ["cluster"] }] }));
  const c = compileAll(policies, new Map([[WEB, pod("prod", "web")], [401, east], [402, west]]), { clusterName: "east" });
  const web = c.snapshot(WEB);
  assert.equal(lookup(web, "ingress", 401, 6, 80).verdict, "allow");
  assert.equal(lookup(web, "ingress", 402, 6, 80).verdict, "deny");
});

test("an explicitly empty fromEndpoints next to toPorts allows nothing and still puts the subject in ingress default deny (Cilium 1.15+)", () => {
  const compiled = compileAll(
    parse(cnp("empty-peers", { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEndpoints: [], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] })),
    ids,
  );
  const web = compiled.snapshot(WEB);
  assert.equal(web.ingressEnforced, true);
  assert.equal(lookup(web, "ingress", CLIENT, 6, 80).verdict, "deny", "no peer is selected, not every peer");
  assert.equal(lookup(web, "ingress", 0, 6, 80).verdict, "deny");
  assert.equal(compiled.snapshot(CLIENT).ingressEnforced, false, "other pods are untouched");
});
