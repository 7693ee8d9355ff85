// Pure checks of the CRD schema source: generated manifests in sync, structural, documented, RE2-safe patterns.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { drift, generatedFiles } from "./generate.ts";
import { CRDS, type JSONSchemaProps } from "./schema/index.ts";
import { PORT_PATTERN } from "./schema/network-policy.ts";

/** Visits every schema node with its path (properties, items, additionalProperties, oneOf/anyOf branches). */
function walk(
  node: JSONSchemaProps,
  path: string,
  visit: (n: JSONSchemaProps, path: string, branch: boolean) => void,
  branch = false,
): void {
  visit(node, path, branch);
  for (const [k, v] of Object.entries(node.properties ?? {})) walk(v, `${path}.${k}`, visit, branch);
  if (node.items) walk(node.items, `${path}[]`, visit, branch);
  if (node.additionalProperties) walk(node.additionalProperties, `${path}{}`, visit, branch);
  for (const b of [...(node.oneOf ?? []), ...(node.anyOf ?? [])]) walk(b, `${path}|`, visit, true);
}

function rootOf(crd: (typeof CRDS)[number]): JSONSchemaProps {
  const schema = crd.spec.versions[0]?.schema.openAPIV3Schema;
  assert.ok(schema, `${crd.metadata.name} has a schema`);
  return schema;
}

describe("CRD schema source", () => {
  it("the checked-in manifests in crds/generated are exactly what crds/generate.ts produces", () => {
    assert.deepEqual(drift(), [], "run: node --import tsx crds/generate.ts");
    assert.equal(generatedFiles().size, CRDS.length + 2, "one manifest per CRD plus types.ts and schema-version.ts");
  });

  it("defines the eight resources with the expected names, scopes and short names", () => {
    const summary = CRDS.map(
      (c) =>
        `${c.metadata.name} ${c.spec.scope} ${c.spec.versions[0]?.name} ${c.spec.names.shortNames?.join(",")}`,
    );
    assert.deepEqual(summary, [
      "ciliumnetworkpolicies.cilium.io Namespaced v2 cnp,ciliumnp",
      "ciliumclusterwidenetworkpolicies.cilium.io Cluster v2 ccnp",
      "ciliumidentities.cilium.io Cluster v2 ciliumid",
      "ciliumnodes.cilium.io Cluster v2 cn,ciliumn",
      "ciliumcidrgroups.cilium.io Cluster v2 ccg",
      "membraneencryptionkeys.membrane.io Cluster v1alpha1 mek",
      "tracingpolicies.cilium.io Cluster v1alpha1 tp",
      "tracingpoliciesnamespaced.cilium.io Namespaced v1alpha1 tpn",
    ]);
  });

  it("every field of every CRD has a description (kubectl explain shows it)", () => {
    const missing: string[] = [];
    for (const crd of CRDS) {
      walk(rootOf(crd), crd.spec.names.kind, (node, path, branch) => {
        if (branch || path.endsWith(".metadata")) return;
        if (!node.description) missing.push(path);
      });
    }
    // Items of plain string lists may stay undescribed only if the list itself is described.
    assert.deepEqual(missing, []);
  });

  it("every schema is structural: typed nodes, and oneOf/anyOf branches only require fields described alongside", () => {
    const problems: string[] = [];
    for (const crd of CRDS) {
      walk(rootOf(crd), crd.spec.names.kind, (node, path, branch) => {
        if (branch) {
          const intOrStringBranch =
            Object.keys(node).length === 1 && (node.type === "integer" || node.type === "string");
          const presenceBranch =
            Object.keys(node).every((k) => k === "properties" || k === "required") &&
            Object.values(node.properties ?? {}).every((p) => Object.keys(p).length === 0);
          if (!intOrStringBranch && !presenceBranch)
            problems.push(`${path}: branch carries more than field presence`);
          return;
        }
        if (node["x-kubernetes-int-or-string"]) {
          if (node.type) problems.push(`${path}: int-or-string must not have a type`);
          return;
        }
        if (!node.type) problems.push(`${path}: no type`);
        for (const b of [...(node.oneOf ?? []), ...(node.anyOf ?? [])]) {
          for (const f of b.required ?? [])
            if (!node.properties?.[f]) problems.push(`${path}: branch requires undeclared ${f}`);
        }
      });
    }
    assert.deepEqual(problems, []);
  });

  it("has no oneOf or anyOf: the API server answers those without a field path (issue 23 item 8)", () => {
    const found: string[] = [];
    for (const crd of CRDS) {
      walk(rootOf(crd), crd.spec.names.kind, (node, path) => {
        if (node.oneOf || node.anyOf) found.push(path);
      });
    }
    assert.deepEqual(found, [], "use a CEL rule with message and fieldPath (crds/schema/common.ts), or let the webhook answer");
  });

  it("patterns use only what both RE2 (API server) and JavaScript (Ajv) understand", () => {
    for (const crd of CRDS) {
      walk(rootOf(crd), crd.spec.names.kind, (node, path) => {
        if (node.pattern === undefined) return;
        assert.doesNotMatch(node.pattern, /\(\?[=!<]|\\[1-9]/, `${path}: look-around or back-reference`);
        assert.doesNotThrow(() => new RegExp(node.pattern ?? "", "u"), path);
      });
    }
  });

  it("the port pattern accepts every number 0-65535 and IANA port names, nothing else", () => {
    const port = new RegExp(PORT_PATTERN, "u");
    fc.assert(fc.property(fc.integer({ min: 0, max: 65535 }), (n) => port.test(String(n))));
    fc.assert(fc.property(fc.integer({ min: 65536, max: 99999 }), (n) => !port.test(String(n))));
    for (const ok of ["http", "http-8080", "dns-tcp", "h2c", "8080-http", "a"]) assert.match(ok, port);
    for (const bad of ["", "080", "-http", "http-", "http--x", "http_x", "abc!", "1-2", "123456"]) {
      assert.doesNotMatch(bad, port, bad);
    }
  });

  it("policy listings show Valid, Enforced, Selected and Age columns", () => {
    for (const crd of CRDS.slice(0, 2)) {
      const cols = crd.spec.versions[0]?.additionalPrinterColumns ?? [];
      assert.deepEqual(
        cols.map((c) => `${c.name}=${c.jsonPath}`),
        [
          'Valid=.status.conditions[?(@.type=="Valid")].status',
          "Enforced=.status.enforced",
          "Selected=.status.selectedEndpoints",
          "Age=.metadata.creationTimestamp",
        ],
      );
      assert.deepEqual(crd.spec.versions[0]?.subresources, { status: {} });
    }
  });
});
