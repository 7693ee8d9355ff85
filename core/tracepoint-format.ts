// A tracepoint's format as tracefs describes it (events/SUBSYSTEM/EVENT/format: its id and fields with offsets) and
// what a TracingPolicy's tracepoint argument means against it: Tetragon's `index` is the field's position in the
// format (common fields included), its type says how the field is read (an integer, or a user string).

export interface TracepointField {
  /** The C declaration as tracefs prints it, e.g. `const char * filename`. */
  readonly declaration: string;
  readonly name: string;
  readonly offset: number;
  readonly size: number;
  readonly signed: boolean;
}

export interface TracepointFormat {
  readonly subsystem: string;
  readonly event: string;
  readonly id: number;
  readonly fields: readonly TracepointField[];
}

/** How the enforcer's program reads one listed argument. */
export type TracepointArgRead =
  | { readonly kind: "int"; readonly offset: number; readonly size: 1 | 2 | 4 | 8; readonly signed: boolean; readonly field: string }
  | { readonly kind: "string"; readonly offset: number; readonly field: string };

/**
 * Every format in a text of concatenated format files as `tail -n +1 SUBSYSTEM/EVENT/format …` prints them in
 * tracefs's events directory: a `==> SUBSYSTEM/EVENT/format <==` line, then the file with its `name:` and `ID:`.
 */
export function parseTracepointFormats(text: string): TracepointFormat[] {
  const out: TracepointFormat[] = [];
  let header: string | undefined;
  let cur: { event: string; id: number; fields: TracepointField[] } | undefined;
  const flush = (): void => {
    if (cur === undefined) return;
    const subsystem = header?.split("/")[0];
    if (subsystem !== undefined && Number.isInteger(cur.id)) out.push({ subsystem, event: cur.event, id: cur.id, fields: cur.fields });
    cur = undefined;
  };
  for (const line of text.split("\n")) {
    const file = /^==> (.+) <==$/.exec(line);
    if (file) {
      flush();
      header = file[1];
      continue;
    }
    const name = /^name: (\S+)$/.exec(line);
    if (name) {
      flush();
      cur = { event: name[1]!, id: NaN, fields: [] };
      continue;
    }
    if (cur === undefined) continue;
    const id = /^ID: (\d+)$/.exec(line);
    if (id) {
      cur.id = Number(id[1]);
      continue;
    }
    const f = /^\s*field:(.+?);\s*offset:(\d+);\s*size:(\d+);\s*signed:(\d);/.exec(line);
    if (f) {
      const declaration = f[1]!.trim();
      const fieldName = /([A-Za-z_][A-Za-z0-9_]*)(\[\d*\])?$/.exec(declaration)?.[1] ?? declaration;
      cur.fields.push({ declaration, name: fieldName, offset: Number(f[2]), size: Number(f[3]), signed: f[4] === "1" });
    }
  }
  flush();
  return out;
}

const INT_TYPES: Readonly<Record<string, { size: 1 | 2 | 4 | 8; signed: boolean }>> = {
  int8: { size: 1, signed: true }, uint8: { size: 1, signed: false }, int16: { size: 2, signed: true }, uint16: { size: 2, signed: false },
  int: { size: 4, signed: true }, int32: { size: 4, signed: true }, uint32: { size: 4, signed: false },
  int64: { size: 8, signed: true }, uint64: { size: 8, signed: false }, size_t: { size: 8, signed: false }, fd: { size: 4, signed: true },
};
const STRING_TYPES = new Set(["string", "filename"]);

/** How argument `index` (a format field position) of type `type` is read, or why it cannot be. */
export function tracepointArgRead(format: TracepointFormat, index: number, type: string): TracepointArgRead | string {
  const field = format.fields[index];
  const where = `${format.subsystem}/${format.event}`;
  if (field === undefined) return `${where} has ${format.fields.length} fields (0-${format.fields.length - 1}, common fields included); field ${index} does not exist`;
  const isCharPointer = /\bchar\s*\*\s*\w+$/.test(field.declaration);
  const isArray = /\[\d*\]$/.test(field.declaration);
  if (isArray) return `field ${index} (${field.declaration}) is an array, which this node's tracepoint program does not read`;
  if (STRING_TYPES.has(type) || (type === "auto" && isCharPointer)) {
    if (!isCharPointer && field.size !== 8) return `field ${index} (${field.declaration}) is not a pointer: it cannot be read as ${type}`;
    return { kind: "string", offset: field.offset, field: field.name };
  }
  if (type === "auto") {
    if (field.size !== 1 && field.size !== 2 && field.size !== 4 && field.size !== 8) return `field ${index} (${field.declaration}) has size ${field.size}`;
    return { kind: "int", offset: field.offset, size: field.size, signed: field.signed, field: field.name };
  }
  const int = INT_TYPES[type];
  if (int === undefined) return `type ${type} of field ${index} (${field.declaration}) is not read by this node's tracepoint program (integers: ${Object.keys(INT_TYPES).join(", ")}; strings: string, filename, or auto for a char pointer)`;
  if (int.size > field.size) return `field ${index} (${field.declaration}) has ${field.size} bytes, fewer than ${type}`;
  return { kind: "int", offset: field.offset, size: int.size, signed: int.signed, field: field.name };
}

/** The operators a tracepoint program evaluates in the kernel, per kind of argument. */
export const TRACEPOINT_INT_OPERATORS = ["Equal", "NotEqual", "GreaterThan", "GT", "LessThan", "LT", "Mask"] as const;
export const TRACEPOINT_STRING_OPERATORS = ["Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix"] as const;
