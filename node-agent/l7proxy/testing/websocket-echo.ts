// Test fixture: a minimal RFC 6455 WebSocket echo on an HTTP server: the handshake on /ws/*, then each text frame answered "echo: <text>"; /ws/refuse answers 400 instead of switching.
import crypto from "node:crypto";
import type http from "node:http";
import type net from "node:net";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** A server frame (unmasked, FIN set) with a payload under 64 KiB. */
function frame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff]);
  return Buffer.concat([head, payload]);
}

/** Echoes on every upgrade the server gets; `onUpgrade` sees each handshake's path. */
export function attachWebSocketEcho(server: http.Server, onUpgrade: (path: string) => void = () => {}): void {
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket) => {
    onUpgrade(req.url ?? "");
    const key = req.headers["sec-websocket-key"];
    if (req.url === "/ws/refuse" || typeof key !== "string") {
      socket.end("HTTP/1.1 400 Bad Request\r\ncontent-length: 7\r\nconnection: close\r\n\r\nrefused");
      return;
    }
    const accept = crypto.createHash("sha1").update(key + GUID).digest("base64");
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    let buf = Buffer.alloc(0);
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (buf.length < 2) return;
        const opcode = buf[0]! & 0x0f;
        let len = buf[1]! & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          at = 4;
        }
        const masked = (buf[1]! & 0x80) !== 0;
        const mask = masked ? buf.subarray(at, at + 4) : undefined;
        if (masked) at += 4;
        if (buf.length < at + len) return;
        const payload = Buffer.from(buf.subarray(at, at + len));
        if (mask) for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
        buf = buf.subarray(at + len);
        if (opcode === 0x8) return void socket.end(frame(0x8, payload.subarray(0, 2)));
        if (opcode === 0x1) socket.write(frame(0x1, Buffer.from(`echo: ${payload.toString()}`)));
      }
    });
    socket.on("error", () => {});
  });
}
