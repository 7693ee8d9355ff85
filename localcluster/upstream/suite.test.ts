// The upstream suite's ginkgo report read into passed / failed / skipped: which specs count (NetworkPolicy ones, wherever they live) and which do not (test/e2e/common's, linked in by the entry point).
import assert from "node:assert/strict";
import { test } from "node:test";
import { NETPOL_FOCUS, NETPOL_SKIP, summarizeReport } from "./suite.ts";

const spec = (containers: string[], leaf: string, state: string, failure?: string) => ({
  ContainerHierarchyTexts: containers,
  LeafNodeText: leaf,
  LeafNodeType: "It",
  State: state,
  RunTime: 2_500_000_000,
  ...(failure ? { Failure: { Message: failure } } : {}),
});

test("a NetworkPolicy spec outside Netpol counts, its feature label in the leaf's text; test/e2e/common's specs do not", () => {
  const report = JSON.stringify([
    {
      SpecReports: [
        spec(["[sig-network] Netpol", "NetworkPolicy between server and client"], "should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]", "passed"),
        spec(["[sig-network] Services"], "should keep a Service reachable under a policy [Feature:NetworkPolicy]", "failed", "probe x/a -> y/b: BLOCKED\nexpected CONNECTED"),
        spec(["[sig-network] Netpol API"], "should support creating NetworkPolicy API operations", "skipped"),
        spec(["[sig-node] Pods"], "should be submitted and removed", "skipped"),
        { LeafNodeType: "SynchronizedBeforeSuite", State: "passed", RunTime: 1 },
      ],
    },
  ]);
  const summary = summarizeReport(report);
  assert.deepEqual(
    summary.specs.map((s) => [s.name, s.state, s.seconds]),
    [
      ["[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]", "passed", 2.5],
      ["[sig-network] Services should keep a Service reachable under a policy [Feature:NetworkPolicy]", "failed", 2.5],
      ["[sig-network] Netpol API should support creating NetworkPolicy API operations", "skipped", 2.5],
    ],
  );
  assert.equal(summary.specs[1]!.failure, "probe x/a -> y/b: BLOCKED\nexpected CONNECTED");
  assert.deepEqual([summary.passed, summary.failed, summary.skipped], [1, 1, 1]);
});

test("a failed suite setup node counts as a failure; an unknown state is refused", () => {
  const failedSetup = JSON.stringify([{ SpecReports: [{ LeafNodeType: "SynchronizedBeforeSuite", State: "failed", Failure: { Message: "no nodes" } }] }]);
  assert.deepEqual(summarizeReport(failedSetup).specs.map((s) => [s.name, s.state]), [["[SynchronizedBeforeSuite] SynchronizedBeforeSuite", "failed"]]);
  assert.throws(() => summarizeReport(JSON.stringify([{ SpecReports: [{ LeafNodeType: "It", State: "weird" }] }])), /unknown spec State "weird"/);
});

test("the focus picks the Netpol specs and other NetworkPolicy specs; the skip drops only the SCTP ones", () => {
  const focus = new RegExp(NETPOL_FOCUS);
  const skip = new RegExp(NETPOL_SKIP);
  assert.ok(focus.test(" [sig-network] Netpol [LinuxOnly] NetworkPolicy between server and client using UDP should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]"));
  assert.ok(focus.test(" [sig-network] Services should keep a Service reachable under a policy [Feature:NetworkPolicy]"));
  assert.ok(!focus.test(" [sig-network] Services should serve a basic endpoint from pods [Conformance]"));
  assert.ok(skip.test(" [sig-network] Netpol [Feature:SCTPConnectivity] [LinuxOnly] NetworkPolicy between server and client using SCTP should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]"));
  assert.ok(!skip.test(" [sig-network] Netpol NetworkPolicy between server and client should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP [Feature:NetworkPolicy]"));
});
