// A pod's workload as Hubble names it: Deployment through its ReplicaSet, CronJob through its Job, else the controller.
import { test } from "node:test";
import assert from "node:assert/strict";
import { sameWorkload, workloadOf } from "./workload.ts";

const owner = (kind: string, name: string, controller: boolean | "absent" = true) => ({ apiVersion: "apps/v1", kind, name, uid: "u", ...(controller !== "absent" ? { controller } : {}) });

test("a Deployment's pod: its ReplicaSet <deployment>-<pod-template-hash> is the Deployment", () => {
  const pod = { generateName: "web-5d8f7c-", labels: { app: "web", "pod-template-hash": "5d8f7c" }, ownerReferences: [owner("ReplicaSet", "web-5d8f7c")] };
  assert.deepEqual(workloadOf(pod), { kind: "Deployment", name: "web" });
});

test("a ReplicaSet of its own (no hash label, or a name without the hash) stays a ReplicaSet", () => {
  assert.deepEqual(workloadOf({ generateName: "rs-", ownerReferences: [owner("ReplicaSet", "rs")] }), { kind: "ReplicaSet", name: "rs" });
  assert.deepEqual(workloadOf({ generateName: "rs-", labels: { "pod-template-hash": "abc" }, ownerReferences: [owner("ReplicaSet", "rs-xyz")] }), { kind: "ReplicaSet", name: "rs-xyz" });
});

test("a CronJob's pod: its Job <cronjob>-<8 to 10 digits> is the CronJob; another Job stays a Job", () => {
  assert.deepEqual(workloadOf({ generateName: "backup-29000000-", ownerReferences: [owner("Job", "backup-29000000")] }), { kind: "CronJob", name: "backup" });
  assert.deepEqual(workloadOf({ generateName: "migrate-", ownerReferences: [owner("Job", "migrate-1234")] }), { kind: "Job", name: "migrate-1234" });
});

test("StatefulSet and DaemonSet pods are their controller; the controller reference wins over other owners", () => {
  assert.deepEqual(workloadOf({ generateName: "db-", ownerReferences: [owner("StatefulSet", "db")] }), { kind: "StatefulSet", name: "db" });
  assert.deepEqual(workloadOf({ generateName: "agent-", ownerReferences: [owner("ConfigMap", "x", false), owner("DaemonSet", "agent")] }), { kind: "DaemonSet", name: "agent" });
});

test("no workload: a pod created by hand (no generated name), no controller reference, or malformed references", () => {
  assert.equal(workloadOf({ ownerReferences: [owner("StatefulSet", "db")] }), undefined);
  assert.equal(workloadOf({ generateName: "x-" }), undefined);
  assert.equal(workloadOf({ generateName: "x-", ownerReferences: [owner("StatefulSet", "db", "absent")] }), undefined);
  assert.equal(workloadOf({ generateName: "x-", ownerReferences: [null, "a", { kind: "", name: "n", controller: true }] }), undefined);
});

test("sameWorkload compares kind and name", () => {
  assert.equal(sameWorkload({ kind: "Deployment", name: "a" }, { kind: "Deployment", name: "a" }), true);
  assert.equal(sameWorkload({ kind: "Deployment", name: "a" }, { kind: "StatefulSet", name: "a" }), false);
  assert.equal(sameWorkload(undefined, undefined), true);
  assert.equal(sameWorkload({ kind: "Deployment", name: "a" }, undefined), false);
});
