// `membrane observe`'s filters as Hubble's request: Hubble's filters select exactly what ours do when the request says
// it is exact, and never less when it is not (the CLI filters again).
import { test } from "node:test";
import assert from "node:assert/strict";
import { flowPredicate, parseFilterArgs } from "../filter.ts";
import { compileFlowFilters } from "./filter.ts";
import { toHubbleFlow } from "./flow.ts";
import { observeRequest } from "./request.ts";
import { dnsResponseFlow, dropFlow, endpoint, flow, httpRequestFlow } from "../testing/flows.ts";

const flows = [
  flow(),
  flow({ direction: "egress", protocol: "UDP", source: endpoint({ pod: "web-10", namespace: "shop", port: 53 }) }),
  dropFlow({ source: endpoint({ namespace: "ops", pod: "probe", identity: 400, labels: ["k8s:app=probe"], port: 5000 }) }),
  dropFlow({ protocol: "ICMP", destination: endpoint({ namespace: "shop", pod: "web-1", port: 0, identity: 300, labels: ["k8s:app=web"] }) }),
  // Host endpoints (the host firewall): reserved:host is the observing node's own.
  dropFlow({ destination: endpoint({ identity: 1, labels: ["reserved:host"], ip: "172.30.0.11", port: 22, host: "node-a" }) }),
  flow({ node: "node-b", source: endpoint({ identity: 1, labels: ["reserved:host"], ip: "172.30.0.12", port: 40000, host: "node-b" }), destination: endpoint({ identity: 6, labels: ["reserved:remote-node"], ip: "172.30.0.11", port: 10250 }) }),
  flow({ source: endpoint({ pod: "web-7f9-x", namespace: "shop", workloads: [{ kind: "Deployment", name: "web" }] }) }),
  dropFlow({ destination: endpoint({ pod: "db-0", namespace: "data", workloads: [{ kind: "StatefulSet", name: "db" }] }) }),
  flow({ type: "trace", decidedBy: undefined as never, protocol: "ICMPv6", source: endpoint({ ip: "fd00::1", port: 0 }), destination: endpoint({ ip: "fd00::2", pod: "db-0", namespace: "data", port: 0 }) }),
  // The proxies' L7 flows.
  httpRequestFlow(),
  httpRequestFlow({ verdict: "DROPPED", dropReason: "policy denied (L7)", l7: { type: "REQUEST", http: { method: "PUT", url: "http://web.shop/v1/exhaust-port", protocol: "HTTP/1.1" } } }),
  httpRequestFlow({ l7: { type: "RESPONSE", latencyNs: 1000, http: { method: "PUT", url: "http://web.shop/v1/exhaust-port", protocol: "HTTP/1.1", code: 403 } } }),
  dnsResponseFlow(),
  dnsResponseFlow({ verdict: "DROPPED", dropReason: "policy denied (L7)", l7: { type: "REQUEST", dns: { query: "evil.example.", qtypes: ["A"] } } }),
  // Addresses the node's DNS proxy learned names for.
  flow({ direction: "egress", destination: endpoint({ identity: 16777217, labels: ["fqdn:api.github.com"], namespace: undefined, pod: undefined, ip: "140.82.112.6", port: 443, names: ["api.github.com"] }) }),
  dropFlow({ source: endpoint({ identity: 2, labels: ["reserved:world"], namespace: undefined, pod: undefined, ip: "192.0.2.9", names: ["ci.internal.test", "runner.ci.internal.test"] }) }),
  // Flows of nodes whose labels the agent knows.
  flow({ nodeLabels: ["kubernetes.io/hostname=node-a", "topology.kubernetes.io/zone=zone-a"] }),
  dropFlow({ node: "node-b", nodeLabels: ["kubernetes.io/hostname=node-b", "topology.kubernetes.io/zone=zone-b"] }),
];

