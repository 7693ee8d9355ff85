// fanotify through the FFI: a permission group (FAN_CLASS_CONTENT), its marks (inode, directory with children,
// filesystem) for opens and execs, and the permission events read when the fd is readable and answered allow or
// deny. The kernel holds the opener until the answer is written; closing the group allows whatever is pending.
import koffi from "koffi";

const libc = koffi.load("libc.so.6");
const fanotifyInit = libc.func("int fanotify_init(unsigned int flags, unsigned int event_f_flags)") as (flags: number, eventFlags: number) => number;
const fanotifyMark = libc.func("int fanotify_mark(int fd, unsigned int flags, uint64_t mask, int dirfd, const char *path)") as (
  fd: number, flags: number, mask: bigint, dirfd: number, path: string) => number;
const readFd = libc.func("long read(int fd, _Out_ uint8_t *buf, size_t n)") as (fd: number, buf: Buffer, n: number) => number | bigint;
const writeFd = libc.func("long write(int fd, const uint8_t *buf, size_t n)") as (fd: number, buf: Buffer, n: number) => number | bigint;
const closeFd = libc.func("int close(int fd)") as (fd: number) => number;

const FAN_CLOEXEC = 0x1;
const FAN_NONBLOCK = 0x2;
const FAN_CLASS_CONTENT = 0x4;
const O_RDONLY = 0, O_LARGEFILE = 0x8000, O_CLOEXEC = 0x80000;
const FAN_MARK_ADD = 0x1;
const FAN_MARK_REMOVE = 0x2;
const FAN_MARK_FILESYSTEM = 0x100;
const AT_FDCWD = -100;
export const FAN_OPEN_PERM = 0x10000n;
export const FAN_OPEN_EXEC_PERM = 0x40000n;
const FAN_EVENT_ON_CHILD = 0x08000000n;
const FAN_ALLOW = 1;
const FAN_DENY = 2;
const METADATA_SIZE = 24;
const EAGAIN = 11;

export type MarkScope = "inode" | "directory" | "filesystem";

export interface PermissionEvent {
  /** FAN_OPEN_PERM or FAN_OPEN_EXEC_PERM. */
  readonly mask: bigint;
  /** The opener's process (thread group) id. */
  readonly pid: number;
  /** An fd of the file being opened (in this process; readlink /proc/self/fd/N gives its path). */
  readonly fd: number;
}

export class FanotifyError extends Error {
  constructor(what: string, readonly errno: number) {
    super(`${what}: errno ${errno}`);
  }
}

export class FanotifyGroup {
  private fd: number;
  private poller: { stop(): void; close(): void } | undefined;
  private readonly buf = Buffer.alloc(64 * 1024);
  private readonly answer = Buffer.alloc(8);
  /** Events whose handler threw (each was denied). */
  handlerErrors = 0;
  /** Drains that stopped on a failed read and were resumed at the next readable event. */
  readErrors = 0;
  private failed: { err: unknown; e: PermissionEvent } | undefined;

  /**
   * Throws FanotifyError when the kernel refuses a permission group (no CAP_SYS_ADMIN, no fanotify). `onError` hears
   * of each event whose handler threw, after it was denied; `onReadError` of a drain that stopped on an error.
   */
  constructor(
    private readonly onEvent: (e: PermissionEvent) => boolean,
    private readonly onError?: (err: unknown, e: PermissionEvent) => void,
    private readonly onReadError?: (err: unknown) => void,
  ) {
    const fd = fanotifyInit(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
    if (fd < 0) throw new FanotifyError("fanotify_init(FAN_CLASS_CONTENT)", koffi.errno());
    this.fd = fd;
    this.poller = koffi.node.poll(fd, { readable: true }, () => this.onReadable());
  }

  /**
   * The poller's callback. It must never throw: koffi never calls a poll callback again once it threw, and every later
   * open of a marked file would then wait for an answer until the group closes. A read that fails has already been
   * answered by the kernel (it denies a permission event it could not hand over, e.g. at EMFILE).
   */
  private onReadable(): void {
    try {
      this.drain();
    } catch (err) {
      this.readErrors++;
      try {
        this.onReadError?.(err);
      } catch {
        // Counted above; the next readable event is answered all the same.
      }
    }
  }

  /** The group's fd (tests count fanotify fds). */
  get groupFd(): number {
    return this.fd;
  }

  /** Marks `path` for `mask`: the file itself, a directory's children too, or its whole filesystem. */
  mark(path: string, mask: bigint, scope: MarkScope): void {
    this.markOp(FAN_MARK_ADD, path, mask, scope);
  }

  /** Removes `mask` from the mark; `whole` when nothing of it stays (a directory keeps watching its children otherwise). */
  unmark(path: string, mask: bigint, scope: MarkScope, whole: boolean): void {
    this.markOp(FAN_MARK_REMOVE, path, mask, scope, whole);
  }

  private markOp(op: number, path: string, mask: bigint, scope: MarkScope, withChildren = true): void {
    if (this.fd < 0) throw new Error("fanotify group closed");
    const flags = op | (scope === "filesystem" ? FAN_MARK_FILESYSTEM : 0);
    const m = scope === "directory" && withChildren ? mask | FAN_EVENT_ON_CHILD : mask;
    if (fanotifyMark(this.fd, flags, m, AT_FDCWD, path) < 0) {
      throw new FanotifyError(`fanotify_mark(${op === FAN_MARK_ADD ? "add" : "remove"} ${scope} ${path})`, koffi.errno());
    }
  }

  /** Reads and answers every pending event (also called when the fd is readable). */
  drain(): number {
    let n = 0;
    while (this.fd >= 0) {
      const got = Number(readFd(this.fd, this.buf, this.buf.length));
      if (got <= 0) {
        if (got < 0 && koffi.errno() !== EAGAIN) throw new FanotifyError("read(fanotify)", koffi.errno());
        return n;
      }
      for (let off = 0; off + METADATA_SIZE <= got; ) {
        const len = this.buf.readUInt32LE(off);
        const e: PermissionEvent = { mask: this.buf.readBigUInt64LE(off + 8), fd: this.buf.readInt32LE(off + 16), pid: this.buf.readInt32LE(off + 20) };
        off += len > 0 ? len : METADATA_SIZE;
        if (e.fd < 0) continue; // FAN_NOFD: a queue overflow notice, not a permission event
        let allow: boolean;
        try {
          allow = this.onEvent(e);
        } catch (err) {
          allow = false; // fail closed: a handler that throws denies the open
          this.handlerErrors++;
          this.failed = { err, e };
        }
        this.answer.writeInt32LE(e.fd, 0);
        this.answer.writeUInt32LE(allow ? FAN_ALLOW : FAN_DENY, 4);
        writeFd(this.fd, this.answer, 8);
        closeFd(e.fd);
        n++;
        // Said once answered: the opener waits on nothing the report does.
        if (this.failed !== undefined) {
          const { err, e: failedEvent } = this.failed;
          this.failed = undefined;
          try {
            this.onError?.(err, failedEvent);
          } catch {
            // The rest of the buffer still waits for its answers: a report must not stop them.
          }
        }
      }
    }
    return n;
  }

  /** Closes the group: its marks go with it, and the kernel allows whatever was still waiting. */
  close(): void {
    if (this.poller) {
      this.poller.stop();
      this.poller.close();
      this.poller = undefined;
    }
    if (this.fd >= 0) closeFd(this.fd);
    this.fd = -1;
  }
}
