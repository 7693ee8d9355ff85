// Flow export for a SIEM: one JSON object per line in a file, rotated by size, keeping K old files (see README.md).
import fs from "node:fs";
import zlib from "node:zlib";
import type { Flow } from "../../flowapi/flow.ts";

export interface FlowExporterOptions {
  /** The live file; rotated files are `<path>.1` (newest) … `<path>.<keep>` (oldest). */
  readonly path: string;
  /** Rotate before a line would make the live file larger than this (a single longer line still gets its own file). */
  readonly maxBytes: number;
  /** How many rotated files to keep besides the live one. */
  readonly keep: number;
  /** Gzip rotated files: `<path>.1.gz` … `<path>.<keep>.gz` (the live file stays plain). */
  readonly compress?: boolean;
  /** Buffered bytes that force a write (default 64 KiB); `flush()` writes the rest. */
  readonly bufferBytes?: number;
}

export class FlowExporter {
  private fd: number;
  private fileBytes: number;
  private pending: string[] = [];
  private pendingBytes = 0;
  private readonly bufferBytes: number;

  constructor(private readonly opts: FlowExporterOptions) {
    if (!(opts.maxBytes > 0)) throw new RangeError(`maxBytes ${opts.maxBytes} must be positive`);
    if (!Number.isInteger(opts.keep) || opts.keep < 0) throw new RangeError(`keep ${opts.keep} must be a non-negative integer`);
    this.bufferBytes = opts.bufferBytes ?? 64 * 1024;
    this.fd = fs.openSync(opts.path, "a", 0o640);
    this.fileBytes = fs.fstatSync(this.fd).size;
  }

  write(f: Flow): void {
    this.writeLine(JSON.stringify(f));
  }

  /** One line (without its newline) in the same file with the same rotation: another format's record. */
  writeLine(text: string): void {
    const line = text + "\n";
    const n = Buffer.byteLength(line);
    if (this.fileBytes + this.pendingBytes > 0 && this.fileBytes + this.pendingBytes + n > this.opts.maxBytes) this.rotate();
    this.pending.push(line);
    this.pendingBytes += n;
    if (this.pendingBytes >= this.bufferBytes) this.flush();
  }

  flush(): void {
    if (this.pending.length === 0) return;
    const data = this.pending.join("");
    this.pending = [];
    fs.writeSync(this.fd, data);
    this.fileBytes += this.pendingBytes;
    this.pendingBytes = 0;
  }

  private rotate(): void {
    this.flush();
    fs.closeSync(this.fd);
    const p = this.opts.path;
    const ext = this.opts.compress ? ".gz" : "";
    const rotated = (i: number): string => `${p}.${i}${ext}`;
    if (this.opts.keep === 0) fs.rmSync(p, { force: true });
    else {
      fs.rmSync(rotated(this.opts.keep), { force: true });
      for (let i = this.opts.keep - 1; i >= 1; i--) if (fs.existsSync(rotated(i))) fs.renameSync(rotated(i), rotated(i + 1));
      if (this.opts.compress) {
        // Written aside and renamed, so a reader never sees a torn .gz; the plain file goes only once it is whole.
        fs.writeFileSync(`${rotated(1)}.tmp`, zlib.gzipSync(fs.readFileSync(p)), { mode: 0o640 });
        fs.renameSync(`${rotated(1)}.tmp`, rotated(1));
        fs.rmSync(p, { force: true });
      } else fs.renameSync(p, rotated(1));
    }
    this.fd = fs.openSync(p, "a", 0o640);
    this.fileBytes = 0;
  }

  close(): void {
    this.flush();
    fs.closeSync(this.fd);
  }
}
