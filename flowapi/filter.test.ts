// Flow filters: each flag selects what hubble's would, bad values name the flag, and the query string round-trips.
import { test } from "node:test";
import assert from "node:assert/strict";
import { flowPredicate, parseFilterArgs, type FlowFilter } from "./filter.ts";
import { dnsResponseFlow, dropFlow, endpoint, flow, httpRequestFlow } from "./testing/flows.ts";
import type { Flow } from "./flow.ts";

function filterOf(...argv: string[]): FlowFilter {
  const r = parseFilterArgs(argv);
  if (!r.ok) throw new Error(r.error);
  assert.deepEqual(r.rest, []);
  return r.filter;
}

const matches = (f: Flow, ...argv: string[]): boolean => flowPredicate(filterOf(...argv), Date.parse("2026-01-01T00:10:00Z"))(f);

const base = flow(); // default/client-1 (256) :40000 -> shop/web-0 (300) :80, TCP, FORWARDED policy-verdict
const other = flow({
  source: endpoint({ namespace: "ops", pod: "probe", identity: 400, labels: ["k8s:app=probe"], ip: "10.0.2.2", port: 5000 }),
  destination: endpoint({ namespace: "ops", pod: "db-1", identity: 401, labels: ["k8s:app=db"], ip: "10.0.2.3", port: 5432 }),
  protocol: "UDP",
});

test("--namespace matches source or destination namespace; repeated values are alternatives", () => {
  assert.ok(matches(base, "--namespace", "shop"));
  assert.ok(matches(base, "--namespace=default"));
  assert.ok(!matches(other, "--namespace", "shop"));
  assert.ok(matches(other, "--namespace", "shop", "--namespace", "ops"));
});

test("--pod matches either side, NS/POD exactly or a bare name as a prefix", () => {
  assert.ok(matches(base, "--pod", "shop/web-0"));
  assert.ok(matches(base, "--pod", "client"));
  assert.ok(!matches(base, "--pod", "default/web-0"));
  assert.ok(!matches(base, "--pod", "db"));
});

test("--from-pod and --to-pod look only at their side", () => {
  assert.ok(matches(base, "--from-pod", "default/client-1"));
  assert.ok(!matches(base, "--from-pod", "shop/web-0"));
  assert.ok(matches(base, "--to-pod", "shop/web-0"));
  assert.ok(!matches(base, "--to-pod", "default/client-1"));
});

test("--label matches a label of either side, with or without a source, by key or key=value", () => {
  assert.ok(matches(base, "--label", "app=web"));
  assert.ok(matches(base, "--label", "k8s:app=client"));
  assert.ok(matches(base, "--label", "app"));
  assert.ok(!matches(base, "--label", "app=db"));
  assert.ok(!matches(base, "--label", "reserved:app=web"));
});

test("--identity, --port and --protocol match either side / the flow", () => {
  assert.ok(matches(base, "--identity", "300"));
  assert.ok(!matches(base, "--identity", "401"));
  assert.ok(matches(base, "--port", "80"));
  assert.ok(matches(base, "--port", "40000"));
  assert.ok(!matches(base, "--port", "443"));
  assert.ok(matches(base, "--protocol", "tcp"));
  assert.ok(!matches(other, "--protocol", "TCP"));
});

test("--verdict and --type select drops and verdict kinds", () => {
  assert.ok(matches(dropFlow(), "--verdict", "DROPPED"));
  assert.ok(!matches(base, "--verdict", "dropped"));
  assert.ok(matches(dropFlow(), "--type", "drop"));
  assert.ok(matches(base, "--type", "policy-verdict"));
  assert.ok(!matches(base, "--type", "trace"));
});

test("--since takes a duration before now or an RFC 3339 time", () => {
  const old = flow({ time: "2026-01-01T00:00:00.000Z" });
  const recent = flow({ time: "2026-01-01T00:09:30.000Z" });
  assert.ok(matches(recent, "--since", "1m"));
  assert.ok(!matches(old, "--since", "1m"));
  assert.ok(matches(old, "--since", "2025-12-31T23:00:00Z"));
  assert.ok(!matches(old, "--since", "2026-01-01T00:05:00Z"));
});

test("--workload matches either side's workload by name, kind/name or kind/", () => {
  const deployed = flow({ destination: endpoint({ namespace: "shop", pod: "web-7f9-x", workloads: [{ kind: "Deployment", name: "web" }] }) });
  assert.equal(matches(deployed, "--workload", "web"), true);
  assert.equal(matches(deployed, "--workload", "Deployment/web"), true);
  assert.equal(matches(deployed, "--workload", "Deployment/"), true);
  assert.equal(matches(deployed, "--workload", "StatefulSet/web"), false);
  assert.equal(matches(base, "--workload", "web"), false, "pods without a workload");
  const bad = parseFilterArgs(["--workload", "a/b/c"]);
  assert.deepEqual(bad, { ok: false, error: '--workload: "a/b/c" is not NAME, KIND/NAME or KIND/' });
});

test("different flags must all hold", () => {
  assert.ok(matches(dropFlow(), "--verdict", "DROPPED", "--to-pod", "shop/web-0", "--port", "80"));
  assert.ok(!matches(dropFlow(), "--verdict", "DROPPED", "--to-pod", "shop/web-1"));
});

