// The lock-out guard: what a host policy can never cut, and the host endpoint's enforcement from the state.
import { test } from "node:test";
import assert from "node:assert/strict";
import { EMPTY_STATE } from "../core/nodestate.ts";
import { PROTO_NUMBER } from "../core/model.ts";
import { hostEnforcement, lockOutGuard, VXLAN_PORT, WIREGUARD_PORT } from "./hostfw.ts";
import { traceGuard } from "../core/host-trace.ts";

test("the guard keeps the operator stream, the API server, VXLAN and WireGuard between nodes and ICMP echo between nodes open", () => {
  const g = lockOutGuard({ operator: "10.96.0.20:9000", apiServerPort: 6443 });
  const has = (direction: string, proto: number, port: number, peers: string): boolean => g.some((e) => e.direction === direction && e.proto === proto && e.port === port && e.peers === peers);
  assert.ok(has("egress", PROTO_NUMBER.TCP, 9000, "any"), "agent → operator");
  assert.ok(has("egress", PROTO_NUMBER.TCP, 6443, "any") && has("ingress", PROTO_NUMBER.TCP, 6443, "any"), "API server");
  for (const port of [VXLAN_PORT, WIREGUARD_PORT]) for (const d of ["ingress", "egress"]) assert.ok(has(d, PROTO_NUMBER.UDP, port, "nodes"), `${d} UDP ${port} between nodes only`);
  for (const d of ["ingress", "egress"]) assert.ok(has(d, PROTO_NUMBER.ICMP, 8, "nodes"), `${d} ICMP echo`);
  assert.ok(g.every((e) => e.why.length > 0));
  assert.ok(!lockOutGuard({ operator: "op:9000" }).some((e) => e.port === 6443), "no API server port when none is known");
});

test("the host is enforced exactly as the host subject's policy says, and not at all without one", () => {
  assert.deepEqual(hostEnforcement(EMPTY_STATE), { ingressEnforced: false, egressEnforced: false });
  const state = { ...EMPTY_STATE, policies: [{ subject: 1, ingressEnforced: true, egressEnforced: false, entries: [] }] };
  assert.deepEqual(hostEnforcement(state), { ingressEnforced: true, egressEnforced: false });
});

test("what policy trace models of the guard (core/host-trace.ts traceGuard) is what the agent guards", () => {
  const g = lockOutGuard({ operator: "10.96.0.20:9000", apiServerPort: 6443 });
  for (const t of traceGuard(6443)) assert.ok(g.some((e) => e.direction === t.direction && e.proto === t.proto && e.port === t.port && e.peers === t.peers), `${t.direction} ${t.proto}/${t.port} ${t.peers}`);
});
