import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { frontends, parseEndpointSlice, parseService, type ServiceSlice, type TranslatedService } from "./service-translation.ts";

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

  it("leaves alone what kube-proxy keeps: headless, ExternalName, SCTP ports, NodePorts; FQDN slices", () => {
    assert.deepEqual(parseService(svc({ clusterIP: "None", ports: [{ port: 80 }] })), { ok: true, value: undefined });
    assert.deepEqual(parseService(svc({ type: "ExternalName", externalName: "example.com" })), { ok: true, value: undefined });
    const dual = parsed(parseService(svc({ type: "NodePort", clusterIPs: ["fd00::10", "10.96.0.30"], ports: [{ port: 80, nodePort: 30080 }, { port: 9, protocol: "SCTP" }] })));
    assert.deepEqual(dual.clusterIPs, ["fd00::10", "10.96.0.30"]);
    assert.deepEqual(dual.ports, [{ name: "", port: 80, protocol: "TCP" }]);
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

  it("bad input is refused naming the field", () => {
    const r = parseService(svc({ clusterIP: "10.96.0.300", ports: [{ port: 0 }] }));
    assert.ok(!r.ok);
    assert.deepEqual(r.errors.map((e) => e.path), ["spec.clusterIPs[0]", "spec.ports[0].port"]);
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
