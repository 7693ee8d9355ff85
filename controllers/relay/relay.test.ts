// The Hubble relay merging two agents' Observer APIs, asked by the real `hubble` CLI.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { HubbleRelay, RELAY_MAX_BACKLOG } from "./relay.ts";
import { HubbleClient } from "../../flowapi/hubble/client.ts";
import { FlowBuffer } from "../../node-agent/observer/buffer.ts";
import { HubbleServer } from "../../node-agent/observer/hubble-server.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";
import { hubbleBinary, jsonFlows, runHubble, type HubbleRun } from "../../localcluster/hubble/cli.ts";
import type { HubblePeer } from "../../flowapi/discover.ts";
import { makePki } from "../../kube/testing/pki.ts";
import { issueCert } from "../../kube/pki.ts";
import * as grpc from "@grpc/grpc-js";
import { hubbleApi } from "../../flowapi/hubble/proto.ts";
import { toHubbleFlow } from "../../flowapi/hubble/flow.ts";
import type { GetFlowsRequest, GetFlowsResponse } from "../../flowapi/hubble/types.ts";

const log = pino({ level: "silent" });

async function agents(t: test.TestContext): Promise<{ a: FlowBuffer; b: FlowBuffer; peers: HubblePeer[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-relay-"));
  const now = Date.now();
  const a = new FlowBuffer({ capacity: 100 });
  const b = new FlowBuffer({ capacity: 100 });
  a.push(flow({ time: new Date(now - 5000).toISOString(), node: "node-a" }));
  b.push(dropFlow({ time: new Date(now - 4000).toISOString(), node: "node-b", source: endpoint({ pod: "xwing" }) }));
  a.push(dropFlow({ time: new Date(now - 3000).toISOString(), node: "node-a" }));
  b.push(flow({ time: new Date(now - 2000).toISOString(), node: "node-b", protocol: "UDP" }));
  const peers: HubblePeer[] = [];
  for (const [name, buffer] of [["node-a", a], ["node-b", b]] as const) {
    const server = new HubbleServer(buffer, name, log);
    const [address] = await server.start({ socketPath: path.join(dir, `${name}.sock`) });
    t.after(() => server.stop());
    peers.push({ node: name, address: address! });
  }
  peers.push({ node: "node-c", reason: "metadata.annotations[\"membrane.io/hubble-address\"]: not set" });
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return { a, b, peers };
}

const hubble = (...args: string[]): Promise<HubbleRun> => runHubble(args);

test("the relay merges every agent: status, nodes, observe --last by time across nodes, filters, refused fields", async (t) => {
  const { peers } = await agents(t);
  const relay = new HubbleRelay({ address: "127.0.0.1:0", peers: () => Promise.resolve(peers), log });
  const server = await relay.start();
  t.after(() => relay.stop());

  const status = await hubble("status", "--server", server);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /Current\/Max Flows: 4\/200/);
  assert.match(status.stdout, /Connected Nodes: 2\/3/);
  assert.match(status.stdout, /Unavailable Nodes: 1\n\s+- node-c/);

  const nodes = JSON.parse((await hubble("list", "nodes", "--server", server, "-o", "json")).stdout) as { name: string; state: string }[];
  assert.deepEqual(
    nodes.map((n) => [n.name, n.state]),
    [
      ["node-a", "NODE_CONNECTED"],
      ["node-b", "NODE_CONNECTED"],
      ["node-c", "NODE_UNAVAILABLE"],
    ],
  );

  const last3 = jsonFlows((await hubble("observe", "--server", server, "--last", "3", "-o", "jsonpb")).stdout);
  assert.deepEqual(
    last3.map((f) => [f.node_name, f.verdict]),
    [
      ["node-b", "DROPPED"],
      ["node-a", "DROPPED"],
      ["node-b", "FORWARDED"],
    ],
  );
  const xwing = jsonFlows((await hubble("observe", "--server", server, "--verdict", "DROPPED", "--from-pod", "default/xwing", "-o", "json")).stdout);
  assert.deepEqual(xwing.map((f) => f.node_name), ["node-b"]);
  const first = jsonFlows((await hubble("observe", "--server", server, "--first", "1", "-o", "json")).stdout);
  assert.deepEqual(first.map((f) => f.node_name), ["node-a"]);

  const refused = await hubble("observe", "--server", server, "--to-service", "empire/deathstar");
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /InvalidArgument.*whitelist\[0\]\.destination_service: not supported/);
});

