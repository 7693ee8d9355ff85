// Test fixture: one keep-alive HTTP connection driven from stdin. Each line "METHOD PATH" sends a request on it and prints {"status":N,"reused":bool} (or {"error":"..."}); ends at EOF.
//   keepalive-client.ts <host> <port>
import http from "node:http";
import readline from "node:readline";

const [host = "127.0.0.1", port = "80"] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function send(method: string, path: string): Promise<string> {
  return new Promise((resolve) => {
    const req = http.request({ host, port: Number(port), method, path, agent, timeout: 3000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(JSON.stringify({ status: res.statusCode, reused: req.reusedSocket })));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (err) => resolve(JSON.stringify({ error: err.message })));
    req.end();
  });
}

const lines = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
lines.on("line", (line) => {
  const [method = "GET", path = "/"] = line.trim().split(/\s+/);
  chain = chain.then(async () => console.log(await send(method, path)));
});
lines.on("close", () => void chain.then(() => agent.destroy()));
