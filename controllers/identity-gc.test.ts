// The identity GC's first marks: the operator starts the distribution's first compile once they are stored, so it must
// settle after they are written and before any delete is sent, and also when the first sweep fails.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { GC_SWEEP_KEY, IdentityGC } from "./identity-gc.ts";
import { KubeError, type KubeClient } from "../kube/kube.ts";
import type { Informer } from "../kube/informer.ts";
import { IDENTITY_NUMBER_LABEL, type IdentityObject } from "../kube/objects.ts";

const identity = (n: number): IdentityObject => ({ apiVersion: "cilium.io/v2", kind: "CiliumIdentity", metadata: { name: String(n), uid: `u${n}`, labels: { [IDENTITY_NUMBER_LABEL]: String(n) } } }) as IdentityObject;

/** A GC over `idle` identities (none in use) whose API calls are logged in `calls`; `failGet` makes the marks' read fail. */
function gcOver(idle: number[], calls: string[], failGet = false): { gc: IdentityGC; now: { ms: number } } {
  const objs = new Map(idle.map((n) => [String(n), identity(n)]));
  const identities = { list: () => [...objs.values()], get: (k: string) => objs.get(k) } as unknown as Informer<IdentityObject>;
  const client = {
    get: () => {
      calls.push("get marks");
      return Promise.reject(failGet ? new KubeError(500, "InternalError", "down") : new KubeError(404, "NotFound", "none"));
    },
    create: () => {
      calls.push("store marks");
      return Promise.resolve({ metadata: { resourceVersion: "1" } });
    },
    replace: () => {
      calls.push("store marks");
      return Promise.resolve({ metadata: { resourceVersion: "2" } });
    },
    request: (verb: string) => {
      calls.push(`${verb} batch`);
      return Promise.resolve({});
    },
  } as unknown as KubeClient;
  const now = { ms: 1_000_000 };
  const gc = new IdentityGC({
    client,
    identities,
    use: { inUse: () => false, retire: () => true, restore: () => {} },
    log: pino({ level: "silent" }),
    graceMs: 5000,
    marks: { namespace: "kube-system", name: "m" },
    concurrency: 4,
    now: () => now.ms,
  });
  return { gc, now };
}

describe("IdentityGC.firstMarks", () => {
  it("settles once the first sweep has stored its marks, before any delete, and the due ones are deleted after the grace only", async () => {
    const calls: string[] = [];
    const { gc, now } = gcOver([60_000, 60_001], calls);
    void gc.firstMarks.then(() => calls.push("first marks"));
    const r = await gc.reconcile(GC_SWEEP_KEY);
    await Promise.resolve();
    assert.deepEqual(calls, ["get marks", "store marks", "first marks"]);
    assert.deepEqual(r, { requeueAfter: 5000 });
    now.ms += 5000;
    await gc.reconcile(GC_SWEEP_KEY);
    assert.deepEqual(calls.slice(3), ["DELETE batch", "store marks"]);
  });

  it("settles when the first sweep fails, so nothing waits on it for ever", async () => {
    const calls: string[] = [];
    const { gc } = gcOver([60_000], calls, true);
    await assert.rejects(gc.reconcile(GC_SWEEP_KEY));
    await gc.firstMarks;
    assert.deepEqual(calls, ["get marks"]);
  });
});
