// Durations as users write them in flags and resources ("90s", "1h30m", "250ms"): the one parser.

const UNIT_MS: Readonly<Record<string, number>> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const TERM = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)/g;
const GO = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/;
const WITH_DAYS = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d))+$/;

/**
 * A Go/Kubernetes duration ("24h", "1h30m", "1.5s", "0") in milliseconds, or undefined when it is
 * not one. Go has no day unit; `days` admits "7d" where a flag documents it (observe --since).
 */
export function parseDuration(text: string, opts: { readonly days?: boolean } = {}): number | undefined {
  if (text === "0") return 0;
  if (text.length === 0 || text.length > 64 || !(opts.days ? WITH_DAYS : GO).test(text)) return undefined;
  let total = 0;
  for (const m of text.matchAll(TERM)) total += Number(m[1]) * (UNIT_MS[m[2] ?? ""] ?? NaN);
  return Number.isFinite(total) ? total : undefined;
}
