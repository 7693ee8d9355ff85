// DNS name and wildcard-pattern syntax for toFQDNs and DNS L7 rules, as Cilium accepts them.

const NAME_LABEL = /^[-a-zA-Z0-9_]+$/;
const PATTERN_LABEL = /^[-a-zA-Z0-9_*]+$/;

function labelsOf(s: string): string[] | undefined {
  const body = s.endsWith(".") ? s.slice(0, -1) : s;
  if (body === "") return undefined;
  return body.split(".");
}

/** Why `name` is not a DNS name usable in matchName, or undefined when it is. */
export function dnsNameProblem(name: string): string | undefined {
  const shown = JSON.stringify(name.length > 64 ? `${name.slice(0, 61)}...` : name);
  if (name.length === 0) return "a DNS name must not be empty";
  if (name.length > 254) return `${shown} is not a DNS name: longer than 253 characters`;
  if (name.includes("*")) return `${shown} is not a DNS name: '*' wildcards belong in matchPattern`;
  const labels = labelsOf(name);
  if (labels === undefined) return `${shown} is not a DNS name`;
  for (const l of labels) {
    if (l === "")
      return `${shown} is not a DNS name: it has an empty label (two dots in a row or a leading dot)`;
    if (l.length > 63) return `${shown} is not a DNS name: a label is longer than 63 characters`;
    if (!NAME_LABEL.test(l))
      return `${shown} is not a DNS name: only letters, digits, '-', '_' and '.' are allowed`;
  }
  return undefined;
}

/**
 * Why `pattern` is not a Cilium matchPattern, or undefined. `*` matches any characters valid in a
 * DNS label within one label (a lone `*` matches every name); `**.` as the first label matches one
 * or more labels.
 */
export function dnsPatternProblem(pattern: string): string | undefined {
  const shown = JSON.stringify(pattern.length > 64 ? `${pattern.slice(0, 61)}...` : pattern);
  if (pattern.length === 0) return "a DNS pattern must not be empty";
  if (pattern.length > 254) return `${shown} is not a DNS pattern: longer than 253 characters`;
  if (pattern === "*") return undefined;
  const labels = labelsOf(pattern);
  if (labels === undefined) return `${shown} is not a DNS pattern`;
  for (const [i, l] of labels.entries()) {
    if (l === "")
      return `${shown} is not a DNS pattern: it has an empty label (two dots in a row or a leading dot)`;
    if (l.length > 63) return `${shown} is not a DNS pattern: a label is longer than 63 characters`;
    if (!PATTERN_LABEL.test(l))
      return `${shown} is not a DNS pattern: only letters, digits, '-', '_', '.' and '*' are allowed`;
    if (l.includes("**") && !(l === "**" && i === 0 && labels.length > 1)) {
      return `${shown} is not a DNS pattern: '**' is only allowed as the whole first label, as in "**.example.com"`;
    }
  }
  return undefined;
}
