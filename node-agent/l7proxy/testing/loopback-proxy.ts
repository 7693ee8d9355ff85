// The L7 proxy (HttpProxy) alone in a process of its own on loopback, every client "going to" one upstream port: for tests that measure the proxy's own memory.
// usage: node --import tsx loopback-proxy.ts PROXY_PORT UPSTREAM_PORT — prints "ready" once it listens; SIGTERM ends it.
import net from "node:net";
import { HttpProxy } from "../http-proxy.ts";
import { DEFAULT_LIMITS } from "../config.ts";

const [proxyPort, upstreamPort] = process.argv.slice(2).map(Number);
if (!proxyPort || !upstreamPort) throw new Error("usage: loopback-proxy.ts PROXY_PORT UPSTREAM_PORT");
const proxy = new HttpProxy({
  redirects: { originalDestination: () => ({ ip: "127.0.0.1", port: upstreamPort, proxyPort, subject: 1000, ruleId: 3 }) },
  connectUpstream: (ip, port) => net.connect(port, ip),
});
await proxy.apply({ address: "127.0.0.1", limits: DEFAULT_LIMITS, ports: [{ port: proxyPort, http: [{ ruleId: 3, index: 0, rule: { method: "GET", path: "/.*" } }] }] });
process.stdout.write("ready\n");
process.on("SIGTERM", () => void proxy.stop().then(() => process.exit(0)));
