// The agent's runtime files across an agent's replacement: the containers the last agent wrote into the pods file are
// what a new agent writes again until its pod watch has synced (containerSelector rules must not lapse meanwhile), and
// a new agent starts the runtime from the files the last one wrote before its own start writes them again.
// The first test runs `membrane runtime` (BPF), pinned under a scope of this run's own: run under flock /tmp/membrane-kernel.lock.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { AgentRuntime } from "./agent-runtime.ts";
import { removeRuntimePins } from "./pin-scopes.ts";

const SCOPE = `test-agent-rt-${process.pid}`;

describe("AgentRuntime's pods file across agents", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-agent-runtime-"));
  after(() => {
    removeRuntimePins(SCOPE);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const log = pino({ level: "silent" });

  it("startFromLastState starts a runtime from the last agent's files at once; start() then adopts that same process, and shutdown stops it", async () => {
    const state = path.join(dir, "from-last");
    fs.mkdirSync(state);
    const last = new AgentRuntime({ stateDir: state, nodeName: "n", log, bpfScope: SCOPE });
    fs.writeFileSync(last.policyFile, "");
    last.setPods([]);
    const next = new AgentRuntime({ stateDir: state, nodeName: "n", log, bpfScope: SCOPE });
    next.startFromLastState();
    const early = next.pid();
    assert.ok(early !== undefined, "a runtime spawned before the agent's start");
    const argv = fs.readFileSync(`/proc/${early}/cmdline`, "utf8").split("\0");
    assert.equal(argv[argv.indexOf("--bpf-scope") + 1], SCOPE, "started with the agent's runtime pin scope, not the node's");
    try {
      await next.start([], []);
      assert.equal(next.pid(), early, "the agent's start adopted it");
      assert.equal(next.running(), true);
    } finally {
      await next.shutdown();
    }
    assert.equal(next.running(), false);
  });

  it("a new agent reads back the containers the last one wrote, and none from a pods file it cannot read", () => {
    const app = { id: "c0ffee", name: "app", image: "busybox", imageId: "sha256:1" };
    new AgentRuntime({ stateDir: dir, nodeName: "n", log }).setPods([
      { netns: "/var/run/netns/a", namespace: "default", name: "web", labels: {}, containers: [app] },
      { netns: "/var/run/netns/b", namespace: "default", name: "bare", labels: {} },
    ]);
    const next = new AgentRuntime({ stateDir: dir, nodeName: "n", log });
    assert.deepEqual([...next.writtenContainers()].map(([ns, m]) => [ns, [...m]]), [["default", [["web", [app]]]]]);
    fs.writeFileSync(next.podsFile, "{not json");
    assert.equal(next.writtenContainers().size, 0);
  });
});
