// `dev up --nodes N` / `dev down` for nodes and pods: a detached kubelet process, and removal from the recorded files alone after it is killed.
// Process-based cluster because: (a) it tests the process-based cluster's own stand-in kubelet: a detached process whose recorded files alone let `dev down` remove everything after it is killed.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { devNodesDown, devNodesUp, parseNodesFlag, runDevExec } from "../cli/dev-pods.ts";
import { isProcessAlive, startControlPlane, type ControlPlane } from "./cluster.ts";
import { kubeletPaths, loadPodRecords } from "./kubelet.ts";
import { listNetns, run } from "./nodes.ts";

const prefix = `t${process.pid}-`;
let cp: ControlPlane | undefined;
let dir = "";

const listOurNetns = (): Promise<string[]> => listNetns(prefix);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), `${prefix}dev-`));
  cp = await startControlPlane({ name: `${prefix}cp` });
});

after(async () => {
  await devNodesDown(dir, cp?.kubeconfig).catch(() => undefined);
  for (const ns of await listOurNetns()) await run("ip", ["netns", "del", ns]).catch(() => undefined);
  await cp?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("--nodes is parsed out of dev up's arguments, and a bad count names the flag", () => {
  assert.deepEqual(parseNodesFlag(["--nodes", "3", "x"]), { ok: true, nodes: 3, rest: ["x"] });
  assert.deepEqual(parseNodesFlag([]), { ok: true, rest: [] });
  const bad = parseNodesFlag(["--nodes", "zero"]);
  assert.ok(!bad.ok && bad.error.startsWith("--nodes:"));
  assert.deepEqual(parseNodesFlag(["--host-firewall", "--nodes", "2"]), { ok: true, nodes: 2, hostFirewall: true, rest: [] });
  const valued = parseNodesFlag(["--host-firewall=yes"]);
  assert.ok(!valued.ok && valued.error.startsWith("--host-firewall:"), JSON.stringify(valued));
});

test("dev up --nodes runs a kubelet that outlives the call; dev down after it is killed removes everything", { timeout: 5 * 60_000 }, async () => {
  const summary = await devNodesUp(dir, cp!.kubeconfig, 2, { prefix });
  assert.match(summary, new RegExp(`2 nodes up: ${prefix}node-1`));
  assert.match(await devNodesUp(dir, cp!.kubeconfig, 2, { prefix }), /already up/);

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const res = await cp!.kubectl(args, input);
    assert.equal(res.code, 0, `kubectl ${args.join(" ")}: ${res.stderr}`);
    return res.stdout;
  };
  await kubectl(["create", "serviceaccount", "default", "-n", "default"]);
  await kubectl(["run", "web", "--image=nginx", "--port=80", "--overrides", '{"spec":{"automountServiceAccountToken":false}}']);
  await kubectl(["wait", "pod/web", "--for=condition=Ready", "--timeout=90s"]);
  assert.equal(await runDevExec(["default/web", "--", "ip", "link", "show", "eth0"], dir), 0);
  assert.equal(await runDevExec(["default/web", "ip"], dir), 2, "missing -- is a usage error");

  const kubeletPid = Number(readFileSync(kubeletPaths(dir).pidFile, "utf8"));
  const serverPid = (await loadPodRecords(dir)).pods["default/web"]!.pid!;
  process.kill(kubeletPid, "SIGKILL"); // the kubelet we started, by its recorded pid: a crash
  await devNodesDown(dir, cp!.kubeconfig);
  assert.equal(isProcessAlive(serverPid), false);
  assert.deepEqual(await listOurNetns(), []);
  assert.deepEqual(readdirSync(dir), []);
  assert.equal((await cp!.kubectl(["get", "node", `${prefix}node-2`])).code, 1);
});
