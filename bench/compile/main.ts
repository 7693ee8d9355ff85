// Benchmark: compile a generated cluster (10k pods, 1k identities, 1k policies), then time incremental updates.
import { performance } from "node:perf_hooks";
import { loadavg } from "node:os";
import type { LabelSet, Peer, Policy, Rule } from "../../core/model.ts";
import { label, labelSetFrom } from "../../core/labels.ts";
import { canonicalSelector } from "../../core/selector.ts";
import { cidrLabels, RESERVED_IDENTITIES } from "../../core/identity.ts";
import { compileAll, policyKey, policyPrefixes } from "../../core/compiler.ts";

const PODS = 10_000;
const IDENTITIES = 1_000;
const POLICIES = 1_000;
const NAMESPACES = 20;
const APPS_PER_NS = IDENTITIES / NAMESPACES;
const CHANGES = 1_000;

// A deterministic PRNG (mulberry32) so every run measures the same cluster.
let seed = 12345;
function rand(n: number): number {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
}

function podIdentityLabels(ns: number, app: number, extra = ""): LabelSet {
  return labelSetFrom([
    label("k8s", "io.kubernetes.pod.namespace", `ns${ns}`),
    label("k8s", "app", `app${app}${extra}`),
    label("k8s", "tier", `t${app % 3}`),
    label("k8s", "io.cilium.k8s.policy.cluster", "default"),
  ]);
}

const sel = (pairs: [string, string][]) =>
  canonicalSelector(pairs.map(([key, v]) => ({ key, operator: "In" as const, values: [v] })));
const inNs = (ns: number, app?: number) =>
  sel([
    ["k8s:io.kubernetes.pod.namespace", `ns${ns}`],
    ...(app === undefined ? [] : ([["k8s:app", `app${app}`]] as [string, string][])),
  ]);

function rule(
  name: string,
  ns: number,
  i: number,
  direction: "ingress" | "egress",
  verdict: "allow" | "deny",
  peers: Peer[],
  port: number,
  endPort: number,
): Rule {
  return {
    direction,
    verdict,
    peers,
    ports: port === 0 ? [] : [{ ports: [{ port, endPort, protocol: "TCP" }] }],
    icmps: [],
    requires: [],
    origin: {
      policyKind: "CiliumNetworkPolicy",
      namespace: `ns${ns}`,
      name,
      ruleIndex: i,
      path: `spec.${direction}${verdict === "deny" ? "Deny" : ""}[${i}]`,
    },
  };
}

