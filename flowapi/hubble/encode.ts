// Protobuf encoding of Hubble's messages as the agent holds them (plain objects with the .proto's field names, enums as
// their names), driven by the descriptors of Cilium's own .proto files: the same bytes protobufjs writes (a test compares
// them), without its copy of every message (fromObject) and its character-by-character strings, and with the frozen
// string lists every flow repeats (an identity's labels) encoded once.
import type { EnumTypeDefinition, MessageTypeDefinition, PackageDefinition } from "@grpc/proto-loader";
import { hubbleApi } from "./proto.ts";

type Kind = "varint" | "sint32" | "sint64" | "bool" | "enum" | "string" | "bytes" | "message" | "double" | "float" | "fixed32" | "fixed64" | "sfixed32" | "sfixed64";

interface FieldPlan {
  readonly name: string;
  readonly number: number;
  readonly kind: Kind;
  readonly repeated: boolean;
  /** Repeated numbers in one length-delimited run (proto3's default for scalar numbers). */
  readonly packed: boolean;
  message?: MessagePlan;
  enumValues?: ReadonlyMap<string, number>;
}

interface MessagePlan {
  readonly name: string;
  /** By field number, as protobufjs writes them. */
  readonly fields: FieldPlan[];
}

const KIND_OF: Readonly<Record<string, Kind>> = {
  TYPE_INT32: "varint",
  TYPE_INT64: "varint",
  TYPE_UINT32: "varint",
  TYPE_UINT64: "varint",
  TYPE_SINT32: "sint32",
  TYPE_SINT64: "sint64",
  TYPE_BOOL: "bool",
  TYPE_ENUM: "enum",
  TYPE_STRING: "string",
  TYPE_BYTES: "bytes",
  TYPE_MESSAGE: "message",
  TYPE_DOUBLE: "double",
  TYPE_FLOAT: "float",
  TYPE_FIXED32: "fixed32",
  TYPE_FIXED64: "fixed64",
  TYPE_SFIXED32: "sfixed32",
  TYPE_SFIXED64: "sfixed64",
};

const WIRE: Readonly<Record<Kind, number>> = {
  varint: 0, sint32: 0, sint64: 0, bool: 0, enum: 0,
  fixed64: 1, sfixed64: 1, double: 1,
  string: 2, bytes: 2, message: 2,
  fixed32: 5, sfixed32: 5, float: 5,
};

interface Descriptor {
  readonly field?: readonly { name: string; number: number; type: string; label: string; typeName: string; options?: { packed?: boolean } | null }[];
  readonly value?: readonly { name: string; number: number }[];
  readonly nestedType?: readonly (Descriptor & { name: string })[];
  readonly enumType?: readonly (Descriptor & { name: string })[];
}

/** Every message and enum by full name, nested ones (`flow.Tunnel.Protocol`) included: proto-loader lists only the outer ones. */
function typeIndex(def: PackageDefinition): Map<string, Descriptor> {
  const index = new Map<string, Descriptor>();
  const add = (name: string, d: Descriptor): void => {
    index.set(name, d);
    for (const n of d.nestedType ?? []) add(`${name}.${n.name}`, n);
    for (const e of d.enumType ?? []) index.set(`${name}.${e.name}`, e);
  };
  for (const [name, t] of Object.entries(def)) {
    const format = (t as { format?: string }).format;
    if (format === "Protocol Buffer 3 DescriptorProto" || format === "Protocol Buffer 3 EnumDescriptorProto") add(name, (t as MessageTypeDefinition<unknown, unknown> | EnumTypeDefinition).type as Descriptor);
  }
  return index;
}

/** A type name as written in a field (relative to the message's scope, or absolute) → its full name. */
function resolve(index: ReadonlyMap<string, Descriptor>, scope: string, typeName: string): string {
  if (typeName.startsWith(".")) return typeName.slice(1);
  const parts = scope.split(".");
  for (let i = parts.length; i >= 0; i--) {
    const candidate = [...parts.slice(0, i), typeName].join(".");
    if (index.has(candidate)) return candidate;
  }
  throw new Error(`protobuf: type ${typeName} (used in ${scope}) not in the loaded .proto files`);
}

