// The star-wars workload the real-node L7 test runs in pods of the Membrane image (Node inside): the deathstar, a streaming client and one-shot requests (their status, or status and body).

export const L7_PORT = 8080;

/** The deathstar: answers every request (logging it), and streams a line every 100 ms on GET /v1/stream. */
export const DEATHSTAR = `require("http").createServer((q, s) => {
  console.log("request " + q.method + " " + q.url);
  if (q.method === "GET" && q.url === "/v1/stream") { s.writeHead(200); const t = setInterval(() => s.write("tick\\n"), 100); s.on("close", () => clearInterval(t)); return; }
  q.resume(); q.on("end", () => { s.writeHead(200); s.end("ok\\n"); });
}).listen(${L7_PORT});`;

/** One keep-alive stream: a line per chunk ("chunk <ms>"), then how it ended. */
export const stream = (ip: string): string => `require("http").get({ host: "${ip}", port: ${L7_PORT}, path: "/v1/stream", agent: false }, (r) => {
  console.log("status " + r.statusCode);
  r.on("data", () => console.log("chunk " + Date.now()));
  r.on("end", () => console.log("ended"));
  r.on("error", (e) => console.log("error " + e.message));
}).on("error", (e) => console.log("error " + e.message));`;

/** A new connection's answer: the status code, or "fail" when the connection failed. */
export const request = (ip: string, method: string, path: string): string =>
  `fetch("http://${ip}:${L7_PORT}${path}", { method: "${method}", signal: AbortSignal.timeout(3000) }).then((r) => console.log(r.status), () => console.log("fail"));`;

/** A new connection's answer with its body: "STATUS BODY" (the body trimmed), or "fail" when the connection failed. */
export const answer = (ip: string, method: string, path: string): string =>
  `fetch("http://${ip}:${L7_PORT}${path}", { method: "${method}", signal: AbortSignal.timeout(3000) }).then(async (r) => console.log(r.status + " " + (await r.text()).trim()), () => console.log("fail"));`;

/** The port of the deathstar's gRPC door manager (Cilium's gRPC example: Cloud City's doors). */
export const DOOR_PORT = 50051;
/** The gRPC service the door manager serves: a call's HTTP/2 path is `/${DOOR_SERVICE}/<Method>`. */
export const DOOR_SERVICE = "cilium.examples.doors.DoorManager";

/**
 * The door manager: gRPC over h2c on Node's own http2 (the image has no gRPC library). Every call is logged and
 * answered with one message (protobuf field 1, a string naming the method) and grpc-status 0 in the trailers.
 */
export const DOOR_MANAGER = `require("http2").createServer().on("stream", (st, h) => {
  console.log("call " + h[":path"]);
  st.resume();
  st.on("end", () => {
    const text = Buffer.from("door answers " + h[":path"].split("/").pop());
    const msg = Buffer.concat([Buffer.from([0x0a, text.length]), text]);
    const frame = Buffer.alloc(5); frame.writeUInt32BE(msg.length, 1);
    st.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    st.on("wantTrailers", () => st.sendTrailers({ "grpc-status": "0" }));
    st.end(Buffer.concat([frame, msg]));
  });
}).listen(${DOOR_PORT});`;

/**
 * gRPC calls of the door manager's methods, one after the other on one h2c connection (prior knowledge), each an
 * empty request message: a line per call, "METHOD GRPC_STATUS ANSWER" (the answer message's string, or "-"), or
 * "METHOD fail" when the call got no status. `host` is an IPv4 address or a bracketed IPv6 one.
 */
export const grpcCalls = (host: string, methods: readonly string[]): string => `const http2 = require("http2");
const session = http2.connect("http://${host}:${DOOR_PORT}");
session.on("error", () => {});
setTimeout(() => process.exit(0), 6000).unref();
const call = (m) => new Promise((done) => {
  const st = session.request({ ":method": "POST", ":path": "/${DOOR_SERVICE}/" + m, "content-type": "application/grpc", te: "trailers" });
  let status, body = Buffer.alloc(0);
  const timer = setTimeout(() => { st.close(); done(m + " fail"); }, 3000);
  st.on("response", (h) => { if (h["grpc-status"] !== undefined) status = h["grpc-status"]; });
  st.on("trailers", (t) => { status = t["grpc-status"]; });
  st.on("data", (d) => { body = Buffer.concat([body, d]); });
  st.on("close", () => { clearTimeout(timer); done(status === undefined ? m + " fail" : m + " " + status + " " + (body.length > 7 ? body.subarray(7, 7 + body[6]).toString() : "-")); });
  st.on("error", () => {});
  st.end(Buffer.alloc(5));
});
(async () => { for (const m of ${JSON.stringify(methods)}) console.log(await call(m)); session.close(); })();`;
