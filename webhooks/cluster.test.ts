// Against the real API server with the webhook registered: what `kubectl apply` shows users for bad, valid and risky policies, fail-closed and rotation.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { stringify } from "yaml";
import { formatErrors } from "../core/validate.ts";
import { BAD_POLICIES } from "../core/parser/testdata/bad-policies.ts";
import { ciliumDocsExamples, seedExamples, tetragonDocsExamples } from "../crds/fixtures.ts";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { DEFAULT_CERT_OPTIONS } from "./certs.ts";
import { DEFAULTS, startWebhook, type RunningWebhook, type WebhookConfig } from "./main.ts";

const DAY = 86_400_000;
const WEBHOOK = DEFAULTS.webhookName;
const DENIED = `admission webhook "${WEBHOOK}" denied the request: `;
const crdDir = fileURLToPath(new URL("../crds/generated/", import.meta.url));
const silent = pino({ level: process.env.WEBHOOK_TEST_LOG ?? "silent" });

/** A policy only the webhook rejects (the CRD schema cannot compare an except with its cidr), and what users see. */
const PROBE = stringify({
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "probe", namespace: "default" },
  spec: { endpointSelector: {}, egress: [{ toCIDRSet: [{ cidr: "10.0.0.0/8", except: ["11.0.0.0/16"] }] }] },
});
const PROBE_DENIAL = `${DENIED}spec.egress[0].toCIDRSet[0].except[0]: except "11.0.0.0/16" is not inside cidr "10.0.0.0/8"`;

/** Docs examples the parser rejects on purpose (features Membrane does not implement), with the field it names. */
const UNSUPPORTED: Record<string, string> = {
  "cilium-docs/authentication-required.yaml": "spec.ingress[0].authentication.mode",
  // Kafka rules were removed from Cilium in 1.20; refused rather than enforced as plain L4.
  "cilium-docs/l7-kafka-produce-topic.yaml": "spec.ingress[0].toPorts[0].rules.kafka",
};

const ccnp = (name: string, spec: unknown): string =>
  stringify({ apiVersion: "cilium.io/v2", kind: "CiliumClusterwideNetworkPolicy", metadata: { name }, spec });
const egress = (rule: unknown) => ({ endpointSelector: {}, egress: [rule] });
const tcp80 = { ports: [{ port: "80", protocol: "TCP" }] };

/**
 * Every oneOf/anyOf the policy schemas had (issue 23 item 8), what breaks it, and the line
 * `kubectl apply` shows: a CEL rule's message and field where the API server's cost budget allows
 * one, else the webhook's. `null` marks what is legal (admitted, with a warning where it selects nothing).
 */
