// The process sensor: loads bpf/build/process.o, attaches its tp_btf programs (sched_process_exec/exit) and
// hands every decoded ring record to a callback; the lost-record count comes from the object's own counter.
import path from "node:path";
import { fileURLToPath } from "node:url";
import koffi from "koffi";
import { BpfError, BpfObject, RingBufferReader } from "../bpf/loader.ts";
import { decodeProcessEvent, type RawProcessEvent } from "./layout.ts";

export const PROCESS_OBJECT = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../bpf/build/process.o");
export const PROCESS_PROGRAMS = ["membrane_process_exec", "membrane_process_exit"] as const;

// The loader has no tracing attach: BPF_RAW_TRACEPOINT_OPEN with no name attaches a tp_btf program where
// its BTF id (set at load) points; closing the returned fd detaches it.
const libbpf = koffi.load("libbpf.so.1");
const libc = koffi.load("libc.so.6");
const rawTracepointOpen = libbpf.func("int bpf_raw_tracepoint_open(const char *name, int prog_fd)") as (name: string | null, fd: number) => number;
const closeFd = libc.func("int close(int fd)") as (fd: number) => number;

export interface ProcessSensorOptions {
  /** Pin scope under /sys/fs/bpf/membrane (tests use their own). */
  readonly scope: string;
  readonly objectPath?: string;
}

export class ProcessSensor {
  private obj: BpfObject | undefined;
  private reader: RingBufferReader | undefined;
  private links: number[] = [];
  /** Records of a type or size this agent does not know (a mismatched object). */
  undecodable = 0;

  constructor(
    private readonly opts: ProcessSensorOptions,
    private readonly onEvent: (e: RawProcessEvent) => void,
  ) {}

  start(): void {
    if (this.obj) return;
    // Its maps are not pinned: two runtimes that overlap (the chart's surge rollout) each read a ring of their own,
    // never one ring from two readers.
    const obj = BpfObject.load(this.opts.objectPath ?? PROCESS_OBJECT, { scope: this.opts.scope, pinMaps: false });
    this.obj = obj;
    try {
      for (const name of PROCESS_PROGRAMS) {
        const fd = rawTracepointOpen(null, obj.programFd(name));
        if (fd < 0) throw new BpfError(`attach ${name}`, -fd);
        this.links.push(fd);
      }
      this.reader = new RingBufferReader(obj.map("membrane_process_events"), (rec) => {
        const e = decodeProcessEvent(rec);
        if (e) this.onEvent(e);
        else this.undecodable++;
      });
      this.reader.start();
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  /** Consumes what the ring holds now (tests; the reader also drains on its own). */
  drain(): number {
    return this.reader?.drain() ?? 0;
  }

  /** Events the kernel could not write because the ring was full. */
  lost(): bigint {
    return this.obj?.map("membrane_process_lost").lookupPerCpuSum(Buffer.alloc(4)) ?? 0n;
  }

  /** Detaches the programs (closing their links) and removes the maps' pins. */
  stop(): void {
    this.reader?.stop();
    this.reader = undefined;
    for (const fd of this.links) closeFd(fd);
    this.links = [];
    if (this.obj) {
      this.obj.close();
      this.obj.unpin();
    }
    this.obj = undefined;
  }
}
