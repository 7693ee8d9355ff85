import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { frontends, parseEndpointSlice, parseNodeAddresses, parseService, type ServiceSlice, type TranslatedService } from "./service-translation.ts";

const svc = (spec: Record<string, unknown>, name = "web"): unknown => ({ metadata: { namespace: "shop", name }, spec });
const slice = (body: Record<string, unknown>, name = "web-abc", service = "web"): unknown => ({
  metadata: { namespace: "shop", name, labels: { "kubernetes.io/service-name": service } },
  addressType: "IPv4",
  ...body,
});

function parsed<T>(r: { ok: true; value: T | undefined } | { ok: false; errors: readonly unknown[] }): T {
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(r.value !== undefined);
  return r.value;
}

describe("service translation table", () => {
  it("a ClusterIP port leads to the ready endpoints of the slice port with its name, at the slice's (resolved target) port", () => {
    const s = parsed(parseService(svc({ clusterIP: "10.96.0.20", clusterIPs: ["10.96.0.20"], ports: [{ name: "http", port: 80, targetPort: "web" }, { name: "dns", port: 53, protocol: "UDP" }] })));
    const sl = parsed(
      parseEndpointSlice(
        slice({
          ports: [{ name: "http", port: 8080, protocol: "TCP" }, { name: "dns", port: 5353, protocol: "UDP" }],
          endpoints: [
            { addresses: ["10.244.1.9"], conditions: { ready: true } },
            { addresses: ["10.244.1.3"] },
            { addresses: ["10.244.1.7"], conditions: { ready: false } },
          ],
        }),
      ),
    );
    assert.deepEqual(frontends([s], [sl]), [
      { namespace: "shop", service: "web", portName: "http", address: "10.96.0.20", port: 80, protocol: "TCP", backends: [{ address: "10.244.1.3", port: 8080 }, { address: "10.244.1.9", port: 8080 }] },
      { namespace: "shop", service: "web", portName: "dns", address: "10.96.0.20", port: 53, protocol: "UDP", backends: [{ address: "10.244.1.3", port: 5353 }, { address: "10.244.1.9", port: 5353 }] },
    ]);
  });

  it("a Service without ready endpoints keeps its frontend with no backend (the connect is refused, not sent to the ClusterIP)", () => {
    const s = parsed(parseService(svc({ clusterIP: "10.96.0.21", ports: [{ port: 80 }] })));
    const sl = parsed(parseEndpointSlice(slice({ ports: [{ port: 80 }], endpoints: [{ addresses: ["10.244.1.7"], conditions: { ready: false } }] })));
    assert.deepEqual(frontends([s], [sl]).map((f) => f.backends), [[]]);
    const empty = parsed(parseEndpointSlice(slice({ ports: null, endpoints: null })));
    assert.deepEqual(frontends([s], [empty]).map((f) => [f.address, f.port, f.backends.length]), [["10.96.0.21", 80, 0]]);
  });

  it("a Service no EndpointSlice names (endpoints kept elsewhere, as a local cluster's `kubernetes`) is left untranslated", () => {
    const s = parsed(parseService(svc({ clusterIP: "10.96.0.1", ports: [{ name: "https", port: 443 }] }, "kubernetes")));
    assert.deepEqual(frontends([s], []), []);
  });

  it("backends of several slices are merged without duplicates; another Service's slice does not count", () => {
    const s = parsed(parseService(svc({ clusterIP: "10.96.0.22", ports: [{ port: 80 }] })));
    const a = parsed(parseEndpointSlice(slice({ ports: [{ port: 8080 }], endpoints: [{ addresses: ["10.244.0.2"] }] }, "web-a")));
    const b = parsed(parseEndpointSlice(slice({ ports: [{ port: 8080 }], endpoints: [{ addresses: ["10.244.0.2"] }, { addresses: ["10.244.0.1"] }] }, "web-b")));
    const other = parsed(parseEndpointSlice(slice({ ports: [{ port: 8080 }], endpoints: [{ addresses: ["10.244.0.9"] }] }, "db-a", "db")));
    assert.deepEqual(frontends([s], [a, b, other])[0]!.backends, [{ address: "10.244.0.1", port: 8080 }, { address: "10.244.0.2", port: 8080 }]);
  });

  it("leaves alone what kube-proxy keeps: headless, ExternalName, SCTP ports; FQDN slices", () => {
    assert.deepEqual(parseService(svc({ clusterIP: "None", ports: [{ port: 80 }] })), { ok: true, value: undefined });
    assert.deepEqual(parseService(svc({ type: "ExternalName", externalName: "example.com" })), { ok: true, value: undefined });
    const dual = parsed(parseService(svc({ type: "NodePort", clusterIPs: ["fd00::10", "10.96.0.30"], ports: [{ port: 80, nodePort: 30080 }, { port: 9, protocol: "SCTP" }] })));
    assert.deepEqual(dual.clusterIPs, ["fd00::10", "10.96.0.30"]);
    assert.deepEqual(dual.ports, [{ name: "", port: 80, protocol: "TCP", nodePort: 30080 }]);
    assert.deepEqual(parseEndpointSlice({ ...(slice({}) as object), addressType: "FQDN" }), { ok: true, value: undefined });
  });

  it("IPv6 and dual-stack: each ClusterIP leads to the ready endpoints of its own family's slices, in numeric order", () => {
    const s = parsed(parseService(svc({ clusterIPs: ["fd00:96::20", "10.96.0.20"], ports: [{ name: "http", port: 80 }] })));
    const v6 = parsed(parseEndpointSlice(slice({ addressType: "IPv6", ports: [{ name: "http", port: 8080 }], endpoints: [{ addresses: ["fd00:244::10"] }, { addresses: ["fd00:244::9"] }, { addresses: ["fd00:244::1:0"], conditions: { ready: false } }] }, "web-v6")));
    const v4 = parsed(parseEndpointSlice(slice({ ports: [{ name: "http", port: 8080 }], endpoints: [{ addresses: ["10.244.0.10"] }, { addresses: ["10.244.0.9"] }] }, "web-v4")));
    assert.equal(v6.family, 6);
    assert.deepEqual(
      frontends([s], [v6, v4]).map((f) => [f.address, f.backends.map((b) => b.address)]),
      [
        ["fd00:96::20", ["fd00:244::9", "fd00:244::10"]],
        ["10.96.0.20", ["10.244.0.9", "10.244.0.10"]],
      ],
    );
    // No slice of a family yet (the IPv6 slice not written): that ClusterIP stays untranslated rather than refused.
    assert.deepEqual(frontends([s], [v4]).map((f) => f.address), ["10.96.0.20"]);
    const bad = parseEndpointSlice(slice({ addressType: "IPv6", ports: [{ port: 80 }], endpoints: [{ addresses: ["10.244.0.9"] }] }));
    assert.ok(!bad.ok);
    assert.deepEqual(bad.errors.map((e) => [e.path, e.message]), [["endpoints[0].addresses", "must be a list of IPv6 addresses (the slice's addressType)"]]);
  });

  it("a NodePort Service's node port leads, once per ClusterIP family, from the family's wildcard address to that family's backends; a ClusterIP Service's stray nodePort is not one", () => {
    const s = parsed(parseService(svc({ type: "NodePort", clusterIPs: ["10.96.0.50", "fd00:96::50"], ports: [{ port: 80, nodePort: 30080 }, { name: "dns", port: 53, protocol: "UDP", nodePort: 30053 }] })));
    const v4 = parsed(parseEndpointSlice(slice({ ports: [{ port: 8080 }, { name: "dns", port: 5353, protocol: "UDP" }], endpoints: [{ addresses: ["10.244.0.5"] }] }, "web-v4")));
    const v6 = parsed(parseEndpointSlice(slice({ addressType: "IPv6", ports: [{ port: 8080 }, { name: "dns", port: 5353, protocol: "UDP" }], endpoints: [{ addresses: ["fd00:244::5"] }] }, "web-v6")));
    assert.deepEqual(
      frontends([s], [v4, v6]).map((f) => `${f.address} ${f.port}/${f.protocol} -> ${f.backends.map((b) => `${b.address} ${b.port}`).join(",")}`),
      [
        "10.96.0.50 80/TCP -> 10.244.0.5 8080",
        "0.0.0.0 30080/TCP -> 10.244.0.5 8080",
        "10.96.0.50 53/UDP -> 10.244.0.5 5353",
        "0.0.0.0 30053/UDP -> 10.244.0.5 5353",
        "fd00:96::50 80/TCP -> fd00:244::5 8080",
        ":: 30080/TCP -> fd00:244::5 8080",
        "fd00:96::50 53/UDP -> fd00:244::5 5353",
        ":: 30053/UDP -> fd00:244::5 5353",
      ],
    );
    // An IPv4-only NodePort Service has no IPv6 node port (kube-proxy would not serve one either).
    const v4only = parsed(parseService(svc({ type: "NodePort", clusterIPs: ["10.96.0.50"], ports: [{ port: 80, nodePort: 30080 }] })));
    assert.deepEqual(frontends([v4only], [v4, v6]).map((f) => f.address), ["10.96.0.50", "0.0.0.0"]);
    assert.deepEqual(parsed(parseService(svc({ clusterIP: "10.96.0.51", ports: [{ port: 80, nodePort: 30081 }] }))).ports, [{ name: "", port: 80, protocol: "TCP" }]);
    const lb = parsed(parseService(svc({ type: "LoadBalancer", allocateLoadBalancerNodePorts: false, clusterIP: "10.96.0.52", ports: [{ port: 80 }] })));
    assert.deepEqual(lb.ports, [{ name: "", port: 80, protocol: "TCP" }]);
  });

  it("a Node's InternalIP and ExternalIP addresses of both families are where its node ports are dialled; its hostname is not", () => {
    const n = (addresses: unknown): unknown => ({ metadata: { name: "n1" }, status: { addresses } });
    assert.deepEqual(
      parsed(parseNodeAddresses(n([{ type: "InternalIP", address: "10.254.0.2" }, { type: "InternalIP", address: "fd00:10:254::2" }, { type: "Hostname", address: "n1" }, { type: "ExternalIP", address: "192.0.2.7" }]))),
      ["10.254.0.2", "fd00:10:254::2", "192.0.2.7"],
    );
    assert.deepEqual(parseNodeAddresses({ metadata: { name: "n2" } }), { ok: true, value: undefined });
    const bad = parseNodeAddresses(n([{ type: "InternalIP", address: "10.254.0.300" }]));
    assert.ok(!bad.ok);
    assert.deepEqual(bad.errors.map((e) => e.path), ["status.addresses[0].address"]);
  });

  it("bad input is refused naming the field", () => {
    const r = parseService(svc({ type: "NodePort", clusterIP: "10.96.0.300", ports: [{ port: 0 }, { port: 80, nodePort: 70000 }] }));
    assert.ok(!r.ok);
    assert.deepEqual(r.errors.map((e) => e.path), ["spec.clusterIPs[0]", "spec.ports[0].port", "spec.ports[1].nodePort"]);
    const e = parseEndpointSlice(slice({ ports: [{ port: 70000 }], endpoints: [{ addresses: ["fd00::1"] }] }));
    assert.ok(!e.ok);
    assert.deepEqual(e.errors.map((x) => x.path), ["ports[0].port", "endpoints[0].addresses"]);
  });

  it("a port only the slice names the same way is matched; unnamed matches unnamed", () => {
    const services: TranslatedService[] = [{ namespace: "a", name: "s", clusterIPs: ["10.96.0.40"], ports: [{ name: "", port: 80, protocol: "TCP" }, { name: "m", port: 81, protocol: "TCP" }] }];
    const slices: ServiceSlice[] = [{ namespace: "a", name: "s-1", service: "s", family: 4, ports: [{ name: "", port: 8080, protocol: "TCP" }], endpoints: [{ addresses: ["10.244.0.5"], ready: true }] }];
    assert.deepEqual(frontends(services, slices).map((f) => f.backends.map((b) => b.port)), [[8080], []]);
  });
});
