// Label-selector syntax checks (operators, values, label keys/values); the meaning comes from core/selector.ts.
import type { Selector, SelectorOperator } from "../model.ts";
import { type SelectorOptions, selectorFrom } from "../selector.ts";
import {
  Errors,
  checkKnown,
  field,
  isRecord,
  join,
  labelKeyProblem,
  labelValueProblem,
  objectItems,
  show,
  typeName,
} from "./fields.ts";

/** A label selector as written in YAML, after its syntax was checked. */
export interface CheckedLabelSelector {
  readonly matchLabels: Readonly<Record<string, string>>;
  readonly matchExpressions: readonly {
    readonly key: string;
    readonly operator: SelectorOperator;
    readonly values: readonly string[];
  }[];
}

const OPERATORS: readonly SelectorOperator[] = ["In", "NotIn", "Exists", "DoesNotExist"];
const SELECTOR_FIELDS = ["matchLabels", "matchExpressions"];
const EXPRESSION_FIELDS = ["key", "operator", "values"];

/** The path of one matchLabels entry, built only for an error: most selectors have none. */
function labelPath(path: string, key: string): string {
  return `${join(path, "matchLabels")}[${JSON.stringify(key)}]`;
}

function keyProblem(key: string, allowSources: boolean): string | undefined {
  if (!allowSources && key.includes(":"))
    return `${show(key)} is not a label key: NetworkPolicy selectors take plain Kubernetes label keys`;
  return labelKeyProblem(key);
}

/**
 * Checks a `matchLabels`/`matchExpressions` object at `path`. Returns undefined (after adding
 * errors) when it is not usable. `allowSources` permits Cilium's `k8s:`/`reserved:` key prefixes;
 * NetworkPolicy selectors use plain Kubernetes keys.
 */
export function checkLabelSelector(
  errs: Errors,
  v: unknown,
  path: string,
  allowSources = true,
): CheckedLabelSelector | undefined {
  if (!isRecord(v)) {
    errs.add(path, `must be a label selector (matchLabels/matchExpressions), not ${typeName(v)}`);
    return undefined;
  }
  const before = errs.count;
  checkKnown(errs, path, v, SELECTOR_FIELDS);

  const matchLabels: Record<string, string> = {};
  const ml = field(v, "matchLabels");
  if (ml !== undefined && ml !== null) {
    if (!isRecord(ml))
      errs.add(join(path, "matchLabels"), `must be a map of label keys to values, not ${typeName(ml)}`);
    else {
      for (const key of Object.keys(ml)) {
        const kp = keyProblem(key, allowSources);
        if (kp) errs.add(labelPath(path, key), kp);
        const value = ml[key];
        if (typeof value !== "string") {
          errs.add(
            labelPath(path, key),
            `label value must be a string, not ${typeName(value)}${typeof value === "number" || typeof value === "boolean" ? ` (quote it: "${String(value)}")` : ""}`,
          );
          continue;
        }
        const vp = labelValueProblem(value);
        if (vp) errs.add(labelPath(path, key), vp);
        matchLabels[key] = value;
      }
    }
  }

  const matchExpressions: { key: string; operator: SelectorOperator; values: string[] }[] = [];
  for (const { item, path: p } of objectItems(errs, v, "matchExpressions", path)) {
    checkKnown(errs, p, item, EXPRESSION_FIELDS);
    const key = field(item, "key");
    const operator = field(item, "operator");
    const rawValues = field(item, "values");
    let ok = true;
    if (typeof key !== "string") {
      errs.add(
        join(p, "key"),
        key === undefined || key === null ? "a key is required" : `must be a string, not ${typeName(key)}`,
      );
      ok = false;
    } else {
      const kp = keyProblem(key, allowSources);
      if (kp) errs.add(join(p, "key"), kp);
    }
    if (typeof operator !== "string" || !(OPERATORS as readonly string[]).includes(operator)) {
      errs.add(
        join(p, "operator"),
        operator === undefined || operator === null
          ? "an operator is required (In, NotIn, Exists or DoesNotExist)"
          : `${show(operator)} is not an operator (In, NotIn, Exists or DoesNotExist)`,
      );
      ok = false;
    }
    const values: string[] = [];
    if (rawValues !== undefined && rawValues !== null) {
      if (!Array.isArray(rawValues)) {
        errs.add(join(p, "values"), `must be a list, not ${typeName(rawValues)}`);
        ok = false;
      } else {
        for (let i = 0; i < rawValues.length; i++) {
          const x: unknown = rawValues[i];
          if (typeof x !== "string") errs.add(join(p, `values[${i}]`), `must be a string, not ${typeName(x)}`);
          else {
            const prob = labelValueProblem(x);
            if (prob) errs.add(join(p, `values[${i}]`), prob);
            values.push(x);
          }
        }
      }
    }
    if (typeof operator === "string") {
      const n = Array.isArray(rawValues) ? rawValues.length : 0;
      if ((operator === "In" || operator === "NotIn") && n === 0)
        errs.add(join(p, "values"), `operator ${operator} needs at least one value`);
      if ((operator === "Exists" || operator === "DoesNotExist") && n > 0)
        errs.add(join(p, "values"), `operator ${operator} takes no values`);
    }
    if (ok && typeof key === "string")
      matchExpressions.push({ key, operator: operator as SelectorOperator, values });
  }
  return errs.count === before ? { matchLabels, matchExpressions } : undefined;
}


