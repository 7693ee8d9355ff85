// Test support: one long-lived TCP connection and a stream of short ones between two pods, for tests that change the path under them (key rotation).
// `server PORT`: echoes every connection. `client HOST PORT`: until its stdin ends, sends a numbered line every 100 ms on one
// connection and checks each echo, and opens a new connection every 250 ms (connect, one line, its echo, close; 10 s each, so a
// SYN retransmitted over a short gap still counts); then prints one JSON line (StreamResult). Run in a network namespace: a
// named one (`ip netns exec`) or one by its path (`nsenter --net`, a real pod's /proc/PID/ns/net).
import net from "node:net";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export interface StreamResult {
  readonly established: { readonly sent: number; readonly echoed: number; readonly maxGapMs: number; readonly error?: string };
  readonly connections: { readonly ok: number; readonly failed: number; readonly errors: readonly string[]; readonly maxMs: number };
}

const SCRIPT = fileURLToPath(import.meta.url);

function serve(port: number): void {
  net.createServer((s) => {
    s.on("error", () => s.destroy());
    s.pipe(s);
  }).listen(port, () => process.stdout.write("ready\n"));
}

/** One short connection: its echo within 10 s, or the reason it failed. */
function shortConnection(host: string, port: number): Promise<{ ok: true; ms: number } | { ok: false; error: string }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    const timer = setTimeout(() => s.destroy(new Error("no echo within 10 s")), 10_000);
    s.setNoDelay(true);
    s.on("connect", () => s.write("short\n"));
    s.on("data", () => {
      clearTimeout(timer);
      s.end();
      resolve({ ok: true, ms: Date.now() - t0 });
    });
    s.on("error", (e) => {
      clearTimeout(timer);
      resolve({ ok: false, error: e.message });
    });
  });
}

function client(host: string, port: number): void {
  let sent = 0;
  let echoed = 0;
  let lastEcho = Date.now();
  let maxGapMs = 0;
  let error: string | undefined;
  let buffered = "";
  const conns = { ok: 0, failed: 0, errors: [] as string[], maxMs: 0 };
  const pending = new Set<Promise<void>>();
  const long = net.connect(port, host);
  long.setNoDelay(true);
  long.on("data", (d) => {
    buffered += d.toString();
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line !== String(echoed)) error ??= `echo ${echoed} came back as "${line}"`;
      echoed++;
      maxGapMs = Math.max(maxGapMs, Date.now() - lastEcho);
      lastEcho = Date.now();
    }
  });
  long.on("error", (e) => (error ??= e.message));
  long.on("close", () => (error ??= "the connection closed"));
  const sender = setInterval(() => {
    if (error === undefined && long.readyState === "open") long.write(`${sent++}\n`);
  }, 100);
  const opener = setInterval(() => {
    const p = shortConnection(host, port).then((r) => {
      if (r.ok) {
        conns.ok++;
        conns.maxMs = Math.max(conns.maxMs, r.ms);
      } else {
        conns.failed++;
        if (conns.errors.length < 5) conns.errors.push(r.error);
      }
      pending.delete(p);
    });
    pending.add(p);
  }, 250);
  process.stdout.write("ready\n");
  process.stdin.resume();
  process.stdin.on("end", () => {
    clearInterval(sender);
    clearInterval(opener);
    // The last echoes and the connections in flight finish first.
    setTimeout(() => {
      void Promise.all(pending).then(() => {
        const result: StreamResult = { established: { sent, echoed, maxGapMs, ...(error !== undefined ? { error } : {}) }, connections: conns };
        process.stdout.write(`${JSON.stringify(result)}\n`);
        long.destroy();
        process.exit(0);
      });
    }, 1_000);
  });
}

/** Starts `args` of this script in `netns` (a name, or a path such as /proc/PID/ns/net); resolves once it printed "ready". */
async function startIn(netns: string, args: readonly string[]): Promise<{ child: ChildProcess; lines: AsyncIterator<string> }> {
  const command = [process.execPath, "--import", "tsx", SCRIPT, ...args];
  const [enter, ...enterArgs] = netns.startsWith("/") ? ["nsenter", `--net=${netns}`, "--"] : ["ip", "netns", "exec", netns];
  const child = spawn(enter!, [...enterArgs, ...command], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.done || first.value !== "ready") throw new Error(`tcp-stream ${args.join(" ")} in ${netns} did not start: ${stderr}`);
  return { child, lines };
}

/** The echo server in `netns`; stop() ends it (the pid we started, nothing else). */
export async function startEchoServer(netns: string, port: number): Promise<{ stop(): void }> {
  const { child } = await startIn(netns, ["server", String(port)]);
  return { stop: () => void child.kill("SIGTERM") };
}

/** The client in `netns` against host:port; finish() stops it and returns what it saw; stop() only ends it (a test that failed before finish()). */
export async function startStream(netns: string, host: string, port: number): Promise<{ finish(): Promise<StreamResult>; stop(): void }> {
  const { child, lines } = await startIn(netns, ["client", host, String(port)]);
  return {
    stop: () => void (child.exitCode === null && child.kill("SIGTERM")),
    finish: async () => {
      child.stdin!.end();
      const line = await lines.next();
      if (line.done) throw new Error("tcp-stream client ended without a result");
      return JSON.parse(line.value) as StreamResult;
    },
  };
}

if (process.argv[1] === SCRIPT) {
  const [mode, a, b] = process.argv.slice(2);
  if (mode === "server") serve(Number(a));
  else if (mode === "client") client(a!, Number(b));
  else {
    process.stderr.write("usage: tcp-stream.ts server PORT | client HOST PORT\n");
    process.exit(2);
  }
}
