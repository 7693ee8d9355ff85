// Hubble's FlowFilter semantics on Hubble-shaped flows: selectors, pods, ports, reply, blacklists, and refused fields.
import { test } from "node:test";
import assert from "node:assert/strict";
import { compileFlowFilters, UNSUPPORTED_FIELDS } from "./filter.ts";
import type { HubbleFlow, HubbleFlowFilter } from "./types.ts";

const f = (over: Partial<HubbleFlow> = {}): HubbleFlow => ({
  time: { seconds: 1, nanos: 0 },
  verdict: "FORWARDED",
  IP: { source: "10.0.0.1", destination: "10.0.1.5", ipVersion: "IPv4" },
  l4: { TCP: { source_port: 40000, destination_port: 80 } },
  source: { identity: 256, namespace: "default", pod_name: "xwing-1", labels: ["k8s:class=xwing", "k8s:org=alliance"] },
  destination: { identity: 300, namespace: "empire", pod_name: "deathstar-0", labels: ["k8s:class=deathstar", "reserved:x"] },
  Type: "L3_L4",
  node_name: "kind-worker",
  event_type: { type: 5, sub_type: 0 },
  traffic_direction: "INGRESS",
  is_reply: { value: false },
  ...over,
});

const matches = (wl: HubbleFlowFilter[], flow: HubbleFlow, bl: HubbleFlowFilter[] = []): boolean => {
  const c = compileFlowFilters(wl, bl);
  assert.ok(c.ok, c.ok ? "" : c.error);
  return c.match(flow);
};

test("label selectors: source prefixes, bare keys of any source, !=, in, notin, !key, and AND within one selector", () => {
  assert.equal(matches([{ source_label: ["class=xwing"] }], f()), true);
  assert.equal(matches([{ source_label: ["k8s:class=xwing"] }], f()), true);
  assert.equal(matches([{ source_label: ["reserved:class=xwing"] }], f()), false);
  assert.equal(matches([{ source_label: ["class=xwing,org=empire"] }], f()), false);
  assert.equal(matches([{ source_label: ["class=xwing, org in (alliance, rebels)"] }], f()), true);
  assert.equal(matches([{ source_label: ["org notin (alliance)"] }], f()), false);
  assert.equal(matches([{ source_label: ["!org"] }], f()), false);
  assert.equal(matches([{ destination_label: ["reserved:x"] }], f()), true);
  assert.equal(matches([{ destination_label: ["class!=xwing"] }], f()), true);
});

test("pods: NS/PREFIX, NS/ (any pod of NS), and a bare name in namespace default, as Hubble", () => {
  assert.equal(matches([{ source_pod: ["default/xwing"] }], f()), true);
  assert.equal(matches([{ source_pod: ["xwing"] }], f()), true);
  assert.equal(matches([{ destination_pod: ["deathstar"] }], f()), false); // "deathstar" means default/deathstar
  assert.equal(matches([{ destination_pod: ["empire/"] }], f()), true);
});

test("filters in one FlowFilter all hold; whitelist filters are alternatives; a blacklist match excludes", () => {
  assert.equal(matches([{ source_pod: ["default/"], destination_port: ["80"] }], f()), true);
  assert.equal(matches([{ source_pod: ["default/"], destination_port: ["81"] }], f()), false);
  assert.equal(matches([{ destination_port: ["81"] }, { source_port: ["40000"] }], f()), true);
  assert.equal(matches([], f(), [{ verdict: ["FORWARDED"] }]), false);
  assert.equal(matches([], f(), [{ verdict: ["DROPPED"] }]), true);
});

test("reply: a drop whose reply-ness is unknown counts as not a reply; a forwarded flow without it matches neither", () => {
  const { is_reply: _, ...noReply } = f();
  assert.equal(matches([{ reply: [false] }], { ...noReply, verdict: "DROPPED" }), true);
  assert.equal(matches([{ reply: [false] }], noReply), false);
  assert.equal(matches([{ reply: [true] }], f()), false);
});

test("node names: patterns with * and an optional cluster part", () => {
  assert.equal(matches([{ node_name: ["kind-*"] }], f()), true);
  assert.equal(matches([{ node_name: ["default/kind-worker"] }], f()), true);
  assert.equal(matches([{ node_name: ["other/kind-worker"] }], f()), false);
  assert.equal(matches([{ node_name: ["kind"] }], f()), false);
});

