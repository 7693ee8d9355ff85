// Small helpers shared by the benches that compare two ways side by side (bench/dns, bench/l7).

/** A numeric knob from the environment, `fallback` when unset. */
export const envNumber = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);

/** The lower median (the middle value, the lower of the two middles for an even count); NaN for no values. */
export const lowerMedian = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};

/** Rounded to three decimals, for ratios in the JSON line. */
export const round3 = (x: number): number => Math.round(x * 1000) / 1000;
