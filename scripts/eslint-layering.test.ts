// The folder import table is enforced by lint: a wrong-way import planted in a production file fails.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { ESLint } from "eslint";

const root = fileURLToPath(new URL("..", import.meta.url));
const eslint = new ESLint({ cwd: root });

async function layeringMessages(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).filter((m) => m.ruleId === "membrane/layering").map((m) => m.message);
}

test("node-agent importing the operator is caught, naming both folders and what node-agent may import", async () => {
  const msgs = await layeringMessages("node-agent/planted.ts", 'import { Operator } from "../controllers/operator.ts";\nexport const o = Operator;\n');
  assert.equal(msgs.length, 1);
  assert.match(msgs[0]!, /node-agent\/ may not import controllers\//);
  assert.match(msgs[0]!, /core, kube, flowapi/);
});

test("core importing anything of ours is caught", async () => {
  const msgs = await layeringMessages("core/policy/planted.ts", 'import { KubeClient } from "../../kube/kube.ts";\nexport const k = KubeClient;\n');
  assert.equal(msgs.length, 1);
  assert.match(msgs[0]!, /nothing of ours/);
});

test("the product importing the local cluster's or a folder's test support is caught", async () => {
  const cli = await layeringMessages("webhooks/planted.ts", 'import { startControlPlane } from "../localcluster/cluster.ts";\nexport const s = startControlPlane;\n');
  assert.equal(cli.length, 1);
  const fixture = await layeringMessages("controllers/planted.ts", 'import { writeKubeconfig } from "./testing/kubeconfig.ts";\nexport const w = writeKubeconfig;\n');
  assert.match(fixture[0] ?? "", /test support/);
  const harness = await layeringMessages("cli/planted.ts", 'import { TestCluster } from "../e2e/harness.ts";\nexport const t = TestCluster;\n');
  assert.match(harness[0] ?? "", /test support/);
});

test("allowed edges and tests pass: cli → flowapi, a test importing across folders", async () => {
  assert.deepEqual(await layeringMessages("cli/planted.ts", 'import { HubbleClient } from "../flowapi/hubble/client.ts";\nexport const r = HubbleClient;\n'), []);
  assert.deepEqual(await layeringMessages("node-agent/planted.test.ts", 'import { Operator } from "../controllers/operator.ts";\nexport const o = Operator;\n'), []);
});

test("a test fixture in a testing/ folder follows its folder's row, and may use other test support", async () => {
  const wrong = await layeringMessages("node-agent/testing/planted.ts", 'import type { DistributionServer } from "../../controllers/distribution/server.ts";\nexport type S = DistributionServer;\n');
  assert.equal(wrong.length, 1);
  assert.match(wrong[0]!, /node-agent\/ may not import controllers\//);
  assert.deepEqual(await layeringMessages("node-agent/testing/planted.ts", 'import { makePki } from "../../kube/testing/pki.ts";\nexport const m = makePki;\n'), []);
});

test("the command's entry may load a component's main.ts with import(), and nothing else of it", async () => {
  assert.deepEqual(await layeringMessages("cli/main.ts", 'export const load = () => import("../node-agent/l7proxy/main.ts");\n'), []);
  const inner = await layeringMessages("cli/main.ts", 'export const load = () => import("../node-agent/bpf/loader.ts");\n');
  assert.match(inner[0] ?? "", /cli\/ may not import node-agent\//);
  const static_ = await layeringMessages("cli/main.ts", 'import { run } from "../controllers/main.ts";\nexport const r = run;\n');
  assert.match(static_[0] ?? "", /cli\/ may not import controllers\//);
  const other = await layeringMessages("cli/status.ts", 'export const load = () => import("../controllers/main.ts");\n');
  assert.match(other[0] ?? "", /cli\/ may not import controllers\//);
});
