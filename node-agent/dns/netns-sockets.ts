// Sockets for the DNS proxy: in the agent's own network namespace, or opened in a node's namespace by a helper process and handed over.
import { spawn, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import net from "node:net";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";

/** Where the proxy's sockets come from: it listens on them and forwards through them. */
export interface SocketFactory {
  udp(type: "udp4" | "udp6", address: string, port: number): Promise<dgram.Socket>;
  tcpServer(address: string, port: number): Promise<net.Server>;
  connect(address: string, port: number): Promise<net.Socket>;
}

/** Sockets of this process's own network namespace. */
export const LOCAL_SOCKETS: SocketFactory = {
  udp: (type, address, port) =>
    new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type, reuseAddr: true });
      s.once("error", reject);
      s.bind(port, address, () => {
        s.off("error", reject);
        resolve(s);
      });
    }),
  tcpServer: (address, port) =>
    new Promise((resolve, reject) => {
      const s = net.createServer();
      s.once("error", reject);
      s.listen(port, address, () => {
        s.off("error", reject);
        resolve(s);
      });
    }),
  connect: (address, port) =>
    new Promise((resolve, reject) => {
      const s = net.connect(port, address, () => {
        s.off("error", reject);
        resolve(s);
      });
      s.once("error", reject);
    }),
};

const HELPER = fileURLToPath(new URL("./netns-socket-helper.ts", import.meta.url));

type Handle = dgram.Socket | net.Server | net.Socket;

/**
 * Sockets of another network namespace (the node's, under /var/run/netns, where the agent runs
 * outside it as in the local cluster): a helper process started there with nsenter opens each one
 * and hands it over on Node's IPC channel; it lives in that namespace whoever holds it.
 */
export class NetnsSockets implements SocketFactory {
  private child: ChildProcess | undefined;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (h: Handle) => void; reject: (e: Error) => void }>();

  constructor(
    private readonly netns: string,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const child = spawn("nsenter", [`--net=/var/run/netns/${this.netns}`, process.execPath, HELPER], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.child = child;
    await new Promise<void>((resolve, reject) => {
      const early = (code: number | null): void => reject(new Error(`the socket helper in netns ${this.netns} exited (${code}) before it was ready`));
      child.once("exit", early);
      child.once("error", reject);
      child.on("message", (m: { ready?: boolean; id?: number; ok?: boolean; error?: string }, handle?: Handle) => {
        if (m.ready) {
          child.off("exit", early);
          resolve();
          return;
        }
        const w = m.id === undefined ? undefined : this.waiting.get(m.id);
        if (!w) return;
        this.waiting.delete(m.id!);
        if (m.ok && handle) w.resolve(handle);
        else w.reject(new Error(m.error ?? "no socket handed over"));
      });
    });
    child.on("exit", (code) => {
      if (this.child !== child) return;
      this.child = undefined;
      this.log.error({ netns: this.netns, code }, "DNS proxy socket helper exited; new proxy sockets cannot be opened");
      for (const w of this.waiting.values()) w.reject(new Error(`the socket helper in netns ${this.netns} exited`));
      this.waiting.clear();
    });
  }

  udp(type: "udp4" | "udp6", address: string, port: number): Promise<dgram.Socket> {
    return this.ask({ op: "udp", type, address, port }) as Promise<dgram.Socket>;
  }

  tcpServer(address: string, port: number): Promise<net.Server> {
    return this.ask({ op: "tcpServer", address, port }) as Promise<net.Server>;
  }

  connect(address: string, port: number): Promise<net.Socket> {
    return this.ask({ op: "connect", address, port }) as Promise<net.Socket>;
  }

  stop(): void {
    const c = this.child;
    this.child = undefined;
    if (c && c.exitCode === null) c.kill();
  }

  private ask(m: { op: string; type?: string; address: string; port: number }): Promise<Handle> {
    const child = this.child;
    if (!child?.connected) return Promise.reject(new Error(`no socket helper in netns ${this.netns}`));
    const id = this.nextId++;
    return new Promise<Handle>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      child.send({ id, ...m });
    });
  }
}
