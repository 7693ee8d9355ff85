// An informer against a real kube-apiserver that is restarted mid-watch: it heals by itself and
// delivers every change, including those made around the restart.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { startControlPlane } from "../localcluster/cluster.ts";
import { KubeClient, type KubeObject } from "./kube.ts";
import { Informer, type InformerEvent } from "./informer.ts";
import type { Resource } from "./kube.ts";
import { eventually } from "../controllers/testing/operator-process.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;
const CONFIGMAPS: Resource = { group: "", version: "v1", plural: "configmaps", namespaced: true, kind: "ConfigMap" };
const NS = "informer-test";

let cp: ControlPlane | undefined;
let client: KubeClient | undefined;
let informer: Informer<KubeObject> | undefined;

async function kubectl(args: string[], input?: string): Promise<string> {
  const r = await (cp as ControlPlane).kubectl(args, input);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

const cm = (name: string, v: string): string => JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: NS }, data: { v } });

describe("informer across an API server restart", { timeout: 300_000 }, () => {
  before(async () => {
    cp = await startControlPlane({ name: "informer-test" });
    await kubectl(["create", "namespace", NS]);
    client = await KubeClient.fromKubeconfig(cp.kubeconfig);
  });

  after(async () => {
    await informer?.stop();
    client?.close();
    await cp?.stop();
  });

  it("misses no event when the API server restarts mid-watch", async () => {
    const log = pino({ level: "silent" });
    informer = new Informer<KubeObject>(client as KubeClient, CONFIGMAPS, log, { backoff: { baseMs: 200, maxMs: 4000, jitter: 0.2 } });
    const events: InformerEvent<KubeObject>[] = [];
    informer.on((ev) => events.push(ev));
    await kubectl(["apply", "-f", "-"], cm("before", "1"));
    await kubectl(["apply", "-f", "-"], cm("doomed", "1"));
    informer.start();
    await informer.waitForSync();
    const seen = (type: string, name: string): boolean => events.some((e) => e.type === type && e.obj.metadata.name === name && e.obj.metadata.namespace === NS);
    await kubectl(["apply", "-f", "-"], cm("live", "1"));
    await eventually("live seen on the watch", () => seen("add", "live") || undefined);
    const listsBefore = informer.stats.lists;

    await kubectl(["apply", "-f", "-"], cm("just-before-restart", "1"));
    await (cp as ControlPlane).restart();
    // Changes right after the restart, while the informer is still backing off.
    await kubectl(["apply", "-f", "-"], cm("after-restart", "1"));
    await kubectl(["apply", "-f", "-"], cm("before", "2"));
    await kubectl(["delete", "configmap", "-n", NS, "doomed"]);

    await eventually("every change delivered", () => (seen("add", "just-before-restart") && seen("add", "after-restart") && seen("update", "before") && seen("delete", "doomed")) || undefined, 60_000);
    // The cache equals the server's state.
    const server = JSON.parse(await kubectl(["get", "configmaps", "-n", NS, "-o", "json"])) as { items: KubeObject[] };
    const names = (l: KubeObject[]): string[] => l.map((o) => o.metadata.name).sort();
    assert.deepEqual(names(informer.list().filter((o) => o.metadata.namespace === NS)), names(server.items));
    assert.ok(informer.stats.errors >= 1, "the outage was noticed");
    // Backoff, not a tight loop: a handful of relists during a restart of a few seconds.
    assert.ok(informer.stats.lists - listsBefore <= 15, `relists during the outage: ${informer.stats.lists - listsBefore}`);
    const before = informer.get(`${NS}/before`) as KubeObject & { data?: Record<string, string> };
    assert.equal(before.data?.v, "2");
  });
});
