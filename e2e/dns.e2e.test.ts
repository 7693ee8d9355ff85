// End to end with the local cluster's real resolver (dnsmasq as kube-system/kube-dns) and outside hosts: Cilium's documented DNS policy (kube-dns on port 53 with rules.dns, toFQDNs matchName/matchPattern), real lookups from pods through the agents' DNS proxies, real connects.
// Run under flock /tmp/membrane-kernel.lock (network namespaces, bpffs).
// Process-based cluster because: (a) it needs the outside hosts (192.0.2.0/24 network namespaces on the nodes' shared underlay, routed without masquerade) and dnsmasq answering their names as kube-dns, which only `dev up --process-nodes` makes (the real-node
// cluster's CoreDNS has no upstream and its nodes no outside hosts), the local kubelet's resolv.conf under /etc/netns, and the agent killed by pid and restarted by hand (startAgents) in the middle of a stream of lookups.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { PodProber, TestCluster, waitEnforced } from "./harness.ts";
import { CCNPS, CNPS } from "../kube/resources.ts";
import { clusterDnsAddress, CLUSTER_DNS_NAME } from "../localcluster/cluster-dns.ts";
import { CLUSTER_DNS, loadPodRecords, netnsEtcDir } from "../localcluster/kubelet.ts";
import { OUTSIDE_HOSTS, outsideNetns } from "../localcluster/outside.ts";
import { devNodesDown } from "../cli/dev-pods.ts";
import { isProcessAlive } from "../localcluster/cluster.ts";
import { listNetns, loadNodesState } from "../localcluster/nodes.ts";
import { devClusterPaths, loadDevClusterState, startAgents } from "../localcluster/devcluster.ts";
import type { Flow } from "../flowapi/flow.ts";
import type { FqdnCacheRow } from "../core/dns/cache-list.ts";
import { AGENT_API_ADDRESS_ANNOTATION } from "../kube/objects.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const NODES = 2;
const NS = "dns-e2e";
const PORT = 80;
const MS = 2_000;
const ipOf = (name: string): string => OUTSIDE_HOSTS.find((h) => h.names.includes(name))!.ip;
const hostOf = (name: string): string => OUTSIDE_HOSTS.find((h) => h.names.includes(name))!.name;
const API = "api.outside.test";
const WWW = "www.outside.test";
/** Another name of WWW's host, asked over TCP only. */
const WEB = "web.outside.test";
const BLOCKED = "blocked.elsewhere.test";
/** A second resolver pod (the cluster DNS's dnsmasq on port 5353) for the non-standard port test. */
const ALT_DNS = "kube-dns-5353";

/** Cilium's "DNS-based policies" example (docs: policy/language, "DNS based"), names of the local cluster's outside hosts. */
const fqdnPolicy = (dnsPattern: string) => ({
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "fqdn", namespace: NS },
  spec: {
    endpointSelector: { matchLabels: { org: "empire", class: "mediabot" } },
    egress: [
      { toFQDNs: [{ matchName: API }, { matchPattern: "w*.outside.test" }] },
      {
        toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns" } }],
        toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: dnsPattern }] } }],
      },
    ],
  },
});

