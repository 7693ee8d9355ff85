// A tiny TCP/UDP echo server and one-shot client used by the real-packet tests (run inside a netns).
//   serve <tcp|udp> <port>...             prints "listening" then one line per UDP datagram received
//   connect <tcp|udp> <host> <port> <ms> [source]  exit 0 when the peer answered within ms, else 1
//   flood <host> <port> <count> <tag>     sends count UDP datagrams "<tag> <i>", each from a new socket
//                                         (a new flow, so policy decides each one), then prints "sent"
import net from "node:net";
import dgram from "node:dgram";

function serve(proto: string, ports: number[]): void {
  let pending = ports.length;
  const ready = (): void => {
    if (--pending === 0) console.log("listening");
  };
  for (const port of ports) {
    if (proto === "tcp") {
      net.createServer((s) => s.pipe(s).on("error", () => s.destroy())).listen(port, "0.0.0.0", ready);
    } else {
      const sock = dgram.createSocket("udp4");
      sock.on("message", (msg, rinfo) => {
        console.log(`datagram ${port} ${rinfo.address} ${msg.toString()}`);
        sock.send(msg, rinfo.port, rinfo.address);
      });
      sock.bind(port, "0.0.0.0", ready);
    }
  }
}

function connect(proto: string, host: string, port: number, ms: number, source?: string): void {
  const fail = setTimeout(() => process.exit(1), ms);
  const done = (): void => {
    clearTimeout(fail);
    process.exit(0);
  };
  if (proto === "tcp") {
    const s = net.connect({ port, host, ...(source ? { localAddress: source } : {}) }, () => s.write("ping"));
    s.on("data", done);
    s.on("error", () => process.exit(1));
  } else {
    const sock = dgram.createSocket("udp4");
    sock.on("message", done);
    sock.bind({ port: 0, ...(source ? { address: source } : {}) }, () => sock.send("ping", port, host));
  }
}

async function flood(host: string, port: number, count: number, tag: string): Promise<void> {
  for (let i = 0; i < count; i++) {
    const sock = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => sock.send(`${tag} ${i}`, port, host, () => resolve()));
    sock.close();
    await new Promise((r) => setTimeout(r, 2));
  }
  console.log("sent");
}

const [mode, proto, ...rest] = process.argv.slice(2);
if (mode === "serve" && proto) serve(proto, rest.map(Number));
else if (mode === "flood" && proto && rest.length === 3) void flood(proto, Number(rest[0]), Number(rest[1]), rest[2]!);
else if (mode === "connect" && proto && (rest.length === 3 || rest.length === 4)) {
  connect(proto, rest[0]!, Number(rest[1]), Number(rest[2]), rest[3]);
}
else {
  console.error("usage: probe.ts serve <tcp|udp> <port>... | connect <tcp|udp> <host> <port> <ms> [source] | flood <host> <port> <count> <tag>");
  process.exit(2);
}
