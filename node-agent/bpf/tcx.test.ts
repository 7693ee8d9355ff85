// tcx attachment with real packets: links pinned beside the maps, the move from clsact, a link left on a deleted interface.
import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PROTO_NUMBER, type SubjectPolicy } from "../../core/model.ts";
import { Datapath, PROGRAMS } from "./datapath.ts";
import { attachTc, attachedProgramId, programId, queryTc, type TcTarget } from "./loader.ts";
import { NetnsFixture, ipIn, sh, waitForLine } from "./netns.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const PROBE = path.join(here, "probe.ts");

const tag = `m5t${process.pid % 100000}`;
const NS_POD = `${tag}-pod`;
const NS_HOST = `${tag}-host`;
const POD_IF = `${tag}p`;
const HOST_IF = `${tag}h`;
const HOST_IFINDEX = 4242; // fixed, so that a re-created interface gets the same one
const POD_IP = "10.205.0.1";
const HOST_IP = "10.205.0.2";
const POD_ID = 1000;
const HOST_PEER_ID = 2000;
const SCOPE = `test-${tag}`;

const fx = new NetnsFixture();
let dp: Datapath | undefined;
const target = (direction: "ingress" | "egress"): TcTarget => ({ ifindex: HOST_IFINDEX, direction, netns: NS_HOST });

/** A veth pod ↔ host whose host end has HOST_IFINDEX; the pod end is deleted with it. */
function addVeth(): void {
  sh("ip", ["link", "add", HOST_IF, "netns", NS_HOST, "index", String(HOST_IFINDEX), "type", "veth", "peer", "name", POD_IF, "netns", NS_POD]);
  ipIn(NS_POD, "addr", "add", `${POD_IP}/24`, "dev", POD_IF);
  ipIn(NS_HOST, "addr", "add", `${HOST_IP}/24`, "dev", HOST_IF);
  for (const [ns, ifname] of [[NS_POD, POD_IF], [NS_HOST, HOST_IF]] as const) ipIn(ns, "link", "set", ifname, "up");
}

async function podReaches(port: number): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", NS_POD, process.execPath, "--import", "tsx", PROBE, "connect", "tcp", HOST_IP, String(port), "1500"], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

/** Egress: only port 8080 to the host's identity. */
const policy: SubjectPolicy = {
  subject: POD_ID, ingressEnforced: false, egressEnforced: true,
  entries: [{ subject: POD_ID, direction: "egress", peer: HOST_PEER_ID, proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 }],
};