export class ProtoEncoder {
  private readonly plans = new Map<string, MessagePlan>();
  private buf = Buffer.allocUnsafe(64 * 1024);
  private pos = 0;
  private readonly stringLists = new WeakMap<readonly string[], Buffer>();

  private readonly types: Map<string, Descriptor>;

  constructor(def: PackageDefinition) {
    this.types = typeIndex(def);
  }

  /** The plan of a message by full name (`flow.Flow`), built once; fields by number. */
  plan(name: string): MessagePlan {
    const known = this.plans.get(name);
    if (known !== undefined) return known;
    const t = this.types.get(name);
    if (t === undefined || t.field === undefined) throw new Error(`protobuf: ${name} is not a message of the loaded .proto files`);
    const fields: FieldPlan[] = [];
    const plan: MessagePlan = { name, fields };
    this.plans.set(name, plan); // before the fields: a message may contain itself
    for (const f of t.field) {
      const kind = KIND_OF[f.type];
      if (kind === undefined) throw new Error(`protobuf: ${name}.${f.name}: field type ${f.type} not supported`);
      const repeated = f.label === "LABEL_REPEATED";
      const numeric = WIRE[kind] !== 2;
      const field: FieldPlan = { name: f.name, number: f.number, kind, repeated, packed: repeated && numeric && f.options?.packed !== false };
      if (kind === "message") field.message = this.plan(resolve(this.types, name, f.typeName));
      if (kind === "enum") field.enumValues = new Map((this.types.get(resolve(this.types, name, f.typeName))!.value ?? []).map((v) => [v.name, v.number]));
      fields.push(field);
    }
    fields.sort((a, b) => a.number - b.number);
    return plan;
  }

  /** The message's bytes (a fresh Buffer). Set fields are written, unset (undefined or null) ones are not, as protobufjs does. */
  encode(plan: MessagePlan, value: object): Buffer {
    this.pos = 0;
    this.message(plan, value as Record<string, unknown>);
    return Buffer.from(this.buf.subarray(0, this.pos));
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }

