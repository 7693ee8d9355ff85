// DNS name matching as Cilium documents it for matchName and matchPattern (toFQDNs and DNS rules): one matcher for both.

/** A name in the one form every comparison uses: lower case, with the trailing dot. */
export function normalizeDnsName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith(".") ? lower : `${lower}.`;
}

// What `*` stands for inside one label: the characters a DNS label may hold, never a dot.
const LABEL_CHARS = "[-a-z0-9_]";

const compiled = new Map<string, RegExp>();
/** The expression of `*` alone: every normalized name (never empty: at least the root's dot). */
const EVERY_NAME = /^.+$/;

/**
 * The regular expression of a matchPattern: `*` alone matches every name; `*` inside a label
 * matches any run of label characters within that label (never crossing a dot); a first label of
 * `**` matches one or more whole labels, so `**.example.com` matches `a.b.example.com` but not
 * `example.com` itself. Case-insensitive, trailing dot optional.
 */
export function patternRegExp(pattern: string): RegExp {
  const p = normalizeDnsName(pattern);
  let re = compiled.get(p);
  if (re) return re;
  if (p === "*.") {
    re = EVERY_NAME;
  } else {
    const labels = p.slice(0, -1).split(".");
    const parts = labels.map((label, i) => {
      if (label === "**" && i === 0 && labels.length > 1) return `(?:${LABEL_CHARS}+\\.)+`;
      const body = label
        .split("*")
        .map((s) => s.replace(/[.+?^${}()|[\]\\-]/g, "\\$&"))
        .join(`${LABEL_CHARS}*`);
      return `${body}\\.`;
    });
    re = new RegExp(`^${parts.join("")}$`);
  }
  // Bounded: a policy set names few patterns, but a hostile one must not grow this without end.
  if (compiled.size > 10_000) compiled.clear();
  compiled.set(p, re);
  return re;
}

/** Whether `name` equals matchName (case and trailing dot aside). */
export function nameMatches(name: string, matchName: string): boolean {
  return normalizeDnsName(name) === normalizeDnsName(matchName);
}

/** Whether `name` matches the matchPattern `pattern`. */
export function patternMatches(name: string, pattern: string): boolean {
  return patternRegExp(pattern).test(normalizeDnsName(name));
}

/** A matchName/matchPattern pair as toFQDNs and DNS rules both carry it: either may match. */
export interface DnsNameSelector {
  readonly matchName?: string;
  readonly matchPattern?: string;
}

export function selectorMatches(name: string, s: DnsNameSelector): boolean {
  return (
    (s.matchName !== undefined && nameMatches(name, s.matchName)) ||
    (s.matchPattern !== undefined && patternMatches(name, s.matchPattern))
  );
}

/**
 * A selector made ready to test many names: its matchName normalized and its matchPattern compiled
 * once. The test takes a name already normalized (normalizeDnsName) and means what selectorMatches does.
 */
export function normalizedSelectorTest(s: DnsNameSelector): (normalizedName: string) => boolean {
  const name = s.matchName !== undefined ? normalizeDnsName(s.matchName) : undefined;
  const re = s.matchPattern !== undefined ? patternRegExp(s.matchPattern) : undefined;
  if (re === EVERY_NAME) return () => true;
  if (re === undefined) return name === undefined ? () => false : (n) => n === name;
  return name === undefined ? (n) => re.test(n) : (n) => n === name || re.test(n);
}
