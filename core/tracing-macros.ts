// Tetragon's selectorsMacros: named selector fragments (spec.selectorsMacros) that a selector pulls in by listing
// their names in `macros`; expanded into plain selectors before anything else reads the policy, as Tetragon's loader
// does. A filter may come from the selector or from one macro, never from two places (Tetragon refuses that too).
import type { FieldError, Result } from "./model.ts";
import { isRecord, show, type Obj } from "./parser/fields.ts";

const HOOK_LISTS = ["kprobes", "fentries", "tracepoints", "lsmhooks", "uprobes", "usdts"] as const;

/**
 * The policy object with every selector's `macros` replaced by the macros' filters and `spec.selectorsMacros`
 * removed (the object itself when it uses none), or each problem with its field path. Never throws on user input.
 */
export function expandSelectorMacros(obj: unknown): Result<unknown> {
  if (!isRecord(obj) || !isRecord(obj.spec)) return { ok: true, value: obj };
  const spec = obj.spec;
  const errors: FieldError[] = [];
  const macros = new Map<string, Obj>();
  const defined = spec.selectorsMacros;
  if (defined !== undefined && defined !== null) {
    if (!isRecord(defined)) errors.push({ path: "spec.selectorsMacros", message: `must be a map of macro name to selector, not ${show(defined)}` });
    else {
      for (const [name, macro] of Object.entries(defined)) {
        const path = `spec.selectorsMacros.${name}`;
        if (!isRecord(macro)) errors.push({ path, message: `must be a selector (an object), not ${show(macro)}` });
        else if (macro.macros !== undefined) errors.push({ path: `${path}.macros`, message: "a macro cannot use other macros: list their filters here instead" });
        else macros.set(name, macro);
      }
    }
  }
  let used = false;
  const hooks: Record<string, unknown> = {};
  for (const kind of HOOK_LISTS) {
    const list = spec[kind];
    if (!Array.isArray(list)) continue;
    hooks[kind] = list.map((hook: unknown, i: number) => {
      if (!isRecord(hook) || !Array.isArray(hook.selectors)) return hook;
      const selectors = hook.selectors.map((sel: unknown, j: number) => {
        if (!isRecord(sel) || sel.macros === undefined) return sel;
        used = true;
        return expandOne(sel, `spec.${kind}[${i}].selectors[${j}]`, macros, defined !== undefined, errors);
      });
      return { ...hook, selectors };
    });
  }
  if (errors.length > 0) return { ok: false, errors };
  if (!used && defined === undefined) return { ok: true, value: obj };
  const { selectorsMacros: _macros, ...rest } = spec;
  return { ok: true, value: { ...obj, spec: { ...rest, ...hooks } } };
}

function expandOne(sel: Obj, path: string, macros: ReadonlyMap<string, Obj>, anyDefined: boolean, errors: FieldError[]): Obj {
  const { macros: names, ...rest } = sel;
  const out: Record<string, unknown> = { ...rest };
  if (!Array.isArray(names)) {
    errors.push({ path: `${path}.macros`, message: `must be a list of macro names, not ${show(names)}` });
    return out;
  }
  /** Which macro gave each field, to name both places when two give it. */
  const from = new Map<string, string>();
  names.forEach((name: unknown, k: number) => {
    const at = `${path}.macros[${k}]`;
    if (typeof name !== "string") return void errors.push({ path: at, message: `must be a macro name (a string), not ${show(name)}` });
    const macro = macros.get(name);
    if (macro === undefined) {
      const known = [...macros.keys()];
      return void errors.push({
        path: at,
        message: anyDefined ? `undefined macro ${show(name)} (spec.selectorsMacros defines ${known.length > 0 ? known.join(", ") : "none that is valid"})` : `macro ${show(name)} is used but spec.selectorsMacros defines no macros`,
      });
    }
    for (const [field, value] of Object.entries(macro)) {
      if (value === undefined) continue;
      if (field in out) {
        const other = from.get(field);
        errors.push({ path: at, message: `${field} is given by ${other !== undefined ? `macro ${show(other)}` : "the selector itself"} and by macro ${show(name)}: a filter may come from one place only` });
        continue;
      }
      out[field] = value;
      from.set(field, name);
    }
  });
  return out;
}
