// A serverNames-only port (toPorts serverNames without HTTP rules and without terminatingTLS), enforced as Envoy's TLS inspector does for Cilium: the proxy reads the client's ClientHello without terminating it, splices the connection to the original destination when its SNI is listed, and closes it otherwise.
import type net from "node:net";
import { readClientHello } from "../../core/l7/client-hello.ts";
import { serverNameAllowed } from "../../core/l7/server-names.ts";

export type SniDecision =
  | { readonly allowed: true; readonly serverName: string }
  | { readonly allowed: false; readonly serverName?: string; readonly reason: string };

/**
 * Reads the connection's ClientHello (within `timeoutMs`, else refused) and judges its SNI by `serverNames`; when
 * allowed, `connect()` opens the upstream connection, the bytes read are sent first and the two are joined, every
 * later byte passing untouched. A refused connection is destroyed before anything reaches the destination.
 */
export async function filterBySni(
  client: net.Socket,
  serverNames: readonly string[],
  timeoutMs: number,
  connect: () => net.Socket,
): Promise<SniDecision> {
  const read = await readHello(client, timeoutMs);
  if (!read.ok) {
    client.destroy();
    return { allowed: false, reason: read.reason };
  }
  const { serverName, head } = read;
  if (serverName === undefined || !serverNameAllowed(serverName, serverNames)) {
    client.destroy();
    return serverName === undefined
      ? { allowed: false, reason: "the ClientHello names no server (SNI)" }
      : { allowed: false, serverName, reason: `server name ${JSON.stringify(serverName)} is not in the rule's serverNames` };
  }
  const upstream = connect();
  upstream.write(head);
  client.pipe(upstream);
  upstream.pipe(client);
  // Either side failing or closing ends both: a half-joined connection never lingers.
  const end = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", end).on("close", end);
  upstream.on("error", end).on("close", end);
  client.resume();
  return { allowed: true, serverName };
}

type Hello = { readonly ok: true; readonly serverName: string | undefined; readonly head: Buffer } | { readonly ok: false; readonly reason: string };

function readHello(socket: net.Socket, timeoutMs: number): Promise<Hello> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const finish = (h: Hello): void => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.off("error", onClose);
      if (h.ok) socket.pause();
      resolve(h);
    };
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      const r = readClientHello(got);
      if (r.kind === "more") return;
      finish(r.kind === "hello" ? { ok: true, serverName: r.serverName, head: got } : { ok: false, reason: r.reason });
    };
    const onClose = (): void => finish({ ok: false, reason: "the client closed before its ClientHello" });
    const timer = setTimeout(() => finish({ ok: false, reason: `no ClientHello within ${timeoutMs} ms` }), timeoutMs);
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.once("error", onClose);
  });
}