const FORMER_ONE_OF: { where: string; yaml: string; shows: string | null }[] = [
  {
    where: "spec: oneOf endpointSelector, nodeSelector (both)",
    yaml: ccnp("both-selectors", { endpointSelector: {}, nodeSelector: {}, ingress: [{}] }),
    shows: 'The CiliumClusterwideNetworkPolicy "both-selectors" is invalid: spec.nodeSelector: Forbidden: set only one of endpointSelector or nodeSelector',
  },
  {
    where: "spec: oneOf endpointSelector, nodeSelector (neither)",
    yaml: ccnp("no-selector", { ingress: [{}] }),
    shows: 'The CiliumClusterwideNetworkPolicy "no-selector" is invalid: spec.endpointSelector: Required value: a rule needs an endpointSelector (or, in a CiliumClusterwideNetworkPolicy, a nodeSelector) saying which endpoints it applies to',
  },
  {
    where: "specs[]: oneOf endpointSelector, nodeSelector",
    yaml: stringify({
      apiVersion: "cilium.io/v2",
      kind: "CiliumClusterwideNetworkPolicy",
      metadata: { name: "specs-both" },
      specs: [{ endpointSelector: {}, ingress: [{}] }, { endpointSelector: {}, nodeSelector: {}, ingress: [{}] }],
    }),
    shows: 'The CiliumClusterwideNetworkPolicy "specs-both" is invalid: specs[1].nodeSelector: Forbidden: set only one of endpointSelector or nodeSelector',
  },
  {
    where: "toCIDRSet[]: oneOf cidr, cidrGroupRef, cidrGroupSelector (neither)",
    yaml: ccnp("cidrset-none", egress({ toCIDRSet: [{ except: ["10.1.0.0/16"] }] })),
    shows: `${DENIED}spec.egress[0].toCIDRSet[0]: set one of cidr (such as 10.0.0.0/8), cidrGroupRef or cidrGroupSelector`,
  },
  {
    where: "toCIDRSet[]: oneOf cidr, cidrGroupRef, cidrGroupSelector (two)",
    yaml: ccnp("cidrset-two", egress({ toCIDRSet: [{ cidr: "10.0.0.0/8", cidrGroupRef: "office" }] })),
    shows: `${DENIED}spec.egress[0].toCIDRSet[0].cidrGroupRef: set only one of cidr, cidrGroupRef`,
  },
  {
    where: "toFQDNs[]: oneOf matchName, matchPattern (both)",
    yaml: ccnp("fqdn-both", egress({ toFQDNs: [{ matchName: "example.com", matchPattern: "*.example.com" }] })),
    shows: `${DENIED}spec.egress[0].toFQDNs[0].matchPattern: set only one of matchName or matchPattern`,
  },
  {
    where: "toFQDNs[]: oneOf matchName, matchPattern (neither)",
    yaml: ccnp("fqdn-none", egress({ toFQDNs: [{}] })),
    shows: `${DENIED}spec.egress[0].toFQDNs[0]: set one of matchName (a DNS name) or matchPattern (a name with * wildcards)`,
  },
  {
    where: "rules.dns[]: oneOf matchName, matchPattern",
    yaml: ccnp(
      "dns-both",
      egress({ toPorts: [{ ports: [{ port: "53" }], rules: { dns: [{ matchName: "example.com", matchPattern: "*" }] } }] }),
    ),
    shows: `${DENIED}spec.egress[0].toPorts[0].rules.dns[0].matchPattern: set only one of matchName or matchPattern`,
  },
  {
    where: "rules: oneOf http, kafka, dns, l7proto (none)",
    yaml: ccnp("rules-empty", egress({ toPorts: [{ ...tcp80, rules: {} }] })),
    shows: `${DENIED}spec.egress[0].toPorts[0].rules: rules has no L7 rule: set http, dns or l7proto, or remove rules to allow the ports without L7 rules`,
  },
  {
    where: "rules: oneOf http, kafka, dns, l7proto (two)",
    yaml: ccnp("rules-two", egress({ toPorts: [{ ...tcp80, rules: { http: [{}], l7proto: "r2d2" } }] })),
    shows: `${DENIED}spec.egress[0].toPorts[0].rules: only one kind of L7 rule per port rule, found http and l7proto: write separate toPorts entries`,
  },
  {
    where: "rules: oneOf http, kafka, dns, l7proto (l7 without l7proto)",
    yaml: ccnp("rules-l7", egress({ toPorts: [{ ...tcp80, rules: { l7: [{ action: "read" }] } }] })),
    shows: `${DENIED}spec.egress[0].toPorts[0].rules.l7: l7 rules need l7proto to say which protocol parser applies them`,
  },
  {
    where: "toServices[]: oneOf k8sService, k8sServiceSelector (both)",
    yaml: ccnp(
      "svc-both",
      egress({ toServices: [{ k8sService: { serviceName: "db" }, k8sServiceSelector: { selector: { matchLabels: { app: "db" } } } }] }),
    ),
    shows: `${DENIED}spec.egress[0].toServices[0].k8sServiceSelector: set only one of k8sService or k8sServiceSelector`,
  },
  {
    where: "toServices[]: oneOf k8sService, k8sServiceSelector (neither: legal, it selects nothing)",
    yaml: ccnp("svc-none", egress({ toServices: [{}] })),
    shows: null,
  },
  {
    where: "icmps[].fields[].type: anyOf integer, string",
    yaml: ccnp("icmp-bool", egress({ icmps: [{ fields: [{ type: true }] }] })),
    // Listed with the API server's note that CEL rules were skipped, so without the object's name in front.
    shows: '* spec.egress[0].icmps[0].fields[0].type: Invalid value: "boolean": spec.egress[0].icmps[0].fields[0].type in body must be of type integer,string: "boolean"',
  },
];

