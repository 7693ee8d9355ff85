// Building blocks for the CRD schemas: a typed subset of apiextensions.k8s.io/v1 JSONSchemaProps and
// constructors that make a description mandatory, so `kubectl explain` has something to say for every field.

/** The part of Kubernetes' JSONSchemaProps the CRDs use. Structural: every node has a type unless int-or-string. */
export interface JSONSchemaProps {
  type?: "object" | "array" | "string" | "integer" | "number" | "boolean";
  description?: string;
  format?: string;
  pattern?: string;
  enum?: readonly (string | number)[];
  /** Filled in by the API server when the field is absent (structural defaulting). */
  default?: string | number | boolean;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  properties?: Record<string, JSONSchemaProps>;
  additionalProperties?: JSONSchemaProps;
  required?: readonly string[];
  items?: JSONSchemaProps;
  oneOf?: readonly JSONSchemaProps[];
  anyOf?: readonly JSONSchemaProps[];
  "x-kubernetes-int-or-string"?: true;
  "x-kubernetes-preserve-unknown-fields"?: true;
  "x-kubernetes-list-type"?: "atomic" | "set" | "map";
  "x-kubernetes-list-map-keys"?: readonly string[];
  "x-kubernetes-map-type"?: "atomic" | "granular";
  /** CEL rules, evaluated by the API server only (Ajv does not run them). */
  "x-kubernetes-validations"?: readonly CELRule[];
}

/** One CEL validation rule: `fieldPath` (relative to the node, e.g. ".nodeSelector") is the field the error names. */
export interface CELRule {
  rule: string;
  message: string;
  reason?: "FieldValueInvalid" | "FieldValueForbidden" | "FieldValueRequired" | "FieldValueDuplicate";
  fieldPath?: string;
}

/** Value constraints that may be added to a typed node. */
export type Constraints = Omit<JSONSchemaProps, "type" | "description" | "properties" | "items">;

export function str(description: string, extra: Constraints = {}): JSONSchemaProps {
  return { type: "string", description, ...extra };
}

export function int(description: string, extra: Constraints = {}): JSONSchemaProps {
  return { type: "integer", description, ...extra };
}

export function bool(description: string): JSONSchemaProps {
  return { type: "boolean", description };
}

export function arr(description: string, items: JSONSchemaProps, extra: Constraints = {}): JSONSchemaProps {
  return { type: "array", description, items, ...extra };
}

export function obj(
  description: string,
  properties: Record<string, JSONSchemaProps>,
  extra: Constraints = {},
): JSONSchemaProps {
  return { type: "object", description, properties, ...extra };
}

/** A string → value map (label maps, annotations). */
export function map(description: string, values: JSONSchemaProps): JSONSchemaProps {
  return { type: "object", description, additionalProperties: values };
}

/** CEL: no two of `fields` are set (pairwise, which the API server's cost estimate rates far cheaper than a count). */
function noTwoSet(fields: readonly string[]): string {
  const pairs: string[] = [];
  for (let i = 0; i < fields.length; i++)
    for (let j = i + 1; j < fields.length; j++) pairs.push(`!(has(self.${fields[i]}) && has(self.${fields[j]}))`);
  return pairs.join(" && ");
}

/**
 * "At most one of these fields", as a CEL rule with a sentence and the field to blame. A schema
 * `oneOf` would do the same, but the API server then answers `"spec" must validate one and only one
 * schema` without saying which fields (issue 23 item 8).
 */
export function atMostOneOf(fields: readonly string[], message: string, fieldPath?: string): CELRule {
  return {
    rule: noTwoSet(fields),
    message,
    reason: "FieldValueForbidden",
    ...(fieldPath !== undefined ? { fieldPath } : {}),
  };
}

/** "At least one of these fields", as a CEL rule with a sentence and the field to blame. */
export function atLeastOneOf(fields: readonly string[], message: string, fieldPath?: string): CELRule {
  return {
    rule: fields.map((f) => `has(self.${f})`).join(" || "),
    message,
    reason: "FieldValueRequired",
    ...(fieldPath !== undefined ? { fieldPath } : {}),
  };
}

/** A Kubernetes timestamp (RFC 3339). */
export function timestamp(description: string): JSONSchemaProps {
  return str(description, { format: "date-time" });
}

/** A DNS-1123 subdomain, the shape of most Kubernetes object names. */
export const DNS1123_SUBDOMAIN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/** A reference to a Secret (key material never lives in a custom resource, only in Secrets). */
export function secretRef(description: string, namespaceDoc: string): JSONSchemaProps {
  return obj(
    description,
    {
      namespace: str(namespaceDoc, { maxLength: 63 }),
      name: str("Name of the Secret.", { minLength: 1, maxLength: 253 }),
    },
    { required: ["name"] },
  );
}

