// `membrane policy trace` against a real kube-apiserver: reads pods, namespaces and policies through the API client and agrees with the pure trace.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { startControlPlane } from "../localcluster/cluster.ts";
import { GENERATED_DIR } from "../crds/generate.ts";
import { TRACE_CLUSTER } from "./trace.fixtures.ts";
import { parseTraceArgs, traceVerdict } from "./trace.ts";

const traceModule = fileURLToPath(new URL("./trace.ts", import.meta.url));

test("policy trace reads the cluster and gives the verdicts the pure trace gives", { timeout: 300_000 }, async (t) => {
  const cp = await startControlPlane({ name: "trace-test" });
  t.after(() => cp.stop());
  const must = async (args: string[], input?: string): Promise<string> => {
    const r = await cp.kubectl(args, input);
    assert.equal(r.code, 0, `kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  await must(["apply", "-f", GENERATED_DIR]);
  // `kubectl wait` fails while a new CRD has no status yet: poll until both kinds are served.
  for (let deadline = Date.now() + 60_000; ; await new Promise((r) => setTimeout(r, 250))) {
    const r = await cp.kubectl(["get", "ciliumnetworkpolicies.cilium.io,ciliumclusterwidenetworkpolicies.cilium.io", "-A"]);
    if (r.code === 0) break;
    assert.ok(Date.now() < deadline, `CRDs not served: ${r.stderr}`);
  }
  const objects = [
    ...TRACE_CLUSTER.namespaces.filter((n) => n.metadata.name !== "default").map((n) => ({ apiVersion: "v1", kind: "Namespace", ...n })),
    // This control plane runs no controller manager: create the service accounts pods need.
    ...TRACE_CLUSTER.namespaces.map((n) => ({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default", namespace: n.metadata.name } })),
    ...TRACE_CLUSTER.pods.map((p) => ({
      apiVersion: "v1",
      kind: "Pod",
      ...p,
      spec: { automountServiceAccountToken: false, containers: [{ name: "c", image: "none" }] },
    })),
    ...TRACE_CLUSTER.policies,
  ];
  await must(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }));

  const cases: readonly (readonly string[])[] = [
    ["--from", "default/client", "--to", "shop/web", "--port", "80"],
    ["--from", "default/client", "--to", "shop/web", "--port", "8080"],
    ["--from", "default/client", "--to", "shop/db", "--port", "5432"],
    ["--from", "shop/web", "--to", "shop/db", "--port", "5432"],
    // HTTP requests: the rule that allows one, the 403 of another, a port the proxy never sees.
    ["--from", "default/client", "--to", "shop/api", "--port", "80", "--http-method", "GET", "--http-path", "/public/ships"],
    ["--from", "default/client", "--to", "shop/api", "--port", "80", "--http-method", "POST", "--http-path", "/orders", "--http-header", "X-Token: nope"],
    ["--from", "default/client", "--to", "shop/web", "--port", "80", "--http-method", "GET", "--http-path", "/"],
  ];
  const outputs: string[] = [];
  const script = `const { runTrace } = await import(${JSON.stringify(traceModule)}); process.exitCode = await runTrace(process.argv.slice(1));`;
  for (const args of cases) {
    const r = await promisify(execFile)(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script, "--", ...args, "--kubeconfig", cp.kubeconfig], {
      cwd: fileURLToPath(new URL("..", import.meta.url)),
    });
    const q = parseTraceArgs([...args]);
    assert.ok(q.ok && !("host" in q.value));
    const want = traceVerdict(TRACE_CLUSTER, q.value);
    assert.ok(want.ok);
    assert.equal(r.stdout, want.text, args.join(" "));
    outputs.push(r.stdout);
  }
  assert.match(outputs[4]!, /HTTP GET \/public\/ships: ALLOWED\n[^]*allowed by CiliumNetworkPolicy shop\/api-http spec\.ingress\[0\]\.toPorts\[0\]\.rules\.http\[0\]/);
  assert.match(outputs[5]!, /HTTP POST \/orders: DENIED \(403 Forbidden\)/);
  assert.match(outputs[6]!, /ingress of shop\/web: not inspected/);
});