/** Bad objects of the kinds the policy parser does not cover, with the message the webhook must give. */
const OTHER_BAD: { name: string; object: unknown; message: string }[] = [
  {
    name: "TracingPolicy matchArgs on an undeclared argument",
    object: {
      apiVersion: "cilium.io/v1alpha1",
      kind: "TracingPolicy",
      metadata: { name: "bad-args" },
      spec: {
        kprobes: [
          {
            call: "fd_install",
            args: [{ index: 1, type: "file" }],
            selectors: [{ matchArgs: [{ index: 0, operator: "Equal", values: ["/etc/shadow"] }] }],
          },
        ],
      },
    },
    message: "spec.kprobes[0].selectors[0].matchArgs[0].index: argument 0 is not declared in args",
  },
  {
    name: "TracingPolicy Signal without a signal number",
    object: {
      apiVersion: "cilium.io/v1alpha1",
      kind: "TracingPolicy",
      metadata: { name: "bad-signal" },
      spec: { kprobes: [{ call: "sys_write", syscall: true, selectors: [{ matchActions: [{ action: "Signal" }] }] }] },
    },
    message: "spec.kprobes[0].selectors[0].matchActions[0].argSig: Signal needs argSig, a signal number 1-64",
  },
  {
    name: "TracingPolicy with no hooks",
    object: { apiVersion: "cilium.io/v1alpha1", kind: "TracingPolicy", metadata: { name: "bad-empty" }, spec: {} },
    message: "spec: declares no kprobes, fentries, tracepoints, lsmhooks, uprobes, usdts: the policy would trace nothing",
  },
  {
    name: "MembraneEncryptionKey rotating every 10 seconds",
    object: {
      apiVersion: "membrane.io/v1alpha1",
      kind: "MembraneEncryptionKey",
      metadata: { name: "bad-rotation" },
      spec: { mode: "wireguard", rotationInterval: "10s", secretRef: { name: "wg-keys" } },
    },
    message: 'spec.rotationInterval: "10s" is too short: rotate at most once a minute',
  },
  {
    name: "MembraneEncryptionKey with a Secret name that is not a name",
    object: {
      apiVersion: "membrane.io/v1alpha1",
      kind: "MembraneEncryptionKey",
      metadata: { name: "bad-secret" },
      spec: { mode: "ipsec", secretRef: { name: "Keys_1" } },
    },
    message:
      "spec.secretRef.name: \"Keys_1\" is not a valid Secret name: it must consist of lower case letters, digits, '-' and '.', and start and end with a letter or digit",
  },
];

const tracing = (name: string, spec: unknown, kind = "TracingPolicy") => ({
  apiVersion: "cilium.io/v1alpha1",
  kind,
  metadata: kind === "TracingPolicy" ? { name } : { name, namespace: "default" },
  spec,
});
const fdInstall = (selector: unknown) => ({
  kprobes: [{ call: "fd_install", args: [{ index: 0, type: "int" }, { index: 1, type: "file" }], selectors: [selector] }],
});

