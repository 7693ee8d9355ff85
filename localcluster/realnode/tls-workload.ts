// The workload of the real-node TLS-inspection and plain HTTP/2 tests, run in pods of the Membrane image (Node inside): a server speaking HTTPS and h2c, and one-shot HTTPS and h2c clients.

/** The server's HTTPS port (its own certificate, from a CA only the proxy's originatingTLS Secret trusts). */
export const TLS_PORT = 8443;
/** The server's plain HTTP/2 port (h2c with prior knowledge, not gRPC). */
export const H2C_PORT = 8081;
/** The name the client asks for (SNI and Host); the server's and the proxy's certificates are issued for it. */
export const TLS_SERVER_NAME = "secure.example";

/**
 * The server: HTTPS on TLS_PORT with the certificate and key of its Secret volume (`/tls/tls.crt`, `/tls/tls.key`), h2c on
 * H2C_PORT. Every request is logged ("https METHOD PATH sni=NAME", "h2c METHOD PATH") and answered 200 with a body
 * naming what the server saw, so the client can tell the server answered and which SNI reached it.
 */
export const TLS_SERVER = `const log = (l) => console.log(l);
const fs = require("fs");
require("https").createServer({ cert: fs.readFileSync("/tls/tls.crt"), key: fs.readFileSync("/tls/tls.key") }, (q, s) => {
  const sni = q.socket.servername || "";
  log("https " + q.method + " " + q.url + " sni=" + sni);
  q.resume(); q.on("end", () => { s.writeHead(200); s.end("server: " + q.method + " " + q.url + " sni=" + sni + "\\n"); });
}).listen(${TLS_PORT});
require("http2").createServer().on("stream", (st, h) => {
  log("h2c " + h[":method"] + " " + h[":path"]);
  st.resume();
  st.on("end", () => { st.respond({ ":status": 200 }); st.end("server h2c: " + h[":method"] + " " + h[":path"] + "\\n"); });
}).listen(${H2C_PORT});`;

/**
 * One HTTPS request on a new connection to `host` (an IPv4 or IPv6 address) with SNI and Host TLS_SERVER_NAME,
 * trusting only `ca`: "STATUS BODY" (the body trimmed), or "fail CODE" when the connection or handshake failed.
 */
export const httpsRequest = (host: string, method: string, path: string, ca: string): string => `const q = require("https").request({
  host: ${JSON.stringify(host)}, port: ${TLS_PORT}, method: ${JSON.stringify(method)}, path: ${JSON.stringify(path)},
  servername: ${JSON.stringify(TLS_SERVER_NAME)}, headers: { host: ${JSON.stringify(TLS_SERVER_NAME)} }, ca: ${JSON.stringify(ca)}, agent: false,
}, (r) => { let b = ""; r.on("data", (d) => (b += d)); r.on("end", () => console.log(r.statusCode + " " + b.trim())); });
q.setTimeout(3000, () => q.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
q.on("error", (e) => console.log("fail " + (e.code || e.message)));
q.end();`;

/**
 * Requests one after the other on one h2c connection (prior knowledge) to `host` (an IPv4 address or a bracketed
 * IPv6 one): a line per request, "PATH STATUS BODY", or "PATH fail" when the stream got no answer.
 */
export const h2cRequests = (host: string, paths: readonly string[]): string => `const http2 = require("http2");
const session = http2.connect("http://${host}:${H2C_PORT}");
session.on("error", () => {});
setTimeout(() => process.exit(0), 8000).unref();
const get = (p) => new Promise((done) => {
  const st = session.request({ ":method": "GET", ":path": p });
  let status, body = "";
  const timer = setTimeout(() => { st.close(); done(p + " fail"); }, 3000);
  st.on("response", (h) => { status = h[":status"]; });
  st.on("data", (d) => { body += d; });
  st.on("close", () => { clearTimeout(timer); done(status === undefined ? p + " fail" : p + " " + status + " " + body.trim()); });
  st.on("error", () => {});
  st.end();
});
(async () => { for (const p of ${JSON.stringify(paths)}) console.log(await get(p)); session.close(); })();`;