// A valid selector written the same way, under the same options, always gives the same Selector:
// remembered by its exact text, so that the selectors every policy repeats (app labels, the namespace
// key) are checked and built once, not once per request. Only plain, valid ones are kept (an error
// must be reported with its path every time); bounded like core/selector.ts's memo.
const CHECKED_MAX_ENTRIES = 4096;
const CHECKED_MAX_KEY_CHARS = 1024;
const checkedSelectors = new Map<string, Selector>();

/** An unambiguous text for a string: its length, then itself. */
const lp = (s: string): string => `${s.length}:${s}`;

/**
 * The memo key of a selector written only with string labels and well-formed expressions (no other
 * field, no null), or undefined for anything else: those are checked the long way every time.
 */
function plainSelectorKey(v: unknown, opts: SelectorOptions): string | undefined {
  if (!isRecord(v)) return undefined;
  let key = `${opts.role ?? ""}|${opts.namespace === undefined ? "-" : lp(opts.namespace)}|${opts.role === "peer" && opts.subjectSelectsInit ? 1 : 0}${opts.role === "peer" && opts.requires ? 1 : 0}${opts.kubernetesKeys ? 1 : 0}|`;
  for (const f in v) {
    if (!Object.prototype.hasOwnProperty.call(v, f)) continue;
    const x = v[f];
    if (f === "matchLabels") {
      if (!isRecord(x)) return undefined;
      key += "L";
      for (const k in x) {
        const value = x[k];
        if (typeof value !== "string" || !Object.prototype.hasOwnProperty.call(x, k)) return undefined;
        key += lp(k) + lp(value);
      }
    } else if (f === "matchExpressions") {
      if (!Array.isArray(x)) return undefined;
      key += "E";
      for (const e of x as unknown[]) {
        if (!isRecord(e)) return undefined;
        let parts = 0;
        for (const ef in e) if (Object.prototype.hasOwnProperty.call(e, ef)) parts++;
        const k = e.key;
        const op = e.operator;
        const values = e.values;
        if (typeof k !== "string" || typeof op !== "string" || !Object.prototype.hasOwnProperty.call(e, "key") || !Object.prototype.hasOwnProperty.call(e, "operator")) return undefined;
        if (values === undefined) {
          if (parts !== 2) return undefined;
          key += `${lp(k)}${lp(op)}-`;
          continue;
        }
        if (!Array.isArray(values) || parts !== 3 || !Object.prototype.hasOwnProperty.call(e, "values")) return undefined;
        key += `${lp(k)}${lp(op)}${values.length}[`;
        for (const value of values as unknown[]) {
          if (typeof value !== "string") return undefined;
          key += lp(value);
        }
      }
    } else return undefined;
    if (key.length > CHECKED_MAX_KEY_CHARS) return undefined;
  }
  return key;
}

/** checkLabelSelector (Cilium keys), then selectorFrom with `opts`; undefined after adding errors. */
export function checkedSelector(errs: Errors, v: unknown, path: string, opts: SelectorOptions): Selector | undefined {
  const key = plainSelectorKey(v, opts);
  if (key !== undefined) {
    const known = checkedSelectors.get(key);
    if (known !== undefined) return known;
  }
  const ls = checkLabelSelector(errs, v, path);
  if (!ls) return undefined;
  const selector = selectorFrom(ls, opts);
  if (key !== undefined) {
    if (checkedSelectors.size >= CHECKED_MAX_ENTRIES) checkedSelectors.clear();
    checkedSelectors.set(key, selector);
  }
  return selector;
}
