// The service map end to end in a real headless Chromium: a real API server (Service, CiliumNode discovery), a real agent's Hubble API read through the relay, the page's DOM, its pixels and its live update.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startControlPlane, type ControlPlane } from "../../localcluster/cluster.ts";
import { FlowBuffer } from "../../node-agent/observer/buffer.ts";
import { HubbleServer } from "../../node-agent/observer/hubble-server.ts";
import { HUBBLE_ADDRESS_ANNOTATION } from "../../flowapi/discover.ts";
import { HubbleRelay } from "../relay/relay.ts";
import { dropFlow, endpoint, flow } from "../../flowapi/testing/flows.ts";
import { KubeClient } from "../../kube/kube.ts";
import { OperatorProcess, eventually } from "../testing/operator-process.ts";
import type { ServiceGraph } from "./graph.ts";
import { MAP_TOP_PX } from "./page.ts";
import { countPixels, decodePng } from "./png.ts";
import { ServiceMap } from "./servicemap.ts";

const CHROMIUM = "chromium";
const chromiumMissing = spawnSync(CHROMIUM, ["--version"], { encoding: "utf8" }).status !== 0;
const SKIP = chromiumMissing ? `${CHROMIUM} is not installed (scripts/install-deps.sh installs Debian's chromium package)` : false;

