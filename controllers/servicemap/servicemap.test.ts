// The map reads flows through the Hubble relay (as in the operator): two agents merge, an agent restart neither loses
// nor double-counts flows, and an agent that appears later is followed too.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { pino } from "pino";
import { FlowBuffer } from "../../node-agent/observer/buffer.ts";
import { HubbleServer } from "../../node-agent/observer/hubble-server.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";
import type { HubblePeer } from "../../flowapi/discover.ts";
import { eventually } from "../testing/operator-process.ts";
import { HubbleRelay } from "../relay/relay.ts";
import { ServiceMap } from "./servicemap.ts";

const log = pino({ level: "silent" });

test("flows of two agents reach the map through the relay; a restarted agent is followed again from where it stopped; a new agent joins", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-servicemap-follow-"));
  const sock = (n: string): string => path.join(dir, `${n}.sock`);
  const bufA = new FlowBuffer({ capacity: 100 });
  const bufB = new FlowBuffer({ capacity: 100 });
  const bufC = new FlowBuffer({ capacity: 100 });
  // Two flows in the same millisecond: a resume must skip both, not one, not none.
  bufA.push(flow({ time: "2026-01-01T00:00:01.000Z", node: "node-a" }));
  bufA.push(flow({ time: "2026-01-01T00:00:01.000Z", node: "node-a", direction: "egress" }));
  bufB.push(dropFlow({ time: "2026-01-01T00:00:02.000Z", node: "node-b", source: endpoint({ pod: "client-2", ip: "10.0.0.2" }) }));
  let a = new HubbleServer(bufA, "node-a", log);
  const b = new HubbleServer(bufB, "node-b", log);
  const c = new HubbleServer(bufC, "node-c", log);
  await a.start({ socketPath: sock("a") });
  await b.start({ socketPath: sock("b") });
  const peers: HubblePeer[] = [
    { node: "node-a", address: `unix:${sock("a")}` },
    { node: "node-b", address: `unix:${sock("b")}` },
  ];
  const relay = new HubbleRelay({ address: "127.0.0.1:0", peers: () => Promise.resolve([...peers]), rescanMs: 200, log });
  await relay.start();
  const map = new ServiceMap({ port: 0, hubbleServers: [] }, undefined, log, relay.source);
  t.after(async () => {
    await map.stop();
    await relay.stop();
    await a.stop();
    await b.stop();
    await c.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await map.start();
  assert.deepEqual(map.followed, ["relay"]);
  const edgeFrom = (pod: string) => map.graph().edges.find((e) => e.from === `pod:default/${pod}`);
  await eventually("flows from both agents", () => edgeFrom("client-1")?.forwarded === 2 && edgeFrom("client-2")?.dropped === 1);

  // Agent A restarts (same socket, same buffer) and sees one more flow while it is down.
  await a.stop();
  bufA.push(dropFlow({ time: "2026-01-01T00:00:03.000Z", node: "node-a", destination: flow().destination }));
  a = new HubbleServer(bufA, "node-a", log);
  await a.start({ socketPath: sock("a") });
  await eventually("the flow seen while the relay was disconnected from node-a", () => edgeFrom("client-1")?.dropped === 1, 15_000);
  assert.equal(edgeFrom("client-1")?.forwarded, 2, "the replay after reconnecting did not count old flows again");
  assert.equal(edgeFrom("client-1")?.verdict, "denied");

  bufB.push(flow({ time: "2026-01-01T00:00:04.000Z", node: "node-b", source: endpoint({ pod: "client-2", ip: "10.0.0.2" }) }));
  await eventually("a live flow from the agent that stayed up", () => edgeFrom("client-2")?.verdict === "allowed");

  // A third node's agent appears: the relay finds it on its next look at the peers.
  bufC.push(flow({ time: "2026-01-01T00:00:05.000Z", node: "node-c", source: endpoint({ pod: "client-3", ip: "10.0.0.3" }) }));
  await c.start({ socketPath: sock("c") });
  peers.push({ node: "node-c", address: `unix:${sock("c")}` });
  await eventually("the new node's flows", () => edgeFrom("client-3")?.forwarded === 1, 15_000);
  assert.equal(edgeFrom("client-1")?.forwarded, 2);
  assert.equal(edgeFrom("client-2")?.dropped, 1);
});
