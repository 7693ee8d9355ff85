// Waiting for a real node's state: pods, images and the chart's objects settle at the kubelet's and containerd's pace.

/**
 * Polls probe every 500 ms until it returns a value; a probe that throws counts as not yet. After timeoutMs
 * throws naming what was awaited and the last error seen.
 */
export async function eventually<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}
