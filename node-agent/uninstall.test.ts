// Uninstall on the node: only a DaemonSet proven gone or being deleted removes the node's state, and the removal leaves no program, pin or CNI file of Membrane while the pod's link stays.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { Datapath } from "./bpf/datapath.ts";
import { attachedProgramId } from "./bpf/loader.ts";
import { NetnsFixture, ifindexIn, ipIn } from "./bpf/netns.ts";
import { linkTarget, removeNodeState, seenOf, uninstalling } from "./uninstall.ts";

const log = pino({ level: "silent" });

describe("when a stopping agent removes the node's state", () => {
  test("only when the DaemonSet is seen gone or being deleted; an unanswered or refused read keeps the node enforcing", () => {
    assert.equal(uninstalling("gone", "unknown"), true);
    assert.equal(uninstalling("deleting", "unknown"), true);
    assert.equal(uninstalling("present", "gone"), true, "the watch had not seen the delete yet; the read at stop has");
    assert.equal(uninstalling("unknown", "deleting"), true);
    assert.equal(uninstalling("present", "present"), false, "a rolling upgrade or a deleted pod");
    assert.equal(uninstalling("present", "unknown"), false, "the API server did not answer at stop");
    assert.equal(uninstalling("unknown", "unknown"), false);
  });

  test("a DaemonSet with a deletionTimestamp is being deleted (foreground cascade); none is gone", () => {
    assert.equal(seenOf(undefined), "gone");
    assert.equal(seenOf({ metadata: { name: "membrane-agent" } }), "present");
    assert.equal(seenOf({ metadata: { name: "membrane-agent", deletionTimestamp: "2026-12-04T00:00:00Z" } as { name: string } }), "deleting");
  });

  test("link pins name their interface: netns, ifindex and direction", () => {
    assert.deepEqual(linkTarget("host-12-ingress"), { ifindex: 12, direction: "ingress" });
    assert.deepEqual(linkTarget("rn-a%2eb-7-egress"), { ifindex: 7, direction: "egress", netns: "rn-a.b" });
    assert.equal(linkTarget("not-a-link"), undefined);
  });
});

describe("removing Membrane from a node", () => {
  const tag = `un${process.pid % 100000}`;
  const NS_POD = `${tag}-pod`;
  const NS_HOST = `${tag}-host`;
  const fx = new NetnsFixture();
  let dir: string;

  before(() => {
    fx.addNetns(NS_POD);
    fx.addNetns(NS_HOST);
    fx.addVeth({ netns: NS_HOST, ifname: `${tag}h`, cidr: "10.206.0.2/24" }, { netns: NS_POD, ifname: `${tag}p`, cidr: "10.206.0.1/24" });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-uninstall-"));
  });
  after(() => {
    fs.rmSync(path.join("/sys/fs/bpf/membrane", `test-${tag}`), { recursive: true, force: true });
    fx.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("detaches the programs, removes the pins and the agent's files; the pod's link stays", () => {
    const ifindex = ifindexIn(NS_HOST, `${tag}h`);
    const dp = Datapath.load(`test-${tag}`);
    dp.attachEndpoint(ifindex, NS_HOST);
    const pinDir = dp.object.pinDir;
    dp.close(); // as the stopped agent: its fds are closed, the pinned links hold the programs
    for (const direction of ["ingress", "egress"] as const) assert.notEqual(attachedProgramId({ ifindex, direction, netns: NS_HOST }), undefined, `attached on ${direction} before`);

    const state = path.join(dir, "run", "state");
    fs.mkdirSync(state, { recursive: true });
    for (const f of [path.join(state, "endpoints.json"), path.join(dir, "run", "agent.sock")]) fs.writeFileSync(f, "x");

    const removed = removeNodeState({ pinDirs: [pinDir], dirs: [state], files: [path.join(dir, "run", "agent.sock")], log });

    for (const direction of ["ingress", "egress"] as const) assert.equal(attachedProgramId({ ifindex, direction, netns: NS_HOST }), undefined, `nothing attached on ${direction}`);
    assert.ok(!fs.existsSync(pinDir), "no pinned map or link left");
    assert.ok(!fs.existsSync(path.join(dir, "run")), "the state dir and the socket's now empty dir are gone");
    assert.ok(removed.some((r) => r.startsWith("tcx ")) && removed.some((r) => r.startsWith("pins ")), removed.join("\n"));
    // The pod's link is the pod's: it stays, with no program on it.
    assert.match(ipIn(NS_HOST, "-o", "link", "show", "dev", `${tag}h`), new RegExp(`${tag}h`));
  });
});
