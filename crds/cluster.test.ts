// The CRDs against a real kube-apiserver: installed and Established, examples round-trip unchanged, broken
// objects rejected with the field path, printer columns, status subresource and `kubectl explain` docs.
import assert from "node:assert/strict";
import fc from "fast-check";
import { after, before, describe, it } from "node:test";
import { startControlPlane } from "../localcluster/cluster.ts";
import { GENERATED_DIR } from "./generate.ts";
import { INVALID_CASES, type KubeObject, ciliumDocsExamples, seedExamples } from "./fixtures.ts";
import { CRDS } from "./schema/index.ts";
import { validateObject } from "./validate.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;

const NAMESPACE = `crds-test-${process.pid}`;

let cp: ControlPlane | undefined;
/** Everything this file created, deleted by name in `after` (the control plane may be shared). */
const created: { resource: string; name: string; namespaced: boolean }[] = [];
const installedCRDs: string[] = [];

async function kubectl(
  args: string[],
  input?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!cp) throw new Error("control plane not started");
  return cp.kubectl(args, input);
}

async function mustKubectl(args: string[], input?: string): Promise<string> {
  const r = await kubectl(args, input);
  assert.equal(r.code, 0, `kubectl ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

function resourceOf(object: KubeObject): { resource: string; namespaced: boolean } {
  const [group] = object.apiVersion.split("/");
  const crd = CRDS.find((c) => c.spec.group === group && c.spec.names.kind === object.kind);
  if (!crd) throw new Error(`no CRD for ${object.apiVersion} ${object.kind}`);
  return {
    resource: `${crd.spec.names.plural}.${crd.spec.group}`,
    namespaced: crd.spec.scope === "Namespaced",
  };
}

/** Applies one object (into the test namespace when namespaced) and remembers it for cleanup. */
async function apply(object: KubeObject): Promise<{ code: number; stdout: string; stderr: string }> {
  const { resource, namespaced } = resourceOf(object);
  const r = await kubectl(
    ["apply", ...(namespaced ? ["-n", NAMESPACE] : []), "-f", "-"],
    JSON.stringify(object),
  );
  if (r.code === 0) created.push({ resource, name: object.metadata.name, namespaced });
  return r;
}

async function readBack(object: KubeObject): Promise<KubeObject> {
  const { resource, namespaced } = resourceOf(object);
  const out = await mustKubectl([
    "get",
    resource,
    object.metadata.name,
    ...(namespaced ? ["-n", NAMESPACE] : []),
    "-o",
    "json",
  ]);
  return JSON.parse(out) as KubeObject;
}

/** The user-written part of an object: everything except what the server owns. */
function body(object: KubeObject): Record<string, unknown> {
  const { apiVersion: _a, kind: _k, metadata: _m, status: _s, ...rest } = object;
  return rest;
}

async function eventually<T>(
  what: string,
  attempt: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await attempt();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

describe("CRDs on a real API server", () => {
  before(async () => {
    cp = await startControlPlane();
    for (const crd of CRDS) {
      const exists = await kubectl(["get", "crd", crd.metadata.name, "-o", "name"]);
      if (exists.code !== 0) installedCRDs.push(crd.metadata.name);
    }
    await mustKubectl(["apply", "-f", GENERATED_DIR]);
    // Polled rather than `kubectl wait`, which fails instead of waiting while a new CRD has no conditions yet.
    await eventually(
      "the CRDs to be Established",
      async () => {
        const r = await kubectl(["get", "crd", ...CRDS.map((c) => c.metadata.name), "-o", "json"]);
        if (r.code !== 0) return undefined;
        const list = JSON.parse(r.stdout) as {
          items: { status?: { conditions?: { type: string; status: string }[] } }[];
        };
        const established = list.items.filter((i) =>
          i.status?.conditions?.some((c) => c.type === "Established" && c.status === "True"),
        );
        return established.length === CRDS.length ? true : undefined;
      },
      60_000,
    );
    await mustKubectl(["create", "namespace", NAMESPACE]);
  });

  after(async () => {
    try {
      if (cp) {
        for (const o of created.reverse()) {
          await kubectl([
            "delete",
            o.resource,
            o.name,
            ...(o.namespaced ? ["-n", NAMESPACE] : []),
            "--ignore-not-found",
            "--wait=false",
          ]);
        }
        await kubectl(["delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false"]);
        for (const name of installedCRDs)
          await kubectl(["delete", "crd", name, "--ignore-not-found", "--wait=false"]);
      }
    } finally {
      await cp?.stop();
    }
  });

  it("accepts every CRD: names accepted and Established", async () => {
    for (const crd of CRDS) {
      const got = JSON.parse(await mustKubectl(["get", "crd", crd.metadata.name, "-o", "json"])) as {
        status: { conditions: { type: string; status: string; message?: string }[] };
      };
      for (const type of ["NamesAccepted", "Established"]) {
        const c = got.status.conditions.find((x) => x.type === type);
        assert.equal(c?.status, "True", `${crd.metadata.name} ${type}: ${c?.message}`);
      }
      const nonStructural = got.status.conditions.find((x) => x.type === "NonStructuralSchema");
      assert.equal(nonStructural, undefined, `${crd.metadata.name}: ${nonStructural?.message}`);
    }
  });

  it("applies the seed and documentation examples and reads them back unchanged", async () => {
    for (const example of [...seedExamples(), ...ciliumDocsExamples()]) {
      const r = await apply(example.object);
      assert.equal(r.code, 0, `${example.source}: ${r.stderr}`);
      const back = await readBack(example.object);
      assert.deepEqual(
        body(back),
        body(example.object),
        `${example.source} changed on the way through the API server`,
      );
    }
  });

  for (const c of INVALID_CASES) {
    it(`rejects ${c.title}, naming ${c.path}`, async () => {
      const r = await apply(c.object);
      assert.notEqual(r.code, 0, `accepted: ${c.object.metadata.name}`);
      // The path itself or a field below it (strict decoding names the first unexpected leaf).
      const mentionsPath = new RegExp(`(^|[\\s"'])${escapeRegExp(c.path)}([.[][^\\s"':]*)?([:\\s"']|$)`, "m");
      assert.match(r.stderr, mentionsPath, `the API server's message does not name ${c.path}`);
    });
  }

  it("agrees with the offline validator on random ports and ICMP types", async () => {
    const port = fc.oneof(
      fc.integer({ min: 0, max: 70000 }).map(String),
      fc.stringMatching(/^[a-zA-Z0-9-]{1,16}$/),
      fc.constantFrom("080", "-a", "a-", "a--b", "http", "1-2", "http_x", ""),
    );
    const icmpType = fc.oneof(
      fc.integer({ min: -5, max: 300 }),
      fc.constantFrom("EchoRequest", "Ping", "8", "256"),
    );
    const samples = fc.sample(fc.tuple(port, icmpType), { numRuns: 30, seed: 20261123 });
    const disagreements: string[] = [];
    let accepted = 0;
    for (const [i, [p, t]] of samples.entries()) {
      const object: KubeObject = {
        apiVersion: "cilium.io/v2",
        kind: "CiliumNetworkPolicy",
        metadata: { name: `agree-${i}`, namespace: NAMESPACE },
        spec: {
          endpointSelector: {},
          egress: [{ toPorts: [{ ports: [{ port: p }] }] }, { icmps: [{ fields: [{ type: t }] }] }],
        },
      };
      const server = await kubectl(["create", "--dry-run=server", "-f", "-"], JSON.stringify(object));
      const offline = validateObject(object).length === 0;
      if (offline) accepted++;
      if ((server.code === 0) !== offline)
        disagreements.push(
          `port ${JSON.stringify(p)} icmp ${JSON.stringify(t)}: server ${server.code === 0}, Ajv ${offline}`,
        );
    }
    assert.deepEqual(disagreements, []);
    assert.ok(
      accepted > 0 && accepted < samples.length,
      `samples cover both verdicts (${accepted} accepted)`,
    );
  });

  it("lists policies with VALID, ENFORCED, SELECTED and AGE columns filled from status", async () => {
    const policy: KubeObject = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "printer-columns" },
      spec: { endpointSelector: { matchLabels: { app: "web" } }, ingress: [{ fromEntities: ["cluster"] }] },
    };
    assert.equal((await apply(policy)).code, 0);
    const status = {
      status: {
        conditions: [
          {
            type: "Valid",
            status: "True",
            reason: "Parsed",
            message: "policy parsed",
            lastTransitionTime: "2026-01-01T00:00:00Z",
          },
        ],
        enforced: "3/3",
        enforcedNodes: 3,
        totalNodes: 3,
        selectedEndpoints: 2,
      },
    };
    await mustKubectl([
      "patch",
      "cnp",
      "printer-columns",
      "-n",
      NAMESPACE,
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify(status),
    ]);
    const table = await mustKubectl(["get", "cnp", "-n", NAMESPACE, "printer-columns"]);
    const [header, row] = table.trim().split("\n");
    assert.match(header ?? "", /^NAME\s+VALID\s+ENFORCED\s+SELECTED\s+AGE$/);
    assert.match(row ?? "", /^printer-columns\s+True\s+3\/3\s+2\s+\S+$/);
  });

  it("keeps status out of reach of ordinary updates (status subresource)", async () => {
    const policy: KubeObject = {
      apiVersion: "cilium.io/v2",
      kind: "CiliumNetworkPolicy",
      metadata: { name: "status-subresource" },
      spec: { endpointSelector: {}, egress: [{ toEntities: ["world"] }] },
      status: { enforced: "9/9" },
    };
    assert.equal((await apply(policy)).code, 0);
    const back = await readBack(policy);
    assert.equal((back.status as { enforced?: string } | undefined)?.enforced, undefined);
  });

  it("documents the fields in kubectl explain cnp.spec.egress.toFQDNs", async () => {
    const raw = await eventually("the CRD's OpenAPI to be published", async () => {
      const r = await kubectl(["explain", "cnp.spec.egress.toFQDNs"]);
      return r.code === 0 && r.stdout.includes("matchPattern") ? r.stdout : undefined;
    });
    const out = raw.replace(/\s+/g, " "); // kubectl wraps descriptions
    assert.match(out, /KIND: CiliumNetworkPolicy/);
    assert.match(out, /DNS names the selected endpoints may connect to/);
    assert.match(out, /matchName <string>/);
    assert.match(out, /An exact DNS name/);
    assert.match(out, /matchPattern <string>/);
    const port = (await mustKubectl(["explain", "cnp.spec.egress.toPorts.ports.port"])).replace(/\s+/g, " ");
    assert.match(port, /a named container port/);
  });
});
