// What the in-process scale scripts share: this process's live heap after full collections, and an informer's read side over fixed objects.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { keyOf, type Informer } from "../../kube/informer.ts";
import type { KubeObject } from "../../kube/kube.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** This process's heap in use after two full collections (MiB). */
export function liveHeapMiB(): number {
  gc();
  gc();
  return Math.round(process.memoryUsage().heapUsed / 2 ** 20);
}

/** An informer's read side over a map of `items` (what NodeStateSource reads); `m` to change it. */
export function cache<T extends KubeObject>(items: readonly T[]): Informer<T> & { readonly m: Map<string, T> } {
  const m = new Map(items.map((i) => [keyOf(i), i]));
  return { m, get: (k: string) => m.get(k), list: () => [...m.values()] } as unknown as Informer<T> & { readonly m: Map<string, T> };
}
