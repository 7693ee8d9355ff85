// `membrane policy trace`, the pure part: cluster objects → verdict and the rule that decides it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseTraceArgs, traceHostVerdict, traceVerdict, type TraceCluster, type TraceQuery } from "./trace.ts";
import { TRACE_CLUSTER } from "./trace.fixtures.ts";

const cluster = TRACE_CLUSTER;

function trace(q: Partial<TraceQuery> & Pick<TraceQuery, "from" | "to" | "port">, c: TraceCluster = cluster): string {
  const r = traceVerdict(c, { protocol: "TCP", ...q });
  if (!r.ok) throw new Error(r.error);
  return r.text;
}

test("an allow rule decides: the CNP and its rule path are named", () => {
  const text = trace({ from: "default/client", to: "shop/web", port: 80 });
  assert.match(text, /^default\/client -> shop\/web TCP\/80: ALLOWED\n/);
  assert.match(text, /decided by: CiliumNetworkPolicy shop\/allow-web spec\.ingress\[0\] \(ingress of shop\/web\)/);
  assert.match(text, /egress of default\/client: allow by no policy selects it/);
});

test("deny in a CCNP wins over the allow in the CNP for the same peer", () => {
  const text = trace({ from: "default/client", to: "shop/web", port: 8080 });
  assert.match(text, /TCP\/8080: DENIED\n/);
  assert.match(text, /decided by: CiliumClusterwideNetworkPolicy no-admin-port spec\.ingressDeny\[0\] \(ingress of shop\/web\)/);
});

test("a selected pod with no matching rule is default deny; the allowed peer passes", () => {
  const denied = trace({ from: "default/client", to: "shop/db", port: 5432 });
  assert.match(denied, /DENIED\ndecided by: default deny \(ingress of shop\/db\)/);
  const allowed = trace({ from: "shop/web", to: "shop/db", port: 5432 });
  assert.match(allowed, /ALLOWED\ndecided by: NetworkPolicy shop\/db-from-web spec\.ingress\[0\]/);
  assert.match(trace({ from: "shop/web", to: "shop/db", port: 5432, protocol: "UDP" }), /UDP\/5432: DENIED\ndecided by: default deny/);
});

test("no policy selecting either side allows; a cluster-wide deny selecting every pod makes ingress default deny", () => {
  const onlyNamespaced = { ...cluster, policies: cluster.policies.filter((p) => (p as { kind: string }).kind !== "CiliumClusterwideNetworkPolicy") };
  assert.match(trace({ from: "shop/web", to: "default/client", port: 443 }, onlyNamespaced), /ALLOWED\ndecided by: no policy selects it/);
  assert.match(trace({ from: "shop/web", to: "default/client", port: 443 }), /DENIED\ndecided by: default deny \(ingress of default\/client\)/);
});

test("missing pods and unparsable policies are errors, never a guessed verdict", () => {
  const missing = traceVerdict(cluster, { from: "default/ghost", to: "shop/web", port: 80, protocol: "TCP" });
  assert.deepEqual(missing, { ok: false, error: "--from: pod default/ghost not found" });
  const broken = traceVerdict(
    { ...cluster, policies: [...cluster.policies, { apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "bad", namespace: "shop" }, spec: { endpointSelector: {}, ingress: [{ toPorts: [{ ports: [{ port: "http-x", protocol: "TCPX" }] }] }] } }] },
    { from: "default/client", to: "shop/web", port: 80, protocol: "TCP" },
  );
  assert.equal(broken.ok, false);
  if (!broken.ok) assert.match(broken.error, /CiliumNetworkPolicy shop\/bad does not parse \(spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.protocol: /);
});