test("every field Membrane cannot honour is refused naming it; bad values name the field too", () => {
  for (const field of Object.keys(UNSUPPORTED_FIELDS)) {
    const c = compileFlowFilters([{}, { [field]: ["x"] }]);
    assert.equal(c.ok, false, field);
    if (!c.ok) assert.equal(c.field, `whitelist[1].${field}`);
  }
  const cel = compileFlowFilters([], [{ experimental: { cel_expression: ["true"] } }]);
  assert.equal(cel.ok ? "" : cel.field, "blacklist[0].experimental.cel_expression");
  const port = compileFlowFilters([{ source_port: ["http"] }]);
  assert.equal(port.ok ? "" : port.error, 'whitelist[0].source_port: "http" is not a port (0-65535)');
  const proto = compileFlowFilters([{ protocol: ["quic"] }]);
  assert.match(proto.ok ? "" : proto.error, /^whitelist\[0\]\.protocol: "quic" is not one of/);
  const sel = compileFlowFilters([{ source_label: ["a in b"] }]);
  assert.match(sel.ok ? "" : sel.error, /^whitelist\[0\]\.source_label: "a in b"/);
});

test("workloads: a name, a kind/name, a kind alone (Deployment/), on the side asked; an endpoint without workloads matches none", () => {
  const withWorkloads = f({
    source: { ...f().source, workloads: [{ kind: "Deployment", name: "xwing" }] },
    destination: { ...f().destination, workloads: [{ kind: "StatefulSet", name: "deathstar" }] },
  });
  assert.equal(matches([{ source_workload: [{ name: "xwing" }] }], withWorkloads), true);
  assert.equal(matches([{ source_workload: [{ kind: "Deployment", name: "xwing" }] }], withWorkloads), true);
  assert.equal(matches([{ source_workload: [{ kind: "StatefulSet", name: "xwing" }] }], withWorkloads), false);
  assert.equal(matches([{ source_workload: [{ kind: "Deployment", name: "" }] }], withWorkloads), true);
  assert.equal(matches([{ destination_workload: [{ name: "xwing" }, { kind: "StatefulSet" }] }], withWorkloads), true);
  assert.equal(matches([{ destination_workload: [{ name: "xwing" }] }], withWorkloads), false);
  assert.equal(matches([{ source_workload: [{ name: "xwing" }] }], f()), false);
  const bad = compileFlowFilters([{ source_workload: ["xwing"] }]);
  assert.equal(bad.ok ? "" : bad.error, "whitelist[0].source_workload[0]: must be a Workload ({kind, name})");
});

test("tcp_flags: a TCP flow matches an entry whose every flag it has (SYN matches SYN-ACK); entries are alternatives; a flow without flags matches none", () => {
  const synAck = f({ l4: { TCP: { source_port: 80, destination_port: 40000, flags: { SYN: true, ACK: true } } } });
  const syn = f({ l4: { TCP: { source_port: 40000, destination_port: 80, flags: { SYN: true } } } });
  assert.equal(matches([{ tcp_flags: [{ SYN: true }] }], synAck), true);
  assert.equal(matches([{ tcp_flags: [{ SYN: true, ACK: true }] }], syn), false);
  assert.equal(matches([{ tcp_flags: [{ RST: true }, { SYN: true, ACK: true }] }], synAck), true);
  assert.equal(matches([{ tcp_flags: [{ SYN: true }] }], f()), false);
  const bad = compileFlowFilters([{ tcp_flags: [{ SYNACK: true }] }]);
  assert.match(bad.ok ? "" : bad.error, /^whitelist\[0\]\.tcp_flags\[0\]\.SYNACK: not a TCP flag/);
});

test("cluster names: an endpoint's cluster (from its identity's cluster label) must be one of those named; an empty name is refused", () => {
  const flowIn = (cluster: string | undefined) => f({ source: { ...f().source, ...(cluster !== undefined ? { cluster_name: cluster } : {}) } });
  assert.equal(matches([{ source_cluster_name: ["default"] }], flowIn("default")), true);
  assert.equal(matches([{ source_cluster_name: ["other", "default"] }], flowIn("default")), true);
  assert.equal(matches([{ source_cluster_name: ["other"] }], flowIn("default")), false);
  assert.equal(matches([{ source_cluster_name: ["default"] }], flowIn(undefined)), false, "the world has no cluster");
  assert.equal(matches([{ destination_cluster_name: ["default"] }], flowIn("default")), false);
  const bad = compileFlowFilters([{ destination_cluster_name: [""] }]);
  assert.equal(bad.ok ? "" : bad.error, "whitelist[0].destination_cluster_name: a name must not be empty");
});

