// Test fixture: N long-lived HTTP/1.1 connections, each streaming GET /v1/stream's chunked body. Prints "streaming" once every connection has had a chunk; each stdin line "report" prints {"chunks":[…],"broken":[…]} (chunks so far per connection; the errors or ends of those that stopped); ends at EOF.
//   stream-clients.ts <host> <port> <n>
import http from "node:http";
import readline from "node:readline";

const [host = "127.0.0.1", port = "80", count = "100"] = process.argv.slice(2);
const n = Number(count);
const chunks = new Array<number>(n).fill(0);
const broken: string[] = [];
const requests: http.ClientRequest[] = [];
let announced = false;

for (let i = 0; i < n; i++) {
  // agent: false: a connection of its own per stream.
  const req = http.get({ host, port: Number(port), path: "/v1/stream", agent: false }, (res) => {
    if (res.statusCode !== 200) broken.push(`#${i}: status ${res.statusCode}`);
    res.on("data", () => {
      chunks[i]!++;
      if (!announced && chunks.every((c) => c > 0)) {
        announced = true;
        console.log("streaming");
      }
    });
    res.on("end", () => broken.push(`#${i}: ended`));
    res.on("error", (err) => broken.push(`#${i}: ${err.message}`));
  });
  req.on("error", (err) => broken.push(`#${i}: ${err.message}`));
  requests.push(req);
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim() === "report") console.log(JSON.stringify({ chunks, broken }));
});
lines.on("close", () => {
  for (const r of requests) r.destroy();
});
