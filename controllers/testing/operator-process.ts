// Test helper: runs `membrane operator` as a child process, collects its pino log lines, and stops it by its pid only.
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
/** The bundle `make build` writes (what the image runs): `node dist/membrane.mjs operator …`. */
export const OPERATOR_BUNDLE = fileURLToPath(new URL("../../dist/membrane.mjs", import.meta.url));

export interface LogLine {
  msg?: string;
  level?: number;
  [k: string]: unknown;
}

export class OperatorProcess {
  readonly logs: LogLine[] = [];
  readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;
  private stderr = "";

  constructor(
    readonly name: string,
    kubeconfig: string,
    args: string[] = [],
    /** Node.js options for the child (e.g. --cpu-prof), before the script. */
    nodeArgs: string[] = [],
    /** Run the operator from the bundle (OPERATOR_BUNDLE, as shipped) instead of its sources through tsx. */
    bundle = false,
  ) {
    const script = bundle ? [OPERATOR_BUNDLE, "operator"] : ["--import", "tsx", MAIN];
    this.child = spawn(process.execPath, [...nodeArgs, ...script, "--kubeconfig", kubeconfig, "--health-port", "0", "--id", name, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let buf = "";
    this.child.stdout?.on("data", (chunk: Buffer) => {
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.logs.push(JSON.parse(line) as LogLine);
        } catch {
          this.logs.push({ msg: line });
        }
      }
    });
    this.child.stderr?.on("data", (c: Buffer) => (this.stderr += c.toString()));
    this.exited = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the first log line matching `pred` (already logged or later); rejects after `ms`. */
  async waitForLog(pred: (l: LogLine) => boolean, ms = 30_000): Promise<LogLine> {
    const end = Date.now() + ms;
    for (;;) {
      const hit = this.logs.find(pred);
      if (hit) return hit;
      if (!this.running) throw new Error(`operator ${this.name} exited (${this.child.exitCode}); stderr: ${this.stderr.slice(-2000)}`);
      if (Date.now() > end) throw new Error(`operator ${this.name}: no matching log line within ${ms} ms; last: ${JSON.stringify(this.logs.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async healthPort(): Promise<number> {
    const l = await this.waitForLog((x) => x.msg === "health and metrics endpoints listening");
    return l.port as number;
  }

  async get(path: string): Promise<{ status: number; body: string }> {
    const port = await this.healthPort();
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: await res.text() };
  }

  /** The child's inspector WebSocket URL, when it was started with `--inspect=…` (Node prints it on stderr). */
  async inspectorUrl(ms = 10_000): Promise<string> {
    const end = Date.now() + ms;
    for (;;) {
      const m = /Debugger listening on (ws:\/\/\S+)/.exec(this.stderr);
      if (m) return m[1]!;
      if (!this.running || Date.now() > end) throw new Error(`operator ${this.name}: no inspector URL on stderr (start it with --inspect)`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Sends `signal` to this child's pid and waits for it to exit; returns the exit code. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.running) process.kill(this.pid, signal);
    return this.exited;
  }
}

export async function eventually<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 30_000, everyMs = 200): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
