// Test fixture: starts a real node for the given control plane, prints "ready" and waits to be killed (realnode.test: the reaper removes the node of a dead owner).
//   owner-fixture.ts <name> <node dir> <control-plane dir> <server> <index>
import { startRealNode } from "./realnode.ts";

const [name, dir, cpDir, server, index] = process.argv.slice(2);
if (!name || !dir || !cpDir || !server || !index) {
  console.error("usage: owner-fixture.ts <name> <node dir> <control-plane dir> <server> <index>");
  process.exit(2);
}
await startRealNode({ name, dir, controlPlane: { dir: cpDir, server }, index: Number(index) });
console.log("ready");
setInterval(() => undefined, 1 << 30);
