// The local cluster's "outside" hosts: network namespaces on the underlay bridge with addresses outside every pod CIDR and node address, each answering its name on its ports, and the DNS names the cluster DNS gives them.
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { isProcessAlive } from "./cluster.ts";
import { ipIn, netnsExists, run, terminateProcess, type NodesState } from "./nodes.ts";
import { standaloneScript } from "./standalone.ts";

const log = pino({ name: "outside", level: process.env.MEMBRANE_LOG_LEVEL ?? "info" }, pino.destination({ fd: 2, sync: true }));
const podServerSource = fileURLToPath(new URL("./podserver.ts", import.meta.url));

/** TEST-NET-1: outside the pods' 10.244.0.0/16 and the nodes' underlay 172.30.0.0/24. */
export const OUTSIDE_CIDR = "192.0.2.0/24";

export interface OutsideHost {
  /** Its netns is `<prefix><name>`; it answers this name on each port. */
  readonly name: string;
  readonly ip: string;
  /** The DNS names the cluster DNS answers with `ip` (A records). */
  readonly names: readonly string[];
}

/**
 * The hosts and their names (the `.test` domain, RFC 2606). web and www share an address (one
 * address, two names); blocked.elsewhere.test is outside every `*.outside.test` pattern.
 */
export const OUTSIDE_HOSTS: readonly OutsideHost[] = [
  { name: "outside-1", ip: "192.0.2.11", names: ["api.outside.test"] },
  { name: "outside-2", ip: "192.0.2.12", names: ["web.outside.test", "www.outside.test"] },
  { name: "outside-3", ip: "192.0.2.13", names: ["blocked.elsewhere.test"] },
];

/** CNAME records: alias → target (a chain the proxy follows to the target's address). */
export const OUTSIDE_CNAMES: readonly (readonly [string, string])[] = [["alias.outside.test", "api.outside.test"]];

/** The ports every outside host serves (TCP and UDP), answering with its name. */
export const OUTSIDE_PORTS: readonly number[] = [80, 8080];

/** What createOutsideHosts made, so destroyOutsideHosts removes exactly that. */
interface OutsideState {
  version: 1;
  /** Network namespaces, recorded before each is made. */
  netns: string[];
  /** The servers' pids (each `ip netns exec` of the pod server, exec'd in place). */
  servers: { netns: string; pid: number }[];
}

const stateFile = (dir: string): string => join(dir, "outside.json");
const serverScript = (dir: string): string => join(dir, "outside-bin", "podserver.mjs");

async function load(dir: string): Promise<OutsideState | undefined> {
  try {
    return JSON.parse(await readFile(stateFile(dir), "utf8")) as OutsideState;
  } catch {
    return undefined;
  }
}

async function save(dir: string, s: OutsideState): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(`${stateFile(dir)}.tmp`, JSON.stringify(s, null, 2) + "\n");
  await rename(`${stateFile(dir)}.tmp`, stateFile(dir));
}

function isOurServer(pid: number, dir: string): boolean {
  if (!isProcessAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(serverScript(dir));
  } catch {
    return false;
  }
}

/** The outside hosts' netns names for a cluster prefix. */
export const outsideNetns = (prefix: string, host: OutsideHost): string => `${prefix}${host.name}`;

/**
 * Creates every outside host on the nodes' underlay: its netns and veth on `br0`, its address, routes
 * to the underlay (on-link) and to each node's pod CIDR via that node (no masquerading: a pod's packets
 * arrive with the pod's address), and on each node an on-link route to OUTSIDE_CIDR; then its server.
 * Idempotent (hosts already recorded are left as they are); on failure removes what it made and throws.
 */