test("--last is kept for the caller; other arguments come back in rest", () => {
  const r = parseFilterArgs(["-f", "--last", "3", "--server", "x"]);
  assert.ok(r.ok);
  assert.equal(r.filter.last, 3);
  assert.deepEqual(r.rest, ["-f", "--server", "x"]);
});

test("bad values are errors that name the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--verdict", "MAYBE"], /^--verdict: "MAYBE" is not FORWARDED or DROPPED/],
    [["--port", "70000"], /^--port: "70000" is not a port/],
    [["--identity", "-1"], /^--identity: /],
    [["--type", "l8"], /^--type: "l8" is not one of/],
    [["--protocol", "GRE"], /^--protocol: /],
    [["--since", "yesterday"], /^--since: /],
    [["--last", "0"], /^--last: "0" is not a positive count/],
    [["--pod", "a/b/c"], /^--pod: "a\/b\/c" is not NS\/POD or POD/],
    [["--label", "=x"], /^--label: /],
    [["--namespace"], /^--namespace: needs a value/],
  ];
  for (const [argv, want] of cases) {
    const r = parseFilterArgs(argv);
    assert.equal(r.ok, false, argv.join(" "));
    if (!r.ok) assert.match(r.error, want);
  }
});

test("L7 flags select the proxies' flows as Hubble's do: --type l7, --protocol DNS/HTTP, --http-method, --http-path, --http-status, --dns-query", () => {
  const request = httpRequestFlow({ l7: { type: "REQUEST", http: { method: "PUT", url: "http://web.shop/v1/exhaust-port?x=1", protocol: "HTTP/1.1" } } });
  const response = httpRequestFlow({ l7: { type: "RESPONSE", latencyNs: 5, http: { method: "PUT", url: "http://web.shop/v1/exhaust-port?x=1", protocol: "HTTP/1.1", code: 403 } } });
  const answer = dnsResponseFlow();
  assert.equal(matches(request, "--type", "l7"), true);
  assert.equal(matches(base, "--type", "l7"), false);
  assert.equal(matches(request, "--protocol", "http"), true);
  assert.equal(matches(request, "--protocol", "TCP"), true, "an L7 flow keeps its L4");
  assert.equal(matches(answer, "--protocol", "DNS"), true);
  assert.equal(matches(answer, "--protocol", "HTTP"), false);
  assert.equal(matches(request, "--http-method", "put"), true);
  assert.equal(matches(request, "--http-method", "GET"), false);
  assert.equal(matches(request, "--http-path", "^/v1/exhaust-port$"), true, "the path without the query");
  assert.equal(matches(base, "--http-path", "."), false);
  assert.equal(matches(response, "--http-status", "4+"), true);
  assert.equal(matches(response, "--http-status", "403"), true);
  assert.equal(matches(request, "--http-status", "4+"), false, "a request has no status");
  assert.equal(matches(answer, "--dns-query", "^api[.]example"), true);
  assert.equal(matches(request, "--dns-query", "."), false);
  for (const [argv, error] of [
    [["--http-status", "600"], /^--http-status: "600" is not a status code/],
    [["--http-path", "("], /^--http-path: "\(" is not a regular expression/],
    [["--dns-query", "[x"], /^--dns-query: "\[x" is not a regular expression/],
    [["--http-method", "GE T"], /^--http-method: "GE T" is not an HTTP method/],
  ] as const) {
    const r = parseFilterArgs([...argv]);
    assert.ok(!r.ok && error.test(r.error), `${argv.join(" ")}: ${r.ok ? "accepted" : r.error}`);
  }
});

test("--fqdn, --from-fqdn, --to-fqdn match the names the node's proxy learned for an address, as Hubble's patterns", () => {
  const named = flow({ direction: "egress", destination: endpoint({ ip: "140.82.112.6", port: 443, names: ["api.github.com"] }) });
  assert.equal(matches(named, "--to-fqdn", "*.github.com"), true);
  assert.equal(matches(named, "--to-fqdn", "github.com"), false, "the whole name");
  assert.equal(matches(named, "--fqdn", "api.github.com."), true);
  assert.equal(matches(named, "--from-fqdn", "*"), false, "the source has no names");
  assert.equal(matches(base, "--fqdn", "*"), false);
  const bad = parseFilterArgs(["--to-fqdn", "api github"]);
  assert.equal(bad.ok ? "" : bad.error, '--to-fqdn: "api github" is not an FQDN pattern: only letters, digits, "-", "_", "." and "*" are allowed');
});

test("--node-label selects the flows of nodes whose labels a Kubernetes selector selects; a bad selector names the flag", () => {
  const zoned = flow({ nodeLabels: ["kubernetes.io/hostname=node-a", "topology.kubernetes.io/zone=zone-a"] });
  assert.equal(matches(zoned, "--node-label", "topology.kubernetes.io/zone=zone-a"), true);
  assert.equal(matches(zoned, "--node-label", "topology.kubernetes.io/zone in (zone-b, zone-c)"), false);
  assert.equal(matches(zoned, "--node-label", "topology.kubernetes.io/zone notin (zone-b), kubernetes.io/hostname"), true);
  assert.equal(matches(base, "--node-label", "kubernetes.io/hostname"), false, "a flow without node labels");
  const bad = parseFilterArgs(["--node-label", "zone in"]);
  assert.match(bad.ok ? "" : bad.error, /^--node-label: "zone in": /);
});
