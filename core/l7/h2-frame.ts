// HTTP/2 frames (RFC 9113 §4, §6) as the L7 proxy's relay reads and makes them: the 9-octet header, and the few frames the proxy writes itself.

export const FRAME_HEADER = 9;
export const DEFAULT_MAX_FRAME = 16384;
/** A connection's and each stream's flow-control window before any WINDOW_UPDATE or SETTINGS_INITIAL_WINDOW_SIZE (RFC 9113 §6.9.2). */
export const DEFAULT_WINDOW = 65535;

/** The frame types (RFC 9113 §6). */
// prettier-ignore
export const FrameType = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;

export const FLAG_END_STREAM = 0x1;
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

/** The SETTINGS the relay reads or sets (RFC 9113 §6.5.2). */
// prettier-ignore
export const Setting = { HEADER_TABLE_SIZE: 1, ENABLE_PUSH: 2, MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5, MAX_HEADER_LIST_SIZE: 6, ENABLE_CONNECT_PROTOCOL: 8 } as const;

/** The error codes the relay sends (RFC 9113 §7). */
// prettier-ignore
export const ErrorCode = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, STREAM_CLOSED: 5, FRAME_SIZE_ERROR: 6, REFUSED_STREAM: 7, CANCEL: 8, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11 } as const;

/**
 * The header block fragment a HEADERS or PUSH_PROMISE frame carries: without its padding, priority fields or promised
 * stream id; undefined when those do not fit in the frame (a PROTOCOL_ERROR).
 */
export function blockFragment(type: number, flags: number, payload: Buffer): Buffer | undefined {
  let from = 0;
  let to = payload.length;
  if (flags & FLAG_PADDED) {
    from = 1;
    to -= payload[0] ?? 0;
  }
  if (type === FrameType.PUSH_PROMISE) from += 4;
  else if (flags & FLAG_PRIORITY) from += 5;
  return from <= to ? payload.subarray(from, to) : undefined;
}

/** The client connection preface (RFC 9113 §3.4). */
export const PREFACE_LENGTH = 24;

function writeHeader(
  out: Buffer,
  at: number,
  length: number,
  type: number,
  flags: number,
  stream: number,
): void {
  out.writeUIntBE(length, at, 3);
  out[at + 3] = type;
  out[at + 4] = flags;
  out.writeUInt32BE(stream & 0x7fffffff, at + 5);
}

export function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  writeHeader(out, 0, payload.length, type, flags, stream);
  payload.copy(out, FRAME_HEADER);
  return out;
}

/** A header block as one HEADERS frame and as many CONTINUATION frames as `maxFrame` needs, in one buffer (a block is never interleaved). */
export function headerFrames(stream: number, block: Buffer, endStream: boolean, maxFrame: number): Buffer {
  const count = Math.max(1, Math.ceil(block.length / maxFrame));
  const out = Buffer.allocUnsafe(block.length + count * FRAME_HEADER);
  let at = 0;
  for (let i = 0, from = 0; i < count; i++) {
    const to = Math.min(block.length, from + maxFrame);
    const last = i === count - 1;
    writeHeader(
      out,
      at,
      to - from,
      i === 0 ? FrameType.HEADERS : FrameType.CONTINUATION,
      (last ? FLAG_END_HEADERS : 0) | (i === 0 && endStream ? FLAG_END_STREAM : 0),
      stream,
    );
    block.copy(out, at + FRAME_HEADER, from, to);
    at += FRAME_HEADER + to - from;
    from = to;
  }
  return out;
}

export function windowUpdate(stream: number, increment: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(increment & 0x7fffffff, 0);
  return frame(FrameType.WINDOW_UPDATE, 0, stream, p);
}

export function rstStream(stream: number, code: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(code, 0);
  return frame(FrameType.RST_STREAM, 0, stream, p);
}

export function goaway(lastStream: number, code: number): Buffer {
  const p = Buffer.allocUnsafe(8);
  p.writeUInt32BE(lastStream & 0x7fffffff, 0);
  p.writeUInt32BE(code, 4);
  return frame(FrameType.GOAWAY, 0, 0, p);
}

/** A SETTINGS payload's entries in order (a later one of an id overrides an earlier one). */
export function settingsOf(payload: Buffer): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i + 6 <= payload.length; i += 6)
    out.push([payload.readUInt16BE(i), payload.readUInt32BE(i + 2)]);
  return out;
}

/** A SETTINGS frame with `payload`'s entries and then `extra`, which override them (entries are applied in order). */
export function settingsFrame(payload: Buffer, extra: readonly (readonly [number, number])[]): Buffer {
  const add = Buffer.allocUnsafe(extra.length * 6);
  extra.forEach(([id, value], i) => {
    add.writeUInt16BE(id, i * 6);
    add.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, Buffer.concat([payload, add]));
}