test("the relay follows every agent: a drop on either node reaches a following hubble observe", async (t) => {
  const { a, b, peers } = await agents(t);
  const relay = new HubbleRelay({ address: "127.0.0.1:0", peers: () => Promise.resolve(peers), log });
  const server = await relay.start();
  t.after(() => relay.stop());
  const child = execFile(hubbleBinary(), ["observe", "--server", server, "-f", "--last", "1", "--verdict", "DROPPED", "-o", "json"]);
  t.after(() => child.kill());
  let out = "";
  child.stdout!.on("data", (c: string) => (out += c));
  await waitFor(() => jsonFlows(out).length >= 2); // each node's last drop
  a.push(dropFlow({ time: new Date().toISOString(), node: "node-a", source: endpoint({ pod: "late-a" }) }));
  b.push(dropFlow({ time: new Date().toISOString(), node: "node-b", source: endpoint({ pod: "late-b" }) }));
  b.push(flow({ time: new Date().toISOString(), node: "node-b", source: endpoint({ pod: "forwarded" }) }));
  await waitFor(() => out.includes("late-a") && out.includes("late-b"));
  assert.ok(!out.includes("forwarded"));
});

test("with mutual TLS, the relay reaches agents' TCP servers by their shared certificate's name and serves TLS clients only", async (t) => {
  const pki = await makePki(["client"]);
  t.after(() => pki.remove());
  const ca = { cert: pki.read("ca.crt").toString(), key: pki.read("ca.key").toString() };
  // As in the chart: every agent serves one certificate for a fixed name (not its address); the relay's is good for both sides.
  const agentCert = await issueCert(ca, { commonName: "hubble-grpc.membrane.io", usage: "server", dnsNames: ["hubble-grpc.membrane.io"], days: 1 });
  const relayCert = await issueCert(ca, { commonName: "hubble-relay", usage: "server+client", ipAddresses: ["127.0.0.1"], days: 1 });
  const buffer = new FlowBuffer({ capacity: 10 });
  buffer.push(dropFlow({ time: new Date().toISOString() }));
  const agent = new HubbleServer(buffer, "node-a", log);
  const [agentAddress] = await agent.start({ tcp: { address: "127.0.0.1:0", cert: Buffer.from(agentCert.cert), key: Buffer.from(agentCert.key), clientCa: pki.read("ca.crt") } });
  t.after(() => agent.stop());
  const tls = { cert: Buffer.from(relayCert.cert), key: Buffer.from(relayCert.key), ca: pki.read("ca.crt") };
  const peers = (): Promise<HubblePeer[]> => Promise.resolve([{ node: "node-a", address: agentAddress! }]);
  const relay = new HubbleRelay({ address: "127.0.0.1:0", tls, peerServerName: "hubble-grpc.membrane.io", peers, log });
  const server = await relay.start();
  t.after(() => relay.stop());
  const clientTls = ["--tls", "--tls-ca-cert-files", pki.file("ca.crt"), "--tls-client-cert-file", pki.file("client.crt"), "--tls-client-key-file", pki.file("client.key")];
  const ok = await hubble("observe", "--server", server, ...clientTls, "-o", "json");
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(jsonFlows(ok.stdout).length, 1);
  const plain = await hubble("observe", "--server", server, "-o", "json");
  assert.notEqual(plain.code, 0);
  // Checked against the agent's address instead, the same certificate is refused: the node is unavailable.
  const strict = new HubbleRelay({ address: "127.0.0.1:0", tls, peers, log });
  const strictServer = await strict.start();
  t.after(() => strict.stop());
  const status = await hubble("status", "--server", strictServer, ...clientTls);
  assert.match(status.stdout, /Connected Nodes: 0\/1/);
});

