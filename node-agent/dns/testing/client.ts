// Test fixture: one DNS query over UDP or TCP, printed as JSON (run inside a pod netns).
//   client.ts <udp|tcp> <server> <port> <name> [type] [timeoutMs]
// Prints {"rcode": "...", "from": "ip:port", "answers": [{"name","type","data"}]}; exits 1 without an answer in time.
import dgram from "node:dgram";
import net from "node:net";
import dnsPacket from "dns-packet";

const [proto, server, portText, name, type = "A", timeoutText = "2000"] = process.argv.slice(2);
if (!proto || !server || !portText || !name) {
  console.error("usage: client.ts <udp|tcp> <server> <port> <name> [type] [timeoutMs]");
  process.exit(2);
}
const port = Number(portText);
const id = Math.floor(Math.random() * 65536);
const query = dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as "A", name }] });
setTimeout(() => {
  console.error("timeout");
  process.exit(1);
}, Number(timeoutText));

function print(msg: Buffer, from: string): void {
  const a = dnsPacket.decode(msg) as dnsPacket.DecodedPacket & { rcode?: string };
  if (a.id !== id) return;
  const answers = (a.answers ?? []).map((r) => ({ name: r.name, type: r.type, data: "data" in r ? r.data : undefined }));
  console.log(JSON.stringify({ rcode: a.rcode, from, answers }));
  process.exit(0);
}

if (proto === "udp") {
  const sock = dgram.createSocket(net.isIPv6(server) ? "udp6" : "udp4");
  sock.on("message", (msg, rinfo) => print(msg, `${rinfo.address}:${rinfo.port}`));
  sock.send(query, port, server);
} else {
  const sock = net.connect(port, server, () => {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(query.length, 0);
    sock.write(Buffer.concat([len, query]));
  });
  let buf = Buffer.alloc(0);
  sock.on("error", (err) => {
    console.error(err.message);
    process.exit(1);
  });
  sock.on("data", (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) print(buf.subarray(2, 2 + buf.readUInt16BE(0)), `${sock.remoteAddress}:${sock.remotePort}`);
  });
}