export async function createOutsideHosts(dir: string, nodes: NodesState): Promise<OutsideHost[]> {
  if (await load(dir)) return [...OUTSIDE_HOSTS];
  const state: OutsideState = { version: 1, netns: [], servers: [] };
  try {
    for (const [i, host] of OUTSIDE_HOSTS.entries()) {
      const ns = outsideNetns(nodes.prefix, host);
      if (await netnsExists(ns)) throw new Error(`network namespace "${ns}" already exists (a previous run not cleaned up? \`ip netns del ${ns}\`)`);
      state.netns.push(ns);
      await save(dir, state);
      await run("ip", ["netns", "add", ns]);
      await ipIn(nodes.underlayNetns, "link", "add", `o${i + 1}`, "type", "veth", "peer", "name", "eth0", "netns", ns);
      await ipIn(nodes.underlayNetns, "link", "set", `o${i + 1}`, "master", "br0", "up");
      await ipIn(ns, "link", "set", "lo", "up");
      await ipIn(ns, "addr", "add", `${host.ip}/${OUTSIDE_CIDR.split("/")[1]}`, "dev", "eth0");
      await ipIn(ns, "link", "set", "eth0", "up");
      await ipIn(ns, "route", "add", nodes.underlayCIDR, "dev", "eth0");
      for (const node of nodes.nodes) await ipIn(ns, "route", "add", node.podCIDR, "via", node.internalIP, "dev", "eth0");
    }
    // Routes in the node namespaces go with them (destroyNodes); `replace`: a second cluster dir never shares a node netns.
    for (const node of nodes.nodes) await ipIn(node.netns, "route", "replace", OUTSIDE_CIDR, "dev", "eth0");
    const script = await standaloneScript(podServerSource, dirname(serverScript(dir)));
    for (const host of OUTSIDE_HOSTS) {
      const ns = outsideNetns(nodes.prefix, host);
      state.servers.push({ netns: ns, pid: await startServer(dir, ns, host.name, script) });
      await save(dir, state);
    }
    log.info({ hosts: OUTSIDE_HOSTS.map((h) => `${h.name} ${h.ip}`) }, "outside hosts created");
    return [...OUTSIDE_HOSTS];
  } catch (err) {
    await destroyOutsideHosts(dir).catch((e: unknown) => log.error({ err: (e as Error).message }, "cleanup after failure failed"));
    throw err;
  }
}

/** The pod server (the same as pods run) in `netns`, detached; resolves to its pid once every port is bound. */
async function startServer(dir: string, netns: string, name: string, script: string): Promise<number> {
  const ports = OUTSIDE_PORTS.join(",");
  const logFile = join(dir, "outside-bin", `${name}.log`);
  const errFd = openSync(logFile, "a");
  const child = spawn("ip", ["netns", "exec", netns, process.execPath, script, "--name", name, "--tcp", ports, "--udp", ports], { detached: true, stdio: ["ignore", "pipe", errFd] });
  closeSync(errFd);
  child.unref();
  if (child.pid === undefined) throw new Error(`outside host ${name}: could not start its server`);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`outside host ${name}: server not ready after 30 s; log ${logFile}`)), 30_000);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line !== "ready") return;
      clearTimeout(timer);
      resolve();
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`outside host ${name}: server exited with ${code}; log ${logFile}`));
    });
  });
  (child.stdout as NodeJS.ReadableStream & { unref?: () => void }).unref?.();
  return child.pid;
}

/** Stops the recorded servers (by pid, only if still ours), deletes the recorded netns and the files. Idempotent; works after a crash. */
export async function destroyOutsideHosts(dir: string): Promise<void> {
  const state = await load(dir);
  if (!state) return;
  for (const s of state.servers) if (isOurServer(s.pid, dir)) await terminateProcess(s.pid, 3_000);
  for (const ns of [...state.netns].reverse()) if (await netnsExists(ns)) await run("ip", ["netns", "del", ns]);
  await rm(dirname(serverScript(dir)), { recursive: true, force: true });
  await rm(stateFile(dir), { force: true });
  log.info({ netns: state.netns }, "outside hosts removed");
}