test("an agent that serves only Hubble's GetFlows (no batched hop) is followed through it", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-relay-plain-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const server = new grpc.Server();
  const calls: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>[] = [];
  server.addService(hubbleApi().service, {
    GetFlows: (call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>) => {
      calls.push(call);
      const f = toHubbleFlow(dropFlow({ time: new Date().toISOString(), node: "other", source: endpoint({ pod: "plain-hubble" }) }));
      call.write({ flow: f, node_name: "other", time: f.time! });
    },
  });
  t.after(() => {
    for (const c of calls) c.end();
    server.forceShutdown();
  });
  await new Promise<number>((resolve, reject) => server.bindAsync(`unix://${dir}/hubble.sock`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const relay = new HubbleRelay({ address: "127.0.0.1:0", peers: () => Promise.resolve([{ node: "other", address: `unix:${dir}/hubble.sock` }]), log });
  const address = await relay.start();
  t.after(() => relay.stop());
  const child = execFile(hubbleBinary(), ["observe", "--server", address, "-f", "-o", "json"]);
  t.after(() => child.kill());
  let out = "";
  child.stdout!.on("data", (c: string) => (out += c));
  await waitFor(() => out.includes("plain-hubble"));
});

test("a follower that stops reading loses what exceeds 50,000 flows behind and is told when it reads again (LostEvent, naming the node whose flows were lost): flows received + told lost = flows sent", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-relay-stuck-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const buffer = new FlowBuffer({ capacity: 1000 });
  const agent = new HubbleServer(buffer, "node-a", log);
  const [agentAddress] = await agent.start({ socketPath: path.join(dir, "a.sock") });
  t.after(() => agent.stop());
  const relay = new HubbleRelay({ address: "127.0.0.1:0", peers: () => Promise.resolve([{ node: "node-a", address: agentAddress! }]), log });
  const address = await relay.start();
  t.after(() => relay.stop());
  const client = new HubbleClient(address);
  t.after(() => client.close());
  const stream = client.getFlows({ follow: true });
  let error: grpc.ServiceError | undefined;
  let flows = 0;
  let marker = false;
  const lost: { node: string; source: string; count: number }[] = [];
  stream.on("data", (r: GetFlowsResponse) => {
    if (r.flow?.source.pod_name === "marker") marker = true;
    else if (r.flow !== undefined) flows++;
    if (r.lost_events !== undefined) lost.push({ node: r.node_name, source: r.lost_events.source, count: Number(r.lost_events.num_events_lost) });
  });
  stream.on("error", (e: grpc.ServiceError) => (error = e));
  await new Promise((r) => setTimeout(r, 500)); // the relay's stream to the agent is open
  // Reads nothing more: the client's HTTP/2 window (8 MiB) and the socket's buffers fill, then the relay's writes queue up.
  stream.pause();
  const sent = RELAY_MAX_BACKLOG * 3;
  const base = Date.now();
  for (let i = 0; i < sent; i++) {
    buffer.push(flow({ time: new Date(base + i).toISOString(), source: endpoint({ port: 1024 + (i % 60000) }) }));
    if (i % 500 === 0) await new Promise((r) => setTimeout(r, 2)); // agent, relay and client share this event loop
  }
  await new Promise((r) => setTimeout(r, 500)); // the last flows reach the relay
  stream.resume();
  await waitFor(() => {
    if (!marker) buffer.push(flow({ time: new Date().toISOString(), source: endpoint({ pod: "marker" }) }));
    return marker;
  }, 60_000);
  assert.equal(error, undefined, "the follower is not cut off");
  const told = lost.reduce((n, l) => n + l.count, 0);
  assert.ok(lost.some((l) => l.source === "HUBBLE_RING_BUFFER"), `the loss was told: ${JSON.stringify(lost)}`);
  assert.ok(lost.every((l) => l.node === "node-a"), `every LostEvent names the node whose flows were lost (the relay's own too): ${JSON.stringify(lost)}`);
  assert.ok(flows >= RELAY_MAX_BACKLOG, `at least the bound arrived: ${flows}`);
  assert.equal(flows + told, sent, `${flows} received + ${told} told lost (${JSON.stringify(lost)})`);
});

async function waitFor(cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}
