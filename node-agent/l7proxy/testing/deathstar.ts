// Test fixture: the star-wars demo's deathstar, an HTTP server in a pod netns; prints "listening", then "request <METHOD> <path> <source>" per request. GET /v1/stream answers with a chunked body, a line every 100 ms, until the client goes.
//   deathstar.ts <address> <port>
import http from "node:http";

const [address = "0.0.0.0", port = "80"] = process.argv.slice(2);
http
  .createServer((req, res) => {
    console.log(`request ${req.method} ${req.url} ${req.socket.remoteAddress}`);
    req.resume();
    if (req.method === "GET" && req.url === "/v1/stream") {
      res.writeHead(200, { "content-type": "text/plain" });
      let n = 0;
      const tick = setInterval(() => res.write(`tick ${n++}\n`), 100);
      res.on("close", () => clearInterval(tick));
      return;
    }
    req.on("end", () => {
      const body =
        req.method === "POST" && req.url === "/v1/request-landing" ? "Ship landed\n"
        : req.method === "PUT" && req.url === "/v1/exhaust-port" ? "Panic: deathstar exploded\n"
        : `deathstar: ${req.method} ${req.url}\n`;
      res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
      res.end(body);
    });
  })
  .listen(Number(port), address, () => console.log("listening"));
