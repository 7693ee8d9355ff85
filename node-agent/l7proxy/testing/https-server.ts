// Test fixture: an "outside" HTTPS server in a netns (its own CA's certificate), speaking HTTP/2 (ALPN h2) and HTTP/1.1; prints "listening", then "request <METHOD> <path> sni=<name> http=<version>" per request.
//   https-server.ts <cert file> <key file> <address> <port>
import fs from "node:fs";
import http2 from "node:http2";
import type tls from "node:tls";

const [cert = "", key = "", address = "0.0.0.0", port = "443"] = process.argv.slice(2);
http2
  .createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key), allowHTTP1: true }, (req, res) => {
    console.log(`request ${req.method} ${req.url} sni=${(req.socket as tls.TLSSocket).servername || ""} http=${req.httpVersion}`);
    req.resume();
    req.on("end", () => {
      const body = `outside: ${req.method} ${req.url}\n`;
      res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
      res.end(body);
    });
  })
  .listen(Number(port), address, () => console.log("listening"));
