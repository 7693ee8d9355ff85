// Real packets: gRPC and h2c through the node's L7 proxy. Cloud City's door manager (a real @grpc/grpc-js server) in a pod, a gRPC client and curl in another; the datapath steers them to the proxy (its own process), which judges every HTTP/2 stream.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { PROTO_NUMBER, type SubjectPolicy } from "../../core/model.ts";
import { waitForLine } from "../bpf/netns.ts";
import { DEFAULT_LIMITS, type ProxyConfig } from "./config.ts";
import { DOOR_MANAGER, type CallResult } from "./testing/doorman.ts";
import { ADDR, L7Topology, ROOT } from "./testing/topology.ts";

const run = promisify(execFile);

const tag = `m7g${process.pid % 100000}`;
const XWING = 1000;
const CLOUDCITY = 2000;
const GRPC_RULE = 11;
const INGRESS_RULE = 12;
const PROXY_PORT = 10085;
const DOOR_PORT = 50051;
const DOORMAN = path.join(ROOT, "node-agent/l7proxy/testing/doorman.ts");

const POLICIES: SubjectPolicy[] = [
  {
    subject: XWING,
    ingressEnforced: false,
    egressEnforced: true,
    entries: [{ subject: XWING, direction: "egress", verdict: "allow", peer: CLOUDCITY, proto: PROTO_NUMBER.TCP, port: DOOR_PORT, portPrefixLen: 16, proxyPort: PROXY_PORT, ruleId: GRPC_RULE }],
  },
  {
    // The door manager admits only the x-wing's identity: the proxy's connection must carry it.
    subject: CLOUDCITY,
    ingressEnforced: true,
    egressEnforced: false,
    entries: [{ subject: CLOUDCITY, direction: "ingress", verdict: "allow", peer: XWING, proto: PROTO_NUMBER.TCP, port: DOOR_PORT, portPrefixLen: 16, proxyPort: 0, ruleId: INGRESS_RULE }],
  },
];
// Cilium's gRPC example: the door's name and location may be asked (a gRPC method is the path /package.Service/Method), its access code not set.
const CONFIG: ProxyConfig = {
  address: ADDR.node,
  limits: DEFAULT_LIMITS,
  ports: [
    {
      port: PROXY_PORT,
      http: [
        { ruleId: GRPC_RULE, index: 0, rule: { method: "POST", path: `${DOOR_MANAGER}/GetName` } },
        { ruleId: GRPC_RULE, index: 1, rule: { method: "POST", path: `${DOOR_MANAGER}/GetLocation` } },
      ],
    },
  ],
};

const topo = new L7Topology(tag);
let doormanLog = "";

before(async () => {
  await topo.setUp({ policies: POLICIES, config: CONFIG });
  const door = topo.fx.spawn(topo.ns.deathstar, process.execPath, ["--import", "tsx", DOORMAN, "serve", "0.0.0.0", String(DOOR_PORT)]);
  door.stdout?.on("data", (d: Buffer) => (doormanLog += d.toString()));
  await waitForLine(door, /^listening/, 20000);
  await topo.startProxy();
});

after(async () => {
  await topo.cleanup();
});

/** A gRPC client in the x-wing pod: the calls in order on one channel (one HTTP/2 connection). */
async function grpcCalls(...methods: string[]): Promise<CallResult[]> {
  const { stdout } = await run("ip", ["netns", "exec", topo.ns.xwing, process.execPath, "--import", "tsx", DOORMAN, "call", `${ADDR.deathstar}:${DOOR_PORT}`, ...methods], { cwd: ROOT });
  return stdout.trim().split("\n").map((l) => JSON.parse(l) as CallResult);
}

test("gRPC: GetName and GetLocation answer, SetAccessCode gets PERMISSION_DENIED on the same connection, and never reaches the door manager", async () => {
  const seen = doormanLog.length;
  const results = await grpcCalls("GetName", "SetAccessCode", "GetLocation");
  assert.deepEqual(results.map((r) => [r.method, r.code]), [["GetName", 0], ["SetAccessCode", 7], ["GetLocation", 0]]);
  assert.deepEqual(results[0]!.reply, { message: "Door 1: Bespin Door" });
  assert.equal(results[1]!.details, "Access denied");
  const calls = doormanLog.slice(seen).trim().split("\n");
  assert.deepEqual(calls.map((l) => l.split(" ")[1]), ["GetName", "GetLocation"], "SetAccessCode never reached the server");
  // The door manager saw the node's address (the proxy), admitted as the x-wing by its ingress policy.
  assert.ok(calls.every((l) => l.includes(ADDR.nodeToDeathstar)), calls.join("\n"));
  const inDoorManager = (f: { path: string }): boolean => f.path.startsWith(DOOR_MANAGER);
  const flows = (await topo.flowsWhen("the three calls' flows", (fs) => fs.filter(inDoorManager).length >= 3)).filter(inDoorManager);
  assert.deepEqual(
    flows.map((f) => [f.method, f.path, f.verdict, f.status, f.rule?.index, f.source.identity]),
    [
      ["POST", `${DOOR_MANAGER}/GetName`, "forwarded", 200, 0, XWING],
      ["POST", `${DOOR_MANAGER}/SetAccessCode`, "denied", 200, undefined, XWING],
      ["POST", `${DOOR_MANAGER}/GetLocation`, "forwarded", 200, 1, XWING],
    ],
  );
  const logged = topo.proxyLog.split("\n").filter((l) => l.includes(`${DOOR_MANAGER}/`)).map((l) => JSON.parse(l) as { flow: { protocol: string; source: { port: number } } });
  assert.deepEqual([...new Set(logged.map((l) => l.flow.protocol))], ["HTTP/2"]);
  assert.equal(new Set(logged.map((l) => l.flow.source.port)).size, 1, "one client connection for the three calls");
});

test("h2c with prior knowledge (curl): a request denied by method or path gets 403 Access denied; an allowed one is answered by the server", async () => {
  // One request per curl: curl 7.88 fails reusing a prior-knowledge connection (error 16, against any server); the gRPC test above shows several streams on one connection.
  const h2c = async (method: string, p: string): Promise<{ body: string; status: number; version: string }> => {
    const { stdout } = await run("ip", ["netns", "exec", topo.ns.xwing, "curl", "-sS", "--max-time", "3", "--http2-prior-knowledge", "-X", method, "-w", "\n@@ %{http_code} %{http_version}", `http://${ADDR.deathstar}:${DOOR_PORT}${p}`]);
    const m = /([\s\S]*?)\n?@@ (\d+) (\S+)$/.exec(stdout)!;
    return { body: m[1]!, status: Number(m[2]), version: m[3]! };
  };
  const seen = doormanLog.length;
  assert.deepEqual(await h2c("PUT", "/v1/exhaust-port"), { body: "Access denied", status: 403, version: "2" });
  assert.equal((await h2c("GET", `${DOOR_MANAGER}/GetName`)).status, 403, "the method");
  // Allowed: the gRPC server itself answers (415: curl's request is not of gRPC's content type).
  assert.equal((await h2c("POST", `${DOOR_MANAGER}/GetName`)).status, 415);
  assert.equal(doormanLog.slice(seen), "", "no call reached the door manager's handlers");
  // Logged in order: once the last request's flow (the 415) is there, so are the two before it.
  const flows = (await topo.flowsWhen("the allowed request's flow", (fs) => fs.some((f) => f.status === 415))).slice(-3);
  assert.deepEqual(flows.map((f) => [f.method, f.verdict, f.status]), [["PUT", "denied", 403], ["GET", "denied", 403], ["POST", "forwarded", 415]]);
});
