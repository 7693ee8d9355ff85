// Observer discovery: which address each CiliumNode's annotation names, and which nodes cannot be asked and why.
import { test } from "node:test";
import assert from "node:assert/strict";
import { OBSERVER_ADDRESS_ANNOTATION, observersOf, parseObserverAddress } from "./discover.ts";

const node = (name: string, address?: string) => ({
  metadata: { name, ...(address !== undefined ? { annotations: { [OBSERVER_ADDRESS_ANNOTATION]: address } } : {}) },
});

test("observer addresses: unix sockets and http host:port, nothing else", () => {
  assert.deepEqual(parseObserverAddress("unix:/run/membrane/observer.sock"), { socketPath: "/run/membrane/observer.sock" });
  assert.deepEqual(parseObserverAddress("/run/x.sock"), { socketPath: "/run/x.sock" });
  assert.deepEqual(parseObserverAddress("http://10.1.0.2:4245"), { host: "10.1.0.2", port: 4245 });
  assert.deepEqual(parseObserverAddress("http://[fd00::2]:4245"), { host: "fd00::2", port: 4245 });
  for (const bad of ["unix:", "unix:relative.sock", "https://10.1.0.2:4245", "http://10.1.0.2:4245/flows", "10.1.0.2:4245", ""]) {
    assert.equal(parseObserverAddress(bad), undefined, bad);
  }
});

test("every annotated CiliumNode is an observer; a node without or with a bad annotation is named with the reason", () => {
  const d = observersOf([node("node-b", "http://10.0.0.2:4245"), node("node-a", "unix:/run/a.sock"), node("node-c"), node("node-d", "tcp://x")]);
  assert.deepEqual(d.observers, [
    { node: "node-a", address: "unix:/run/a.sock" },
    { node: "node-b", address: "http://10.0.0.2:4245" },
  ]);
  assert.equal(d.unreachable.length, 2);
  assert.equal(d.unreachable[0]!.node, "node-c");
  assert.match(d.unreachable[0]!.reason, /metadata\.annotations\["membrane\.io\/observer-address"\]: not set/);
  assert.equal(d.unreachable[1]!.node, "node-d");
  assert.match(d.unreachable[1]!.reason, /"tcp:\/\/x" is not unix:\/PATH or http:\/\/HOST:PORT/);
});
