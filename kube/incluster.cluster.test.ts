// An agent's in-cluster client (service account token file, as kubelet projects it) against a real kube-apiserver: when the token file is replaced and the old token revoked, requests and the informer keep working.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { pino } from "pino";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { eventually } from "../controllers/testing/operator-process.ts";
import { KubeClient, resourcePath, type KubeObject, type ObjectList, type Resource } from "./kube.ts";
import { Informer } from "./informer.ts";

const CONFIGMAPS: Resource = { group: "", version: "v1", plural: "configmaps", namespaced: true, kind: "ConfigMap" };
const NS = "agent-test";

describe("in-cluster service account token rotation", { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let client: KubeClient | undefined;
  let informer: Informer<KubeObject> | undefined;
  // loadFromCluster reads <root>/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-incluster-"));
  const saDir = path.join(root, "var/run/secrets/kubernetes.io/serviceaccount");
  const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  /** A token bound to a Secret: deleting the Secret revokes it, as deleting the pod revokes kubelet's. */
  const tokenBoundTo = async (secret: string): Promise<string> => {
    await kubectl(["create", "secret", "generic", secret, "-n", NS]);
    return (await kubectl(["create", "token", "membrane-agent", "-n", NS, "--duration=1h", "--bound-object-kind=Secret", `--bound-object-name=${secret}`])).trim();
  };
  /** Kubelet's way of replacing the file: write a new one beside it, then rename over it. */
  const replaceToken = (token: string): void => {
    fs.writeFileSync(path.join(saDir, "token.new"), token);
    fs.renameSync(path.join(saDir, "token.new"), path.join(saDir, "token"));
  };
  const cm = (name: string): string => JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: NS }, data: { v: "1" } });

  before(async () => {
    cp = await startControlPlane({ name: "incluster-test" });
    await kubectl(["create", "namespace", NS]);
    await kubectl(["create", "serviceaccount", "membrane-agent", "-n", NS]);
    // Cluster-wide, as the agent's informers list and watch.
    await kubectl(["create", "clusterrole", "configmap-reader", "--verb=get,list,watch", "--resource=configmaps"]);
    await kubectl(["create", "clusterrolebinding", "configmap-reader", "--clusterrole=configmap-reader", `--serviceaccount=${NS}:membrane-agent`]);
    fs.mkdirSync(saDir, { recursive: true });
    fs.copyFileSync(cp.caFile, path.join(saDir, "ca.crt"));
    fs.writeFileSync(path.join(saDir, "namespace"), NS);
    replaceToken(await tokenBoundTo("token-1"));
    const url = new URL(cp.server);
    process.env.KUBERNETES_SERVICE_HOST = url.hostname;
    process.env.KUBERNETES_SERVICE_PORT = url.port;
    // What loadKubeConfig() does in a pod (KubeConfig.loadFromCluster), with the files under a temp root.
    const kc = new KubeConfig();
    kc.loadFromCluster(root);
    client = new KubeClient(kc);
  });

  after(async () => {
    await informer?.stop();
    client?.close();
    await cp?.stop();
    fs.rmSync(root, { recursive: true, force: true });
    for (const [k, v] of [["KUBERNETES_SERVICE_HOST", saved.host], ["KUBERNETES_SERVICE_PORT", saved.port]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it("keeps listing and watching after the token file is replaced and the old token revoked", async () => {
    const c = client!;
    informer = new Informer<KubeObject>(c, CONFIGMAPS, pino({ level: "silent" }), { backoff: { baseMs: 200, maxMs: 2000, jitter: 0.2 }, watchTimeoutSeconds: 2 });
    const names = (): string[] => informer!.list().filter((o) => o.metadata.namespace === NS).map((o) => o.metadata.name).sort();
    await kubectl(["apply", "-f", "-"], cm("before"));
    informer.start();
    await eventually("the informer synced", () => informer!.hasSynced || undefined);
    assert.deepEqual(names(), ["before"]);

    const oldToken = fs.readFileSync(path.join(saDir, "token"), "utf8");
    replaceToken(await tokenBoundTo("token-2"));
    await kubectl(["delete", "secret", "token-1", "-n", NS]);
    // The old token is really dead: a client holding it is refused.
    const stale = new KubeConfig();
    stale.loadFromOptions({
      clusters: [{ name: "c", server: cp!.server, caFile: cp!.caFile, skipTLSVerify: false }],
      users: [{ name: "u", token: oldToken }],
      contexts: [{ name: "x", cluster: "c", user: "u" }],
      currentContext: "x",
    });
    const staleClient = new KubeClient(stale);
    try {
      await eventually("the old token is refused", () =>
        staleClient.get(resourcePath(CONFIGMAPS, NS)).then(
          () => undefined,
          (e: { status?: number }) => e.status === 401 || undefined,
        ),
      );
    } finally {
      staleClient.close();
    }

    // Within the library's 60 s token-file cache: only the 401 makes the client read the new file.
    const list = await c.get<ObjectList<KubeObject>>(resourcePath(CONFIGMAPS, NS));
    assert.deepEqual(list.items.map((o) => o.metadata.name), ["before"]);
    await kubectl(["apply", "-f", "-"], cm("after"));
    // The informer's watches end every ~2 s and reconnect with the new token.
    await eventually("the informer sees a change made after the rotation", () => names().includes("after") || undefined, 30_000);
    const watchesAtRotation = informer.stats.watches;
    await eventually("the informer re-watched with the new token", () => informer!.stats.watches >= watchesAtRotation + 2 || undefined, 30_000);
    await kubectl(["apply", "-f", "-"], cm("later"));
    await eventually("and still sees changes", () => names().includes("later") || undefined, 30_000);
    assert.deepEqual(names(), ["after", "before", "later"]);
  });
});
