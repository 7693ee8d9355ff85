// The controller's event plumbing: a watched informer's events become reconciles of their keys, and with coalesceMs a burst of events is one reconcile.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { Controller, generationChanged, type Reconciler } from "./controller.ts";
import type { Informer, InformerEvent } from "./informer.ts";
import type { KubeObject } from "./kube.ts";
import { OperatorMetrics } from "./metrics.ts";

/** An informer that is synced at once and hands its handlers the events `emit` is given. */
function fakeInformer(): { informer: Informer<KubeObject>; emit: (ev: InformerEvent<KubeObject>) => void } {
  const handlers: ((ev: InformerEvent<KubeObject>) => void)[] = [];
  const informer = { on: (h: (ev: InformerEvent<KubeObject>) => void) => void handlers.push(h), waitForSync: () => Promise.resolve() } as unknown as Informer<KubeObject>;
  return { informer, emit: (ev) => handlers.forEach((h) => h(ev)) };
}

/** Counts reconciles per key; each takes `ms`, as a sweep over a large cache would. */
function countingReconciler(ms: number): Reconciler & { readonly calls: Map<string, number> } {
  const calls = new Map<string, number>();
  return {
    name: "counting",
    calls,
    async reconcile(key: string) {
      calls.set(key, (calls.get(key) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, ms));
    },
  };
}

const obj = (name: string): KubeObject => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name } }) as KubeObject;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("Controller.watch", () => {
  const log = pino({ level: "silent" });

  it("a burst of 500 events over 250 ms for one key is one reconcile with coalesceMs, and many without", async () => {
    const run = async (coalesceMs: number | undefined): Promise<number> => {
      const { informer, emit } = fakeInformer();
      const r = countingReconciler(20);
      const c = new Controller(r, log, new OperatorMetrics(), { workers: 1 });
      c.watch(informer, () => ["sweep"], coalesceMs === undefined ? {} : { coalesceMs });
      await c.start();
      for (let i = 0; i < 500; i++) {
        emit({ type: "add", obj: obj(`o-${i}`) });
        if (i % 10 === 9) await sleep(5);
      }
      await sleep((coalesceMs ?? 0) + 200);
      await c.stop();
      return r.calls.get("sweep") ?? 0;
    };
    const coalesced = await run(1000);
    const immediate = await run(undefined);
    assert.equal(coalesced, 1);
    assert.ok(immediate >= 5, `without coalescing the burst ran ${immediate} reconciles`);
  });

  it("coalesced keys are reconciled once each, after the delay and not before", async () => {
    const { informer, emit } = fakeInformer();
    const r = countingReconciler(0);
    const c = new Controller(r, log, new OperatorMetrics(), { workers: 1 });
    c.watch(informer, (ev) => [ev.obj.metadata.name ?? ""], { coalesceMs: 300 });
    await c.start();
    for (let i = 0; i < 3; i++) for (const n of ["a", "b"]) emit({ type: "add", obj: obj(n) });
    await sleep(100);
    assert.equal(r.calls.size, 0, "nothing before the delay");
    await sleep(500);
    await c.stop();
    assert.deepEqual(Object.fromEntries(r.calls), { a: 1, b: 1 });
  });

  it("startAfter holds the beforeStart hooks and the first reconcile until its gate settles", async () => {
    const r = countingReconciler(0);
    const c = new Controller(r, log, new OperatorMetrics(), { workers: 1 });
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    const order: string[] = [];
    c.startAfter(async () => {
      await gate;
      order.push("gate");
    }).beforeStart(() => order.push("hook"));
    c.enqueue("k");
    const started = c.start();
    await sleep(100);
    assert.deepEqual(order, [], "nothing before the gate");
    assert.equal(r.calls.size, 0);
    open();
    await started;
    await sleep(50);
    await c.stop();
    assert.deepEqual(order, ["gate", "hook"]);
    assert.deepEqual(Object.fromEntries(r.calls), { k: 1 });
  });
});

describe("generationChanged", () => {
  const at = (generation: number | undefined, status?: string): KubeObject =>
    ({ apiVersion: "cilium.io/v2", kind: "CiliumNetworkPolicy", metadata: { name: "p", namespace: "default", ...(generation === undefined ? {} : { generation }) }, ...(status ? { status: { note: status } } : {}) }) as KubeObject;

  it("a status write (same generation) is no change; a spec change, an add, a delete and an object without a generation are", () => {
    assert.equal(generationChanged({ type: "update", old: at(3), obj: at(3, "Enforced 2/2") }), false);
    assert.equal(generationChanged({ type: "update", old: at(3), obj: at(4) }), true);
    assert.equal(generationChanged({ type: "add", obj: at(1) }), true);
    assert.equal(generationChanged({ type: "delete", obj: at(4) }), true);
    assert.equal(generationChanged({ type: "update", old: at(undefined), obj: at(undefined, "x") }), true);
  });
});
