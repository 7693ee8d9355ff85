// Agent discovery: which Hubble address each CiliumNode's annotation names, and which nodes cannot be asked and why.
import { test } from "node:test";
import assert from "node:assert/strict";
import { HUBBLE_ADDRESS_ANNOTATION, hubblePeersOf } from "./discover.ts";

const node = (name: string, address?: string) => ({
  metadata: { name, ...(address !== undefined ? { annotations: { [HUBBLE_ADDRESS_ANNOTATION]: address } } : {}) },
});

test("every annotated CiliumNode is a peer, sorted by node; a node without or with a bad annotation is named with the reason", () => {
  const peers = hubblePeersOf([node("node-b", "10.0.0.2:4244"), node("node-a", "unix:/run/a.sock"), node("node-c"), node("node-d", "tcp://x"), node("node-e", "[fd00::2]:4244")]);
  assert.deepEqual(peers.slice(0, 2), [
    { node: "node-a", address: "unix:/run/a.sock" },
    { node: "node-b", address: "10.0.0.2:4244" },
  ]);
  assert.equal(peers[2]!.node, "node-c");
  assert.match(peers[2]!.address === undefined ? peers[2]!.reason : "", /metadata\.annotations\["membrane\.io\/hubble-address"\]: not set/);
  assert.match(peers[3]!.address === undefined ? peers[3]!.reason : "", /"tcp:\/\/x" is not unix:\/PATH or HOST:PORT/);
  assert.deepEqual(peers[4], { node: "node-e", address: "[fd00::2]:4244" });
});