function linkPins(): string[] {
  const dir = path.join(dp!.object.pinDir, "links");
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

before(async () => {
  fx.addNetns(NS_POD);
  fx.addNetns(NS_HOST);
  addVeth();
  dp = Datapath.load(SCOPE);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
  dp.setIpcache({ cidr: `${HOST_IP}/32`, identity: HOST_PEER_ID });
  dp.setSubjectPolicy(policy, [{ ip: POD_IP, ifindex: HOST_IFINDEX }]);
  await waitForLine(fx.spawn(NS_HOST, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", "8080", "8081"]), /^listening/, 15000);
});
beforeEach(() => dp!.detachEndpoint(HOST_IFINDEX, NS_HOST));
after(() => {
  try {
    dp?.detachEndpoint(HOST_IFINDEX, NS_HOST);
  } catch {
    // the netns may already be gone
  }
  fx.cleanup();
  dp?.close();
  dp?.unpin();
});

test("programs attach as tcx links pinned beside the maps and stay attached when the process lets go of them", async () => {
  dp!.attachEndpoint(HOST_IFINDEX, NS_HOST);
  assert.equal(attachedProgramId(target("ingress")), programId(dp!.programFd(PROGRAMS.fromContainer)));
  assert.equal(attachedProgramId(target("egress")), programId(dp!.programFd(PROGRAMS.toContainer)));
  assert.equal(queryTc(target("ingress")), undefined, "no clsact filter");
  assert.deepEqual(linkPins(), [`${NS_HOST}-${HOST_IFINDEX}-egress`, `${NS_HOST}-${HOST_IFINDEX}-ingress`]);
  // Another object (an agent that restarted) closes the first: the pinned links keep enforcing.
  const ingressId = attachedProgramId(target("ingress"));
  dp!.close();
  dp = Datapath.load(SCOPE);
  assert.equal(attachedProgramId(target("ingress")), ingressId, "still attached after the old object closed");
  assert.equal(await podReaches(8080), true, "allowed port");
  assert.equal(await podReaches(8081), false, "default deny still in force");
  // Re-attaching switches the link to the new object's program in place.
  dp.attachEndpoint(HOST_IFINDEX, NS_HOST);
  assert.equal(attachedProgramId(target("ingress")), programId(dp.programFd(PROGRAMS.fromContainer)));
  dp.detachEndpoint(HOST_IFINDEX, NS_HOST);
  assert.equal(attachedProgramId(target("ingress")), undefined);
  assert.deepEqual(linkPins(), [], "the pins go with the links");
  assert.equal(await podReaches(8081), true, "nothing attached: nothing enforced");
});

/** Connects from the pod to 8080 (allowed) and 8081 (denied) every 50 ms, each try 500 ms at most; stop() says how each went. */
function continuousProbe(): { stop: () => Promise<{ allowedOk: number; allowedFailed: number; deniedOk: number; deniedFailed: number }> } {
  const script =
    `const net=require("net");let stop=false;process.stdin.on("data",()=>{stop=true});` +
    `const one=(port)=>new Promise((r)=>{const s=net.connect(port,${JSON.stringify(HOST_IP)});const t=setTimeout(()=>{s.destroy();r(false)},500);` +
    `s.on("connect",()=>{clearTimeout(t);s.destroy();r(true)});s.on("error",()=>{clearTimeout(t);r(false)})});` +
    `(async()=>{while(!stop){const [a,d]=await Promise.all([one(8080),one(8081)]);console.log((a?"allowed-ok":"allowed-failed")+" "+(d?"denied-ok":"denied-failed"));await new Promise((r)=>setTimeout(r,50))}process.exit(0)})();`;
  const child = spawn("ip", ["netns", "exec", NS_POD, process.execPath, "-e", script], { stdio: ["pipe", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  return {
    stop: async () => {
      child.stdin.write("stop\n");
      await new Promise((r) => child.once("exit", r));
      const count = (w: string): number => out.split(/\s+/).filter((x) => x === w).length;
      return { allowedOk: count("allowed-ok"), allowedFailed: count("allowed-failed"), deniedOk: count("denied-ok"), deniedFailed: count("denied-failed") };
    },
  };
}

test("a restart with the same object reuses the verified programs: not loaded again, the links keep the same programs, enforcement never gaps", async () => {
  dp!.attachEndpoint(HOST_IFINDEX, NS_HOST);
  const before = { ingress: attachedProgramId(target("ingress")), egress: attachedProgramId(target("egress")) };
  const probe = continuousProbe();
  await new Promise((r) => setTimeout(r, 500));
  dp!.close(); // the agent stops; a new one starts on the same pins
  dp = Datapath.load(SCOPE);
  assert.equal(dp.object.reused, true, "the pinned programs were reused, not loaded and verified again");
  assert.equal(programId(dp.programFd(PROGRAMS.fromContainer)), before.ingress, "the very program on the link");
  dp.attachEndpoint(HOST_IFINDEX, NS_HOST); // the restart's re-attach: the links keep their programs
  assert.deepEqual({ ingress: attachedProgramId(target("ingress")), egress: attachedProgramId(target("egress")) }, before);
  await new Promise((r) => setTimeout(r, 1000));
  const r = await probe.stop();
  assert.equal(r.allowedFailed, 0, `an allowed connection failed during the restart (${JSON.stringify(r)})`);
  assert.equal(r.deniedOk, 0, `a denied connection got through during the restart (${JSON.stringify(r)})`);
  assert.ok(r.allowedOk >= 3 && r.deniedFailed >= 3, `the probe ran throughout (${JSON.stringify(r)})`);
});

test("an interface attached with clsact by an earlier version moves to tcx and keeps its policy", async () => {
  attachTc(dp!.programFd(PROGRAMS.fromContainer), target("ingress"));
  attachTc(dp!.programFd(PROGRAMS.toContainer), target("egress"));
  assert.ok(queryTc(target("ingress")));
  assert.equal(await podReaches(8081), false, "clsact enforces");
  dp!.attachEndpoint(HOST_IFINDEX, NS_HOST);
  assert.equal(queryTc(target("ingress")), undefined, "the clsact filter is removed once the link is in place");
  assert.equal(queryTc(target("egress")), undefined);
  assert.equal(attachedProgramId(target("ingress")), programId(dp!.programFd(PROGRAMS.fromContainer)));
  assert.equal(await podReaches(8080), true);
  assert.equal(await podReaches(8081), false, "tcx enforces");
});

test("a link left on a deleted interface is replaced when a new interface gets the same ifindex", async () => {
  dp!.attachEndpoint(HOST_IFINDEX, NS_HOST);
  ipIn(NS_HOST, "link", "del", HOST_IF); // the pod end goes too; the pinned link is now defunct
  addVeth();
  assert.equal(attachedProgramId(target("ingress")), undefined, "the new interface starts bare");
  dp!.attachEndpoint(HOST_IFINDEX, NS_HOST);
  assert.equal(attachedProgramId(target("ingress")), programId(dp!.programFd(PROGRAMS.fromContainer)));
  assert.equal(await podReaches(8080), true);
  assert.equal(await podReaches(8081), false, "the new interface is enforced");
});

test("the pins of links whose interface was deleted are pruned; live ones stay", () => {
  dp!.attachEndpoint(HOST_IFINDEX, NS_HOST);
  assert.equal(dp!.pruneDefunctLinks(), 0, "both links are live");
  assert.equal(linkPins().length, 2);
  ipIn(NS_HOST, "link", "del", HOST_IF);
  try {
    assert.equal(dp!.pruneDefunctLinks(), 2);
    assert.deepEqual(linkPins(), []);
  } finally {
    addVeth();
  }
});
