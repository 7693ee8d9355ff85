// Test fixture: Node's own HTTP/2 client with prior knowledge (h2c, as gRPC connects) to a proxy port on loopback, and one request on it read to its end.
import http2 from "node:http2";
import net from "node:net";

/** An h2c session to a loopback proxy port (errors are the requests' to report). */
export function h2c(proxyPort: number, settings?: http2.Settings): http2.ClientHttp2Session {
  const session = http2.connect(`http://deathstar:${proxyPort}`, {
    createConnection: () => net.connect(proxyPort, "127.0.0.1"),
    ...(settings ? { settings } : {}),
  });
  session.on("error", () => {});
  return session;
}

export interface Answer {
  status: number;
  /** The body's first bytes as text (enough for the short answers tests compare). */
  body: string;
  bytes: number;
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
}

/** One request (its body and trailers if given), resolved with the answer once it ended; a reset rejects. */
export function request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer | string,
  trailers?: http2.OutgoingHttpHeaders,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = session.request(
      headers,
      body === undefined ? { endStream: true } : trailers ? { waitForTrailers: true } : {},
    );
    let text = "";
    let bytes = 0;
    let got: http2.IncomingHttpHeaders = {};
    let gotTrailers: http2.IncomingHttpHeaders = {};
    req.on("response", (h) => (got = h));
    req.on("trailers", (t) => (gotTrailers = t));
    req.on("data", (d: Buffer) => {
      bytes += d.length;
      if (text.length < 256) text += d.toString();
    });
    req.on("end", () =>
      resolve({ status: Number(got[":status"]), body: text, bytes, headers: got, trailers: gotTrailers }),
    );
    req.on("error", reject);
    if (trailers) req.on("wantTrailers", () => req.sendTrailers(trailers));
    if (body !== undefined) req.end(body);
  });
}

/** Resolves once `done()` holds, or after `ms` (the caller's assertion then says what did not happen). */
export async function until(done: () => boolean, ms = 1000): Promise<void> {
  for (const end = Date.now() + ms; !done() && Date.now() < end;) await new Promise((r) => setTimeout(r, 10));
}
