// `membrane operator` on SIGTERM exits 0 within a bound whatever its API server does (refuses, stops
// answering, goes away), and a leader releases its Lease so a standby takes over at once (a rolling upgrade):
// the standby watches the Lease, so it takes a released or expired one before its next poll.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { startControlPlane } from "../localcluster/cluster.ts";
import { KubeClient } from "../kube/kube.ts";
import { loadKubeConfig } from "../kube/kubeconfig.ts";
import { LeaderElector, type Lease, type LeaderElectionOptions, microTime } from "../kube/leader.ts";
import { OperatorProcess, eventually } from "./testing/operator-process.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;

/** Generous against a loaded machine; the operator's own backstop is 3 s. */
const EXIT_BOUND_MS = 5_000;
/** The default lease duration: a takeover after expiry would come this late. */
const LEASE_MS = 15_000;

let cp: ControlPlane | undefined;
const operators: OperatorProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), "membrane-shutdown-"));

function operator(name: string, kubeconfig: string, args: string[] = []): OperatorProcess {
  // Only the node controller: the test is about the process's lifecycle, not the reconcilers.
  const op = new OperatorProcess(name, kubeconfig, ["--controllers", "node", ...args]);
  operators.push(op);
  return op;
}

/** Sends SIGTERM; resolves with the exit code and how long the exit took. */
async function terminate(op: OperatorProcess): Promise<{ code: number | null; ms: number }> {
  const t0 = Date.now();
  const code = await op.stop("SIGTERM");
  return { code, ms: Date.now() - t0 };
}

