// Test fixture, run inside a real node after helm uninstall: leaves what an agent SIGKILLed during the uninstall leaves (its pinned maps, from-overlay attached to the overlay device it made, its state and socket files), for `membrane node cleanup` to remove (realnode.test).
//   leftover-fixture.ts <bpf scope> <tunnel device> <state dir> <socket file>
import fs from "node:fs";
import path from "node:path";
import { pino } from "pino";
import { Datapath } from "../../node-agent/bpf/datapath.ts";
import { startOverlayDevice } from "../../node-agent/overlay-device.ts";

const [scope, device, stateDir, socketFile] = process.argv.slice(2);
if (!scope || !device || !stateDir || !socketFile) {
  console.error("usage: leftover-fixture.ts <bpf scope> <tunnel device> <state dir> <socket file>");
  process.exit(2);
}
const dp = Datapath.load(scope);
const overlay = startOverlayDevice({ datapath: dp, device, log: pino({ level: "silent" }) });
dp.close(); // as a killed agent: its fds are gone, the pinned link keeps the program attached
fs.mkdirSync(stateDir, { recursive: true });
fs.writeFileSync(path.join(stateDir, "endpoints.json"), "[]\n");
fs.writeFileSync(socketFile, ""); // a socket file nobody listens on any more
console.log(JSON.stringify({ pinDir: dp.object.pinDir, ifindex: overlay.ifindex }));