/** TracingPolicies Tetragon's loader refuses, and the line `kubectl apply` must show for each (issue 18 item 2). */
const TETRAGON_BAD: { name: string; object: unknown; message: string }[] = [
  {
    name: "an unknown spec key",
    object: tracing("bad-tp-key", { kprobe: [{ call: "fd_install" }], tracepoints: [{ subsystem: "syscalls", event: "sys_enter_openat" }] }),
    message: 'spec.kprobe: unknown field "kprobe": did you mean "kprobes"?',
  },
  {
    name: "an unknown key deep in a selector",
    object: tracing("bad-tp-deep-key", fdInstall({ matchArgs: [{ index: 1, operator: "Equal", value: ["/etc/shadow"] }] })),
    message: 'spec.kprobes[0].selectors[0].matchArgs[0].value: unknown field "value": did you mean "values"?',
  },
  {
    name: "FollowFD",
    object: tracing("bad-tp-followfd", fdInstall({ matchActions: [{ action: "FollowFD", argFd: 0, argName: 1 }] })),
    message: "spec.kprobes[0].selectors[0].matchActions[0].action: FollowFD was removed from Tetragon (1.5): read the file itself instead",
  },
  {
    name: "a lowercase operator",
    object: tracing("bad-tp-lowercase", fdInstall({ matchArgs: [{ index: 1, operator: "prefix", values: ["/etc"] }] })),
    message: 'spec.kprobes[0].selectors[0].matchArgs[0].operator: "prefix" is not an operator: names are case-sensitive, write "Prefix"',
  },
  {
    name: "an integer where a string belongs",
    object: tracing("bad-tp-integer", fdInstall({ matchArgs: [{ index: 0, operator: "Equal", values: [3] }] })),
    message: 'spec.kprobes[0].selectors[0].matchArgs[0].values[0]: 3 is not a string: Tetragon\'s schema wants strings here, write "3" (quoted)',
  },
  {
    name: "a tracepoint matchArgs index past the listed arguments",
    object: tracing("bad-tp-index", {
      tracepoints: [{ subsystem: "syscalls", event: "sys_enter_openat", args: [{ index: 6 }], selectors: [{ matchArgs: [{ index: 6, operator: "Prefix", values: ["/etc"] }] }] }],
    }),
    message: "spec.tracepoints[0].selectors[0].matchArgs[0].index: index 6 means the 7th entry of args (for tracepoints an index counts the listed arguments), but args lists 1",
  },
  {
    name: "a call naming an undeclared list",
    object: tracing("bad-tp-list", { kprobes: [{ call: "list:dups", syscall: true }] }),
    message: 'spec.kprobes[0].call: "list:dups" names list "dups", which spec.lists does not declare',
  },
  {
    name: "a TracingPolicyNamespaced with a hostSelector",
    object: tracing("bad-tpn-host", { hostSelector: {}, kprobes: [{ call: "fd_install" }] }, "TracingPolicyNamespaced"),
    message: "spec.hostSelector: a TracingPolicyNamespaced applies to its namespace's pods only: delete hostSelector",
  },
];

