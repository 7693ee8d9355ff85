// CIDR fields of policies: core/cidr.ts parses; this file says, for a user, why a text is not a usable CIDR.
import { type Prefix, familyBits, formatPrefix, makePrefix, parseIP, prefixContains, prefixLength } from "../cidr.ts";
import { Errors, type Obj, has, join, optString, stringList } from "./fields.ts";

export interface CheckedPrefix {
  readonly prefix: Prefix;
  readonly text: string; // canonical, host bits cleared: "10.0.0.0/8"
}

function shown(s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 61)}...` : s);
}

/** Parses `addr/bits`; with `allowBareIP` a bare address is a host prefix (/32 or /128). Else a reason. */
export function checkPrefix(s: string, allowBareIP: boolean): CheckedPrefix | string {
  if (s.length === 0) return "a CIDR must not be empty";
  const slash = s.indexOf("/");
  const ip = s.length > 64 ? undefined : parseIP(slash < 0 ? s : s.slice(0, slash));
  if (ip === undefined)
    return `${shown(s)} is not a CIDR (expected address/prefix-length, such as 10.0.0.0/8)`;
  const max = familyBits(ip.family);
  if (slash < 0 && !allowBareIP)
    return `${shown(s)} is not a CIDR: the prefix length is missing (such as ${s}/${max})`;
  // The address is parsed already: only the length is left (what parsePrefix would do again).
  const bits = slash < 0 ? max : prefixLength(s, slash + 1);
  if (bits < 0 || bits > max) return `${shown(s)} is not a CIDR: the prefix length must be 0-${max}`;
  const prefix = makePrefix(ip.family, ip.addr, bits);
  return { prefix, text: formatPrefix(prefix) };
}

/**
 * A `cidr` + `except` block (CNP toCIDRSet/fromCIDRSet, NetworkPolicy ipBlock) at `path`.
 * `strictExcept`: an except must be smaller than the cidr (Kubernetes); Cilium allows equal.
 */
export function cidrBlock(
  errs: Errors,
  obj: Obj,
  path: string,
  strictExcept: boolean,
): { cidr: string; except: string[] } | undefined {
  const before = errs.count;
  const cidr = optString(errs, obj, "cidr", path);
  if (cidr === undefined) {
    if (!has(obj, "cidr")) errs.add(join(path, "cidr"), "a cidr is required, such as 10.0.0.0/8");
    return undefined;
  }
  const outer = checkPrefix(cidr, false);
  if (typeof outer === "string") {
    errs.add(join(path, "cidr"), outer);
    return undefined;
  }
  const except: string[] = [];
  const excepts = stringList(errs, obj, "except", path);
  for (let i = 0; i < excepts.length; i++) {
    const e = excepts[i] ?? "";
    const inner = checkPrefix(e, false);
    const problem = typeof inner === "string" ? inner : exceptProblem(outer, inner, e, cidr, strictExcept);
    if (problem) errs.add(`${join(path, "except")}[${i}]`, problem);
    else if (typeof inner !== "string") except.push(inner.text);
  }
  return errs.count === before ? { cidr: outer.text, except } : undefined;
}

/** Why `except` (text `e`) cannot be an exception of `outer` (text `cidr`), or undefined. */
export function exceptProblem(
  outer: CheckedPrefix,
  inner: CheckedPrefix,
  e: string,
  cidr: string,
  strict: boolean,
): string | undefined {
  if (outer.prefix.family !== inner.prefix.family) {
    return `except ${shown(e)} is IPv${inner.prefix.family} but cidr ${shown(cidr)} is IPv${outer.prefix.family}`;
  }
  if (!prefixContains(outer.prefix, inner.prefix))
    return `except ${shown(e)} is not inside cidr ${shown(cidr)}`;
  if (strict && inner.prefix.bits === outer.prefix.bits)
    return `except ${shown(e)} must be smaller than cidr ${shown(cidr)} (it would exclude all of it)`;
  return undefined;
}