test("trace arguments: required flags, NS/POD form, port range and protocol are checked by name", () => {
  const ok = parseTraceArgs(["--from", "default/client", "--to=shop/web", "--port", "80", "--protocol", "udp"]);
  assert.deepEqual(ok, { ok: true, value: { from: "default/client", to: "shop/web", port: 80, protocol: "UDP", output: "text" } });
  const cases: [string[], RegExp][] = [
    [["--to", "a/b", "--port", "1"], /^--from: required/],
    [["--from", "client", "--to", "a/b", "--port", "1"], /^--from: "client" is not NS\/POD/],
    [["--from", "a/b", "--to", "a/b", "--port", "0"], /^--port: "0" is not a port/],
    [["--from", "a/b", "--to", "a/b", "--port", "80", "--protocol", "ICMP"], /^--protocol: "ICMP"/],
    [["--from", "a/b", "--bogus"], /^unknown flag --bogus/],
    [["--from"], /^--from: a value is required/],
  ];
  for (const [argv, want] of cases) {
    const r = parseTraceArgs(argv);
    assert.equal(r.ok, false, argv.join(" "));
    if (!r.ok) assert.match(r.error, want);
  }
});

test("a named port means the destination pod's containerPort of that name and protocol", () => {
  const web = { metadata: { name: "web2", namespace: "shop", labels: { app: "web2" } }, spec: { containers: [{ ports: [{ name: "http", containerPort: 8081 }, { name: "dns", containerPort: 53, protocol: "UDP" }] }] } };
  const np = {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { namespace: "shop", name: "web2-http" },
    spec: { podSelector: { matchLabels: { app: "web2" } }, ingress: [{ ports: [{ port: "http" }] }] },
  };
  const c: TraceCluster = { ...cluster, pods: [...cluster.pods, web], policies: [np] };
  assert.match(trace({ from: "default/client", to: "shop/web2", port: 8081 }, c), /TCP\/8081: ALLOWED\ndecided by: NetworkPolicy shop\/web2-http spec\.ingress\[0\]/);
  assert.match(trace({ from: "default/client", to: "shop/web2", port: 80 }, c), /TCP\/80: DENIED\ndecided by: default deny/);
  // The name is looked up with its protocol: "http" is a TCP port, so UDP 8081 is not it.
  assert.match(trace({ from: "default/client", to: "shop/web2", port: 8081, protocol: "UDP" }, c), /UDP\/8081: DENIED/);
});

test("toServices: the client's egress reaches the pod its Service's EndpointSlice lists, not another pod", () => {
  const withServices: TraceCluster = {
    ...cluster,
    pods: cluster.pods.map((p) => ({ ...p, status: { podIP: p.metadata.name === "db" ? "10.0.0.3" : p.metadata.name === "web" ? "10.0.0.2" : "10.0.0.1" } })),
    policies: [
      {
        apiVersion: "cilium.io/v2",
        kind: "CiliumNetworkPolicy",
        metadata: { name: "client-to-db", namespace: "default" },
        spec: { endpointSelector: { matchLabels: { app: "client" } }, egress: [{ toServices: [{ k8sService: { serviceName: "db", namespace: "shop" } }] }] },
      },
    ],
    services: [{ metadata: { name: "db", namespace: "shop" }, spec: { selector: { app: "db" } } }],
    endpointSlices: [{ metadata: { name: "db-1", namespace: "shop", labels: { "kubernetes.io/service-name": "db" } }, addressType: "IPv4", endpoints: [{ addresses: ["10.0.0.3"] }] }],
  };
  assert.match(trace({ from: "default/client", to: "shop/db", port: 5432 }, withServices), /ALLOWED\ndecided by: no policy selects it \(allow-all\) \(ingress of shop\/db\)\n {2}egress of default\/client: allow by CiliumNetworkPolicy default\/client-to-db spec\.egress\[0\]/);
  assert.match(trace({ from: "default/client", to: "shop/web", port: 80 }, withServices), /DENIED\ndecided by: default deny \(egress of default\/client\)/);
  assert.match(trace({ from: "default/client", to: "shop/db", port: 5432 }, { ...withServices, endpointSlices: [] }), /DENIED/, "no slice, no backend");
});

