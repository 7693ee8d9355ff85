// The pipeline's selector cache: typed users told which identities their selectors gained or lost; the cluster name reaches the `cluster` entity.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LabelSet } from "../model.ts";
import { label, labelSetFrom } from "../labels.ts";
import { PartitionedSelectorCache, type SelectionUser } from "./selector-partitions.ts";
import { selectorFrom } from "../selector.ts";

const pod = (ns: string, app: string, cluster = "default"): LabelSet =>
  labelSetFrom([label("k8s", "io.kubernetes.pod.namespace", ns), label("k8s", "app", app), label("k8s", "io.cilium.k8s.policy.cluster", cluster)]);

class Recorder implements SelectionUser {
  readonly calls: { selector: string; added: number[]; removed: number[] }[] = [];
  identitiesChanged(selector: string, added: readonly number[], removed: readonly number[]): void {
    this.calls.push({ selector, added: [...added], removed: [...removed] });
  }
}

test("a user is told the identities its selector gains and loses, in namespaced and cluster-wide partitions", () => {
  const cache = new PartitionedSelectorCache();
  const user = new Recorder();
  const inProd = cache.peerSelection({ kind: "selector", selector: selectorFrom({ matchLabels: { "k8s:io.kubernetes.pod.namespace": "prod", app: "web" } }) }, []);
  const anyWeb = cache.peerSelection({ kind: "selector", selector: selectorFrom({ matchLabels: { app: "web" } }) }, []);
  assert.equal(inProd.kind, "identities");
  assert.equal(anyWeb.kind, "identities");
  if (inProd.kind !== "identities" || anyWeb.kind !== "identities") return;
  assert.equal(inProd.matcher.pin, "prod");
  cache.add(inProd.matcher, user);
  cache.add(anyWeb.matcher, user);
  cache.upsertIdentity(300, pod("prod", "web"));
  cache.upsertIdentity(301, pod("dev", "web"));
  cache.removeIdentity(300);
  assert.deepEqual(
    user.calls.map((c) => [c.selector === inProd.matcher.canonical ? "prod" : "any", c.added, c.removed]).sort(),
    [["any", [300], []], ["any", [301], []], ["any", [], [300]], ["prod", [300], []], ["prod", [], [300]]].sort(),
  );
});

test("a released user hears nothing more, and the selector goes with its last use", () => {
  const cache = new PartitionedSelectorCache();
  const a = new Recorder();
  const b = new Recorder();
  const sel = cache.peerSelection({ kind: "selector", selector: selectorFrom({ matchLabels: { app: "web" } }) }, []);
  if (sel.kind !== "identities") return assert.fail("a selector peer selects identities");
  cache.add(sel.matcher, a);
  cache.add(sel.matcher, b);
  cache.release(sel.matcher.canonical, a);
  cache.upsertIdentity(300, pod("prod", "web"));
  assert.equal(a.calls.length, 0);
  assert.equal(b.calls.length, 1);
  cache.release(sel.matcher.canonical, b);
  assert.equal(cache.selections(sel.matcher.canonical), undefined);
});

test("the `cluster` entity selects the pods of the cache's own cluster", () => {
  const cache = new PartitionedSelectorCache({ clusterName: "east" });
  const sel = cache.peerSelection({ kind: "entity", entity: "cluster" }, []);
  if (sel.kind !== "identities") return assert.fail("cluster selects identities");
  cache.add(sel.matcher, new Recorder());
  cache.upsertIdentity(300, pod("prod", "web", "east"));
  cache.upsertIdentity(301, pod("prod", "web", "west"));
  assert.deepEqual([...cache.selections(sel.matcher.canonical)!], [300]);
});

test("peers that select everything are the wildcard, peers that cannot select are nothing", () => {
  const cache = new PartitionedSelectorCache();
  assert.equal(cache.peerSelection({ kind: "any" }, []).kind, "wildcard");
  assert.equal(cache.peerSelection({ kind: "entity", entity: "all" }, []).kind, "wildcard");
  assert.equal(cache.peerSelection({ kind: "entity", entity: "none" }, []).kind, "nothing");
  assert.equal(cache.peerSelection({ kind: "service", name: "db", namespace: "prod" }, []).kind, "nothing");
});
