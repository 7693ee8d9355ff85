// Test fixture: an authoritative DNS server over UDP and TCP answering from a zone given as JSON (run inside a netns).
//   resolver.ts <address> <port>[,<port>...] '<zone JSON: {"name": [{"type": "A", "data": "10.0.0.1", "ttl": 30}]}>' [quiet]
// A name without an entry takes its wildcard's ("*.rest"); an A record "synth:BASE" answers BASE plus the
// number in the first label (c17.fresh.test -> BASE + 17), so every name has a fresh address.
// Prints "listening" when the sockets are bound, and "query <proto> <name> <port>" for each query (unless quiet).
// A UDP answer larger than the query's EDNS size (512 bytes without) goes out truncated (TC, no records; "truncated <name> <bytes>").
import dgram from "node:dgram";
import net from "node:net";
import dnsPacket from "dns-packet";

type Zone = Record<string, { type: "A" | "AAAA" | "CNAME"; data: string; ttl?: number }[]>;

const [address, portText, zoneText, quiet] = process.argv.slice(2);
if (!address || !portText || !zoneText) {
  console.error("usage: resolver.ts <address> <port> <zone JSON>");
  process.exit(2);
}
const zone = JSON.parse(zoneText) as Zone;
const norm = (n: string): string => n.toLowerCase().replace(/\.$/, "");

function answer(msg: Buffer, proto: string, port: number): Buffer {
  const q = dnsPacket.decode(msg);
  const question = q.questions?.[0];
  const name = norm(question?.name ?? "");
  if (quiet !== "quiet") console.log(`query ${proto} ${name} ${port}`);
  const answers: dnsPacket.Answer[] = [];
  // Follow CNAMEs inside the zone, as a resolver's answer carries the chain.
  let at = name;
  for (let hop = 0; hop < 8; hop++) {
    const rrs = zone[at] ?? zone[`*.${at.split(".").slice(1).join(".")}`] ?? [];
    const cname = rrs.find((r) => r.type === "CNAME");
    if (cname) {
      answers.push({ name: at, type: "CNAME", ttl: cname.ttl ?? 30, data: cname.data });
      at = norm(cname.data);
      continue;
    }
    for (const r of rrs) if (r.type === question?.type) answers.push({ name: at, type: r.type, ttl: r.ttl ?? 30, data: synth(r.data, at) });
    break;
  }
  const known = answers.length > 0 || zone[name] !== undefined;
  const response = { type: "response" as const, id: q.id ?? 0, flags: dnsPacket.AUTHORITATIVE_ANSWER | (known ? 0 : 3), questions: q.questions ?? [] };
  const full = dnsPacket.encode({ ...response, answers });
  // Over UDP an answer larger than the client said it can take (EDNS, else 512 bytes) is truncated, as a real server does: the client asks again over TCP.
  const opt = (q.additionals ?? []).find((a) => a.type === "OPT");
  const limit = opt && "udpPayloadSize" in opt ? opt.udpPayloadSize : 512;
  if (proto !== "udp" || full.length <= limit) return full;
  if (quiet !== "quiet") console.log(`truncated ${name} ${full.length}`);
  return dnsPacket.encode({ ...response, flags: response.flags | dnsPacket.TRUNCATED_RESPONSE });
}

function synth(data: string, name: string): string {
  if (!data.startsWith("synth:")) return data;
  const n = Number(/\d+/.exec(name.split(".")[0] ?? "")?.[0] ?? 0);
  const base = data.slice(6).split(".").reduce((acc, o) => acc * 256 + Number(o), 0) + n;
  return [24, 16, 8, 0].map((s) => (base >>> s) & 255).join(".");
}

const ports = (portText ?? "").split(",").map(Number);
let pending = ports.length * 2;
const ready = (): void => {
  if (--pending === 0) console.log("listening");
};
for (const port of ports) serve(port);

function serve(port: number): void {
  const udp = dgram.createSocket(net.isIPv6(address!) ? "udp6" : "udp4");
  udp.on("message", (msg, rinfo) => udp.send(answer(msg, "udp", port), rinfo.port, rinfo.address));
  const tcp = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on("error", () => sock.destroy());
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        const a = answer(msg, "tcp", port);
        const len = Buffer.alloc(2);
        len.writeUInt16BE(a.length, 0);
        sock.write(Buffer.concat([len, a]));
      }
    });
  });
  udp.bind(port, address, ready);
  tcp.listen(port, address, ready);
}