describe("FQDN policy with the local cluster's kube-dns (dnsmasq) and outside hosts", { timeout: 900_000 }, () => {
  const tc = new TestCluster(`dns${process.pid % 10000}-`);
  const p: Record<string, PodProber> = {};
  let dnsIP = "";

  const connect = async (from: PodProber, ip: string): Promise<string> => {
    const r = await from.probe(ip, PORT, { timeoutMs: MS });
    return r.verdict === "connected" ? `connected ${r.reply ?? ""}` : r.verdict;
  };

  const apply = async (obj: object): Promise<void> => {
    await tc.kubectl(["apply", "-f", "-"], JSON.stringify(obj));
  };

  /** `membrane observe --last N -o json` with the given filters (agents found through the cluster). */
  const observe = (args: string[]): Promise<Flow[]> =>
    new Promise((resolve, reject) => {
      const c = spawn(MEMBRANE, ["observe", "--kubeconfig", tc.cp!.kubeconfig, "-o", "json", ...args], { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      c.stdout.on("data", (d: Buffer) => (out += d.toString()));
      c.stderr.on("data", (d: Buffer) => (err += d.toString()));
      c.on("close", (code) => (code === 0 ? resolve(out.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Flow)) : reject(new Error(`membrane observe exited ${code}: ${err}`))));
    });

  /** `membrane fqdn cache list -o json` (agents found through the cluster). */
  const list = (args: string[]): Promise<{ code: number | null; rows: FqdnCacheRow[]; stderr: string }> =>
    new Promise((resolve) => {
      const c = spawn(MEMBRANE, ["fqdn", "cache", "list", "--kubeconfig", tc.cp!.kubeconfig, "-o", "json", ...args], { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      c.stdout.on("data", (d: Buffer) => (out += d.toString()));
      c.stderr.on("data", (d: Buffer) => (err += d.toString()));
      c.on("close", (code) => resolve({ code, rows: out.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as FqdnCacheRow), stderr: err }));
    });

  before(async () => {
    await tc.start(NODES, { clusterDns: true });
    dnsIP = (await clusterDnsAddress(tc.dir)) ?? "";
    assert.notEqual(dnsIP, "", "dev up recorded the cluster DNS address");
    await tc.createPods({ [NS]: {} }, [
      { namespace: NS, name: "mediabot-1", node: 1, labels: { org: "empire", class: "mediabot" }, ports: [] },
      { namespace: NS, name: "mediabot-2", node: 2, labels: { org: "empire", class: "mediabot" }, ports: [] },
      { namespace: NS, name: "other", node: 2, labels: { org: "empire", class: "other" }, ports: [] },
      { namespace: NS, name: "bot-5353", node: 2, labels: { org: "empire", class: "bot-5353" }, ports: [] },
    ]);
    for (const pod of ["mediabot-1", "mediabot-2", "other", "bot-5353"]) p[pod] = await tc.prober(NS, pod);
  });

  after(async () => {
    await tc.stop();
  });

  it("kube-dns is a kube-system pod and Service labelled k8s-app=kube-dns, and every pod's resolv.conf names its address", async () => {
    const svc = JSON.parse(await tc.kubectl(["get", "service", "-n", CLUSTER_DNS.namespace, CLUSTER_DNS_NAME, "-o", "json"])) as { metadata: { labels: Record<string, string> }; spec: { selector: Record<string, string> } };
    assert.equal(svc.metadata.labels[CLUSTER_DNS.label], CLUSTER_DNS.value);
    assert.deepEqual(svc.spec.selector, { [CLUSTER_DNS.label]: CLUSTER_DNS.value });
    const pod = JSON.parse(await tc.kubectl(["get", "pod", "-n", CLUSTER_DNS.namespace, CLUSTER_DNS_NAME, "-o", "json"])) as { status: { podIP: string } };
    assert.equal(pod.status.podIP, dnsIP);
    const recs = (await loadPodRecords(tc.dir)).pods;
    for (const name of ["mediabot-1", "mediabot-2", "other"]) {
      const conf = await readFile(`${netnsEtcDir(recs[`${NS}/${name}`]!.netns)}/resolv.conf`, "utf8");
      assert.match(conf, new RegExp(`^nameserver ${dnsIP.replaceAll(".", "\\.")}$`, "m"), `${name}: ${conf}`);
      assert.match(conf, new RegExp(`^search ${NS}\\.svc\\.cluster\\.local svc\\.cluster\\.local cluster\\.local$`, "m"));
    }
  });

  it("without a policy every pod resolves every name through kube-dns and reaches every outside host (the checks below can fail)", async () => {
    for (const pod of ["mediabot-1", "mediabot-2", "other"]) {
      for (const name of [API, WWW, BLOCKED]) {
        assert.deepEqual(await p[pod]!.lookup(`${name}.`, { timeoutMs: MS }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(name)] }, `${pod} ${name}`);
      }
      assert.deepEqual((await p[pod]!.lookup("alias.outside.test.", { timeoutMs: MS })).addresses, [ipOf(API)], "the CNAME chain");
      assert.equal((await p[pod]!.lookup("nothing.outside.test.", { timeoutMs: MS })).rcode, "NXDOMAIN", "a name the server does not know");
      for (const h of OUTSIDE_HOSTS) assert.equal(await connect(p[pod]!, h.ip), `connected ${h.name}`, `${pod} → ${h.name}`);
    }
  });

  it("with Cilium's example (kube-dns port 53, rules.dns matchPattern '*', toFQDNs matchName + matchPattern): allowed names resolve and connect at once, another name's address is dropped with a reason in the flow", async () => {
    await apply(fqdnPolicy("*"));
    await waitEnforced(tc, CNPS, NS, "fqdn", NODES);
    for (const pod of ["mediabot-1", "mediabot-2"]) {
      // The first connect right after each answer: the proxy has opened the address before it released the answer.
      for (const name of [API, WWW]) {
        const r = await p[pod]!.lookup(`${name}.`, { timeoutMs: MS });
        assert.deepEqual(r, { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(name)] }, `${pod} ${name}`);
        assert.equal(await connect(p[pod]!, ipOf(name)), `connected ${OUTSIDE_HOSTS.find((h) => h.ip === ipOf(name))!.name}`, `${pod} → ${name}`);
      }
      // rules.dns '*' lets the lookup through, toFQDNs does not cover the name: the address is dropped.
      assert.deepEqual(await p[pod]!.lookup(`${BLOCKED}.`, { timeoutMs: MS }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(BLOCKED)] }, `${pod} ${BLOCKED}`);
      assert.equal(await connect(p[pod]!, ipOf(BLOCKED)), "timeout", `${pod} → ${BLOCKED}`);
    }
    assert.equal(await connect(p.other!, ipOf(BLOCKED)), "connected outside-3", "a pod the policy does not select is not restricted");

    const end = Date.now() + 15_000;
    let drop: Flow | undefined;
    while (!drop && Date.now() < end) {
      drop = (await observe(["--verdict", "DROPPED", "--from-pod", `${NS}/mediabot-2`, "--last", "50"])).find((f) => f.destination.ip === ipOf(BLOCKED) && f.destination.port === PORT);
      if (!drop) await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(drop, `a DROPPED flow from ${NS}/mediabot-2 to ${ipOf(BLOCKED)}:${PORT}`);
    assert.equal(drop.node, tc.nodeName(2));
    assert.equal(drop.direction, "egress");
    assert.match(drop.dropReason ?? "", /^policy denied/, `drop reason ${drop.dropReason}`);
  });

  it("a DNS rule restricting names (matchPattern '*.outside.test') makes the proxy answer the others REFUSED, while the server's own answers pass", async () => {
    await apply(fqdnPolicy("*.outside.test"));
    await waitEnforced(tc, CNPS, NS, "fqdn", NODES);
    for (const pod of ["mediabot-1", "mediabot-2"]) {
      assert.deepEqual(await p[pod]!.lookup(`${BLOCKED}.`, { timeoutMs: MS }), { verdict: "looked-up", rcode: "REFUSED", addresses: [] }, `${pod} ${BLOCKED}: refused by the proxy (dnsmasq answers it)`);
      assert.deepEqual(await p[pod]!.lookup(`${API}.`, { timeoutMs: MS }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(API)] }, `${pod} ${API}`);
      assert.equal((await p[pod]!.lookup("nothing.outside.test.", { timeoutMs: MS })).rcode, "NXDOMAIN", `${pod}: an allowed name the server does not know is the server's NXDOMAIN`);
      assert.equal(await connect(p[pod]!, ipOf(API)), "connected outside-1");
    }
    assert.deepEqual(await p.other!.lookup(`${BLOCKED}.`, { timeoutMs: MS }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(BLOCKED)] }, "the unselected pod's lookups are not proxied");
    // The proxies' records are L7 flows of each node's agent, read across the cluster.
    const end = Date.now() + 15_000;
    let refused: Flow[] = [];
    let answers: Flow[] = [];
    while ((refused.length < 2 || answers.length < 2) && Date.now() < end) {
      refused = await observe(["--type", "l7", "--verdict", "DROPPED", "--dns-query", `^${BLOCKED.replace(/\./g, "[.]")}[.]$`, "--since", "2m"]);
      answers = (await observe(["--type", "l7", "--protocol", "DNS", "--dns-query", `^${API.replace(/\./g, "[.]")}[.]$`, "--since", "2m"])).filter((f) => f.l7?.type === "RESPONSE");
      if (refused.length < 2 || answers.length < 2) await new Promise((r) => setTimeout(r, 500));
    }
    assert.deepEqual([...new Set(refused.map((f) => `${f.node} ${f.source.namespace}/${f.source.pod} ${f.l7?.type} ${f.dropReason}`))].sort(), [
      `${tc.nodeName(1)} ${NS}/mediabot-1 REQUEST policy denied (L7)`,
      `${tc.nodeName(2)} ${NS}/mediabot-2 REQUEST policy denied (L7)`,
    ]);
    assert.ok(refused.every((f) => f.decidedBy?.kind === "rule" && f.decidedBy.name === "fqdn"), "named by the policy whose DNS rules refused it");
    assert.ok(answers.some((f) => f.destination.pod === "mediabot-1" && f.l7?.dns?.ips?.includes(ipOf(API)) && f.l7.dns.rcode === 0), "the answer to mediabot-1 with its address");
  });

  it("membrane fqdn cache list shows what each node's proxy learned: name, address, TTL left and the pod that asked, filtered by --node and --name", async () => {
    const all = await list(["--name", "*.outside.test"]);
    assert.equal(all.code, 0, all.stderr);
    assert.equal(all.stderr, "", "every agent answered");
    const api = all.rows.filter((r) => r.name === `${API}.`);
    assert.deepEqual(
      api.map((r) => [r.node, r.ip, r.source]).sort(),
      [
        [tc.nodeName(1), ipOf(API), `${NS}/mediabot-1`],
        [tc.nodeName(2), ipOf(API), `${NS}/mediabot-2`],
      ],
    );
    for (const r of api) assert.ok(r.ttlSeconds > 0 && r.ttlSeconds <= 60, `TTL left ${r.ttlSeconds} of dnsmasq's 60 s`);
    assert.ok(all.rows.every((r) => r.name.endsWith(".outside.test.")), "--name filters");
    const node2 = await list(["--node", tc.nodeName(2)]);
    assert.equal(node2.code, 0, node2.stderr);
    assert.ok(node2.rows.length > 0 && node2.rows.every((r) => r.node === tc.nodeName(2)), "--node filters");
    assert.ok(node2.rows.some((r) => r.name === `${BLOCKED}.` && r.ip === ipOf(BLOCKED)), "a name the DNS rules let through is learned even when no toFQDNs selects it");
    const none = await list(["--node", "no-such-node"]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /--node: no CiliumNode named "no-such-node"/);
  });

  it("each agent's metrics count its proxy's queries by verdict and rcode, with their latency", async () => {
    const cn = JSON.parse(await tc.kubectl(["get", "ciliumnode", tc.nodeName(2), "-o", "json"])) as { metadata: { annotations?: Record<string, string> } };
    const address = cn.metadata.annotations?.[AGENT_API_ADDRESS_ANNOTATION];
    assert.ok(address, "the agent announced its HTTP server");
    const text = await (await fetch(`http://${address}/metrics`)).text();
    const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
    assert.ok(value(/^membrane_dns_proxy_queries_total\{verdict="allowed",rcode="NOERROR"\} (\d+)$/m) >= 3, "api, www and blocked (rules.dns *) were forwarded");
    assert.ok(value(/^membrane_dns_proxy_queries_total\{verdict="denied",rcode="REFUSED"\} (\d+)$/m) >= 1, "blocked.elsewhere.test under *.outside.test");
    assert.ok(value(/^membrane_dns_proxy_latency_seconds_count\{verdict="denied"\} (\d+)$/m) >= 1);
    assert.ok(value(/^membrane_dns_proxy_latency_seconds_count\{verdict="allowed"\} (\d+)$/m) >= 3);
    // Hubble's dns metrics, counted from the proxy's L7 flows (the default --hubble-metrics: no context, no query label).
    assert.ok(value(/^hubble_dns_queries_total\{rcode="Policy denied",qtypes="A",ips_returned="0"\} (\d+)$/m) >= 1, "the refused query");
    assert.ok(value(/^hubble_dns_responses_total\{rcode="No Error",qtypes="A",ips_returned="1"\} (\d+)$/m) >= 3, "the answered ones");
    assert.ok(value(/^hubble_flows_processed_total\{protocol="DNS",type="L7",subtype="DNS",verdict="DROPPED"\} (\d+)$/m) >= 1);
  });

  it("DNS over TCP (a resolver's retry after a truncated answer) goes through the same proxy under the same rules", async () => {
    // The '*.outside.test' DNS rule of the test before; web.outside.test has not been asked yet.
    for (const pod of ["mediabot-1", "mediabot-2"]) {
      assert.deepEqual(await p[pod]!.lookup(WEB, { timeoutMs: MS, tcp: true }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(WEB)] }, `${pod} ${WEB} over TCP`);
      assert.equal(await connect(p[pod]!, ipOf(WEB)), "connected outside-2", `${pod} → ${WEB} right after its TCP answer`);
      assert.deepEqual(await p[pod]!.lookup(BLOCKED, { timeoutMs: MS, tcp: true }), { verdict: "looked-up", rcode: "REFUSED", addresses: [] }, `${pod} ${BLOCKED} over TCP: refused by the proxy`);
    }
    assert.deepEqual(await p.other!.lookup(BLOCKED, { timeoutMs: MS, tcp: true }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(BLOCKED)] }, "dnsmasq answers it over TCP itself");
  });

  it("kill -9 of a node's agent during a stream of lookups and connects: no allowed connection dropped, the refused name never answered, lookups fail while it is away and succeed on retry, its cache restored", async () => {
    // The state: the '*.outside.test' DNS rule, toFQDNs api + w*; mediabot-1 (node 1) learned api and www above.
    const victim = (await loadDevClusterState(tc.dir)).agents.find((a) => a.node === tc.nodeName(1));
    assert.ok(victim && isProcessAlive(victim.pid), "node 1's agent runs");
    const log = { unanswered: 0, answered: { before: 0, away: 0, back: 0 }, answeredAfterRestart: 0, allowedFailed: [] as string[], refusedAnswered: [] as string[], blockedConnected: 0, steps: 0 };
    const now: { phase: "before" | "away" | "back"; stop: boolean } = { phase: "before", stop: false };
    const stream = (async () => {
      while (!now.stop) {
        log.steps++;
        const a = await p["mediabot-1"]!.lookup(`${API}.`, { timeoutMs: 500 });
        // No answer in time is rcode "timeout" (the prober's); the stream asks again next step, as a resolver retries.
        if (a.verdict !== "looked-up" || a.rcode === "timeout") log.unanswered++;
        else {
          if (now.phase === "back") log.answeredAfterRestart++;
          log.answered[now.phase]++;
          if (!(await connect(p["mediabot-1"]!, a.addresses[0] ?? "")).startsWith("connected")) log.allowedFailed.push(`${now.phase} ${API} after its answer`);
        }
        // www was learned before the kill: it connects whether the agent is there or not.
        if ((await connect(p["mediabot-1"]!, ipOf(WWW))).startsWith("connected") === false) log.allowedFailed.push(`${now.phase} ${WWW}`);
        const b = await p["mediabot-1"]!.lookup(`${BLOCKED}.`, { timeoutMs: 500 });
        if (b.verdict === "looked-up" && b.rcode !== "REFUSED" && b.rcode !== "timeout") log.refusedAnswered.push(`${now.phase} ${b.rcode}`);
        if ((await p["mediabot-1"]!.probe(ipOf(BLOCKED), PORT, { timeoutMs: 300 })).verdict === "connected") log.blockedConnected++;
      }
    })();
    const agentLog = join(devClusterPaths(tc.dir).agentDir(tc.nodeName(1)), "agent.log");
    const logStart = statSync(agentLog).size;
    try {
      await new Promise((r) => setTimeout(r, 2_000));
      process.kill(victim.pid, "SIGKILL");
      now.phase = "away";
      for (const end = Date.now() + 10_000; isProcessAlive(victim.pid) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 4_000)); // the node runs on its pinned maps alone
      // Restarted as `dev up` started it (the same flags), and recorded in the cluster's state: node 1 keeps an agent for
      // the tests after this one (a pod made there needs it for its CNI ADD) and `dev down` stops it. It returns once
      // the agent logged "agent started", which comes after its DNS proxy started.
      await startAgents(tc.dir, (await loadNodesState(tc.dir))!.nodes, tc.cp!.kubeconfig);
      assert.ok(readFileSync(agentLog).subarray(logStart).toString().includes('"msg":"DNS proxy started"'), "the restarted agent's DNS proxy started");
      now.phase = "back";
      for (const end = Date.now() + 30_000; log.answeredAfterRestart < 3 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
      now.stop = true;
      await stream;
      assert.deepEqual(log.allowedFailed, [], `no allowed connection dropped, before, while away or after (${JSON.stringify(log)})`);
      assert.deepEqual(log.refusedAnswered, [], "the refused name was never answered otherwise");
      assert.equal(log.blockedConnected, 0, "its address never connected");
      assert.ok(log.unanswered > 0, `lookups failed while the agent was away (${JSON.stringify(log)})`);
      assert.ok(log.answeredAfterRestart >= 3, "and were answered again once it was back");
      const cache = await list(["--node", tc.nodeName(1), "--name", "*.outside.test"]);
      assert.equal(cache.code, 0, cache.stderr);
      assert.deepEqual([...new Set(cache.rows.map((r) => r.name))].sort(), [`${API}.`, `${WEB}.`, `${WWW}.`], "the restarted agent's cache: what it learned before the kill (www and web, learned over TCP, were not asked again)");
    } finally {
      now.stop = true;
      await stream.catch(() => undefined);
    }
  });

  it("a pod created on a node right after its agent was killed -9 and restarted becomes Ready and resolves through the restarted proxy", async () => {
    const t0 = Date.now();
    await apply({ apiVersion: "v1", kind: "Pod", metadata: { name: "after-restart", namespace: NS, labels: { org: "empire", class: "mediabot" } }, spec: { nodeName: tc.nodeName(1), automountServiceAccountToken: false, containers: [{ name: "main", image: "any" }] } });
    try {
      await tc.kubectl(["wait", "--for=condition=Ready", "-n", NS, "pod/after-restart", "--timeout=60s"]);
      console.log(`pod on node 1 Ready ${Date.now() - t0} ms after its creation, after the agent's restart`);
      const prober = await PodProber.start(tc.dir, NS, "after-restart");
      try {
          assert.deepEqual(await prober.lookup(`${API}.`, { timeoutMs: MS }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(API)] }, "its lookup goes through node 1's restarted proxy");
        assert.equal((await prober.lookup(`${BLOCKED}.`, { timeoutMs: MS })).rcode, "REFUSED", "and the DNS rule applies to it");
      } finally {
        await prober.stop();
      }
    } finally {
      await tc.kubectl(["delete", "pod", "after-restart", "-n", NS, "--wait=true", "--timeout=60s"]);
    }
  });

  it("DNS on a non-standard port (Cilium's example with port 5353): a second dnsmasq on 5353 in kube-system, rules.dns on 5353 decide the lookups, the proxy asks the server on 5353 and the toFQDNs name connects right after its answer", async () => {
    // The cluster DNS's own dnsmasq (its records, its flags) on 5353 instead of 53, as a pod of its own beside the asking pod on node 2.
    const kubeDns = JSON.parse(await tc.kubectl(["get", "pod", "-n", CLUSTER_DNS.namespace, CLUSTER_DNS_NAME, "-o", "json"])) as { spec: { containers: { image: string; command: string[]; args: string[] }[] } };
    const main = kubeDns.spec.containers[0]!;
    assert.ok(main.args.includes("--port=53"), `kube-dns serves port 53 (${main.args.join(" ")})`);
    const alt = { [CLUSTER_DNS.label]: `${CLUSTER_DNS.value}-5353` };
    await apply({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: ALT_DNS, namespace: CLUSTER_DNS.namespace, labels: alt },
      spec: {
        nodeName: tc.nodeName(2),
        dnsPolicy: "Default",
        automountServiceAccountToken: false,
        containers: [{ name: "dnsmasq", image: main.image, command: main.command, args: main.args.map((a) => (a === "--port=53" ? "--port=5353" : a)), ports: [{ name: "dns", containerPort: 5353, protocol: "UDP" }, { name: "dns-tcp", containerPort: 5353, protocol: "TCP" }] }],
      },
    });
    try {
      await tc.kubectl(["wait", "--for=condition=Ready", "-n", CLUSTER_DNS.namespace, `pod/${ALT_DNS}`, "--timeout=120s"]);
      const altIP = (JSON.parse(await tc.kubectl(["get", "pod", "-n", CLUSTER_DNS.namespace, ALT_DNS, "-o", "json"])) as { status: { podIP: string } }).status.podIP;
      const server = `${altIP}:5353`;
      const bot = p["bot-5353"]!;
      assert.deepEqual(await bot.lookup(`${BLOCKED}.`, { timeoutMs: MS, server }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(BLOCKED)] }, "without a policy the server on 5353 answers every name");
      await apply({
        apiVersion: "cilium.io/v2",
        kind: "CiliumNetworkPolicy",
        metadata: { name: "fqdn-5353", namespace: NS },
        spec: {
          endpointSelector: { matchLabels: { class: "bot-5353" } },
          egress: [
            { toFQDNs: [{ matchName: WWW }] },
            {
              toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": CLUSTER_DNS.namespace, [`k8s:${CLUSTER_DNS.label}`]: alt[CLUSTER_DNS.label]! } }],
              toPorts: [{ ports: [{ port: "5353", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*.outside.test" }] } }],
            },
          ],
        },
      });
      await waitEnforced(tc, CNPS, NS, "fqdn-5353", 1); // the one node hosting a pod it selects
      assert.deepEqual(await bot.lookup(`${WWW}.`, { timeoutMs: MS, server }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(WWW)] }, "the toFQDNs name through the proxy on 5353");
      assert.equal(await connect(bot, ipOf(WWW)), "connected outside-2", "its address connects right after the answer");
      assert.deepEqual(await bot.lookup(`${API}.`, { timeoutMs: MS, server }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(API)] }, "another name the DNS rule allows is answered");
      assert.equal(await connect(bot, ipOf(API)), "timeout", "but no toFQDNs selects it: its address is dropped");
      assert.deepEqual(await bot.lookup(`${BLOCKED}.`, { timeoutMs: MS, server }), { verdict: "looked-up", rcode: "REFUSED", addresses: [] }, "a name outside the DNS rule is refused by the proxy (the server on 5353 would answer it)");
      assert.equal((await bot.lookup(`${WWW}.`, { timeoutMs: MS })).rcode, "timeout", "kube-dns on port 53 is not allowed by this policy");
      const end = Date.now() + 15_000;
      let refused: Flow[] = [];
      let answered: Flow[] = [];
      while ((refused.length === 0 || answered.length === 0) && Date.now() < end) {
        refused = await observe(["--type", "l7", "--verdict", "DROPPED", "--from-pod", `${NS}/bot-5353`, "--dns-query", `^${BLOCKED.replace(/\./g, "[.]")}[.]$`, "--since", "2m"]);
        answered = (await observe(["--type", "dns", "--to-pod", `${NS}/bot-5353`, "--dns-query", `^${WWW.replace(/\./g, "[.]")}[.]$`, "--since", "2m"])).filter((f) => f.l7?.type === "RESPONSE");
        if (refused.length === 0 || answered.length === 0) await new Promise((r) => setTimeout(r, 500));
      }
      assert.ok(refused.length > 0, "the refused query is a DROPPED DNS flow");
      assert.deepEqual([refused[0]!.node, refused[0]!.destination.ip, refused[0]!.destination.port, refused[0]!.decidedBy?.kind === "rule" ? refused[0]!.decidedBy.name : undefined], [tc.nodeName(2), altIP, 5353, "fqdn-5353"], "on the asking pod's node, to the server on 5353, named by the policy");
      assert.ok(answered.some((f) => f.source.ip === altIP && f.source.port === 5353 && f.l7?.dns?.ips?.includes(ipOf(WWW))), "the answer came from the server on 5353 with the address");
    } finally {
      await tc.kubectl(["delete", "cnp", "-n", NS, "fqdn-5353", "--ignore-not-found", "--wait=false"]);
      await tc.kubectl(["delete", "pod", "-n", CLUSTER_DNS.namespace, ALT_DNS, "--ignore-not-found", "--timeout=60s"]);
    }
  });

  /**
   * A pod created on node 1 while the operator is stopped (SIGSTOP: its distribution port and the agents' streams stay):
   * nobody annotates its identity, so after the agent's --cni-identity-wait it starts at reserved:init. `check` runs
   * while it is there; then the operator continues, and the pod must take its own identity (no policy selects it).
   */
  const atInit = async (name: string, check: (prober: PodProber, ip: string) => Promise<void>): Promise<void> => {
    const { operatorPid } = await loadDevClusterState(tc.dir);
    assert.ok(operatorPid !== undefined && isProcessAlive(operatorPid), "the operator runs");
    process.kill(operatorPid, "SIGSTOP");
    let prober: PodProber | undefined;
    try {
      try {
        await apply({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace: NS, labels: { org: "empire", class: "late" } }, spec: { nodeName: tc.nodeName(1), automountServiceAccountToken: false, containers: [{ name: "main", image: "any" }] } });
        await tc.kubectl(["wait", "--for=condition=Ready", "-n", NS, `pod/${name}`, "--timeout=60s"]);
        const pod = JSON.parse(await tc.kubectl(["get", "pod", "-n", NS, name, "-o", "json"])) as { metadata: { annotations?: Record<string, string> }; status: { podIP: string } };
        assert.equal(pod.metadata.annotations?.["membrane.io/identity"], undefined, "no identity: the operator is stopped");
        prober = await PodProber.start(tc.dir, NS, name);
        await check(prober, pod.status.podIP);
      } finally {
        process.kill(operatorPid, "SIGCONT");
      }
      // Its identity arrives: the endpoint leaves reserved:init for the pod's own identity, selected by no policy (allow-all).
      const end = Date.now() + 60_000;
      let last = "";
      while ((last = await connect(prober!, ipOf(API))) !== `connected ${hostOf(API)}` && Date.now() < end) await new Promise((r) => setTimeout(r, 500));
      assert.equal(last, `connected ${hostOf(API)}`, "its own identity (no policy selects it) connects");
      assert.deepEqual(await prober!.lookup(`${BLOCKED}.`, { timeoutMs: MS }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(BLOCKED)] });
    } finally {
      await prober?.stop();
      await tc.kubectl(["delete", "pod", name, "-n", NS, "--wait=true", "--timeout=60s"]);
    }
  };

  /** A flow from `ip` at reserved:init (the agents found through the cluster), polled until `want` finds one. */
  const flowFrom = async (ip: string, args: string[], want: (f: Flow) => boolean): Promise<Flow> => {
    const end = Date.now() + 15_000;
    for (;;) {
      const found = (await observe([...args, "--identity", "5", "--last", "500"])).find((f) => f.source.ip === ip && want(f));
      if (found) return found;
      if (Date.now() > end) assert.fail(`no flow from ${ip} with ${args.join(" ")}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  it("a pod whose identity is late (operator stopped) starts at reserved:init: with no init policy its DNS lookup and its connects are dropped as policy denied, naming reserved:init; its identity arriving opens it", async () => {
    await atInit("late-closed", async (prober, ip) => {
      assert.equal(await connect(prober, ipOf(API)), "timeout", "TCP dropped");
      assert.deepEqual(await prober.lookup(`${API}.`, { timeoutMs: MS }), { verdict: "looked-up", rcode: "timeout", addresses: [] }, "UDP 53 to kube-dns dropped");
      const dns = await flowFrom(ip, ["--verdict", "DROPPED"], (f) => f.destination.ip === dnsIP && f.destination.port === 53);
      const tcp = await flowFrom(ip, ["--verdict", "DROPPED"], (f) => f.destination.ip === ipOf(API) && f.destination.port === PORT);
      for (const f of [dns, tcp]) {
        assert.equal(f.source.identity, 5);
        assert.deepEqual(f.source.labels, ["reserved:init"]);
        assert.match(f.dropReason ?? "", /^policy denied/, `drop reason ${f.dropReason}`);
      }
    });
  });

  it("with Cilium's init policy (CCNP selecting reserved:init: fromEntities host, toEntities all on UDP 53) such a pod resolves through kube-dns while its TCP connect is dropped as policy denied; the flows name reserved:init and the policy; its identity arriving moves it to its own policy", async () => {
    const init = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumClusterwideNetworkPolicy",
      metadata: { name: "init" },
      specs: [{ endpointSelector: { matchLabels: { "reserved:init": "" } }, ingress: [{ fromEntities: ["host"] }], egress: [{ toEntities: ["all"], toPorts: [{ ports: [{ port: "53", protocol: "UDP" }] }] }] }],
    };
    await apply(init);
    try {
      // Every node enforces it (any node can hold an init endpoint), though no pod the operator knows is selected.
      await waitEnforced(tc, CCNPS, undefined, "init", NODES);
      await atInit("late-open", async (prober, ip) => {
        assert.deepEqual(await prober.lookup(`${API}.`, { timeoutMs: MS }), { verdict: "looked-up", rcode: "NOERROR", addresses: [ipOf(API)] }, "UDP 53 passes");
        assert.equal(await connect(prober, ipOf(API)), "timeout", "TCP elsewhere dropped");
        const tcp = await flowFrom(ip, ["--verdict", "DROPPED"], (f) => f.destination.ip === ipOf(API) && f.destination.port === PORT);
        assert.equal(tcp.source.identity, 5);
        assert.match(tcp.dropReason ?? "", /^policy denied/, `drop reason ${tcp.dropReason}`);
        const dns = await flowFrom(ip, ["--verdict", "FORWARDED"], (f) => f.destination.ip === dnsIP && f.destination.port === 53 && f.decidedBy !== undefined);
        assert.deepEqual(dns.source.labels, ["reserved:init"]);
        assert.deepEqual(dns.decidedBy, { kind: "rule", policyKind: "CiliumClusterwideNetworkPolicy", name: "init", rule: "specs[0].egress[0]" });
      });
    } finally {
      await tc.kubectl(["delete", "ciliumclusterwidenetworkpolicy", "init", "--wait=true"]);
    }
  });

  it("dev down removes the cluster DNS pod and Service it made (not another object labelled k8s-app=kube-dns), dnsmasq, the outside hosts and the pods' resolv.conf", async () => {
    await tc.stopProbers();
    const decoy = { apiVersion: "v1", kind: "Service", metadata: { name: "kube-dns-decoy", namespace: CLUSTER_DNS.namespace, labels: { [CLUSTER_DNS.label]: CLUSTER_DNS.value } }, spec: { ports: [{ port: 53, protocol: "UDP" }] } };
    await apply(decoy);
    const recs = (await loadPodRecords(tc.dir)).pods;
    const dnsmasq = recs[`${CLUSTER_DNS.namespace}/${CLUSTER_DNS_NAME}`]!;
    assert.ok(dnsmasq.pid !== undefined && isProcessAlive(dnsmasq.pid), "dnsmasq runs, recorded by the kubelet");
    assert.deepEqual(dnsmasq.command?.[0], "dnsmasq");
    const etcDirs = Object.values(recs).map((r) => netnsEtcDir(r.netns));
    assert.ok(etcDirs.some((d) => existsSync(d)), "pods have their own /etc/netns dir");
    const outside = OUTSIDE_HOSTS.map((h) => outsideNetns(tc.prefix, h));
    assert.deepEqual((await listNetns(tc.prefix)).filter((n) => outside.includes(n)).sort(), [...outside].sort(), "the outside hosts run");

    await devNodesDown(tc.dir, tc.cp!.kubeconfig);
    assert.equal((await tc.cp!.kubectl(["get", "pod", "-n", CLUSTER_DNS.namespace, CLUSTER_DNS_NAME])).code, 1, "the pod is gone");
    assert.equal((await tc.cp!.kubectl(["get", "service", "-n", CLUSTER_DNS.namespace, CLUSTER_DNS_NAME])).code, 1, "the Service is gone");
    await tc.kubectl(["get", "service", "-n", CLUSTER_DNS.namespace, "kube-dns-decoy"]);
    assert.equal(isProcessAlive(dnsmasq.pid), false, "dnsmasq stopped");
    assert.deepEqual(etcDirs.filter((d) => existsSync(d)), [], "no /etc/netns dir left");
    assert.deepEqual(await listNetns(tc.prefix), [], "no namespace left");
    for (const f of ["outside.json", "cluster-dns.json", "outside-bin"]) assert.equal(existsSync(join(tc.dir, f)), false, f);
  });
});
