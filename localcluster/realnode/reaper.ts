// A real node's reaper: removes the node once the process that started it is gone without stopping it (killed by Ctrl-C or SIGKILL), so a dead test leaves no kubelet, containerd, cgroup, netns or changed sysctl behind.
//   reaper.ts <owner pid> <node dir>
import { existsSync } from "node:fs";
import { isProcessAlive } from "../cluster.ts";
import { realNodePaths } from "./config.ts";
import { destroyRealNode } from "./realnode.ts";

const [ownerArg, dir] = process.argv.slice(2);
const owner = Number(ownerArg);
if (!Number.isInteger(owner) || owner <= 0 || !dir) {
  console.error("usage: reaper.ts <owner pid> <node dir>");
  process.exit(2);
}
const stateFile = realNodePaths(dir).stateFile;
// stop() kills this process first; a state file gone means the node was removed by someone else.
while (isProcessAlive(owner)) {
  if (!existsSync(stateFile)) process.exit(0);
  await new Promise((r) => setTimeout(r, 1000));
}
if (existsSync(stateFile)) await destroyRealNode(dir);
