// Status conditions in the Kubernetes API convention: lastTransitionTime moves only when the status does.

export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export type ConditionInput = Omit<Condition, "lastTransitionTime">;

/** The conditions after applying `updates` to `current`: types not updated are kept as they are. */
export function mergeConditions(current: readonly Condition[] | undefined, updates: readonly ConditionInput[], now: Date): Condition[] {
  const out = (current ?? []).map((c) => ({ ...c }));
  for (const u of updates) {
    const i = out.findIndex((c) => c.type === u.type);
    const prev = i >= 0 ? out[i] : undefined;
    const next: Condition = {
      ...u,
      // Seconds precision, as metav1.Time serialises.
      lastTransitionTime: prev && prev.status === u.status ? prev.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, "Z"),
    };
    if (i >= 0) out[i] = next;
    else out.push(next);
  }
  return out;
}

/** Whether two condition lists say the same (order-insensitive, all fields). */
export function sameConditions(a: readonly Condition[] | undefined, b: readonly Condition[] | undefined): boolean {
  const norm = (l: readonly Condition[] | undefined): string =>
    JSON.stringify(
      [...(l ?? [])]
        .sort((x, y) => x.type.localeCompare(y.type))
        .map((c) => [c.type, c.status, c.reason ?? "", c.message ?? "", c.lastTransitionTime ?? "", c.observedGeneration ?? null]),
    );
  return norm(a) === norm(b);
}
