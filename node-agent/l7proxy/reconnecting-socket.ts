// A client of a unix socket that another process serves and may restart: connects, and after every close tries again until stopped.
import net from "node:net";

export interface ReconnectingUnixSocketOptions {
  readonly path: string;
  /** How long to wait after a close before the next attempt. */
  readonly retryMs: number;
  /**
   * Whether the wait for the next attempt keeps the process alive. A proxy with nothing else to do is kept alive by
   * its wait for the agent; a flow writer is not a reason to stay.
   */
  readonly keepAlive: boolean;
  /** A new socket, before it connects: attach readers here (data can arrive right after the connect). */
  readonly onSocket?: (s: net.Socket) => void;
  readonly onConnect: (s: net.Socket) => void;
  /** `wasConnected` is false when the attempt failed (nobody listening): the caller logs only real disconnections. */
  readonly onClose: (wasConnected: boolean) => void;
}

export class ReconnectingUnixSocket {
  /** The open socket, while connected. */
  socket: net.Socket | undefined;
  connected = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly opts: ReconnectingUnixSocketOptions) {}

  start(): void {
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.destroy();
  }

  private connect(): void {
    if (this.stopped) return;
    const s = net.createConnection(this.opts.path);
    this.socket = s;
    this.opts.onSocket?.(s);
    s.on("connect", () => {
      this.connected = true;
      this.opts.onConnect(s);
    });
    s.on("error", () => undefined); // followed by close
    s.on("close", () => {
      const was = this.connected;
      this.connected = false;
      this.socket = undefined;
      this.opts.onClose(was);
      if (this.stopped) return;
      this.timer = setTimeout(() => this.connect(), this.opts.retryMs);
      if (!this.opts.keepAlive) this.timer.unref();
    });
  }
}