/** Standard Kubernetes conditions, keyed by type (API conventions). */
export function conditions(description: string): JSONSchemaProps {
  return arr(
    description,
    obj(
      "One observation of the object's state.",
      {
        type: str("Condition type in CamelCase, e.g. Valid, Enforced, Ready.", {
          minLength: 1,
          maxLength: 316,
        }),
        status: str("Whether the condition holds: True, False or Unknown.", {
          enum: ["True", "False", "Unknown"],
        }),
        reason: str("Machine-readable CamelCase reason for the last transition, e.g. ParseError.", {
          maxLength: 1024,
        }),
        message: str("Human-readable explanation of the last transition; names field paths when relevant.", {
          maxLength: 32768,
        }),
        lastTransitionTime: timestamp("When the status last changed."),
        observedGeneration: int("metadata.generation of the object this condition was computed from.", {
          minimum: 0,
          format: "int64",
        }),
      },
      { required: ["type", "status"] },
    ),
    { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] },
  );
}

/** The label value syntax of Kubernetes (selectors compare against label values). */
const LABEL_VALUE_PATTERN = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/** A label selector over security labels; keys may carry a source prefix such as `k8s:` or `reserved:`. */
export function labelSelector(description: string): JSONSchemaProps {
  return obj(
    description,
    {
      matchLabels: map(
        "Labels that must all be present with exactly these values. A key may carry a source prefix " +
          '("k8s:app", "reserved:host"); a bare key matches a label of any source.',
        str("The required label value (a Kubernetes label value, may be empty).", {
          maxLength: 63,
          pattern: LABEL_VALUE_PATTERN,
        }),
      ),
      matchExpressions: arr(
        "Set-based requirements, all of which must hold.",
        obj(
          "One requirement: a label key, an operator and the values it applies to.",
          {
            key: str("The label key the requirement applies to (optionally with a source prefix).", {
              minLength: 1,
            }),
            operator: str("How the key relates to the values: In, NotIn, Exists or DoesNotExist.", {
              enum: ["In", "NotIn", "Exists", "DoesNotExist"],
            }),
            values: arr(
              "Values for In and NotIn (non-empty); must be empty for Exists and DoesNotExist.",
              str("One label value."),
              { "x-kubernetes-list-type": "atomic" },
            ),
          },
          { required: ["key", "operator"] },
        ),
        { "x-kubernetes-list-type": "atomic" },
      ),
    },
    { "x-kubernetes-map-type": "atomic" },
  );
}

/** The apiVersion/kind/metadata fields every object has. */
export function objectMetaFields(): Record<string, JSONSchemaProps> {
  return {
    apiVersion: str("Versioned schema of this object, e.g. cilium.io/v2."),
    kind: str("The REST resource this object represents, in CamelCase."),
    // The API server owns metadata's schema; a CRD may not describe or restrict it beyond name.
    metadata: { type: "object" },
  };
}

export interface PrinterColumn {
  name: string;
  type: "string" | "integer" | "number" | "boolean" | "date";
  jsonPath: string;
  description: string;
  priority?: number;
}

export interface CustomResourceDefinition {
  apiVersion: "apiextensions.k8s.io/v1";
  kind: "CustomResourceDefinition";
  metadata: { name: string; labels: Record<string, string> };
  spec: {
    group: string;
    names: {
      kind: string;
      listKind: string;
      plural: string;
      singular: string;
      shortNames?: string[];
      categories?: string[];
    };
    scope: "Namespaced" | "Cluster";
    versions: {
      name: string;
      served: true;
      storage: boolean;
      schema: { openAPIV3Schema: JSONSchemaProps };
      subresources?: { status: Record<string, never> };
      additionalPrinterColumns?: PrinterColumn[];
    }[];
  };
}

export interface CRDDefinition {
  group: string;
  version: string;
  /** Older versions served with the same schema (not stored; the API server converts by changing apiVersion only). */
  alsoServed?: readonly string[];
  kind: string;
  plural: string;
  shortNames?: string[];
  categories?: string[];
  scope: "Namespaced" | "Cluster";
  /** The top-level schema (apiVersion, kind and metadata are added). */
  schema: JSONSchemaProps;
  /** Whether `status` is a subresource (written only through /status). */
  statusSubresource: boolean;
  printerColumns?: PrinterColumn[];
}

/** Assembles a CustomResourceDefinition manifest: one stored version (first), and any older ones served with the same schema. */
export function defineCRD(d: CRDDefinition): CustomResourceDefinition {
  const version: CustomResourceDefinition["spec"]["versions"][number] = {
    name: d.version,
    served: true,
    storage: true,
    schema: {
      openAPIV3Schema: {
        ...d.schema,
        properties: { ...objectMetaFields(), ...d.schema.properties },
      },
    },
  };
  if (d.statusSubresource) version.subresources = { status: {} };
  if (d.printerColumns) version.additionalPrinterColumns = d.printerColumns;
  const singular = d.kind.toLowerCase();
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${d.plural}.${d.group}`,
      labels: { "app.kubernetes.io/part-of": "membrane" },
    },
    spec: {
      group: d.group,
      names: {
        kind: d.kind,
        listKind: `${d.kind}List`,
        plural: d.plural,
        singular,
        ...(d.shortNames ? { shortNames: d.shortNames } : {}),
        ...(d.categories ? { categories: d.categories } : {}),
      },
      scope: d.scope,
      versions: [version, ...(d.alsoServed ?? []).map((name) => ({ ...version, name, storage: false }))],
    },
  };
}

/** Age, as every kubectl listing shows it. */
export const AGE_COLUMN: PrinterColumn = {
  name: "Age",
  type: "date",
  jsonPath: ".metadata.creationTimestamp",
  description: "Time since the object was created.",
};
