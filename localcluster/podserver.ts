// The local cluster's stand-in for a pod's containers: answers on each containerPort (TCP and UDP) with the pod's name.
import { createSocket } from "node:dgram";
import { createServer } from "node:net";
import { parseFlags } from "../kube/flags.ts";

export interface PodServerArgs {
  name: string;
  tcp: number[];
  udp: number[];
}

/** `--name NAME [--tcp P,P…] [--udp P,P…]`; throws naming the bad argument. */
export function parsePodServerArgs(argv: string[]): PodServerArgs {
  const flags = parseFlags({ args: argv, options: { name: { type: "string" }, tcp: { type: "string" }, udp: { type: "string" } } });
  if (!flags.ok) throw new Error(flags.error);
  const v = flags.parsed.values;
  const ports = (flag: "tcp" | "udp"): number[] => {
    const value = v[flag] ?? "";
    const list = value === "" ? [] : value.split(",").map(Number);
    if (list.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) throw new Error(`--${flag}: "${value}" is not a list of ports 1-65535`);
    return list;
  };
  if (v.name === undefined || v.name === "") throw new Error("--name: required");
  return { name: v.name, tcp: ports("tcp"), udp: ports("udp") };
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
