// The operator against a real kube-apiserver: a policy with L7 rules or toFQDNs shows Enforced=False/RulesNotEnforced naming them, until they are removed.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { OperatorProcess, eventually } from "./testing/operator-process.ts";

const CRD_DIR = fileURLToPath(new URL("../crds/generated/", import.meta.url));
const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
}
interface PolicyObject {
  metadata: { generation?: number };
  status?: { conditions?: Condition[] };
}

describe("policy status names the rules that are not enforced yet", { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let op: OperatorProcess | undefined;

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const enforcedOf = async (args: string[]): Promise<{ obj: PolicyObject; enforced: Condition | undefined }> => {
    const obj = JSON.parse(await kubectl([...args, "-o", "json"])) as PolicyObject;
    return { obj, enforced: obj.status?.conditions?.find((c) => c.type === "Enforced") };
  };

  before(async () => {
    cp = await startControlPlane({ name: `policy-l7-${process.pid}` });
    for (const f of readdirSync(CRD_DIR).filter((f) => f.endsWith(".yaml"))) await kubectl(["apply", "-f", `${CRD_DIR}${f}`]);
    await kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    // Established is not yet servable: a new CRD's storage answers "storage is (re)initializing" for a moment.
    for (let i = 0; (await cp.kubectl(["get", "cnp,ccnp,ciliumnodes,ciliumidentities", "-A"])).code !== 0; i++) {
      if (i > 100) throw new Error("the CRDs never became servable");
      await new Promise((r) => setTimeout(r, 200));
    }
    op = new OperatorProcess("op-l7", cp.kubeconfig, ["--leader-elect", "false", "--controllers", "identity,policy"]);
  });

  after(async () => {
    await op?.stop("SIGTERM");
    await cp?.stop();
  });

  it("an HTTP rule makes a CNP Enforced=False/RulesNotEnforced with the rule's path; removing it clears that", async () => {
    const cnp = (toPorts: unknown[]): string =>
      JSON.stringify({
        apiVersion: "cilium.io/v2",
        kind: "CiliumNetworkPolicy",
        metadata: { name: "api", namespace: "default" },
        spec: { endpointSelector: { matchLabels: { app: "api" } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: "web" } }], toPorts }] },
      });
    await kubectl(["apply", "-f", "-"], cnp([{ ports: [{ port: "80", protocol: "TCP" }], rules: { http: [{ method: "GET", path: "/public/.*" }] } }]));
    const l7 = await eventually("Enforced=False/RulesNotEnforced", async () => {
      const r = await enforcedOf(["get", "cnp", "-n", "default", "api"]);
      return r.enforced?.reason === "RulesNotEnforced" ? r : undefined;
    });
    assert.equal(l7.enforced?.status, "False");
    assert.equal(l7.enforced?.observedGeneration, l7.obj.metadata.generation);
    assert.match(l7.enforced?.message ?? "", /spec\.ingress\[0\]\.toPorts\[0\]\.rules\.http: not enforced yet: the port is allowed for every request/);
    assert.equal(l7.obj.status?.conditions?.find((c) => c.type === "Valid")?.status, "True", "the policy is valid, only not enforced");

    // `membrane status` counts it as not enforced and names it (exit 1: unhealthy).
    const st = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(MEMBRANE, ["status", "--kubeconfig", cp!.kubeconfig, "-o", "json"], (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr })),
    );
    assert.equal(st.code, 1);
    assert.notEqual(st.stdout, "", st.stderr);
    const report = JSON.parse(st.stdout) as { policies: { notEnforced: number; valid: number }; warnings: string[] };
    assert.equal(report.policies.notEnforced, 1);
    assert.equal(report.policies.valid, 1);
    assert.ok(
      report.warnings.some((w) => w.startsWith("CiliumNetworkPolicy default/api is not enforced (RulesNotEnforced): ") && w.includes("spec.ingress[0].toPorts[0].rules.http")),
      report.warnings.join("\n"),
    );

    await kubectl(["apply", "-f", "-"], cnp([{ ports: [{ port: "80", protocol: "TCP" }] }]));
    const l4 = await eventually("Enforced no longer RulesNotEnforced", async () => {
      const r = await enforcedOf(["get", "cnp", "-n", "default", "api"]);
      return r.enforced !== undefined && r.enforced.reason !== "RulesNotEnforced" ? r : undefined;
    });
    assert.equal(l4.enforced?.reason, "NoSelectedEndpoints");
  });

  it("a CCNP with toFQDNs is Enforced=False naming spec.egress[0].toFQDNs", async () => {
    await kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "cilium.io/v2",
        kind: "CiliumClusterwideNetworkPolicy",
        metadata: { name: "egress-fqdn" },
        spec: { endpointSelector: {}, egress: [{ toFQDNs: [{ matchName: "example.com" }], toPorts: [{ ports: [{ port: "443", protocol: "TCP" }] }] }] },
      }),
    );
    const r = await eventually("CCNP Enforced=False/RulesNotEnforced", async () => {
      const x = await enforcedOf(["get", "ccnp", "egress-fqdn"]);
      return x.enforced?.reason === "RulesNotEnforced" ? x : undefined;
    });
    assert.equal(r.enforced?.status, "False");
    assert.match(r.enforced?.message ?? "", /spec\.egress\[0\]\.toFQDNs: not enforced yet/);
  });
});
