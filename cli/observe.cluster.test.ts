// `membrane observe` without --server against a real kube-apiserver: agents found through their CiliumNodes' Hubble annotation, flows merged, silent nodes named on stderr.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { pino } from "pino";
import { FlowBuffer } from "../node-agent/observer/buffer.ts";
import { HubbleServer } from "../node-agent/observer/hubble-server.ts";
import { HUBBLE_ADDRESS_ANNOTATION } from "../flowapi/discover.ts";
import { dropFlow, flow } from "../flowapi/testing/flows.ts";
import type { Flow } from "../flowapi/flow.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));
const CILIUM_NODE_CRD = fileURLToPath(new URL("../crds/generated/ciliumnodes.cilium.io.yaml", import.meta.url));

describe("membrane observe finds every agent in the cluster", () => {
  let cp: ControlPlane | undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-observe-cluster-"));
  const servers: HubbleServer[] = [];

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const ciliumNode = (name: string, address?: string): string =>
    JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name, ...(address !== undefined ? { annotations: { [HUBBLE_ADDRESS_ANNOTATION]: address } } : {}) }, spec: {} });
  const observer = async (node: string, flows: Flow[]): Promise<string> => {
    const buffer = new FlowBuffer({ capacity: 100 });
    for (const f of flows) buffer.push(f);
    const s = new HubbleServer(buffer, node, pino({ level: "silent" }));
    servers.push(s);
    return (await s.start({ socketPath: path.join(dir, `${node}.sock`) }))[0]!;
  };
  const observe = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    promisify(execFile)(MEMBRANE, ["observe", "--kubeconfig", cp!.kubeconfig, ...args]).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );

  before(async () => {
    cp = await startControlPlane({ name: "observe-test" });
    await kubectl(["apply", "-f", CILIUM_NODE_CRD]);
    await kubectl(["wait", "--for=condition=Established", "crd/ciliumnodes.cilium.io", "--timeout=60s"]);
  });

  after(async () => {
    for (const s of servers) await s.stop();
    await cp?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("merges the flows of every annotated node by time, and names the node that does not answer and the one without an address", async () => {
    const a = await observer("node-a", [dropFlow({ node: "node-a", time: "2026-01-01T00:00:01.000Z" }), flow({ node: "node-a", time: "2026-01-01T00:00:03.000Z" })]);
    const b = await observer("node-b", [dropFlow({ node: "node-b", time: "2026-01-01T00:00:02.000Z" })]);
    const dead = `unix:${path.join(dir, "dead.sock")}`;
    for (const [name, address] of [["node-a", a], ["node-b", b], ["node-c", dead], ["node-d", undefined]] as const) await kubectl(["apply", "-f", "-"], ciliumNode(name, address));

    const all = await observe("-o", "json");
    assert.equal(all.code, 0, all.stderr);
    const flows = all.stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as Flow);
    assert.deepEqual(flows.map((f) => `${f.node} ${f.verdict}`), ["node-a DROPPED", "node-b DROPPED", "node-a FORWARDED"]);
    assert.match(all.stderr, /node node-c \(unix:.*dead\.sock\): .*connect ENOENT.*its flows are missing/);
    assert.match(all.stderr, /node node-d: not asked: metadata\.annotations\["membrane\.io\/hubble-address"\]: not set/);

    const drops = await observe("--verdict", "DROPPED", "--last", "1");
    assert.equal(drops.code, 0, drops.stderr);
    const rows = drops.stdout.trimEnd().split("\n");
    assert.equal(rows.length, 2, drops.stdout);
    assert.match(rows[1]!, /^2026-01-01T00:00:02\.000Z\s+node-b\s/);
  });

  it("fails (exit 1) with the reason when no node's observer answers", async () => {
    const kc = (await kubectl(["get", "ciliumnodes", "-o", "name"])).trim().split("\n");
    for (const n of kc) await kubectl(["delete", n, "--wait=true"]);
    await kubectl(["apply", "-f", "-"], ciliumNode("node-x", `unix:${path.join(dir, "gone.sock")}`));
    const r = await observe();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /node node-x .*ENOENT/);
    await kubectl(["delete", "ciliumnode", "node-x"]);
    const empty = await observe();
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /no node in the cluster has a Hubble address/);
    const noCluster = await promisify(execFile)(MEMBRANE, ["observe", "--kubeconfig", path.join(dir, "missing-kubeconfig")]).catch((e: { code: number; stderr: string }) => e);
    assert.equal((noCluster as { code: number }).code, 1);
    assert.match((noCluster as { stderr: string }).stderr, /finding the agents in the cluster \(use --server ADDR to name one\)/);
  });
});