const cases: string[][] = [
  [],
  ["--verdict", "DROPPED"],
  ["--namespace", "shop"],
  ["--namespace", "shop", "--namespace", "ops"],
  ["--pod", "web"],
  ["--pod", "shop/web-0"],
  ["--from-pod", "default/client-1", "--to-pod", "shop/web-0"],
  ["--from-pod", "client", "--pod", "web"],
  ["--label", "k8s:app=web"],
  ["--label", "app"],
  ["--identity", "400", "--verdict", "DROPPED"],
  ["--port", "80", "--protocol", "TCP"],
  ["--protocol", "ICMP"],
  ["--protocol", "icmpv6"],
  ["--type", "trace"],
  ["--type", "drop", "--namespace", "shop", "--label", "app=web", "--port", "0"],
  ["--host", "node-a"],
  ["--host", "node-b", "--verdict", "FORWARDED"],
  ["--host", "node-a", "--host", "node-b"],
  ["--type", "l7"],
  ["--protocol", "http"],
  ["--protocol", "dns", "--verdict", "DROPPED"],
  ["--protocol", "udp"],
  ["--http-method", "put"],
  ["--http-path", "^/v1/exhaust", "--type", "l7"],
  ["--http-status", "4+"],
  ["--http-status", "403", "--http-status", "200"],
  ["--dns-query", "^api[.]"],
  ["--type", "l7", "--namespace", "kube-system"],
  ["--workload", "web"],
  ["--workload", "Deployment/web"],
  ["--workload", "StatefulSet/", "--verdict", "DROPPED"],
  ["--workload", "Deployment/db", "--workload", "StatefulSet/db"],
  ["--to-fqdn", "*.github.com"],
  ["--to-fqdn", "API.github.com."],
  ["--from-fqdn", "ci.*", "--verdict", "DROPPED"],
  ["--fqdn", "runner.ci.internal.test", "--fqdn", "api.github.com"],
  ["--fqdn", "*", "--namespace", "shop"],
  ["--node-label", "topology.kubernetes.io/zone=zone-a"],
  ["--node-label", "topology.kubernetes.io/zone in (zone-b, zone-c)", "--node-label", "!topology.kubernetes.io/zone"],
  ["--node-label", "kubernetes.io/hostname", "--verdict", "DROPPED"],
];

test("--host NODE: flows to or from that node's host endpoint, and nothing else", () => {
  const p = parseFilterArgs(["--host", "node-b"]);
  assert.ok(p.ok);
  assert.deepEqual(flows.filter(flowPredicate(p.filter)).map((f) => f.source.host ?? f.destination.host), ["node-b"]);
  assert.deepEqual(observeRequest(p.filter, false).request.whitelist, [{ source_identity: [1], node_name: ["node-b"] }, { destination_identity: [1], node_name: ["node-b"] }]);
  const bad = parseFilterArgs(["--host", "Node_B"]);
  assert.deepEqual(bad, { ok: false, error: '--host: "Node_B" is not a node name' });
});

test("Hubble's filters select what ours do (exactly, when the request says so)", () => {
  for (const args of cases) {
    const parsed = parseFilterArgs(args);
    assert.ok(parsed.ok, args.join(" "));
    const ours = flowPredicate(parsed.filter);
    const { request, exact } = observeRequest(parsed.filter, false);
    const compiled = compileFlowFilters(request.whitelist ?? []);
    assert.ok(compiled.ok, `${args.join(" ")}: ${compiled.ok ? "" : compiled.error}`);
    for (const [i, f] of flows.entries()) {
      const theirs = compiled.match(toHubbleFlow(f));
      if (ours(f)) assert.ok(theirs, `${args.join(" ")}: flow ${i} is ours but not Hubble's`);
      else if (exact) assert.ok(!theirs, `${args.join(" ")}: flow ${i} is Hubble's but not ours, in an exact request`);
    }
  }
});

test("exactness: an exact NS/POD or two flags on one side filter again, and --last is then applied by the client", () => {
  const req = (...a: string[]) => {
    const p = parseFilterArgs(a);
    assert.ok(p.ok);
    return observeRequest(p.filter, false, 1_000_000);
  };
  assert.deepEqual(req("--last", "5", "--pod", "web"), { exact: true, request: { whitelist: [{ source_pod: ["/web"] }, { destination_pod: ["/web"] }], number: 5, follow: false } });
  assert.deepEqual(req("--last", "5", "--pod", "shop/web-0").exact, false);
  assert.equal(req("--last", "5", "--pod", "shop/web-0").request.number, undefined);
  assert.equal(req("--from-pod", "a", "--namespace", "b").exact, false);
  assert.deepEqual(req("--since", "10s").request.since, { seconds: 990, nanos: 0 });
  // A follow without --since or --last replays the buffer first (Hubble's follow alone would not).
  const p = parseFilterArgs([]);
  assert.ok(p.ok);
  assert.deepEqual(observeRequest(p.filter, true).request, { since: { seconds: 1, nanos: 0 }, follow: true });
});