const hostCluster: TraceCluster = {
  ...cluster,
  nodes: [
    { metadata: { name: "n1", labels: { fw: "reference" } }, status: { addresses: [{ type: "InternalIP", address: "172.30.0.11" }, { type: "Hostname", address: "n1" }] } },
    { metadata: { name: "n2" }, status: { addresses: [{ type: "InternalIP", address: "172.30.0.12" }] } },
  ],
  pods: cluster.pods.map((p) => ({ ...p, spec: { nodeName: p.metadata.name === "client" ? "n1" : "n2" }, status: { podIP: p.metadata.name === "client" ? "10.1.0.5" : p.metadata.name === "web" ? "10.2.0.5" : "10.2.0.6" } })),
  policies: [
    ...cluster.policies,
    {
      apiVersion: "cilium.io/v2",
      kind: "CiliumClusterwideNetworkPolicy",
      metadata: { name: "host-reference" },
      spec: {
        nodeSelector: { matchLabels: { fw: "reference" } },
        ingress: [
          { fromCIDR: ["172.31.0.0/24"], toPorts: [{ ports: [{ port: "22", protocol: "TCP" }] }] },
          { fromEntities: ["remote-node"], toPorts: [{ ports: [{ port: "10250", protocol: "TCP" }] }] },
        ],
      },
    },
  ],
};

function hostTraceOf(argv: string[], c: TraceCluster = hostCluster): string {
  const a = parseTraceArgs([...argv]);
  if (!a.ok) throw new Error(a.error);
  assert.ok("host" in a.value, "a host trace");
  const r = traceHostVerdict(c, a.value.host);
  if (!r.ok) throw new Error(r.error);
  return r.text;
}

test("--to-node: the deciding host policy (CCNP nodeSelector) or default deny, with each program's step; addresses resolve to pods and nodes", () => {
  assert.match(hostTraceOf(["--from-ip", "172.31.0.5", "--to-node", "n1", "--port", "22"]), /^172\.31\.0\.5 -> node n1 TCP\/22: ALLOWED\ndecided by: CiliumClusterwideNetworkPolicy host-reference spec\.ingress\[0\] \(ingress of host of node n1\)\n/);
  assert.match(hostTraceOf(["--from-ip", "172.30.0.200", "--to-node", "n1", "--port", "22"]), /DENIED\ndecided by: default deny \(ingress of host of node n1\)/);
  // A node's address is the node: remote-node at n1, so the kubelet rule allows.
  assert.match(hostTraceOf(["--from-ip", "172.30.0.12", "--to-node", "n1", "--port", "10250"]), /^node n2 -> node n1 TCP\/10250: ALLOWED\ndecided by: CiliumClusterwideNetworkPolicy host-reference spec\.ingress\[1\]/);
  assert.match(hostTraceOf(["--from-node", "n2", "--to-ip", "172.30.0.11", "--port", "9999"]), /DENIED\ndecided by: default deny \(ingress of host of node n1\)\n {2}egress of host of node n2: allow by no policy selects it/);
  // A pod on the node itself goes through pod_to_host: the host's ingress is the first step.
  const own = hostTraceOf(["--from", "default/client", "--to-node", "n1", "--port", "22"]);
  assert.match(own, /DENIED\ndecided by: default deny \(ingress of host of node n1\)\n {2}ingress of host of node n1: deny by default deny \(peer default\/client \(identity 256\)\)\n {2}egress of default\/client: allow/);
  assert.match(hostTraceOf(["--from-node", "n1", "--to-node", "n2", "--port", "22"]), /ALLOWED\ndecided by: no policy selects it \(allow-all\) \(ingress of host of node n2\)/);
  assert.match(hostTraceOf(["--from-ip", "10.2.0.5", "--to-node", "n1", "--port", "22"]), /^shop\/web -> node n1/, "a pod's address is the pod");
  assert.match(hostTraceOf(["--from-ip", "172.30.0.200", "--to-node", "n1", "--port", "8472", "--protocol", "UDP"]), /DENIED/, "the overlay port is guarded for nodes only");
  assert.match(hostTraceOf(["--from-node", "n2", "--to-node", "n1", "--port", "8472", "--protocol", "UDP"]), /ALLOWED\ndecided by: the lock-out guard \(the overlay \(VXLAN\) between nodes\)/);
  assert.match(hostTraceOf(["--from-ip", "172.30.0.200", "--to-node", "n1", "--port", "6443", "--api-server-port", "6443"]), /ALLOWED\ndecided by: the lock-out guard/);
});