const CNODE_CRD = fileURLToPath(new URL("../../crds/generated/ciliumnodes.cilium.io.yaml", import.meta.url));
const NODE_NAME = "servicemap-test-node";
const WEB = endpoint({ identity: 300, labels: ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"], namespace: "shop", pod: "web-0", ip: "10.0.1.5", port: 80 });
const ALLOWED = flow({ time: "2026-01-01T00:00:01.000Z", destination: WEB });
const DENIED = dropFlow({ time: "2026-01-01T00:00:02.000Z", destination: { ...WEB, port: 9000 } });
const LATE = dropFlow({
  time: "2026-01-01T00:00:03.000Z",
  source: endpoint({ identity: 400, labels: ["k8s:app=intruder", "k8s:io.kubernetes.pod.namespace=ops"], namespace: "ops", pod: "late-pod", ip: "10.0.3.9", port: 41000 }),
  destination: { ...WEB, port: 22 },
});

const isRed = ([r, g, b]: number[]): boolean => r! > 180 && g! < 90 && b! < 90;
const isGreen = ([r, g, b]: number[]): boolean => g! > 120 && r! < 90 && b! < 120;

/** Runs chromium headless in its own process group and profile; on timeout kills exactly that group. */
async function chromium(args: string[], timeoutMs = 60_000): Promise<string> {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-servicemap-chromium-"));
  const flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1", `--user-data-dir=${profile}`];
  const child = spawn(CHROMIUM, [...flags, ...args], { detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  const timer = setTimeout(() => {
    if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
  }, timeoutMs);
  try {
    const code = await new Promise<number | null>((resolve, reject) => child.once("error", reject).once("close", resolve));
    if (code !== 0) throw new Error(`chromium exited with ${code}: ${err.split("\n").filter((l) => !/dbus|Fontconfig/.test(l)).slice(-5).join("\n")}`);
    return out;
  } finally {
    clearTimeout(timer);
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

describe("the service map in headless Chromium", { skip: SKIP, timeout: 300_000 }, () => {
  const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-servicemap-"));
  let cp: ControlPlane | undefined;
  let client: KubeClient | undefined;
  let map: ServiceMap | undefined;
  let buffer: FlowBuffer | undefined;
  let observer: HubbleServer | undefined;
  let relay: HubbleRelay | undefined;
  let mapUrl = "";

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await (cp as ControlPlane).kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    cp = await startControlPlane({ name: "servicemap-test" });
    await kubectl(["apply", "-f", CNODE_CRD]);
    await kubectl(["wait", "--for=condition=Established", "crd/ciliumnodes.cilium.io", "--timeout=60s"]);
    await kubectl(["create", "namespace", "shop"]);
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "shop" }, spec: { selector: { app: "web" }, ports: [{ port: 80 }] } }));

    // A real Hubble API, as an agent serves it, holding real Flow objects.
    buffer = new FlowBuffer({ capacity: 1000 });
    buffer.push(ALLOWED);
    buffer.push(DENIED);
    observer = new HubbleServer(buffer, NODE_NAME, log);
    const [address] = await observer.start({ socketPath: path.join(tmp, "hubble.sock") });
    // The agent announces its Hubble API on its CiliumNode; the relay finds it there, the map reads through the relay.
    await kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: "cilium.io/v2", kind: "CiliumNode", metadata: { name: NODE_NAME, annotations: { [HUBBLE_ADDRESS_ANNOTATION]: address! } } }));

    client = await KubeClient.fromKubeconfig(cp.kubeconfig);
    relay = HubbleRelay.fromCluster(client, { address: "127.0.0.1:0", log });
    await relay.start();
    map = new ServiceMap({ port: 0, hubbleServers: [] }, client, log, relay.source);
    const port = await map.start();
    mapUrl = `http://127.0.0.1:${port}`;
    const m = map;
    await eventually("the map to show both flows and the service", () => {
      const g = m.graph();
      return g.edges.length === 2 && g.services.some((s) => s.id === "svc:shop/web" && s.pods.length === 1) ? g : undefined;
    });
  });

  after(async () => {
    await map?.stop();
    await relay?.stop();
    await observer?.stop();
    client?.close();
    await cp?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("shows the pods, the service and both edges, with their verdicts, in the page's DOM", async () => {
    const dom = await chromium(["--virtual-time-budget=3000", "--dump-dom", `${mapUrl}/servicemap`]);
    assert.match(dom, /data-node="pod:shop\/web-0"/);
    assert.match(dom, /data-node="pod:default\/client-1"/);
    assert.match(dom, /data-service="shop\/web"/);
    assert.match(dom, /<text[^>]*>web-0<\/text>/);
    assert.match(dom, /<text[^>]*>client-1<\/text>/);
    const edges = [...dom.matchAll(/<g class="edge [a-z]+" ([^>]*)>/g)].map((m) => m[1] ?? "");
    assert.equal(edges.length, 2, dom);
    assert.ok(edges.some((e) => /data-port="9000"/.test(e) && /data-verdict="denied"/.test(e) && /data-from="pod:default\/client-1"/.test(e) && /data-to="pod:shop\/web-0"/.test(e)), edges.join("\n"));
    assert.ok(edges.some((e) => /data-port="80"/.test(e) && /data-verdict="allowed"/.test(e)), edges.join("\n"));
    assert.match(dom, /default deny/, "the denied edge's tooltip names what decided");
  });

  it("draws the denied edge in red and the allowed one in green, where the layout puts them", async () => {
    const g = (map as ServiceMap).graph();
    const shot = path.join(tmp, "servicemap.png");
    await chromium([`--window-size=${g.width + 20},${g.height + MAP_TOP_PX + 20}`, "--virtual-time-budget=3000", `--screenshot=${shot}`, `${mapUrl}/servicemap`]);
    const img = decodePng(fs.readFileSync(shot));
    assert.equal(img.width, g.width + 20);
    const denied = g.edges.find((e) => e.verdict === "denied");
    const allowed = g.edges.find((e) => e.verdict === "allowed");
    assert.ok(denied && allowed);
    assert.ok(countPixels(img, denied.mx, denied.my + MAP_TOP_PX, 5, isRed) >= 20, `red pixels at the denied edge (${denied.mx}, ${denied.my})`);
    assert.equal(countPixels(img, allowed.mx, allowed.my + MAP_TOP_PX, 5, isRed), 0, "no red at the allowed edge");
    assert.ok(countPixels(img, allowed.mx, allowed.my + MAP_TOP_PX, 5, isGreen) >= 20, `green pixels at the allowed edge (${allowed.mx}, ${allowed.my})`);
    // Below the header, red is only ever a denied edge.
    const web = g.nodes.find((n) => n.id === "pod:shop/web-0");
    assert.ok(web);
    assert.equal(countPixels(img, web.x + web.width / 2, web.y + web.height / 2 + MAP_TOP_PX, 8, isRed), 0, "no red inside a pod");
  });

  it("updates an open page when a new flow arrives at an agent", async () => {
    // A proxy in front of the map: it records the page as first served, and when the open page
    // first polls graph.json, the agent's observer receives a new flow (a denied one from a new pod).
    let firstHtml = "";
    let injected: Promise<ServiceGraph> | undefined;
    const m = map as ServiceMap;
    const proxy = http.createServer((req, res) => {
      void (async () => {
        if ((req.url ?? "").startsWith("/servicemap/graph.json")) {
          injected ??= (async () => {
            (buffer as FlowBuffer).push(LATE);
            return eventually("the map to receive the new flow", () => (m.graph().nodes.some((n) => n.id === "pod:ops/late-pod") ? m.graph() : undefined), 10_000, 20);
          })();
          await injected;
        }
        const upstream = await fetch(`${mapUrl}${req.url ?? "/"}`, { headers: req.headers["if-none-match"] ? { "if-none-match": String(req.headers["if-none-match"]) } : {} });
        const body = Buffer.from(await upstream.arrayBuffer());
        if ((req.url ?? "") === "/servicemap" && firstHtml === "") firstHtml = body.toString();
        res.writeHead(upstream.status, Object.fromEntries(upstream.headers.entries())).end(body);
      })().catch((e: unknown) => res.writeHead(500).end(String(e)));
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    try {
      const port = (proxy.address() as AddressInfo).port;
      const dom = await chromium(["--virtual-time-budget=5000", "--dump-dom", `http://127.0.0.1:${port}/servicemap`]);
      assert.ok(injected, "the page polled graph.json");
      assert.ok(firstHtml.includes("pod:shop/web-0") && !firstHtml.includes("late-pod"), "the page was served before the new flow");
      assert.match(dom, /data-node="pod:ops\/late-pod"/);
      assert.match(dom, /<g class="edge denied" [^>]*data-from="pod:ops\/late-pod" data-to="pod:shop\/web-0" data-port="22"/);
      assert.match(dom, /data-namespace="ops"/);
      assert.match(dom, /<body data-updates="[1-9]/, "the page re-rendered after its first draw");
    } finally {
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });

  it("`membrane operator --servicemap-port` serves the map, fed through its relay by the agents its CiliumNodes name", async () => {
    const op = new OperatorProcess("servicemap-operator", (cp as ControlPlane).kubeconfig, ["--leader-elect=false", "--controllers=node", "--servicemap-port=0", "--hubble-relay-address=127.0.0.1:0"]);
    try {
      const port = (await op.waitForLog((l) => l.msg === "service map listening")).port as number;
      // The flows and the Service arrive on their own paths (the relay's stream, the Service informer): wait for both.
      const g = await eventually("the operator's map to hold the flows and the Service", async () => {
        const res = await fetch(`http://127.0.0.1:${port}/servicemap/graph.json`);
        const body = (await res.json()) as ServiceGraph;
        const flows = body.edges.some((e) => e.verdict === "denied" && e.port === 9000 && e.to === "pod:shop/web-0");
        return flows && body.services.some((s) => s.id === "svc:shop/web") ? body : undefined;
      });
      assert.ok(g.services.some((s) => s.id === "svc:shop/web"), "the Service from the API server");
      const page = await fetch(`http://127.0.0.1:${port}/servicemap`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<title>Membrane service map<\/title>/);
      assert.equal((await fetch(`http://127.0.0.1:${port}/servicemap/graph.json`, { headers: { "if-none-match": `"${g.version}"` } })).status, 304);
    } finally {
      assert.equal(await op.stop(), 0, "the operator exits cleanly on SIGTERM");
    }
  });
});
