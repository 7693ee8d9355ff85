// The server name a TLS ClientHello asks for (RFC 8446 §4.1.2, RFC 6066 §3 server_name), read from a connection's first bytes without terminating it: what a serverNames-only port is judged by.

export type ClientHelloRead =
  /** Not enough bytes yet for the whole ClientHello. */
  | { readonly kind: "more" }
  /** A complete ClientHello: the host_name it names, if any. */
  | { readonly kind: "hello"; readonly serverName?: string }
  /** Not a TLS ClientHello (or one past the size bound): the connection is refused. */
  | { readonly kind: "invalid"; readonly reason: string };

/** The largest ClientHello read (post-quantum key shares make them a few KB; 64 KB is generous). */
export const MAX_CLIENT_HELLO_BYTES = 65536;

const HANDSHAKE = 22;
const CLIENT_HELLO = 1;
const SERVER_NAME = 0;
const HOST_NAME = 0;

/** Reads the ClientHello at the start of `buf`, which may span several TLS records. */
export function readClientHello(buf: Buffer): ClientHelloRead {
  if (buf.length > 0 && buf[0] !== HANDSHAKE) return { kind: "invalid", reason: "not a TLS handshake" };
  const fragments: Buffer[] = [];
  let handshake = 0;
  for (let off = 0; off + 5 <= buf.length; ) {
    if (buf[off] !== HANDSHAKE) return { kind: "invalid", reason: "not a TLS handshake record" };
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384 + 2048) return { kind: "invalid", reason: `a TLS record of ${len} bytes` };
    if (off + 5 + len > buf.length) break;
    fragments.push(buf.subarray(off + 5, off + 5 + len));
    handshake += len;
    off += 5 + len;
  }
  const hs = Buffer.concat(fragments, handshake);
  if (hs.length >= 4) {
    if (hs[0] !== CLIENT_HELLO) return { kind: "invalid", reason: "the first handshake message is not a ClientHello" };
    const bodyLen = hs.readUIntBE(1, 3);
    if (bodyLen > MAX_CLIENT_HELLO_BYTES) return { kind: "invalid", reason: `a ClientHello of ${bodyLen} bytes` };
    if (hs.length >= 4 + bodyLen) return parseBody(hs.subarray(4, 4 + bodyLen));
  }
  if (buf.length > MAX_CLIENT_HELLO_BYTES + 1024) return { kind: "invalid", reason: "no complete ClientHello within the size bound" };
  return { kind: "more" };
}

function parseBody(b: Buffer): ClientHelloRead {
  const malformed: ClientHelloRead = { kind: "invalid", reason: "a malformed ClientHello" };
  let off = 2 + 32; // legacy_version, random
  if (off + 1 > b.length) return malformed;
  off += 1 + b[off]!; // session id
  if (off + 2 > b.length) return malformed;
  off += 2 + b.readUInt16BE(off); // cipher suites
  if (off + 1 > b.length) return malformed;
  off += 1 + b[off]!; // compression methods
  if (off === b.length) return { kind: "hello" }; // no extensions at all
  if (off + 2 > b.length) return malformed;
  const end = off + 2 + b.readUInt16BE(off);
  if (end > b.length) return malformed;
  for (off += 2; off + 4 <= end; ) {
    const type = b.readUInt16BE(off);
    const len = b.readUInt16BE(off + 2);
    const data = off + 4;
    if (data + len > end) return malformed;
    if (type === SERVER_NAME) return serverNameOf(b.subarray(data, data + len));
    off = data + len;
  }
  return { kind: "hello" };
}

function serverNameOf(ext: Buffer): ClientHelloRead {
  const malformed: ClientHelloRead = { kind: "invalid", reason: "a malformed server_name extension" };
  if (ext.length < 2 || 2 + ext.readUInt16BE(0) > ext.length) return malformed;
  for (let off = 2; off + 3 <= ext.length; ) {
    const type = ext[off]!;
    const len = ext.readUInt16BE(off + 1);
    if (off + 3 + len > ext.length) return malformed;
    const name = ext.subarray(off + 3, off + 3 + len).toString("latin1");
    if (type === HOST_NAME) {
      // RFC 6066: ASCII host names, no trailing dot; anything else is not a name a rule can list.
      if (len === 0 || !/^[\x21-\x7e]+$/.test(name)) return malformed;
      return { kind: "hello", serverName: name };
    }
    off += 3 + len;
  }
  return { kind: "hello" };
}