test("host trace arguments and errors name the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--from", "a/b", "--from-node", "n1", "--to-node", "n1", "--port", "1"], /^--from-node: only one of --from, --from-node, --from-ip/],
    [["--from-ip", "300.1.1.1", "--to-node", "n1", "--port", "1"], /^--from-ip: "300\.1\.1\.1" is not an IP address/],
    [["--from-ip", "1.1.1.1", "--port", "1"], /^--to: required \(or --to-node, --to-ip\)/],
    [["--from-ip", "1.1.1.1", "--to-node", "n1", "--port", "1", "--api-server-port", "x"], /^--api-server-port: "x" is not a port/],
    [["--from-node", "n1", "--to-ip", "1.1.1.1", "--port", "1", "--allow-localhost", "never"], /^--allow-localhost: "never" is not always or policy/],
  ];
  for (const [argv, want] of cases) {
    const r = parseTraceArgs(argv);
    assert.equal(r.ok, false, argv.join(" "));
    if (!r.ok) assert.match(r.error, want);
  }
  const a = parseTraceArgs(["--from-ip", "1.1.1.1", "--to-node", "ghost", "--port", "22"]);
  assert.ok(a.ok && "host" in a.value);
  if (a.ok && "host" in a.value) assert.deepEqual(traceHostVerdict(hostCluster, a.value.host), { ok: false, error: "--to-node: node ghost not found" });
});

// ----- an HTTP request after the L3/L4 verdict -----

/** The trace of one HTTP request (its text), from its flags as the CLI reads them. */
function traceHttp(argv: readonly string[], c: TraceCluster = cluster): string {
  const a = parseTraceArgs([...argv]);
  if (!a.ok) throw new Error(a.error);
  if ("host" in a.value) throw new Error("not a pod trace");
  const r = traceVerdict(c, a.value);
  if (!r.ok) throw new Error(r.error);
  return r.text;
}
const toApi = (...http: string[]) => traceHttp(["--from", "default/client", "--to", "shop/api", "--port", "80", ...http]);

test("an HTTP request on an ingress port with HTTP rules: the rule that allows it (policy, rule, toPorts entry, index), or 403 naming the rules tried", () => {
  assert.match(toApi("--http-method", "GET", "--http-path", "/public/ships"), /HTTP GET \/public\/ships: ALLOWED\n {2}egress of default\/client: not inspected \(no HTTP rules for TCP\/80\)\n {2}ingress of shop\/api: allowed by CiliumNetworkPolicy shop\/api-http spec\.ingress\[0\]\.toPorts\[0\]\.rules\.http\[0\]\n/);
  const denied = toApi("--http-method", "PUT", "--http-path", "/public/ships");
  assert.match(denied, /HTTP PUT \/public\/ships: DENIED \(403 Forbidden\)\n/);
  assert.match(denied, /ingress of shop\/api: denied: the L7 proxy answers 403 Forbidden \(no HTTP rule matches: CiliumNetworkPolicy shop\/api-http spec\.ingress\[0\]\.toPorts\[0\]\.rules\.http\[0\], CiliumNetworkPolicy shop\/api-http spec\.ingress\[0\]\.toPorts\[0\]\.rules\.http\[1\]\)/);
  assert.match(toApi("--http-method", "POST", "--http-path", "/orders", "--http-header", "X-Token: t1", "--http-host", "api.shop"), /HTTP POST \/orders \(Host: api\.shop\): ALLOWED\n[^]*rules\.http\[1\]\n/);
  assert.match(toApi("--http-method", "POST", "--http-path", "/orders", "--http-header", "X-Token: t2"), /HTTP POST \/orders: DENIED/, "the header's value must be the rule's");
});

