// Hands memory a large message left behind back to the system: one full V8 collection, then glibc's malloc_trim.
import koffi from "koffi";
import v8 from "node:v8";
import vm from "node:vm";

const mallocTrim = koffi.load("libc.so.6").func("int malloc_trim(size_t pad)") as (pad: number) => number;

let fullGc: (() => void) | undefined;

/**
 * V8's full collection without starting Node with --expose-gc (as Jest's --logHeapUsage gets it): the
 * flag exposes `gc` to contexts created after it, so the agent's own global scope is unchanged.
 */
function gcFunction(): () => void {
  if (!fullGc) {
    v8.setFlagsFromString("--expose-gc");
    fullGc = vm.runInNewContext("gc") as () => void;
  }
  return fullGc;
}

/**
 * Two full GCs (the young generation's survivors and a decoded snapshot's garbage, and the Buffers only a full one
 * frees), then the C heap's free pages returned (V8's and libuv's threads leave them in malloc arenas).
 * Synchronous, tens of ms for the agent's heap: for after a snapshot, not per message. RSS in bytes.
 */
export function releaseHeap(): { rssBefore: number; rssAfter: number } {
  const rssBefore = process.memoryUsage.rss();
  const gc = gcFunction();
  gc();
  // The first collection frees dead Buffers' memory on a background sweeper; the second waits for it to finish.
  gc();
  mallocTrim(0);
  return { rssBefore, rssAfter: process.memoryUsage.rss() };
}
