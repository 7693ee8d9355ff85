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