describe("webhook against the real API server", { timeout: 900_000 }, () => {
  let cp: ControlPlane;
  let wh: RunningWebhook | undefined;
  const config = (over: Partial<WebhookConfig> = {}): WebhookConfig => ({
    ...DEFAULTS,
    host: "127.0.0.1",
    port: 0,
    kubeconfig: cp.kubeconfig,
    logger: silent,
    cert: DEFAULT_CERT_OPTIONS,
    ...over,
  });
  const apply = (yamlText: string, ...flags: string[]) => cp.kubectl(["apply", ...flags, "-f", "-"], yamlText);

  /** The apiserver sees a changed webhook configuration through its own watch: wait until denials come from us. */
  async function waitUntilEffective(): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await apply(PROBE, "--dry-run=server");
      if (r.stderr.includes(PROBE_DENIAL)) return;
      if (Date.now() > deadline) throw new Error(`webhook not effective after 60 s: ${r.stdout}${r.stderr}`);
      await new Promise((res) => setTimeout(res, 250));
    }
  }

  before(async () => {
    cp = await startControlPlane({ name: "webhook-test" });
    const crds = readdirSync(crdDir).filter((f) => f.endsWith(".yaml"));
    const applied = await cp.kubectl(["apply", ...crds.flatMap((f) => ["-f", join(crdDir, f)])]);
    assert.equal(applied.code, 0, applied.stderr);
    // A CRD created a moment ago may have no status yet, which `kubectl wait` reports as an error: retry.
    for (let attempt = 1; ; attempt++) {
      const ready = await cp.kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
      if (ready.code === 0) break;
      if (attempt >= 20) assert.fail(ready.stderr);
      await new Promise((res) => setTimeout(res, 500));
    }
    wh = await startWebhook(config());
    await waitUntilEffective();
  });

  after(async () => {
    await wh?.stop();
    await cp?.stop();
  });

  it("rejects every bad policy of the corpus at kubectl apply, naming each field and reason", async (t) => {
    let byWebhook = 0;
    const bySchema: string[] = [];
    for (const bad of BAD_POLICIES) {
      const r = await apply(bad.yaml);
      assert.notEqual(r.code, 0, `${bad.name}: was admitted\n${r.stdout}`);
      const at = r.stderr.indexOf(DENIED);
      if (at >= 0) {
        byWebhook++;
        const shown = r.stderr.slice(at + DENIED.length).trimEnd();
        assert.equal(shown, formatErrors(bad.errors), `${bad.name}: kubectl showed\n${r.stderr}`);
        assert.match(r.stderr, /^Error from server \(Forbidden\): error when (creating|applying patch)/, bad.name);
      } else {
        // Caught before admission (kubectl's own checks or the CRD schema): still a rejection naming a field.
        assert.match(r.stderr, /error|invalid|unknown field|Required value|Unsupported value/i, `${bad.name}: ${r.stderr}`);
        bySchema.push(bad.name);
      }
    }
    t.diagnostic(`${byWebhook} denied by the webhook, ${bySchema.length} earlier by kubectl or the CRD schema`);
    assert.ok(byWebhook >= 40, `only ${byWebhook} of ${BAD_POLICIES.length} reached the webhook; stopped earlier: ${bySchema.join(", ")}`);
  });

  it("rejects bad TracingPolicy and MembraneEncryptionKey objects with their field paths", async () => {
    for (const bad of OTHER_BAD) {
      const r = await apply(stringify(bad.object));
      assert.notEqual(r.code, 0, bad.name);
      assert.ok(r.stderr.includes(`${DENIED}${bad.message}`), `${bad.name}: kubectl showed\n${r.stderr}`);
    }
  });

  it("refuses a CiliumCIDRGroup with a malformed CIDR, naming the field, and stores nothing of it", async () => {
    for (const [apiVersion, cidr] of [["cilium.io/v2alpha1", "10.16.0.0/33"], ["cilium.io/v2", "10.16.0.0"]]) {
      const r = await apply(stringify({ apiVersion, kind: "CiliumCIDRGroup", metadata: { name: "bad-group" }, spec: { externalCIDRs: ["10.48.0.0/24", cidr] } }), "--validate=false");
      assert.notEqual(r.code, 0, `${apiVersion} ${cidr} was admitted`);
      assert.match(r.stderr, /spec\.externalCIDRs\[1\]/, r.stderr);
    }
    const r = await cp.kubectl(["get", "ciliumcidrgroup", "bad-group"]);
    assert.notEqual(r.code, 0, "nothing was stored");
  });

  it("admits every seed and Cilium documentation example", async () => {
    const examples = [...seedExamples(), ...ciliumDocsExamples()];
    for (const ex of examples) {
      const r = await apply(stringify(ex.object));
      const unsupported = UNSUPPORTED[ex.source];
      if (unsupported !== undefined) {
        assert.notEqual(r.code, 0, ex.source);
        assert.ok(r.stderr.includes(`${DENIED}${unsupported}: `), `${ex.source}: ${r.stderr}`);
        continue;
      }
      assert.equal(r.code, 0, `${ex.source} was rejected:\n${r.stderr}`);
      assert.match(r.stdout, / (created|configured|unchanged)\n?$/, ex.source);
    }
    assert.ok(examples.length - Object.keys(UNSUPPORTED).length >= 29);
    // Clean up exactly what was created.
    for (const ex of examples) {
      if (UNSUPPORTED[ex.source] !== undefined) continue;
      const r = await cp.kubectl(["delete", "--ignore-not-found", "-f", "-"], stringify(ex.object));
      assert.equal(r.code, 0, r.stderr);
    }
  });

  it("admits every Tetragon documentation TracingPolicy (fentries, usdts, lists, loader, options, untyped tracepoint args, namespaced)", async () => {
    const examples = tetragonDocsExamples();
    assert.ok(examples.length >= 15, `${examples.length} examples`);
    for (const ex of examples) {
      const r = await apply(stringify(ex.object));
      assert.equal(r.code, 0, `${ex.source} was rejected:\n${r.stderr}`);
      assert.doesNotMatch(r.stderr, /Warning/, ex.source);
    }
    // The API server filled in Tetragon's default argument type.
    const typed = await cp.kubectl(["get", "tracingpolicy", "tracepoint-openat-auto-types", "-o", "jsonpath={.spec.tracepoints[0].args[0].type}"]);
    assert.equal(typed.stdout, "auto", typed.stderr);
    for (const ex of examples) {
      const r = await cp.kubectl(["delete", "--ignore-not-found", "-f", "-"], stringify(ex.object));
      assert.equal(r.code, 0, r.stderr);
    }
  });

  it("refuses what Tetragon's loader refuses with the field path and what to write instead, whatever field validation the client asks for", async () => {
    for (const bad of TETRAGON_BAD) {
      for (const validate of ["--validate=strict", "--validate=false"]) {
        const r = await apply(stringify(bad.object), validate, "--dry-run=server");
        assert.notEqual(r.code, 0, `${bad.name} (${validate}) was admitted`);
        assert.ok(r.stderr.includes(`${DENIED}${bad.message}`), `${bad.name} (${validate}): kubectl showed\n${r.stderr}`);
      }
    }
  });

  it("admits returnArg without return: true with a warning in kubectl's output", async () => {
    const r = await apply(stringify(tracing("returnarg-no-return", { kprobes: [{ call: "sys_openat", syscall: true, returnArg: { index: 0, type: "int" } }] })), "--dry-run=server");
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stderr.includes("Warning: spec.kprobes[0].returnArg: is read only when return: true; without it Tetragon ignores returnArg"), r.stderr);
  });

  it("shows warnings for a legal but risky policy in kubectl's output and admits it", async () => {
    const risky = stringify({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "risky", namespace: "default" },
      spec: {
        endpointSelector: { matchLabels: { app: "web" } },
        egress: [
          { toEntities: ["world"] },
          { toPorts: [{ ports: [{ port: "5353", protocol: "UDP" }], rules: { dns: [{ matchPattern: "*" }] } }] },
        ],
        egressDeny: [{ toEntities: ["world"] }],
        ingress: [{ fromEndpoints: [{ matchLabels: { "reserved:wrold": "" } }] }],
      },
    });
    const r = await apply(risky);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /ciliumnetworkpolicy\.cilium\.io\/risky created/);
    for (const w of [
      'Warning: spec.egress[0]: allows every port and protocol to entity "world"; restrict it with toPorts if that is not intended',
      "Warning: spec.egress[1].toPorts[0]: DNS rules on port 5353, not 53",
      "Warning: spec.egress[0]: never takes effect: spec.egressDeny[0] denies every peer and port it allows (deny wins)",
      'Warning: spec.ingress[0]: "reserved:wrold" is not a reserved identity label: the selector matches nothing',
    ]) {
      assert.ok(r.stderr.includes(w), `missing ${JSON.stringify(w)} in:\n${r.stderr}`);
    }
    // DNS rules are enforced by the agents' DNS proxy now: admission no longer calls them unenforced.
    assert.ok(!r.stderr.includes("rules.dns: not enforced yet"), r.stderr);
    await cp.kubectl(["delete", "cnp", "risky", "-n", "default"]);
  });

  it("answers every former oneOf/anyOf of the policy schemas with a sentence and the field, never '<nil>: ... must validate'", async () => {
    for (const c of FORMER_ONE_OF) {
      const r = await apply(c.yaml, "--dry-run=server");
      if (c.shows === null) {
        assert.equal(r.code, 0, `${c.where}: ${r.stderr}`);
        continue;
      }
      assert.notEqual(r.code, 0, `${c.where}: admitted`);
      assert.ok(r.stderr.includes(c.shows), `${c.where}: kubectl showed\n${r.stderr}`);
      // The API server's own "<nil>: ... some validation rules were not checked" note may follow a
      // schema error; what must be gone is the oneOf/anyOf answer without a field.
      assert.doesNotMatch(r.stderr, /must validate|<nil>: Invalid value: ""/, c.where);
    }
  });

  it("admits fromRequires with a deprecation warning, and toServices that select nothing with a warning", async () => {
    const r = await apply(
      stringify({
        apiVersion: "cilium.io/v2",
        kind: "CiliumNetworkPolicy",
        metadata: { name: "migrating", namespace: "default" },
        spec: {
          endpointSelector: { matchLabels: { env: "prod" } },
          ingress: [{ fromRequires: [{ matchLabels: { env: "prod" } }] }, { fromEndpoints: [{ matchLabels: { role: "fe" } }] }],
          egress: [{ toServices: [] }, { toServices: [{}] }],
        },
      }),
      "--dry-run=server",
    );
    assert.equal(r.code, 0, r.stderr);
    for (const w of [
      "Warning: spec.ingress[0].fromRequires: fromRequires is deprecated: Cilium 1.19 removed it (cilium/cilium#42615)",
      "Warning: spec.egress[0].toServices: an empty list selects no Service, so this rule matches nothing",
      "Warning: spec.egress[1].toServices[0]: names no Service, so it selects nothing",
    ]) {
      assert.ok(r.stderr.includes(w), `missing ${JSON.stringify(w)} in:\n${r.stderr}`);
    }
  });

  it("gives a server-side dry run the same verdict, and denies an UPDATE that breaks a valid policy", async () => {
    const good = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "update-me", namespace: "default" },
      spec: { endpointSelector: { matchLabels: { app: "web" } }, egress: [{ toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] }] },
    };
    const dry = await apply(stringify(good), "--dry-run=server");
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /created \(server dry run\)/);
    assert.equal((await cp.kubectl(["get", "cnp", "update-me", "-n", "default"])).code, 1, "a dry run creates nothing");
    assert.equal((await apply(stringify(good))).code, 0);
    const broken = structuredClone(good);
    broken.spec.egress[0] = { toPorts: [{ ports: [{ port: "443", endPort: 80, protocol: "TCP" }] }] } as never;
    const upd = await apply(stringify(broken));
    assert.notEqual(upd.code, 0);
    assert.ok(upd.stderr.includes(`${DENIED}spec.egress[0].toPorts[0].ports[0].endPort: `), upd.stderr);
    const dryUpd = await apply(stringify(broken), "--dry-run=server");
    assert.ok(dryUpd.stderr.includes(`${DENIED}spec.egress[0].toPorts[0].ports[0].endPort: `), dryUpd.stderr);
    const stored = await cp.kubectl(["get", "cnp", "update-me", "-n", "default", "-o", "jsonpath={.spec.egress[0].toPorts[0].ports[0]}"]);
    assert.equal(JSON.parse(stored.stdout).endPort, undefined, "the stored object is unchanged");
    await cp.kubectl(["delete", "cnp", "update-me", "-n", "default"]);
  });

  it("refuses a port-less VRRP rule at kubectl apply naming --enable-extended-ip-protocols and the field, and admits it once the webhook runs with that flag", async () => {
    const policy = stringify({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "keepalived", namespace: "default" },
      spec: { endpointSelector: { matchLabels: { app: "lb" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "lb" } }], toPorts: [{ ports: [{ protocol: "VRRP" }] }] }] },
    });
    const off = await apply(policy, "--dry-run=server");
    assert.notEqual(off.code, 0, off.stdout);
    assert.match(off.stderr, /spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.protocol: "VRRP" is an extended IP protocol.*--enable-extended-ip-protocols/);
    await wh?.stop();
    wh = await startWebhook(config({ parseOptions: { enableExtendedIPProtocols: true } }));
    try {
      await waitUntilEffective();
      const on = await apply(policy, "--dry-run=server");
      assert.equal(on.code, 0, on.stderr);
      assert.match(on.stdout, /keepalived created \(server dry run\)/);
    } finally {
      await wh?.stop();
      wh = await startWebhook(config());
      await waitUntilEffective();
    }
  });

  it("keeps its certificates in a Secret and reuses them after a restart", async () => {
    const secret = await cp.kubectl(["get", "secret", DEFAULTS.secretName, "-n", DEFAULTS.namespace, "-o", "jsonpath={.data.tls\\.crt}"]);
    assert.equal(secret.code, 0, secret.stderr);
    const before = new X509Certificate(Buffer.from(secret.stdout, "base64")).serialNumber;
    await wh?.stop();
    wh = await startWebhook(config());
    assert.equal(new X509Certificate(wh.rotator.current().cert).serialNumber, before);
    await waitUntilEffective();
  });

  it("fails closed with a clear message while the webhook is down", async () => {
    await wh?.stop();
    wh = undefined;
    const policy = stringify({
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "while-down", namespace: "default" },
      spec: { endpointSelector: {}, ingress: [{ fromEndpoints: [{}] }] },
    });
    const r = await apply(policy);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, new RegExp(`failed calling webhook "${WEBHOOK.replace(/\./g, "\\.")}": failed to call webhook: Post "https://127\\.0\\.0\\.1:\\d+/validate\\?timeout=10s": .*connection refused`));
    const got = await cp.kubectl(["get", "cnp", "while-down", "-n", "default"]);
    assert.match(got.stderr, /NotFound/);
  });

  it("rotates its CA and serving certificate before expiry without a restart while kubectl keeps working", async () => {
    // One-day certificates renewed when less than a day minus 4 s is left: a rotation (of the CA too) every few seconds.
    wh = await startWebhook(
      config({
        secretName: "membrane-webhook-tls-rotation",
        cert: { ...DEFAULT_CERT_OPTIONS, caDays: 1, certDays: 1 },
        renewBeforeMs: DAY - 4_000,
        minRotationIntervalMs: 3_000,
        trustGraceMs: 3_000,
      }),
    );
    await waitUntilEffective();
    const firstSerial = new X509Certificate(wh.rotator.current().cert).serialNumber;
    const firstCA = wh.rotator.current().caCert;
    const deadline = Date.now() + 90_000;
    let applies = 0;
    while ((wh.rotator.rotations < 2 || applies < 10) && Date.now() < deadline) {
      const r = await apply(PROBE, "--dry-run=server");
      assert.ok(r.stderr.includes(PROBE_DENIAL), `after ${wh.rotator.rotations} rotations:\n${r.stderr}`);
      applies++;
    }
    assert.ok(wh.rotator.rotations >= 2, `${wh.rotator.rotations} rotations in 90 s`);
    assert.notEqual(new X509Certificate(wh.rotator.current().cert).serialNumber, firstSerial);
    assert.notEqual(wh.rotator.current().caCert, firstCA);
    const caBundle = await cp.kubectl([
      "get", "validatingwebhookconfiguration", DEFAULTS.configName, "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}",
    ]);
    assert.ok(Buffer.from(caBundle.stdout, "base64").toString().includes(wh.rotator.current().caCert.trim()), "caBundle re-patched");
    await cp.kubectl(["delete", "secret", "membrane-webhook-tls-rotation", "-n", DEFAULTS.namespace]);
  });
});
