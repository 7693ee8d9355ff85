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
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Registry } from "prom-client";
import { makePki } from "../kube/testing/pki.ts";
import { RuntimeEventStream } from "../node-agent/runtime/event-stream.ts";
import { runtimeEventSource } from "../node-agent/runtime/event-relay.ts";
import type { ProcessExecEvent, RuntimeEvent } from "../core/process-event.ts";

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

  it("--type process reads every node's runtime through its agent's Hubble server with mutual TLS, merged by time; a node without a runtime is named", async () => {
    for (const n of (await kubectl(["get", "ciliumnodes", "-o", "name"])).trim().split("\n").filter((x) => x !== "")) await kubectl(["delete", n, "--wait=true"]);
    const pki = await makePki(["relay"]);
    const runtimes: { stream: RuntimeEventStream; server: http.Server }[] = [];
    const exec = (node: string, pid: number, time: string, pod: string): ProcessExecEvent => ({
      process_exec: { process: { exec_id: `${node}-${pid}`, pid, uid: 0, cwd: "/", binary: "/usr/bin/cat", arguments: "/etc/hostname", flags: "execve", start_time: time, tid: pid, pod: { namespace: "default", name: pod } } },
      node_name: node,
      time,
    });
    // A node: its runtime's event stream on loopback (plain HTTP, as `membrane runtime` serves it) and its agent's Hubble server on TCP with mutual TLS passing it on.
    const node = async (name: string, events: ProcessExecEvent[] | undefined): Promise<{ address: string; stream?: RuntimeEventStream }> => {
      let source;
      let stream: RuntimeEventStream | undefined;
      if (events !== undefined) {
        stream = new RuntimeEventStream(new Registry());
        const st = stream;
        const server = http.createServer((req, res) => st.serve(req, res));
        await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
        runtimes.push({ stream, server });
        for (const e of events) stream.push(e);
        const at = `127.0.0.1:${(server.address() as AddressInfo).port}`;
        source = runtimeEventSource(() => at);
      }
      const s = new HubbleServer(new FlowBuffer({ capacity: 10 }), name, pino({ level: "silent" }));
      servers.push(s);
      const [address] = await s.start({ tcp: { address: "127.0.0.1:0", cert: pki.read("operator.crt"), key: pki.read("operator.key"), clientCa: pki.read("ca.crt") }, ...(source ? { processEvents: source } : {}) });
      await kubectl(["apply", "-f", "-"], ciliumNode(name, address!));
      return { address: address!, ...(stream ? { stream } : {}) };
    };
    const tls = ["--tls-ca-cert-files", pki.file("ca.crt"), "--tls-client-cert-file", pki.file("relay.crt"), "--tls-client-key-file", pki.file("relay.key")];
    try {
      await node("rt-a", [exec("rt-a", 10, "2026-12-04T00:00:01.000000000Z", "web"), exec("rt-a", 11, "2026-12-04T00:00:03.000000000Z", "db")]);
      const b = await node("rt-b", [exec("rt-b", 20, "2026-12-04T00:00:02.000000000Z", "web")]);
      await node("rt-c", undefined);

      const all = await observe("--type", "process", ...tls, "-o", "json");
      assert.equal(all.code, 0, all.stderr);
      const got = all.stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as RuntimeEvent);
      assert.deepEqual(got.map((e) => `${e.node_name} ${"process_exec" in e ? e.process_exec.process.pid : "?"}`), ["rt-a 10", "rt-b 20", "rt-a 11"]);
      assert.match(all.stderr, /node rt-c \(127\.0\.0\.1:\d+\): node rt-c: the agent serves no process events \(it runs without --enable-runtime\): its events are missing/);

      const web = await observe("--type", "process", ...tls, "--pod", "web", "--last", "1", "-o", "json");
      assert.equal(web.code, 0, web.stderr);
      assert.deepEqual(web.stdout.trimEnd().split("\n").map((l) => (JSON.parse(l) as RuntimeEvent).node_name), ["rt-b"]);

      // Without the client certificate the agents answer nothing: no plaintext, no anonymous reader.
      const named = await promisify(execFile)(MEMBRANE, ["observe", "--type", "process", "--server", b.address, ...tls, "-o", "json"]);
      assert.deepEqual(named.stdout.trimEnd().split("\n").map((l) => (JSON.parse(l) as RuntimeEvent).node_name), ["rt-b"]);
      const anonymous = await promisify(execFile)(MEMBRANE, ["observe", "--type", "process", "--server", b.address, "-o", "json"]).catch((e: { code: number; stdout: string; stderr: string }) => e);
      assert.equal((anonymous as { code: number }).code, 1);
      assert.equal((anonymous as { stdout: string }).stdout, "");

      // Following: a new event on either node is printed as it happens.
      const child = execFile(MEMBRANE, ["observe", "--kubeconfig", cp!.kubeconfig, "--type", "process", ...tls, "--follow", "--last", "0", "--pod", "live", "-o", "json"]);
      let out = "";
      child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
      try {
        const deadline = Date.now() + 60_000; // the CLI starts slowly on a loaded machine (10 s at load 30)
        let pushed = 0;
        while (out.trimEnd().split("\n").filter((l) => l !== "").length < 2) {
          if (Date.now() > deadline) assert.fail(`no live events from both nodes within 60 s: ${JSON.stringify(out)}`);
          // Pushed again until the follower is connected to both (it asks each agent at its own pace).
          if (runtimes.every((r) => r.stream.following > 0) && pushed === 0) {
            runtimes[0]!.stream.push(exec("rt-a", 30, "2026-12-04T00:00:05.000000000Z", "live"));
            runtimes[1]!.stream.push(exec("rt-b", 40, "2026-12-04T00:00:06.000000000Z", "live"));
            pushed++;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.deepEqual(out.trimEnd().split("\n").map((l) => (JSON.parse(l) as RuntimeEvent).node_name).sort(), ["rt-a", "rt-b"]);
      } finally {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGINT");
        await exited;
      }
    } finally {
      for (const r of runtimes) {
        r.stream.close();
        r.server.close();
      }
      pki.remove();
    }
  });
});
