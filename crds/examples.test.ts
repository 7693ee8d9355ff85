// Offline validation of the example policies and the invalid fixtures against the CRD schemas (Ajv).
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  CILIUM_DOCS_DIR,
  INVALID_CASES,
  type KubeObject,
  ciliumDocsExamples,
  seedExamples,
  tetragonDocsExamples,
} from "./fixtures.ts";
import { fieldPath, isCIDR, validateObject } from "./validate.ts";

function withPort(port: unknown): KubeObject {
  return {
    apiVersion: "cilium.io/v2",
    kind: "CiliumNetworkPolicy",
    metadata: { name: "p" },
    spec: { endpointSelector: {}, egress: [{ toPorts: [{ ports: [{ port }] }] }] },
  };
}

/** True when an error names `path` itself or a field below it. */
function names(errors: { path: string }[], path: string): boolean {
  return errors.some(
    (e) => e.path === path || e.path.startsWith(`${path}.`) || e.path.startsWith(`${path}[`),
  );
}

describe("example policies", () => {
  it("the seed holds the three examples of issue 2: a CNP, a CCNP and a TracingPolicy", () => {
    const seeds = seedExamples().map((e) => `${e.object.kind}/${e.object.metadata.name}`);
    assert.deepEqual(seeds, [
      "CiliumNetworkPolicy/l7-visibility-tls",
      "CiliumClusterwideNetworkPolicy/default-deny-all",
      "TracingPolicy/monitor-sensitive-files",
    ]);
  });

  for (const example of [...seedExamples(), ...ciliumDocsExamples(), ...tetragonDocsExamples()]) {
    it(`${example.source} validates against its CRD schema`, () => {
      assert.deepEqual(validateObject(example.object), []);
    });
  }

  it("the documentation fixtures are 15+ files, each named after its object and opening with what it means", () => {
    const files = readdirSync(CILIUM_DOCS_DIR).filter((f) => f.endsWith(".yaml"));
    assert.ok(files.length >= 15, `${files.length} files`);
    for (const f of files) {
      const text = readFileSync(join(CILIUM_DOCS_DIR, f), "utf8");
      assert.match(text, /^# \S.{10,}\n/, `${f} starts with a one-line comment`);
    }
    for (const e of ciliumDocsExamples())
      assert.equal(`cilium-docs/${e.object.metadata.name}.yaml`, e.source);
  });

  it("the documentation fixtures cover every part of the policy language", () => {
    const all = JSON.stringify(ciliumDocsExamples().map((e) => e.object));
    const features = [
      '"fromEndpoints"',
      '"toEndpoints"',
      '"matchExpressions"',
      '"fromRequires"',
      '"fromEntities"',
      '"toEntities"',
      '"toCIDR"',
      '"toCIDRSet"',
      '"except"',
      '"cidrGroupRef"',
      '"fromCIDRSet"',
      '"k8sService"',
      '"k8sServiceSelector"',
      '"toNodes"',
      '"endPort"',
      '"port":"http"',
      '"ingressDeny"',
      '"egressDeny"',
      '"http"',
      '"headerMatches"',
      '"kafka"',
      '"dns"',
      '"toFQDNs"',
      '"matchName"',
      '"matchPattern"',
      '"icmps"',
      '"nodeSelector"',
      '"kind":"CiliumClusterwideNetworkPolicy"',
      '"specs"',
      '"enableDefaultDeny"',
      '"serverNames"',
      '"l7proto"',
      '"authentication"',
      '"protocol":"ANY"',
      '"protocol":"UDP"',
    ];
    assert.deepEqual(
      features.filter((f) => !all.includes(f)),
      [],
    );
  });
});

describe("schema rejections (offline, as the API server's OpenAPI check)", () => {
  for (const c of INVALID_CASES.filter((c) => !c.serverOnly)) {
    it(`rejects ${c.title}, naming ${c.path}`, () => {
      const errors = validateObject(c.object);
      assert.ok(errors.length > 0, "accepted");
      assert.ok(names(errors, c.path), `errors do not name ${c.path}: ${JSON.stringify(errors)}`);
    });
  }

  it('accepts "abc" as a port: it is a valid IANA port name, resolved against container ports (as in Cilium)', () => {
    assert.deepEqual(validateObject(withPort("abc")), []);
  });

  it("accepts every port number as a string, rejects it as a bare number", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 65535 }),
        (n) => validateObject(withPort(String(n))).length === 0,
      ),
    );
    assert.ok(names(validateObject(withPort(443)), "spec.egress[0].toPorts[0].ports[0].port"));
  });

  it("refuses objects of kinds it does not define", () => {
    assert.deepEqual(
      validateObject({ apiVersion: "v1", kind: "Pod", metadata: { name: "x" } }).map((e) => e.path),
      ["kind"],
    );
  });
});

describe("validator helpers", () => {
  it("turns JSON pointers into Kubernetes field paths", () => {
    assert.equal(
      fieldPath("/spec/egress/0/toPorts/1/ports/0", "port"),
      "spec.egress[0].toPorts[1].ports[0].port",
    );
    assert.equal(fieldPath("/security-labels/k8s:app~1x"), "security-labels.k8s:app/x");
    assert.equal(fieldPath(""), "<root>");
  });

  it("checks CIDRs like the API server's cidr format", () => {
    for (const ok of ["10.0.0.0/8", "0.0.0.0/0", "10.1.2.3/32", "2001:db8::/32", "::/0"])
      assert.ok(isCIDR(ok), ok);
    for (const bad of ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "2001:db8::/129", "x/8", "10.0.0.0/08"])
      assert.ok(!isCIDR(bad), bad);
  });
});
