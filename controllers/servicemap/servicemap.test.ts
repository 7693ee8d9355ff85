// The map follows real observer APIs: flows from two agents merge, and an agent restart neither loses nor double-counts flows.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { pino } from "pino";
import { FlowBuffer } from "../../node-agent/observer/buffer.ts";
import { ObserverServer } from "../../node-agent/observer/server.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";
import { eventually } from "../testing/operator-process.ts";
import { ServiceMap } from "./servicemap.ts";

const log = pino({ level: "silent" });

test("flows from two agents' observers merge into one map; a restarted agent is followed again from where it stopped", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-servicemap-follow-"));
  const socket = path.join(dir, "a.sock");
  const bufA = new FlowBuffer({ capacity: 100 });
  const bufB = new FlowBuffer({ capacity: 100 });
  // Two flows in the same millisecond: a resume must skip both, not one, not none.
  bufA.push(flow({ time: "2026-01-01T00:00:01.000Z", node: "node-a" }));
  bufA.push(flow({ time: "2026-01-01T00:00:01.000Z", node: "node-a", direction: "egress" }));
  bufB.push(dropFlow({ time: "2026-01-01T00:00:02.000Z", node: "node-b", source: endpoint({ pod: "client-2", ip: "10.0.0.2" }) }));
  let a = new ObserverServer(bufA);
  const b = new ObserverServer(bufB);
  const addrA = await a.start({ socketPath: socket });
  const addrB = await b.start({ port: 0 });
  const map = new ServiceMap({ port: 0, observers: [addrA, addrB], discover: false }, undefined, log);
  t.after(async () => {
    await map.stop();
    await a.stop();
    await b.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await map.start();
  assert.deepEqual(map.observers, [addrA, addrB].sort());
  const edgeFrom = (pod: string) => map.graph().edges.find((e) => e.from === `pod:default/${pod}`);
  await eventually("flows from both agents", () => edgeFrom("client-1")?.forwarded === 2 && edgeFrom("client-2")?.dropped === 1);

  // Agent A restarts (same socket, same buffer) and sees one more flow while it is down.
  await a.stop();
  bufA.push(dropFlow({ time: "2026-01-01T00:00:03.000Z", node: "node-a", destination: flow().destination }));
  a = new ObserverServer(bufA);
  await a.start({ socketPath: socket });
  await eventually("the flow seen while the map was disconnected", () => edgeFrom("client-1")?.dropped === 1, 15_000);
  assert.equal(edgeFrom("client-1")?.forwarded, 2, "the replay after reconnecting did not count old flows again");
  assert.equal(edgeFrom("client-1")?.verdict, "denied");

  bufB.push(flow({ time: "2026-01-01T00:00:04.000Z", node: "node-b", source: endpoint({ pod: "client-2", ip: "10.0.0.2" }) }));
  await eventually("a live flow from the agent that stayed up", () => edgeFrom("client-2")?.verdict === "allowed");
});
