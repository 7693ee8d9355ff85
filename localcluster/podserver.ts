// The local cluster's stand-in for a pod's containers: answers on each containerPort (TCP and UDP) with the pod's name.
import { createSocket } from "node:dgram";
import { createServer } from "node:net";

export interface PodServerArgs {
  name: string;
  tcp: number[];
  udp: number[];
}

/** `--name NAME [--tcp P,P…] [--udp P,P…]`; throws naming the bad argument. */
export function parsePodServerArgs(argv: string[]): PodServerArgs {
  const out: PodServerArgs = { name: "", tcp: [], udp: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag}: missing value`);
    if (flag === "--name") out.name = value;
    else if (flag === "--tcp" || flag === "--udp") {
      const ports = value === "" ? [] : value.split(",").map(Number);
      const bad = ports.find((p) => !Number.isInteger(p) || p < 1 || p > 65535);
      if (bad !== undefined) throw new Error(`${flag}: "${value}" is not a list of ports 1-65535`);
      out[flag === "--tcp" ? "tcp" : "udp"] = ports;
    } else throw new Error(`unknown argument "${flag}"`);
  }
  if (out.name === "") throw new Error("--name: required");
  return out;
}

/** Listens on every port (all addresses of the pod's netns); resolves once all are bound. */
export async function servePod(args: PodServerArgs): Promise<() => void> {
  const reply = `${args.name}\n`;
  const closers: (() => void)[] = [];
  for (const port of args.tcp) {
    const srv = createServer((sock) => {
      sock.on("error", () => undefined);
      sock.end(reply);
    });
    await new Promise<void>((resolve, reject) => {
      srv.once("error", reject);
      srv.listen(port, "0.0.0.0", () => resolve());
    });
    closers.push(() => srv.close());
  }
  for (const port of args.udp) {
    const sock = createSocket("udp4");
    sock.on("message", (_msg, from) => sock.send(reply, from.port, from.address));
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind(port, "0.0.0.0", () => resolve());
    });
    closers.push(() => sock.close());
  }
  return () => closers.forEach((c) => c());
}

async function main(): Promise<void> {
  const args = parsePodServerArgs(process.argv.slice(2));
  const close = await servePod(args);
  // The kubelet reports the pod Ready only after this line: every port is bound.
  process.stdout.write("ready\n");
  // A pod with no ports is still a running container: stay up until told to stop.
  const keepAlive = setInterval(() => undefined, 2 ** 30);
  const stop = (): void => {
    clearInterval(keepAlive);
    close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    process.stderr.write(`podserver: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
