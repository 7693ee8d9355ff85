// DNS name and wildcard-pattern syntax for toFQDNs and DNS L7 rules, as Cilium accepts them.

const NAME_LABEL = /^[-a-zA-Z0-9_]+$/;
const PATTERN_LABEL = /^[-a-zA-Z0-9_*]+$/;
// Whole-name forms of the label-by-label checks below: what they accept, without splitting (the common case).
const VALID_NAME = /^[-a-zA-Z0-9_]{1,63}(\.[-a-zA-Z0-9_]{1,63})*\.?$/;
const VALID_PATTERN_WITHOUT_DOUBLE_STAR = /^[-a-zA-Z0-9_*]{1,63}(\.[-a-zA-Z0-9_*]{1,63})*\.?$/;

function labelsOf(s: string): string[] | undefined {
  const body = s.endsWith(".") ? s.slice(0, -1) : s;
  if (body === "") return undefined;
  return body.split(".");
}

function shownName(name: string): string {
  return JSON.stringify(name.length > 64 ? `${name.slice(0, 61)}...` : name);
}

/** Why `name` is not a DNS name usable in matchName, or undefined when it is. */
export function dnsNameProblem(name: string): string | undefined {
  if (name.length === 0) return "a DNS name must not be empty";
  if (name.length > 254) return `${shownName(name)} is not a DNS name: longer than 253 characters`;
  if (VALID_NAME.test(name)) return undefined;
  if (name.includes("*")) return `${shownName(name)} is not a DNS name: '*' wildcards belong in matchPattern`;
  const labels = labelsOf(name);
  if (labels === undefined) return `${shownName(name)} is not a DNS name`;
  for (const l of labels) {
    if (l === "")
      return `${shownName(name)} is not a DNS name: it has an empty label (two dots in a row or a leading dot)`;
    if (l.length > 63) return `${shownName(name)} is not a DNS name: a label is longer than 63 characters`;
    if (!NAME_LABEL.test(l))
      return `${shownName(name)} is not a DNS name: only letters, digits, '-', '_' and '.' are allowed`;
  }
  return undefined;
}

/**
 * Why `pattern` is not a Cilium matchPattern, or undefined. `*` matches any characters valid in a
 * DNS label within one label (a lone `*` matches every name); `**.` as the first label matches one
 * or more labels.
 */
export function dnsPatternProblem(pattern: string): string | undefined {
  if (pattern.length === 0) return "a DNS pattern must not be empty";
  if (pattern.length > 254) return `${shownName(pattern)} is not a DNS pattern: longer than 253 characters`;
  if (pattern === "*") return undefined;
  if (!pattern.includes("**") && VALID_PATTERN_WITHOUT_DOUBLE_STAR.test(pattern)) return undefined;
  const labels = labelsOf(pattern);
  if (labels === undefined) return `${shownName(pattern)} is not a DNS pattern`;
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i] ?? "";
    if (l === "")
      return `${shownName(pattern)} is not a DNS pattern: it has an empty label (two dots in a row or a leading dot)`;
    if (l.length > 63) return `${shownName(pattern)} is not a DNS pattern: a label is longer than 63 characters`;
    if (!PATTERN_LABEL.test(l))
      return `${shownName(pattern)} is not a DNS pattern: only letters, digits, '-', '_', '.' and '*' are allowed`;
    if (l.includes("**") && !(l === "**" && i === 0 && labels.length > 1)) {
      return `${shownName(pattern)} is not a DNS pattern: '**' is only allowed as the whole first label, as in "**.example.com"`;
    }
  }
  return undefined;
}
