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
// remembered by what is written, so that the selectors every policy repeats (app labels, the namespace
// key) are checked and built once, not once per request. Only plain, valid ones are kept (an error
// must be reported with its path every time); bounded like core/selector.ts's memo. The memo is a
// trie over the written strings one by one, so that a look-up builds and hashes no key text (a key
// built per selector and hashed by the Map was a tenth of validating the webhook benchmark's policy).
const CHECKED_MAX_NODES = 16_384;
const CHECKED_MAX_CHARS = 1024;

/**
 * One step of the trie: the selector whose tokens end here, and the steps on. Most nodes have one step
 * on (a selector's tokens after the first it does not share), kept beside the node without a Map.
 */
interface MemoNode {
  selector: Selector | undefined;
  token: unknown;
  only: MemoNode | undefined;
  more: Map<unknown, MemoNode> | undefined;
}

// Tokens other than the written strings: never equal to a string, so the token sequence is unambiguous.
const NO_NAMESPACE = Symbol("no namespace");
const MATCH_LABELS = Symbol("matchLabels");
const MATCH_EXPRESSIONS = Symbol("matchExpressions");
const EXPRESSION = Symbol("expression");
const NO_VALUES = Symbol("no values");

const newNode = (): MemoNode => ({ selector: undefined, token: undefined, only: undefined, more: undefined });
let memoRoot = newNode();
let memoNodes = 0;

/** Where a walk is: the node reached (undefined once a token is not in the trie), and whether missing steps are added. */
const walk: { at: MemoNode | undefined; adding: boolean } = { at: undefined, adding: false };

function step(token: unknown): void {
  const at = walk.at;
  if (at === undefined) return;
  let next = at.only !== undefined && at.token === token ? at.only : at.more?.get(token);
  if (next === undefined && walk.adding) {
    next = newNode();
    memoNodes++;
    if (at.only === undefined) {
      at.token = token;
      at.only = next;
    } else (at.more ??= new Map()).set(token, next);
  }
  walk.at = next;
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

/**
 * Walks the trie from `walk.at` along the tokens of a selector written only with string labels and
 * well-formed expressions (no other field, no null); false for anything else: those are checked the
 * long way every time.
 */
function walkPlainSelector(v: unknown, opts: SelectorOptions): boolean {
  if (!isRecord(v)) return false;
  step(opts.role ?? "");
  step(opts.namespace ?? NO_NAMESPACE);
  step((opts.role === "peer" && opts.subjectSelectsInit ? 1 : 0) + (opts.role === "peer" && opts.requires ? 2 : 0) + (opts.kubernetesKeys ? 4 : 0));
  let chars = 0;
  for (const f in v) {
    if (!hasOwn(v, f)) continue;
    const x = v[f];
    if (f === "matchLabels") {
      if (!isRecord(x)) return false;
      step(MATCH_LABELS);
      for (const k in x) {
        const value = x[k];
        if (typeof value !== "string" || !hasOwn(x, k)) return false;
        step(k);
        step(value);
        chars += k.length + value.length;
      }
    } else if (f === "matchExpressions") {
      if (!Array.isArray(x)) return false;
      step(MATCH_EXPRESSIONS);
      for (const e of x as unknown[]) {
        if (!isRecord(e)) return false;
        let parts = 0;
        for (const ef in e) if (hasOwn(e, ef)) parts++;
        const k = e.key;
        const op = e.operator;
        const values = e.values;
        if (typeof k !== "string" || typeof op !== "string" || !hasOwn(e, "key") || !hasOwn(e, "operator")) return false;
        step(EXPRESSION);
        step(k);
        step(op);
        chars += k.length + op.length;
        if (values === undefined) {
          if (parts !== 2) return false;
          step(NO_VALUES);
          continue;
        }
        if (!Array.isArray(values) || parts !== 3 || !hasOwn(e, "values")) return false;
        step(values.length);
        for (const value of values as unknown[]) {
          if (typeof value !== "string") return false;
          step(value);
          chars += value.length;
        }
      }
    } else return false;
    if (chars > CHECKED_MAX_CHARS) return false;
  }
  return true;
}

/** checkLabelSelector (Cilium keys), then selectorFrom with `opts`; undefined after adding errors. */
export function checkedSelector(errs: Errors, v: unknown, path: string, opts: SelectorOptions): Selector | undefined {
  walk.at = memoRoot;
  walk.adding = false;
  const plain = walkPlainSelector(v, opts);
  const known = plain ? walk.at?.selector : undefined;
  if (known !== undefined) return known;
  const ls = checkLabelSelector(errs, v, path);
  if (!ls) return undefined;
  const selector = selectorFrom(ls, opts);
  if (plain) {
    if (memoNodes >= CHECKED_MAX_NODES) {
      memoRoot = newNode();
      memoNodes = 0;
    }
    walk.at = memoRoot;
    walk.adding = true;
    walkPlainSelector(v, opts);
    walk.adding = false;
    if (walk.at !== undefined) walk.at.selector = selector;
  }
  return selector;
}
