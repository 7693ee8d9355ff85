// The Hubble relay in a process of its own for the flows benchmark (so its memory is its own): one peer, reports its address and then its memory every 250 ms as JSON lines.
import { pino } from "pino";
import { HubbleRelay } from "../../controllers/relay/relay.ts";

const peer = process.argv[2];
if (!peer) throw new Error("usage: relay.ts unix:/path/to/hubble.sock");
const relay = new HubbleRelay({ address: "127.0.0.1:0", peers: () => Promise.resolve([{ node: "bench-node", address: peer }]), log: pino({ level: "warn" }, pino.destination({ fd: 2, sync: true })) });
const address = await relay.start();
process.stdout.write(JSON.stringify({ address }) + "\n");
const timer = setInterval(() => {
  const m = process.memoryUsage();
  process.stdout.write(JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed }) + "\n");
}, 250);
process.once("SIGTERM", () => {
  clearInterval(timer);
  void relay.stop().then(() => process.exit(0));
});