  private varint(n: number): void {
    this.ensure(10);
    if (n < 0) {
      // Negative int32/int64: ten bytes of two's complement, as protobufjs writes them.
      let v = BigInt.asUintN(64, BigInt(Math.trunc(n)));
      while (v >= 0x80n) {
        this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
        v >>= 7n;
      }
      this.buf[this.pos++] = Number(v);
      return;
    }
    while (n >= 0x80) {
      this.buf[this.pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.pos++] = n;
  }

  /** Reserves one byte for a length; `end` puts the length of what was written since in front of it. */
  private begin(): number {
    this.ensure(1);
    return this.pos++;
  }

  /** The length of what was written since `begin` (returned `start`), in front of it (moved when it needs more than a byte). */
  private end(start: number): void {
    const len = this.pos - start - 1;
    if (len < 0x80) {
      this.buf[start] = len;
      return;
    }
    let size = 1;
    for (let v = len; v >= 0x80; v = Math.floor(v / 0x80)) size++;
    this.ensure(size - 1);
    this.buf.copyWithin(start + size, start + 1, this.pos);
    const end = this.pos + size - 1;
    this.pos = start;
    this.varint(len);
    this.pos = end;
  }

  private string(s: string): void {
    this.ensure(s.length * 3 + 5);
    if (s.length < 0x80) {
      // Short ASCII strings (almost every one in a flow) without a call into the runtime.
      const start = this.pos;
      let ascii = true;
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) {
          ascii = false;
          break;
        }
        this.buf[start + 1 + i] = c;
      }
      if (ascii) {
        this.buf[start] = s.length;
        this.pos = start + 1 + s.length;
        return;
      }
    }
    const at = this.begin();
    this.pos += this.buf.write(s, this.pos, "utf8");
    this.end(at);
  }

  private scalar(f: FieldPlan, v: unknown): void {
    switch (f.kind) {
      case "varint":
        return this.varint(Number(v));
      case "bool":
        return this.varint(v ? 1 : 0);
      case "enum":
        return this.varint(typeof v === "number" ? v : f.enumValues!.get(v as string)!);
      case "sint32":
      case "sint64": {
        const n = Number(v);
        return this.varint(n >= 0 ? n * 2 : -n * 2 - 1);
      }
      case "double":
        this.ensure(8);
        this.pos = this.buf.writeDoubleLE(Number(v), this.pos);
        return;
      case "float":
        this.ensure(4);
        this.pos = this.buf.writeFloatLE(Number(v), this.pos);
        return;
      case "fixed32":
        this.ensure(4);
        this.pos = this.buf.writeUInt32LE(Number(v) >>> 0, this.pos);
        return;
      case "sfixed32":
        this.ensure(4);
        this.pos = this.buf.writeInt32LE(Number(v) | 0, this.pos);
        return;
      case "fixed64":
        this.ensure(8);
        this.pos = this.buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(Math.trunc(Number(v)))), this.pos);
        return;
      case "sfixed64":
        this.ensure(8);
        this.pos = this.buf.writeBigInt64LE(BigInt.asIntN(64, BigInt(Math.trunc(Number(v)))), this.pos);
        return;
      case "string":
        return this.string(v as string);
      case "bytes": {
        const b = v as Uint8Array;
        this.varint(b.length);
        this.ensure(b.length);
        this.buf.set(b, this.pos);
        this.pos += b.length;
        return;
      }
      case "message": {
        const at = this.begin();
        this.message(f.message!, v as Record<string, unknown>);
        return this.end(at);
      }
    }
  }

  /** One value of a field with its key; an enum name the .proto does not have is left out, as protobufjs does. */
  private one(f: FieldPlan, v: unknown): void {
    if (f.kind === "enum" && typeof v !== "number" && !f.enumValues!.has(v as string)) return;
    this.varint(f.number * 8 + WIRE[f.kind]);
    this.scalar(f, v);
  }

  private message(plan: MessagePlan, m: Record<string, unknown>): void {
    for (const f of plan.fields) {
      const v = m[f.name];
      if (v === undefined || v === null) continue;
      if (!f.repeated) {
        this.one(f, v);
        continue;
      }
      const list = v as readonly unknown[];
      if (list.length === 0) continue;
      if (f.packed) {
        this.varint(f.number * 8 + 2);
        const at = this.begin();
        for (const x of list) this.scalar(f, x);
        this.end(at);
        continue;
      }
      if (f.kind === "string" && Object.isFrozen(list)) {
        // A frozen list (an identity's labels) is the same in flow after flow: its bytes are written once.
        let bytes = this.stringLists.get(list as readonly string[]);
        if (bytes === undefined) {
          const start = this.pos;
          for (const x of list) this.one(f, x);
          bytes = Buffer.from(this.buf.subarray(start, this.pos));
          this.stringLists.set(list as readonly string[], bytes);
          continue;
        }
        this.ensure(bytes.length);
        this.buf.set(bytes, this.pos);
        this.pos += bytes.length;
        continue;
      }
      for (const x of list) this.one(f, x);
    }
  }
}

let encoder: { encoder: ProtoEncoder; plan: MessagePlan } | undefined;

/** Encodes a GetFlowsResponse (Hubble's `observer.GetFlowsResponse`) as the agent serves it. */
export function encodeGetFlowsResponse(r: object): Buffer {
  if (encoder === undefined) {
    const e = new ProtoEncoder(hubbleApi().definition);
    encoder = { encoder: e, plan: e.plan("observer.GetFlowsResponse") };
  }
  return encoder.encoder.encode(encoder.plan, r);
}