test("L7 fields as Hubble reads them: status code or prefix on responses, method in any case, path and URL regexes, headers, DNS query regexes, protocol dns/http", () => {
  const http = (type: "REQUEST" | "RESPONSE", code?: number): HubbleFlow =>
    f({ Type: "L7", event_type: { type: 129, sub_type: 0 }, l7: { type, http: { method: "PUT", url: "http://deathstar.default/v1/exhaust-port?x=1", protocol: "HTTP/1.1", ...(code ? { code } : {}), headers: [{ key: "x-has-force", value: "true" }] } } });
  const dns = f({ Type: "L7", event_type: { type: 129, sub_type: 0 }, l4: { UDP: { source_port: 5353, destination_port: 53 } }, l7: { type: "REQUEST", dns: { query: "api.example.com.", qtypes: ["A"] } } });
  const response = http("RESPONSE", 403);
  assert.equal(matches([{ http_status_code: ["403"] }], response), true);
  assert.equal(matches([{ http_status_code: ["4+"] }], response), true);
  assert.equal(matches([{ http_status_code: ["40+"] }], response), true);
  assert.equal(matches([{ http_status_code: ["5+", "200"] }], response), false);
  assert.equal(matches([{ http_status_code: ["4+"] }], http("REQUEST")), false, "a request has no status");
  assert.equal(matches([{ http_method: ["put"] }], http("REQUEST")), true);
  assert.equal(matches([{ http_method: ["GET"] }], http("REQUEST")), false);
  assert.equal(matches([{ http_path: ["^/v1/exhaust-port$"] }], response), true, "the path without the query");
  assert.equal(matches([{ http_path: ["exhaust"] }], response), true, "unanchored, as Go's MatchString");
  assert.equal(matches([{ http_path: ["^/v2"] }], response), false);
  assert.equal(matches([{ http_url: ["^http://deathstar[.]default/.*x=1$"] }], response), true);
  assert.equal(matches([{ http_header: [{ key: "x-has-force", value: "true" }] }], response), true);
  assert.equal(matches([{ http_header: [{ key: "x-has-force", value: "false" }] }], response), false);
  assert.equal(matches([{ dns_query: ["^api\\.example\\.com\\.$"] }], dns), true);
  assert.equal(matches([{ dns_query: ["evil"] }], dns), false);
  assert.equal(matches([{ dns_query: ["api"] }], response), false, "not a DNS record");
  assert.equal(matches([{ http_method: ["PUT"] }], f()), false, "an L3/L4 flow has no HTTP record");
  assert.equal(matches([{ protocol: ["http"] }], response), true);
  assert.equal(matches([{ protocol: ["dns"] }], response), false);
  assert.equal(matches([{ protocol: ["dns"] }], dns), true);
  assert.equal(matches([{ protocol: ["udp"] }], dns), true, "an L7 flow keeps its L4");
  assert.equal(matches([{ event_type: [{ type: 129 }], http_status_code: ["403"] }], response), true);
  const err = (ff: HubbleFlowFilter): string => {
    const c = compileFlowFilters([ff]);
    return c.ok ? "" : c.error;
  };
  assert.equal(err({ http_status_code: ["99"] }), 'whitelist[0].http_status_code: "99" is not a status code (404) or a prefix of one (4+, 40+)');
  assert.equal(err({ event_type: [{ type: 1 }], http_method: ["GET"] }), "whitelist[0].http_method: filtering by http method requires the event type filter to match 'l7' events");
  assert.match(err({ http_path: ["("] }), /^whitelist\[0\]\.http_path: "\(" is not a regular expression/);
  assert.match(err({ dns_query: ["[a"] }), /^whitelist\[0\]\.dns_query: "\[a" is not a regular expression/);
});

