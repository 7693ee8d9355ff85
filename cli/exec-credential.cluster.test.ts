// `bin/membrane identity list` and `bin/membrane observe` with a kubeconfig whose user is an exec credential plugin (as on EKS, GKE or OIDC), against a real kube-apiserver.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { startControlPlane, type ControlPlane } from "../localcluster/cluster.ts";
import { GENERATED_DIR } from "../crds/generate.ts";
import { FlowBuffer } from "../node-agent/observer/buffer.ts";
import { pino } from "pino";
import { HubbleServer } from "../node-agent/observer/hubble-server.ts";
import { HUBBLE_ADDRESS_ANNOTATION } from "../flowapi/discover.ts";
import { flow } from "../flowapi/testing/flows.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));

describe("an exec credential plugin in the kubeconfig", { timeout: 300_000 }, () => {
  let cp: ControlPlane | undefined;
  let observer: HubbleServer | undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-exec-credential-"));
  const plugin = path.join(dir, "credential-plugin.sh");
  const tokenFile = path.join(dir, "token");
  const runsFile = path.join(dir, "runs");
  const kubeconfig = path.join(dir, "kubeconfig");

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await cp!.kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const membrane = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    promisify(execFile)(MEMBRANE, [...args, "--kubeconfig", kubeconfig]).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  const pluginRuns = (): number => (fs.existsSync(runsFile) ? fs.readFileSync(runsFile, "utf8").split("\n").filter((l) => l !== "").length : 0);

  before(async () => {
    cp = await startControlPlane({ name: "exec-credential-test" });
    await kubectl(["apply", "-f", GENERATED_DIR]);
    await kubectl(["wait", "--for=condition=Established", "crd/ciliumidentities.cilium.io", "crd/ciliumnodes.cilium.io", "--timeout=60s"]);
    // A service account allowed to read what the two commands read, and a token for it from the TokenRequest API.
    const reader = {
      apiVersion: "v1",
      kind: "List",
      items: [
        { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "membrane-cli", namespace: "default" } },
        {
          apiVersion: "rbac.authorization.k8s.io/v1",
          kind: "ClusterRole",
          metadata: { name: "membrane-cli-reader" },
          rules: [
            { apiGroups: ["cilium.io"], resources: ["ciliumidentities", "ciliumnodes"], verbs: ["get", "list"] },
            { apiGroups: [""], resources: ["pods"], verbs: ["list"] },
          ],
        },
        {
          apiVersion: "rbac.authorization.k8s.io/v1",
          kind: "ClusterRoleBinding",
          metadata: { name: "membrane-cli-reader" },
          roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "membrane-cli-reader" },
          subjects: [{ kind: "ServiceAccount", name: "membrane-cli", namespace: "default" }],
        },
      ],
    };
    await kubectl(["apply", "-f", "-"], JSON.stringify(reader));
    fs.writeFileSync(tokenFile, (await kubectl(["create", "token", "membrane-cli", "-n", "default", "--duration=1h"])).trim());
    // The plugin counts its runs and prints the token as an ExecCredential, as aws/gke-gcloud-auth-plugin/kubelogin do.
    fs.writeFileSync(
      plugin,
      [
        "#!/bin/sh",
        `echo run >> '${runsFile}'`,
        `printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}\\n' "$(cat '${tokenFile}')"`,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    fs.writeFileSync(
      kubeconfig,
      stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "local", cluster: { server: cp.server, "certificate-authority": cp.caFile } }],
        users: [{ name: "sso-user", user: { exec: { apiVersion: "client.authentication.k8s.io/v1", command: plugin, args: [], interactiveMode: "Never" } } }],
        contexts: [{ name: "local", context: { cluster: "local", user: "sso-user" } }],
        "current-context": "local",
      }),
    );
    const identity = { apiVersion: "cilium.io/v2", kind: "CiliumIdentity", metadata: { name: "256" }, "security-labels": { "k8s:app": "web", "k8s:io.kubernetes.pod.namespace": "shop" } };
    await kubectl(["apply", "-f", "-"], JSON.stringify(identity));
  });

  after(async () => {
    await observer?.stop();
    await cp?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("identity list shows the cluster's identities with the plugin's token", async () => {
    const runs = pluginRuns();
    const r = await membrane("identity", "list");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "ID    PODS   LABELS\n256   0      k8s:app=web k8s:io.kubernetes.pod.namespace=shop\n");
    assert.equal(pluginRuns() - runs, 1, "the plugin ran once for the command's two concurrent requests");
  });

  it("observe finds the agents with the plugin's token: none yet, then one whose flows it prints", async () => {
    const none = await membrane("observe");
    assert.equal(none.code, 1);
    assert.equal(none.stderr, "membrane observe: no node in the cluster has a Hubble address (0 CiliumNode(s) without one)\n");

    const buffer = new FlowBuffer({ capacity: 10 });
    buffer.push(flow({ node: "node-a", time: "2026-01-01T00:00:01.000Z" }));
    observer = new HubbleServer(buffer, "node-a", pino({ level: "silent" }));
    const [address] = await observer.start({ socketPath: path.join(dir, "hubble.sock") });
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name: "node-a", annotations: { [HUBBLE_ADDRESS_ANNOTATION]: address! } }, spec: {} }));
    const one = await membrane("observe", "-o", "json");
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(one.stdout.trimEnd().split("\n").map((l) => (JSON.parse(l) as { node: string; verdict: string }).node), ["node-a"]);
  });

  it("a token the API server rejects is reported as Unauthorized, after running the plugin again for a fresh one", async () => {
    const good = fs.readFileSync(tokenFile, "utf8");
    fs.writeFileSync(tokenFile, "not-a-token");
    try {
      const runs = pluginRuns();
      const list = await membrane("identity", "list");
      assert.equal(list.code, 1);
      assert.equal(list.stderr, "membrane identity list: GET /apis/cilium.io/v2/ciliumidentities: Unauthorized\n");
      assert.equal(pluginRuns() - runs, 2, "a 401 re-runs the plugin once (its credential may have been revoked) before giving up");
      const obs = await membrane("observe");
      assert.equal(obs.code, 1);
      assert.match(obs.stderr, /^membrane observe: finding the agents in the cluster \(use --server ADDR to name one\): GET \/apis\/cilium\.io\/v2\/ciliumnodes\?limit=500: Unauthorized\n$/);
    } finally {
      fs.writeFileSync(tokenFile, good);
    }
  });
});