/** A TCP relay to the API server whose connections can be frozen: they stay open and nothing more passes. */
async function freezableProxy(target: URL): Promise<{ port: number; freeze(): void; close(): void }> {
  const sockets = new Set<net.Socket>();
  let frozen = false;
  const server = net.createServer((client) => {
    if (frozen) return void sockets.add(client);
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.pipe(upstream).pipe(client);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop);
    upstream.on("error", drop);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    freeze() {
      frozen = true;
      for (const s of sockets) {
        s.unpipe();
        s.pause();
      }
    },
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

function kubeconfigFor(server: string, name: string): string {
  const path = join(dir, name);
  writeFileSync(path, readFileSync(cp?.kubeconfig ?? "", "utf8").replace(/server: \S+/, `server: ${server}`));
  return path;
}

before(async () => {
  cp = await startControlPlane({ name: "shutdown-test" });
});

after(async () => {
  for (const op of operators) if (op.running) await op.stop("SIGKILL");
  await cp?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("operator shutdown is bounded", { timeout: 120_000 }, () => {
  it("against an API server that refuses connections, SIGTERM exits 0 within the bound", async () => {
    const refused = net.createServer();
    await new Promise<void>((r) => refused.listen(0, "127.0.0.1", r));
    const port = (refused.address() as net.AddressInfo).port;
    await new Promise<void>((r) => refused.close(() => r()));
    const op = operator("op-refused", kubeconfigFor(`https://127.0.0.1:${port}`, "refused.kubeconfig"));
    await op.waitForLog((l) => l.msg === "lease acquire/renew failed");
    const { code, ms } = await terminate(op);
    assert.equal(code, 0);
    assert.ok(ms < EXIT_BOUND_MS, `exited after ${ms} ms`);
  });

  it("SIGTERM while the CRDs are registered (an API server that accepts and never answers) exits 0 within the bound and takes no Lease after it", async () => {
    const proxy = await freezableProxy(new URL(cp?.server ?? ""));
    try {
      proxy.freeze();
      const op = operator("op-registering", kubeconfigFor(`https://127.0.0.1:${proxy.port}`, "registering.kubeconfig"), ["--lease-name", "shutdown-registering"]);
      await op.waitForLog((l) => l.msg === "health and metrics endpoints listening");
      await new Promise((r) => setTimeout(r, 300)); // its CRD requests are in flight, unanswered
      const { code, ms } = await terminate(op);
      assert.equal(code, 0);
      assert.ok(ms < EXIT_BOUND_MS, `exited after ${ms} ms`);
      const after = op.logs.slice(op.logs.findIndex((l) => l.msg === "health and metrics endpoints listening"));
      assert.deepEqual(after.filter((l) => /lease|leader/i.test(l.msg ?? "")).map((l) => l.msg), [], "no Lease asked for once stopped");
    } finally {
      proxy.close();
    }
  });

  it("a leader on SIGTERM releases its Lease: the standby takes over at once, not after the lease expires", async () => {
    const lease = ["--lease-name", "shutdown-handover"];
    const a = operator("replica-a", cp?.kubeconfig ?? "", lease);
    await a.waitForLog((l) => l.msg === "became leader");
    const b = operator("replica-b", cp?.kubeconfig ?? "", lease);
    await b.waitForLog((l) => l.msg === "lease acquire/renew failed" || l.msg === "health and metrics endpoints listening");
    const signalledAt = Date.now();
    const { code, ms } = await terminate(a);
    assert.equal(code, 0);
    assert.ok(ms < EXIT_BOUND_MS, `the leader exited after ${ms} ms`);
    assert.ok(a.logs.some((l) => l.msg === "released leadership"), "the leader says it released the lease");
    await b.waitForLog((l) => l.msg === "became leader", LEASE_MS);
    const takeoverMs = Date.now() - signalledAt;
    // Its watch of the Lease wakes it at the release (its poll, every 2-2.4 s, is the fallback): well under the 15 s of an expiry.
    assert.ok(takeoverMs < 6_000, `standby took over ${takeoverMs} ms after SIGTERM`);
    process.stdout.write(`# handover: leader exited in ${ms} ms, standby led ${takeoverMs} ms after SIGTERM\n`);
  });

  it("a leader whose API server stops answering exits 0 within the bound; a second signal exits at once", async () => {
    const proxy = await freezableProxy(new URL(cp?.server ?? ""));
    try {
      const kc = kubeconfigFor(`https://127.0.0.1:${proxy.port}`, "frozen.kubeconfig");
      const c = operator("op-frozen", kc, ["--lease-name", "shutdown-frozen"]);
      const d = operator("op-frozen-twice", kc, ["--lease-name", "shutdown-frozen-twice"]);
      await c.waitForLog((l) => l.msg === "became leader");
      await d.waitForLog((l) => l.msg === "became leader");
      proxy.freeze();
      const { code, ms } = await terminate(c);
      assert.equal(code, 0);
      assert.ok(ms < EXIT_BOUND_MS, `exited after ${ms} ms`);
      process.stdout.write(`# frozen API server: exited 0 in ${ms} ms\n`);
      // The lease release hangs on the frozen connection: a second SIGTERM does not wait for it.
      const t0 = Date.now();
      process.kill(d.pid, "SIGTERM");
      await new Promise((r) => setTimeout(r, 100));
      const second = await d.stop("SIGTERM");
      assert.equal(second, 143, "128 + SIGTERM: killed by the second signal");
      assert.ok(Date.now() - t0 < 1_000, `second signal took ${Date.now() - t0} ms`);
      assert.ok(d.logs.some((l) => l.msg === "second signal: exiting at once"));
    } finally {
      proxy.close();
    }
  });

  it("a leader whose API server went away (connections reset, then refused) exits 0 within the bound", async () => {
    // Stopping the real API server gracefully takes longer than the 10 s renew deadline here (the leader
    // would exit 1, leadership lost); a relay that closes cuts the operator off from it at once.
    const proxy = await freezableProxy(new URL(cp?.server ?? ""));
    const e = operator("op-gone", kubeconfigFor(`https://127.0.0.1:${proxy.port}`, "gone.kubeconfig"), ["--lease-name", "shutdown-gone"]);
    await e.waitForLog((l) => l.msg === "became leader");
    proxy.close();
    await e.waitForLog((l) => l.msg === "lease acquire/renew failed");
    const { code, ms } = await terminate(e);
    assert.equal(code, 0, JSON.stringify(e.logs.slice(-6)));
    assert.ok(ms < EXIT_BOUND_MS, `exited after ${ms} ms`);
  });
});

/** A client that counts what it asked of the Lease: writes, and reads of the one Lease (not the watch's list). */
class CountingClient extends KubeClient {
  writes = 0;
  leaseReads = 0;
  override request<T>(method: string, path: string, body?: unknown, contentType?: string, timeoutMs?: number): Promise<T> {
    if (method === "PUT" || method === "POST") this.writes++;
    else if (method === "GET" && /\/leases\/[^/?]+$/.test(path)) this.leaseReads++;
    return super.request<T>(method, path, body, contentType, timeoutMs);
  }
}

describe("a standby watches its Lease", { timeout: 90_000 }, () => {
  const quiet = pino({ level: "silent" });
  /** Longer than any test here: a standby that holds the Lease did not get it from its poll timer. */
  const NEVER_MS = 600_000;
  const clients: KubeClient[] = [];
  const electors: LeaderElector[] = [];

  function elector(lease: string, identity: string, timing: Pick<LeaderElectionOptions, "leaseDurationMs" | "retryPeriodMs">): { elector: LeaderElector; client: CountingClient; leads: () => boolean; run: Promise<"lost" | "stopped"> } {
    const client = new CountingClient(loadKubeConfig(cp?.kubeconfig));
    clients.push(client);
    const e = new LeaderElector(client, { namespace: "default", name: lease, identity, renewDeadlineMs: 10_000, ...timing }, quiet);
    electors.push(e);
    let leading = false;
    const run = e.run(() => (leading = true));
    return { elector: e, client, leads: () => leading, run };
  }

  after(async () => {
    for (const e of electors) await e.stop();
    for (const c of clients) c.close();
  });

  it("while the leader renews, the standby writes nothing; once the leader releases, the standby holds the Lease before its poll timer fires", async () => {
    // The leader renews every 100 ms; its Lease lasts 10 min, so only its release frees it within this test.
    const a = elector("watch-handover", "leader", { leaseDurationMs: NEVER_MS, retryPeriodMs: 100 });
    await eventually("the leader holds the Lease", async () => (a.leads() ? true : undefined));
    const b = elector("watch-handover", "standby", { leaseDurationMs: NEVER_MS, retryPeriodMs: NEVER_MS });
    await eventually("the standby saw ten renewals", async () => (b.elector.stats.tries >= 1 && b.elector.stats.leaseEvents >= 10 ? true : undefined));
    assert.equal(b.client.writes, 0, "a renewal wakes no standby into a write");
    assert.equal(b.client.leaseReads, 1, "nor into a read: its one try was its first");
    assert.deepEqual([b.elector.stats.polls, b.elector.stats.wakes], [0, 0]);
    assert.equal(b.leads(), false);

    await a.elector.stop();
    assert.equal(await a.run, "stopped");
    await eventually("the standby holds the Lease", async () => (b.leads() ? true : undefined), 60_000);
    assert.equal(b.elector.stats.polls, 0, "its poll timer never fired");
    assert.equal(b.elector.stats.wakes, 1, "its watch saw the release");
    const lease = await b.client.get<Lease>("/apis/coordination.k8s.io/v1/namespaces/default/leases/watch-handover");
    assert.equal(lease.spec.holderIdentity, "standby");
    assert.equal(lease.spec.leaseTransitions, 1);
  });

  it("a holder that stops renewing without a release (a crash): the standby takes the Lease once its duration has passed on the standby's clock, before its poll timer fires", async () => {
    const client = new KubeClient(loadKubeConfig(cp?.kubeconfig));
    clients.push(client);
    const createdAt = Date.now();
    await client.create("/apis/coordination.k8s.io/v1/namespaces/default/leases", {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: "watch-expiry", namespace: "default" },
      spec: { holderIdentity: "crashed", leaseDurationSeconds: 2, acquireTime: microTime(new Date()), renewTime: microTime(new Date()), leaseTransitions: 0 },
    } satisfies Lease);
    const b = elector("watch-expiry", "standby", { leaseDurationMs: NEVER_MS, retryPeriodMs: NEVER_MS });
    await eventually("the standby holds the Lease", async () => (b.leads() ? true : undefined), 60_000);
    // A lower bound only: a loaded machine makes it later, never earlier.
    assert.ok(Date.now() - createdAt >= 2_000, `taken ${Date.now() - createdAt} ms after the crashed holder's last renewal: not before its 2 s`);
    assert.equal(b.elector.stats.polls, 0, "its poll timer never fired");
    assert.equal(b.elector.stats.wakes, 1, "its expiry timer, armed by the watch, woke it");
    assert.equal(b.client.writes, 1, "one write: the acquisition");
  });
});
