// Each policy generation parsed once: the status reconciler and the distribution share one parse per (object, generation).
import type { Policy, Result } from "../core/model.ts";
import { policyKey } from "../core/compiler.ts";
import { type ParseOptions, parsePolicyObject } from "../core/parser/index.ts";
import type { KubeObject } from "../kube/kube.ts";

interface Parsed {
  readonly uid: string | undefined;
  readonly generation: number | undefined;
  readonly result: Result<Policy[]>;
}

/**
 * The parse of each policy object, reused while its uid and generation stay the same (a status
 * write or a relist is not a new generation; the API server moves the generation with the spec).
 */
export class ParsedPolicies {
  private readonly byKey = new Map<string, Parsed>();
  private readonly byObject = new WeakMap<KubeObject, Result<Policy[]>>();

  /** `options` must be the webhook's, so what was admitted is what gets distributed. */
  constructor(private readonly options: ParseOptions = {}) {}

  /** The policy key of an object (core/compiler's policyKey). */
  static keyOf(obj: KubeObject): string {
    return policyKey({ kind: (obj.kind ?? "") as Policy["kind"], namespace: obj.metadata.namespace, name: obj.metadata.name });
  }

  parse(obj: KubeObject): Result<Policy[]> {
    const seen = this.byObject.get(obj);
    if (seen) return seen;
    const key = ParsedPolicies.keyOf(obj);
    const { uid, generation } = obj.metadata;
    const have = this.byKey.get(key);
    const result =
      have && uid !== undefined && generation !== undefined && have.uid === uid && have.generation === generation ? have.result : parsePolicyObject(obj, this.options);
    this.byKey.set(key, { uid, generation, result });
    this.byObject.set(obj, result);
    return result;
  }

  /** Drops a deleted object's parse. */
  forget(obj: KubeObject): void {
    this.byKey.delete(ParsedPolicies.keyOf(obj));
  }
}