test("FQDN filters as Hubble's: a name of the address matches a pattern whole, any case, trailing dot optional, * spans labels; no names match none", () => {
  const named = f({ source_names: ["ci.internal.test"], destination_names: ["api.github.com", "github.com"] });
  assert.equal(matches([{ destination_fqdn: ["api.github.com"] }], named), true);
  assert.equal(matches([{ destination_fqdn: ["API.GitHub.com."] }], named), true, "case and the trailing dot do not matter");
  assert.equal(matches([{ destination_fqdn: ["*.github.com"] }], named), true);
  assert.equal(matches([{ destination_fqdn: ["*"] }], named), true);
  assert.equal(matches([{ destination_fqdn: ["*.com"] }], f({ destination_names: ["a.b.example.com"] })), true, "* spans dots, unlike a DNS rule's matchPattern");
  assert.equal(matches([{ destination_fqdn: ["github"] }], named), false, "the whole name, not a part");
  assert.equal(matches([{ destination_fqdn: ["api.github.co"] }], named), false);
  assert.equal(matches([{ destination_fqdn: ["apixgithub.com"] }], named), false, "a dot is a dot");
  assert.equal(matches([{ source_fqdn: ["*.github.com"] }], named), false, "the side asked");
  assert.equal(matches([{ source_fqdn: ["ci.*", "nothing.test"] }], named), true, "patterns are alternatives");
  assert.equal(matches([{ destination_fqdn: ["*"] }], f()), false, "an address without names");
  const bad = compileFlowFilters([{ destination_fqdn: ["api.github.com/x"] }]);
  assert.match(bad.ok ? "" : bad.error, /^whitelist\[0\]\.destination_fqdn: "api\.github\.com\/x" is not an FQDN pattern/);
});

test("node_labels: a label selector on the observing node's labels (key=value, no source), selectors are alternatives; a flow without node labels has none", () => {
  const zoned = f({ node_labels: ["kubernetes.io/hostname=kind-worker", "topology.kubernetes.io/zone=zone-a"] });
  assert.equal(matches([{ node_labels: ["topology.kubernetes.io/zone=zone-a"] }], zoned), true);
  assert.equal(matches([{ node_labels: ["topology.kubernetes.io/zone in (zone-b, zone-a), kubernetes.io/hostname"] }], zoned), true);
  assert.equal(matches([{ node_labels: ["topology.kubernetes.io/zone=zone-b"] }], zoned), false);
  assert.equal(matches([{ node_labels: ["topology.kubernetes.io/zone=zone-b", "kubernetes.io/hostname=kind-worker"] }], zoned), true);
  assert.equal(matches([{ node_labels: ["topology.kubernetes.io/zone"] }], f()), false);
  assert.equal(matches([{ node_labels: ["!topology.kubernetes.io/zone"] }], f()), true, "as a Kubernetes selector on no labels");
  const bad = compileFlowFilters([{ node_labels: ["zone in"] }]);
  assert.match(bad.ok ? "" : bad.error, /^whitelist\[0\]\.node_labels: "zone in"/);
});

test("interface, encrypted, trace_id as Hubble's: an entry's index and name (either may be unset), IP.encrypted (absent is false), the trace id exactly", () => {
  const seen = f({ interface: { index: 12, name: "lxc12" }, IP: { ...f().IP, encrypted: true }, trace_context: { parent: { trace_id: "4bf92f3577b34da6a3ce929d0e0e4736" } } });
  assert.equal(matches([{ interface: [{ name: "lxc12" }] }], seen), true);
  assert.equal(matches([{ interface: [{ index: 12 }] }], seen), true);
  assert.equal(matches([{ interface: [{ index: 12, name: "eth0" }, { index: 3 }] }], seen), false);
  assert.equal(matches([{ interface: [{ name: "lxc12" }] }], f()), false, "a flow without a device");
  assert.equal(matches([{ encrypted: [true] }], seen), true);
  assert.equal(matches([{ encrypted: [false] }], seen), false);
  assert.equal(matches([{ encrypted: [false] }], f()), true);
  assert.equal(matches([{ trace_id: ["4bf92f3577b34da6a3ce929d0e0e4736"] }], seen), true);
  assert.equal(matches([{ trace_id: ["4bf92f35"] }], seen), false, "not a prefix");
  assert.equal(matches([{ trace_id: ["4bf92f3577b34da6a3ce929d0e0e4736"] }], f()), false);
  const bad = compileFlowFilters([{ encrypted: ["yes"] }]);
  assert.equal(bad.ok ? "" : bad.error, "whitelist[0].encrypted[0]: must be true or false");
});
