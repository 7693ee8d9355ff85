// The IPAM store across processes: no double assignment under concurrency, restarts, a killed lock holder.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { allocate, podRange, release } from "./ipam.ts";
import { IpamLockTimeout, IpamStore } from "./ipam-store.ts";

const worker = fileURLToPath(new URL("./ipam-worker.ts", import.meta.url));
const dirs: string[] = [];
const children: ChildProcess[] = [];

after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-ipam-test-"));
  dirs.push(d);
  return path.join(d, "net"); // the store creates its own directory
}

function startWorker(args: string[]): { child: ChildProcess; output: Promise<string> } {
  const child = spawn(process.execPath, ["--import", "tsx", worker, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let out = "";
  let err = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  const output = new Promise<string>((resolve, reject) =>
    child.on("close", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`worker ${args.join(" ")} exited ${code}: ${err}`)),
    ),
  );
  return { child, output };
}

const CIDR = "10.60.0.0/24";
const range = (() => {
  const r = podRange(CIDR);
  assert.ok(r.ok);
  return r.range;
})();

describe("IPAM store", () => {
  it("never assigns one address twice when several processes allocate at once", async () => {
    const dir = tempDir();
    const workers = ["w1", "w2", "w3", "w4"].map((w) => startWorker(["alloc", dir, CIDR, w, "25"]));
    const lines = (await Promise.all(workers.map((w) => w.output))).join("").trim().split("\n");
    assert.equal(lines.length, 100);
    const ips = lines.map((l) => l.split(" ")[0]);
    assert.equal(new Set(ips).size, 100, "an address was handed out twice");
    // and what the processes were told is exactly what is on disk
    const onDisk = new IpamStore(dir).read().allocations;
    assert.equal(Object.keys(onDisk).length, 100);
    for (const l of lines) {
      const [ip, owner] = l.split(" ");
      assert.equal(onDisk[ip!]?.containerId, owner);
    }
  });

  it("keeps allocations across restarts: a new process sees them and returns the same address", async () => {
    const dir = tempDir();
    const first = (await startWorker(["alloc", dir, CIDR, "pod", "2"]).output).trim().split("\n");
    const again = (await startWorker(["alloc", dir, CIDR, "pod", "3"]).output).trim().split("\n");
    assert.deepEqual(again.slice(0, 2), first); // pod-0 and pod-1 keep their addresses
    assert.equal(again.length, 3);
    assert.ok(!first.map((l) => l.split(" ")[0]).includes(again[2]!.split(" ")[0]));
  });

  it("frees an address for good on release", async () => {
    const dir = tempDir();
    const store = new IpamStore(dir);
    const owner = { containerId: "gone", ifname: "eth0" };
    await store.update((s) => {
      const r = allocate(s, range, owner);
      assert.ok(r.ok);
      return { state: r.state, value: r.ip };
    });
    await store.update((s) => ({ state: release(s, owner).state, value: undefined }));
    assert.deepEqual(new IpamStore(dir).read().allocations, {});
  });

  it("a release after the state directory was removed (a late DEL after `membrane node cleanup`) makes nothing again; an allocation still does", async () => {
    const dir = path.join(tempDir(), "membrane");
    const store = new IpamStore(dir);
    const owner = { containerId: "late-del", ifname: "eth0" };
    await store.update((s) => {
      const r = allocate(s, range, owner);
      assert.ok(r.ok);
      return { state: r.state, value: r.ip };
    });
    await store.update((s) => ({ state: release(s, owner).state, value: undefined }));
    fs.rmSync(dir, { recursive: true });
    const released = await store.updateStored((s) => {
      const r = release(s, owner);
      return { state: r.state, value: r.released };
    }, ["none"]);
    assert.deepEqual(released, ["none"]);
    assert.equal(fs.existsSync(dir), false, "no directory, lock or state file made again");
    const ip = await store.update((s) => {
      const r = allocate(s, range, { containerId: "next", ifname: "eth0" });
      assert.ok(r.ok);
      return { state: r.state, value: r.ip };
    });
    assert.deepEqual(Object.keys(new IpamStore(dir).read().allocations), [ip]);
  });

  it("makes others wait while the lock is held, and frees it when the holder is killed", async () => {
    const dir = tempDir();
    const holder = startWorker(["hold", dir]);
    holder.output.catch(() => undefined); // it dies by SIGKILL below
    await new Promise<void>((resolve) =>
      holder.child.stdout?.on("data", (d: Buffer) => d.toString().includes("holding") && resolve()),
    );
    await assert.rejects(
      new IpamStore(dir, { lockTimeoutMs: 300 }).update((s) => ({ state: s, value: 0 })),
      (err: unknown) => err instanceof IpamLockTimeout && /timed out after 300 ms/.test(err.message),
    );
    holder.child.kill("SIGKILL");
    await new Promise((r) => holder.child.once("exit", r));
    // no stale lock: the kernel dropped it with the process
    const ip = await new IpamStore(dir, { lockTimeoutMs: 2_000 }).update((s) => {
      const r = allocate(s, range, { containerId: "next", ifname: "eth0" });
      assert.ok(r.ok);
      return { state: r.state, value: r.ip };
    });
    assert.equal(ip, "10.60.0.2");
  });

  it("refuses a corrupt state file instead of starting over (which would double-assign)", async () => {
    const dir = tempDir();
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "allocations.json"), "{not json");
    await assert.rejects(
      new IpamStore(dir).update((s) => ({ state: s, value: 0 })),
      /allocations.json is not valid JSON/,
    );
  });
});
