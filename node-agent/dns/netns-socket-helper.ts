// Runs inside a node's network namespace (nsenter) and opens sockets there for the agent, which runs outside it: each is handed over on the IPC channel.
// Plain Node (its own type stripping, no loader): node builtins only.
import dgram from "node:dgram";
import net from "node:net";

interface Ask {
  readonly id: number;
  readonly op: "udp" | "tcpServer" | "connect";
  readonly type?: "udp4" | "udp6";
  readonly address: string;
  readonly port: number;
}

const send = (reply: object, handle?: dgram.Socket | net.Server | net.Socket, after?: () => void): void => {
  process.send?.(reply, handle as net.Server, undefined, () => after?.());
};

process.on("message", (m: Ask) => {
  const fail = (err: Error): void => send({ id: m.id, ok: false, error: err.message });
  if (m.op === "udp") {
    const s = dgram.createSocket({ type: m.type ?? "udp4", reuseAddr: true });
    s.once("error", fail);
    // Closed here once handed over: a copy left open would read (and lose) datagrams meant for the agent.
    s.bind(m.port, m.address, () => send({ id: m.id, ok: true }, s, () => s.close()));
  } else if (m.op === "tcpServer") {
    const s = net.createServer();
    s.once("error", fail);
    s.listen(m.port, m.address, () => send({ id: m.id, ok: true }, s, () => s.close()));
  } else {
    const s = net.connect(m.port, m.address, () => send({ id: m.id, ok: true }, s));
    s.once("error", fail);
  }
});
// The agent going away takes this process along (the IPC channel closes).
process.on("disconnect", () => process.exit(0));
send({ ready: true });
