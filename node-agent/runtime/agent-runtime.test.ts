// The agent's runtime files across an agent's replacement: the containers the last agent wrote into the pods file are
// what a new agent writes again until its pod watch has synced (containerSelector rules must not lapse meanwhile).
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { AgentRuntime } from "./agent-runtime.ts";

describe("AgentRuntime's pods file across agents", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-agent-runtime-"));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = pino({ level: "silent" });

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