test("an HTTP request on a port without HTTP rules is not inspected; a dropped connection's request is not reached", () => {
  const web = traceHttp(["--from", "default/client", "--to", "shop/web", "--port", "80", "--http-method", "DELETE", "--http-path", "/"]);
  assert.match(web, /HTTP DELETE \/: ALLOWED\n {2}egress of default\/client: not inspected[^\n]*\n {2}ingress of shop\/web: not inspected \(no HTTP rules for TCP\/80\)\n/);
  assert.match(traceHttp(["--from", "default/client", "--to", "shop/api", "--port", "8080", "--http-method", "GET", "--http-path", "/"]), /TCP\/8080: DENIED\n[^]*HTTP GET \/: not reached \(the connection is dropped\)\n$/);
});

test("an L4-only allow covering the client lifts the HTTP rules: every request allowed, naming the rule and the HTTP rules it makes moot", () => {
  const everyone = {
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "api-l4", namespace: "shop" },
    spec: { endpointSelector: { matchLabels: { app: "api" } }, ingress: [{ fromEntities: ["cluster"], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }] }] }] },
  };
  const text = traceHttp(["--from", "default/client", "--to", "shop/api", "--port", "80", "--http-method", "PUT", "--http-path", "/x"], { ...cluster, policies: [...cluster.policies, everyone] });
  assert.match(text, /HTTP PUT \/x: ALLOWED\n/);
  assert.match(text, /ingress of shop\/api: every request allowed: CiliumNetworkPolicy shop\/api-l4 spec\.ingress\[0\] allows TCP\/80 without L7 rules \(so CiliumNetworkPolicy shop\/api-http spec\.ingress\[0\]\.toPorts\[0\]\.rules\.http\[0\], [^)]*rules\.http\[1\] have no effect\)/);
});

