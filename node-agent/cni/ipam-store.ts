// IPAM state on disk under the network's stateDir, changed only while holding an exclusive flock.
import fs from "node:fs";
import path from "node:path";
import koffi from "koffi";
import { EMPTY_STATE, parseState, type IpamState } from "./ipam.ts";

const LOCK_EX = 2;
const LOCK_NB = 4;

// flock(2) rather than an O_EXCL lock file: the kernel drops the lock when the holder dies, so a
// crashed plugin can never leave a stale lock behind.
let flockFn: ((fd: number, op: number) => number) | undefined;
function flock(fd: number, op: number): number {
  flockFn ??= koffi.load("libc.so.6").func("int flock(int fd, int operation)") as (
    fd: number,
    op: number,
  ) => number;
  return flockFn(fd, op);
}

export class IpamLockTimeout extends Error {}
export class IpamStateCorrupt extends Error {}

export interface StoreOptions {
  /** How long to wait for another plugin invocation to release the lock. */
  lockTimeoutMs?: number;
}

/** The state file and its lock in one directory: `allocations.json` and `lock`. */
export class IpamStore {
  readonly statePath: string;
  readonly lockPath: string;
  private readonly lockTimeoutMs: number;

  constructor(
    readonly dir: string,
    opts: StoreOptions = {},
  ) {
    this.statePath = path.join(dir, "allocations.json");
    this.lockPath = path.join(dir, "lock");
    this.lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
  }

  /** Reads without the lock (a consistent snapshot: the file is only ever replaced by rename). */
  read(): IpamState {
    let text: string;
    try {
      text = fs.readFileSync(this.statePath, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return EMPTY_STATE;
      throw err;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new IpamStateCorrupt(`${this.statePath} is not valid JSON`);
    }
    const state = parseState(value);
    if (state === undefined) throw new IpamStateCorrupt(`${this.statePath} is not an IPAM state (version 1)`);
    return state;
  }

  /**
   * Runs `change` on the current state under the lock and persists the state it returns (when it
   * differs). Concurrent callers, in this or other processes, are serialised.
   */
  async update<T>(change: (state: IpamState) => { state: IpamState; value: T }): Promise<T> {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    return this.underLock(fs.openSync(this.lockPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600), change);
  }

  /**
   * As `update`, for a change that only takes away (a DEL's release): where nothing was ever stored (no lock file) it
   * makes nothing and answers `none`, so a runtime's late DEL after `membrane node cleanup` removed the state does not
   * bring the directory back. A state removed while it waits is read as empty, and an unchanged state is not written.
   */
  async updateStored<T>(change: (state: IpamState) => { state: IpamState; value: T }, none: T): Promise<T> {
    let fd: number;
    try {
      fd = fs.openSync(this.lockPath, fs.constants.O_RDWR);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return none;
      throw err;
    }
    return this.underLock(fd, change);
  }

  private async underLock<T>(fd: number, change: (state: IpamState) => { state: IpamState; value: T }): Promise<T> {
    try {
      await this.lock(fd);
      const before = this.read();
      const { state, value } = change(before);
      if (state !== before) this.write(state);
      return value;
    } finally {
      fs.closeSync(fd); // closing the descriptor releases the flock
    }
  }

  private async lock(fd: number): Promise<void> {
    const deadline = Date.now() + this.lockTimeoutMs;
    for (;;) {
      if (flock(fd, LOCK_EX | LOCK_NB) === 0) return;
      const errno = koffi.errno();
      if (errno !== 11 /* EWOULDBLOCK */ && errno !== 4 /* EINTR */)
        throw new Error(`flock ${this.lockPath}: errno ${errno}`);
      if (Date.now() >= deadline)
        throw new IpamLockTimeout(
          `timed out after ${this.lockTimeoutMs} ms waiting for the IPAM lock ${this.lockPath}`,
        );
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 10));
    }
  }

  private write(state: IpamState): void {
    const tmp = `${this.statePath}.${process.pid}.tmp`;
    const fd = fs.openSync(tmp, "w", 0o600);
    try {
      fs.writeFileSync(fd, `${JSON.stringify(state, null, 2)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.statePath);
  }
}