function makePolicy(n: number, variant = 0): Policy {
  const ns = n % NAMESPACES;
  const app = rand(APPS_PER_NS);
  const name = `pol${n}`;
  const kind = n % 5;
  const rules: Rule[] = [];
  const peerApp = (rand(APPS_PER_NS) + variant) % APPS_PER_NS;
  switch (kind) {
    case 0: // label: same-namespace app → app on one port
      rules.push(
        rule(
          name,
          ns,
          0,
          "ingress",
          "allow",
          [{ kind: "selector", selector: inNs(ns, peerApp) }],
          80 + variant,
          80 + variant,
        ),
      );
      break;
    case 1: // namespace: every pod of another namespace
      rules.push(
        rule(
          name,
          ns,
          0,
          "ingress",
          "allow",
          [{ kind: "selector", selector: inNs((ns + 1 + variant) % NAMESPACES) }],
          8080,
          8090,
        ),
      );
      break;
    case 2: // CIDR with except
      rules.push(
        rule(
          name,
          ns,
          0,
          "egress",
          "allow",
          [{ kind: "cidr", cidr: `10.${n % 50}.0.0/16`, except: [`10.${n % 50}.1.0/24`] }],
          443 + variant,
          443 + variant,
        ),
      );
      break;
    case 3: // port range to a tier across the namespace
      rules.push(
        rule(
          name,
          ns,
          0,
          "egress",
          "allow",
          [
            {
              kind: "selector",
              selector: sel([
                ["k8s:io.kubernetes.pod.namespace", `ns${ns}`],
                ["k8s:tier", `t${(peerApp + variant) % 3}`],
              ]),
            },
          ],
          1000,
          2000 + variant,
        ),
      );
      break;
    default: // deny from one app
      rules.push(
        rule(name, ns, 0, "ingress", "deny", [{ kind: "selector", selector: inNs(ns, peerApp) }], 0, 0),
      );
      rules.push(rule(name, ns, 1, "ingress", "allow", [{ kind: "selector", selector: inNs(ns) }], 0, 0));
  }
  return {
    kind: "CiliumNetworkPolicy",
    namespace: `ns${ns}`,
    name,
    subject: inNs(ns, app),
    rules,
    defaultDeny: {
      ingress: rules.some((r) => r.direction === "ingress"),
      egress: rules.some((r) => r.direction === "egress"),
    },
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

function main(): void {
  const identities = new Map<number, LabelSet>();
  for (const r of RESERVED_IDENTITIES) identities.set(r.id, r.labels);
  for (let i = 0; i < IDENTITIES; i++)
    identities.set(256 + i, podIdentityLabels(i % NAMESPACES, Math.floor(i / NAMESPACES)));
  // 10,000 pods share the 1,000 identities (10 each): compiled policy is per identity, not per pod.
  const podsPerIdentity = PODS / IDENTITIES;
  const policies: Policy[] = [];
  for (let n = 0; n < POLICIES; n++) policies.push(makePolicy(n));
  let local = 1 << 24;
  for (const prefix of policyPrefixes(policies)) identities.set(local++, cidrLabels(prefix));

  const t0 = performance.now();
  const compiler = compileAll(policies, identities);
  const fullMs = performance.now() - t0;
  const entries = compiler.entryCount();

  // One new pod with a new identity, 1,000 times (each removed again, untimed).
  const podTimes: number[] = [];
  const podCpu: number[] = [];
  for (let i = 0; i < CHANGES; i++) {
    const id = 256 + IDENTITIES + i;
    const labels = podIdentityLabels(rand(NAMESPACES), rand(APPS_PER_NS), `-v${i}`);
    const [a, c] = [performance.now(), process.cpuUsage()];
    compiler.upsertIdentity(id, labels);
    podTimes.push(performance.now() - a);
    podCpu.push(cpuMs(c));
    compiler.removeIdentity(id);
  }
  // One policy change, 1,000 times: a policy's port, peer or range changes.
  const policyTimes: number[] = [];
  const policyCpu: number[] = [];
  for (let i = 0; i < CHANGES; i++) {
    const n = rand(POLICIES);
    const p = makePolicy(n, 1 + (i % 3));
    const [a, c] = [performance.now(), process.cpuUsage()];
    compiler.upsertPolicy(policyKey(p), [p]);
    policyTimes.push(performance.now() - a);
    policyCpu.push(cpuMs(c));
  }
  for (const xs of [podTimes, policyTimes, podCpu, policyCpu]) xs.sort((a, b) => a - b);
  globalThis.gc?.();
  const heapMiB = process.memoryUsage().heapUsed / 2 ** 20;
  const p99 = percentile(podTimes, 99);
  const out = {
    bench: "compile",
    pods: PODS,
    pods_per_identity: podsPerIdentity,
    identities: identities.size,
    policies: POLICIES,
    full_ms: round(fullMs),
    incremental_p50_ms: round(percentile(podTimes, 50)),
    incremental_p99_ms: round(p99),
    policy_change_p50_ms: round(percentile(policyTimes, 50)),
    policy_change_p99_ms: round(percentile(policyTimes, 99)),
    entries,
    heap_mib: round(heapMiB),
    incremental_to_full_ratio: Number((p99 / fullMs).toFixed(5)),
    // The fields above are wall-clock; on a shared machine their p99s include other processes'
    // load, so the same percentiles in process CPU time are reported alongside.
    incremental_cpu_p99_ms: round(percentile(podCpu, 99)),
    policy_change_cpu_p99_ms: round(percentile(policyCpu, 99)),
    load_avg_1m: round(loadavg()[0] ?? 0),
  };
  console.log(JSON.stringify(out));
}

/** CPU time (user + system) of this process since `start`, in ms. */
function cpuMs(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

main();