test("egress HTTP rules judge the client's request on its side; JSON carries each side's verdict", () => {
  const egress = {
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "client-out", namespace: "default" },
    spec: { endpointSelector: { matchLabels: { app: "client" } }, egress: [{ toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "shop", app: "web" } }], toPorts: [{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET" }] } }] }] },
  };
  const c = { ...cluster, policies: [...cluster.policies, egress] };
  assert.match(traceHttp(["--from", "default/client", "--to", "shop/web", "--port", "80", "--http-method", "GET", "--http-path", "/"], c), /HTTP GET \/: ALLOWED\n {2}egress of default\/client: allowed by CiliumNetworkPolicy default\/client-out spec\.egress\[0\]\.toPorts\[0\]\.rules\.http\[0\]\n {2}ingress of shop\/web: not inspected/);
  const a = parseTraceArgs(["--from", "default/client", "--to", "shop/web", "--port", "80", "--http-method", "POST", "--http-path", "/"]);
  assert.ok(a.ok && !("host" in a.value));
  const r = a.ok && !("host" in a.value) ? traceVerdict(c, a.value) : undefined;
  assert.ok(r?.ok);
  assert.equal(r.http?.verdict, "deny");
  assert.equal(r.http?.egress?.kind, "denied");
  assert.equal(r.http?.ingress?.kind, "not-inspected");
  // Both sides with HTTP rules: on one node its proxy applies both; across nodes each node's proxy applies its side.
  const bothPolicies = [...c.policies, { ...egress, metadata: { name: "client-out-api", namespace: "default" }, spec: { ...egress.spec, egress: [{ ...egress.spec.egress[0], toEndpoints: [{ matchLabels: { "k8s:io.kubernetes.pod.namespace": "shop", app: "api" } }] }] } }];
  const bothArgs = ["--from", "default/client", "--to", "shop/api", "--port", "80", "--http-method", "GET", "--http-path", "/public/a"];
  const onNodes = (client: string, api: string): typeof c => ({ ...c, policies: bothPolicies, pods: c.pods.map((p) => ({ ...p, spec: { ...p.spec, nodeName: p.metadata.name === "client" ? client : api } })) });
  assert.match(traceHttp(bothArgs, onNodes("n1", "n1")), /note: both ends have HTTP rules for this flow: on one node its proxy applies default\/client's egress rules, then shop\/api's ingress rules\n/);
  assert.match(traceHttp(bothArgs, { ...c, policies: bothPolicies }), /on one node its proxy applies/, "nodes unknown: the one-node answer");
  assert.match(traceHttp(bothArgs, onNodes("n1", "n2")), /note: both ends have HTTP rules for this flow: the request passes default\/client's egress proxy on n1, then shop\/api's ingress proxy on n2\n/);
});

test("HTTP flags are checked by name", () => {
  const base = ["--from", "a/b", "--to", "c/d", "--port", "80"];
  const ok = parseTraceArgs([...base, "--http-method", "GET", "--http-path", "/x", "--http-header", "X-A: 1", "--http-header", "Host: h.example"]);
  assert.ok(ok.ok && !("host" in ok.value));
  if (ok.ok && !("host" in ok.value)) assert.deepEqual(ok.value.http, { method: "GET", path: "/x", host: "h.example", headers: [{ name: "x-a", value: "1" }, { name: "host", value: "h.example" }] });
  const cases: [string[], RegExp][] = [
    [[...base, "--http-path", "/x"], /^--http-method: required with --http-path/],
    [[...base, "--http-method", "GET"], /^--http-path: required with --http-method/],
    [[...base, "--http-method", "GE T", "--http-path", "/x"], /^--http-method: "GE T" is not an HTTP method/],
    [[...base, "--http-method", "GET", "--http-path", "x"], /^--http-path: "x" is not a request path/],
    [[...base, "--http-method", "GET", "--http-path", "/x", "--http-header", "NoColon"], /^--http-header: "NoColon" is not 'Name: value'/],
    [[...base, "--http-method", "GET", "--http-path", "/x", "--http-host", ""], /^--http-host: "" is not a host/],
    [[...base, "--protocol", "UDP", "--http-method", "GET", "--http-path", "/x"], /^--http-method: HTTP runs over TCP, not UDP/],
    [["--from", "a/b", "--to-node", "n1", "--port", "80", "--http-method", "GET", "--http-path", "/x"], /^--http-method: an HTTP request is traced between two pods/],
  ];
  for (const [argv, want] of cases) {
    const r = parseTraceArgs(argv);
    assert.equal(r.ok, false, argv.join(" "));
    if (!r.ok) assert.match(r.error, want);
  }
});

test("--from reserved:init: a pod whose identity is not known yet is judged by the init policy (Cilium's init CCNP allows UDP 53, the rest is default deny, with no policy too)", () => {
  const initPolicy = {
    apiVersion: "cilium.io/v2",
    kind: "CiliumClusterwideNetworkPolicy",
    metadata: { name: "init" },
    specs: [{ endpointSelector: { matchLabels: { "reserved:init": "" } }, ingress: [{ fromEntities: ["host"] }], egress: [{ toEntities: ["all"], toPorts: [{ ports: [{ port: "53", protocol: "UDP" }] }] }] }],
  };
  const c: TraceCluster = {
    namespaces: [{ metadata: { name: "kube-system" } }],
    pods: [{ metadata: { name: "kube-dns", namespace: "kube-system", labels: { "k8s-app": "kube-dns" } } }],
    policies: [initPolicy],
  };
  const dns = trace({ from: "reserved:init", to: "kube-system/kube-dns", port: 53, protocol: "UDP" }, c);
  assert.match(dns, /^reserved:init -> kube-system\/kube-dns UDP\/53: ALLOWED\n/);
  assert.match(dns, /egress of reserved:init: allow by CiliumClusterwideNetworkPolicy init specs\[0\]\.egress\[0\]/);
  assert.match(trace({ from: "reserved:init", to: "kube-system/kube-dns", port: 53, protocol: "TCP" }, c), /DENIED\ndecided by: default deny \(egress of reserved:init\)/);
  assert.match(trace({ from: "reserved:init", to: "kube-system/kube-dns", port: 53, protocol: "UDP" }, { ...c, policies: [] }), /DENIED\ndecided by: default deny \(egress of reserved:init\)/, "no init policy: closed");
  assert.match(trace({ from: "kube-system/kube-dns", to: "reserved:init", port: 8080 }, c), /DENIED\ndecided by: default deny \(ingress of reserved:init\)/);
  assert.deepEqual(parseTraceArgs(["--from", "reserved:init", "--to-node", "n1", "--port", "53"]), { ok: false, error: "--from/--to reserved:init: traced against a pod (NS/POD)" });
});
