// A real node of the local cluster: a network namespace, a private mount namespace and its own hostname, running Debian's containerd and the pinned kubelet, registered with the API server as system:node:NAME; stop() removes exactly what start made.
import { execFile, spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { appendFile, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { issueCert } from "../../kube/pki.ts";
import { cniLauncher } from "../../node-agent/cni-install.ts";
import { PLUGIN_TYPE } from "../../node-agent/cni/spec.ts";
import { KubeClient, MERGE_PATCH, isNotFound } from "../../kube/kube.ts";
import { controlPlanePaths, ensureControlPlaneBuilt, isProcessAlive, type CommandResult } from "../cluster.ts";
import {
  CGROUP_HIERARCHIES,
  CNI_NETWORK,
  CONTAINERD_SOCKET,
  cniConflist,
  containerdConfig,
  holderScript,
  kubeletConfig,
  kubeletKubeconfig,
  kubeProxyConfig,
  kubeProxyKubeconfig,
  hostsFile,
  kubernetesServiceRules,
  planRealNode,
  realNodePaths,
  SERVICE_CIDR,
  type RealNodePlan,
} from "./config.ts";
import { buildCoreDNSImage } from "./coredns.ts";
import { claimSysctls, releaseSysctls } from "./sysctls.ts";

const log = pino({ name: "realnode", level: process.env.MEMBRANE_LOG_LEVEL ?? "info" }, pino.destination({ fd: 2, sync: true }));

const imagesScript = fileURLToPath(new URL("./images.sh", import.meta.url));
const membraneImageScript = fileURLToPath(new URL("./membrane-image.sh", import.meta.url));
const kubeProxyBuildScript = fileURLToPath(new URL("../kubeproxy/build.sh", import.meta.url));
const reaperScript = fileURLToPath(new URL("./reaper.ts", import.meta.url));
const tsxLoader = fileURLToPath(new URL("../../node_modules/tsx/dist/esm/index.mjs", import.meta.url));
/** The API server's relay listens here on the host end of the node's veth. */
const RELAY_PORT = 6443;

export interface RealNodeOptions {
  /** The Node's name (a DNS label); also names its netns (`rn-NAME`) and cgroups. */
  name: string;
  /** Where the node keeps everything; created, and removed by stop(). */
  dir: string;
  /** The control plane's dir (its pki signs the kubelet's certificate) and its server URL. */
  controlPlane: { dir: string; server: string };
  /** Picks the node's addresses (see planRealNode); default from a hash of the name. */
  index?: number;
  /** The pods' IP families (planRealNode): `["IPv4"]` by default, `["IPv4", "IPv6"]` for dual-stack pods. */
  ipFamilies?: readonly string[];
  /** How long to wait for the Node to be Ready; default 120 s. */
  readyTimeoutMs?: number;
  /**
   * Images imported into its containerd before the kubelet starts (besides pause, busybox and CoreDNS): a node joining a
   * running cluster brings the images its DaemonSets' pods run (no registry pulls them), as a machine's image would.
   */
  images?: readonly NodeImage[];
  /**
   * Outlive this process (for a future `membrane dev up`); by default a reaper removes the node when this
   * process dies without stopping it (a test killed by Ctrl-C), as the control plane exits with its parent.
   */
  detached?: boolean;
}

/** An OCI archive for a node's containerd: `ref` is the reference it carries, `alsoAs` more it is tagged with (a release may run it under another tag). */
export interface NodeImage {
  archive: string;
  ref: string;
  alsoAs?: readonly string[];
}

/** What a node dir records, so stop() (or a later cleanup after a crash) removes exactly that. */
export interface RealNodeState {
  version: 1;
  plan: RealNodePlan;
  /** The admin kubeconfig the Node object is deleted with. */
  adminKubeconfig: string;
  netnsCreated: boolean;
  cgroupsCreated: string[];
  pids: { holder?: number; relay?: number; containerd?: number; kubelet?: number; kubeProxy?: number; reaper?: number };
  sysctlsClaimed: boolean;
  /** Host routes (`ADDRESS/32 via` the node's address) routeFromHost added: removed by stop(). */
  hostRoutes?: string[];
}

export interface RealNode {
  plan: RealNodePlan;
  /** The image references imported into the node's containerd (`pause`, `busybox`, `coredns`). */
  images: { pause: string; busybox: string; coredns: string };
  /** Runs a command inside the node (its network and mount namespaces), e.g. `ctr` against its containerd. */
  exec(args: string[]): Promise<CommandResult>;
  /** containerd's client on the node's socket, in the kubelet's namespace (`k8s.io`). */
  ctr(args: string[]): Promise<CommandResult>;
  /** Adds `address name` to the node's /etc/hosts (hostNetwork pods started afterwards see it). */
  addHost(address: string, name: string): Promise<void>;
  /**
   * Routes one Service ClusterIP from the host through this node (kube-proxy there forwards it, masqueraded), as
   * kind's API server reaches Services from a node: the API server on the host's loopback reaches a webhook
   * Service this way. Refused when the host routes that address already; stop() removes the route.
   */
  routeFromHost(clusterIP: string): Promise<void>;
  /** Imports an OCI archive (e.g. buildMembraneImage's) into the node's containerd under the reference it carries. */
  importImage(archive: string): Promise<void>;
  stop(): Promise<void>;
}

/** Starts the node and resolves once its Node is Ready; on any failure removes what it made and throws. */
export async function startRealNode(opts: RealNodeOptions): Promise<RealNode> {
  const planned = planRealNode({
    name: opts.name,
    dir: opts.dir,
    ...(opts.index !== undefined ? { index: opts.index } : {}),
    ...(opts.ipFamilies !== undefined ? { ipFamilies: opts.ipFamilies } : {}),
  });
  if (!planned.ok) throw new Error(`startRealNode: ${planned.errors.join("; ")}`);
  const plan = planned.plan;
  checkPrerequisites();
  const [binDir, imagesDir, kubeProxyDir, coreDNS] = await Promise.all([ensureControlPlaneBuilt(), buildImages(), runImageScript(kubeProxyBuildScript), buildCoreDNSImage()]);
  const images = parseImagesEnv(await readFile(join(imagesDir, "images.env"), "utf8"));
  const cp = controlPlanePaths(opts.controlPlane.dir);
  const paths = realNodePaths(plan.dir);
  const apiPort = Number(new URL(opts.controlPlane.server).port);

  await destroyRealNode(plan.dir); // a crashed earlier run in the same dir
  for (const d of [paths.pki, paths.containerdRoot, paths.kubeletRoot, paths.cniConfDir, paths.cniBinDir, paths.logDir, paths.volumePluginDir]) {
    await mkdir(d, { recursive: true });
  }
  const state: RealNodeState = { version: 1, plan, adminKubeconfig: cp.kubeconfig, netnsCreated: false, cgroupsCreated: [], pids: {}, sysctlsClaimed: false };
  const save = (): Promise<void> => writeFile(paths.stateFile, JSON.stringify(state, null, 2) + "\n");
  await save();
  try {
    if (!opts.detached) {
      state.pids.reaper = startReaper(process.pid, plan.dir);
      await save();
    }
    const ca = { cert: await readFile(cp.caFile, "utf8"), key: await readFile(join(cp.pki, "ca.key"), "utf8") };
    const kubelet = await issueCert(ca, { commonName: `system:node:${plan.name}`, organization: "system:nodes", usage: "client", days: 365 });
    await writeFile(join(paths.pki, "kubelet.key"), kubelet.key, { mode: 0o600 });
    await writeFile(join(paths.pki, "kubelet.crt"), kubelet.cert);
    const kubeProxy = await issueCert(ca, { commonName: "system:kube-proxy", usage: "client", days: 365 });
    await writeFile(join(paths.pki, "kube-proxy.key"), kubeProxy.key, { mode: 0o600 });
    await writeFile(join(paths.pki, "kube-proxy.crt"), kubeProxy.cert);
    await writeFile(paths.kubeProxyConfig, kubeProxyConfig(plan));
    await writeFile(paths.kubeProxyKubeconfig, kubeProxyKubeconfig(plan, RELAY_PORT, cp.caFile), { mode: 0o600 });
    await writeFile(paths.containerdConfig, containerdConfig(plan, images.pause));
    await writeFile(join(paths.cniConfDir, `05-${CNI_NETWORK}.conflist`), cniConflist(plan));
    // containerd sets up each pod's loopback with the `loopback` plugin from the same dir.
    await writeFile(join(paths.cniBinDir, PLUGIN_TYPE), cniLauncher(), { mode: 0o755 });
    await symlink("/usr/lib/cni/loopback", join(paths.cniBinDir, "loopback"));
    await writeFile(paths.hosts, hostsFile(plan));
    await writeFile(paths.kubeletConfig, kubeletConfig(plan, cp.caFile));
    await writeFile(paths.kubeletKubeconfig, kubeletKubeconfig(plan, RELAY_PORT, cp.caFile), { mode: 0o600 });

    // Every process of the node (and every pod, under kubepods) lives in these cgroups: stop() kills by them.
    createCgroups(state);
    await save();

    await createNetwork(state);
    await save();

    state.pids.relay = spawnInCgroup(
      plan,
      ["socat", `TCP-LISTEN:${RELAY_PORT},bind=${plan.hostAddress},reuseaddr,fork`, `TCP:127.0.0.1:${apiPort}`],
      paths.relayLog,
    );
    await save();

    state.pids.holder = spawnInCgroup(
      plan,
      ["nsenter", `--net=/run/netns/${plan.netns}`, "--", "unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", "-c", holderScript(plan)],
      paths.holderLog,
    );
    await save();
    await waitFor(() => existsSync(paths.holderReady), 10_000, () => `mount namespace holder not ready: ${tail(paths.holderLog)}`);
    const inNode = (args: string[]): string[] => ["nsenter", "-t", String(state.pids.holder), "-m", "-n", "-u", "--", ...args];

    state.pids.containerd = spawnInCgroup(plan, inNode(["containerd", "--config", paths.containerdConfig]), paths.containerdLog);
    await save();
    const ctr = (args: string[]): Promise<CommandResult> => run(inNode(["ctr", "--address", CONTAINERD_SOCKET, "--namespace", "k8s.io", ...args]));
    await waitForAsync(async () => (await ctr(["version"])).code === 0, 30_000, () => `containerd not serving: ${tail(paths.containerdLog)}`);
    const importImage = async (archive: string): Promise<void> => {
      const r = await ctr(["images", "import", archive]);
      if (r.code !== 0) throw new Error(`ctr images import ${archive}: ${r.stderr.trim()}`);
    };
    for (const file of ["pause.tar", "busybox.tar"]) await importImage(join(imagesDir, file));
    // The cluster DNS may land on any node.
    await importImage(coreDNS.archive);
    for (const image of opts.images ?? []) {
      await importImage(image.archive);
      for (const ref of image.alsoAs ?? []) {
        const r = await ctr(["images", "tag", "--force", image.ref, ref]);
        if (r.code !== 0) throw new Error(`ctr images tag ${image.ref} ${ref}: ${r.stderr.trim()}`);
      }
    }

    claimSysctls(plan.name, state.pids.holder);
    state.sysctlsClaimed = true;
    await save();
    state.pids.kubelet = spawnInCgroup(
      plan,
      inNode([
        join(binDir, "membrane-controlplane"),
        "kubelet",
        `--config=${paths.kubeletConfig}`,
        `--kubeconfig=${paths.kubeletKubeconfig}`,
        `--root-dir=${paths.kubeletRoot}`,
        `--hostname-override=${plan.name}`,
        // Dual-stack: both addresses (IPv4 first, the Node's primary), so status.hostIPs gives the agent both.
        `--node-ip=${plan.nodeAddress}${plan.nodeAddress6 ? `,${plan.nodeAddress6}` : ""}`,
        `--cert-dir=${join(paths.pki, "kubelet-serving")}`,
      ]),
      paths.kubeletLog,
    );
    await save();
    await waitNodeReady(cp.kubeconfig, plan, opts.readyTimeoutMs ?? 120_000, state.pids.kubelet, paths.kubeletLog);
    // Service routing: kube-proxy in nftables mode, once the Node (whose InternalIP it takes) is registered.
    state.pids.kubeProxy = spawnInCgroup(plan, inNode([join(kubeProxyDir, "kube-proxy"), `--config=${paths.kubeProxyConfig}`]), paths.kubeProxyLog);
    await save();
    await waitKubeProxySynced(inNode, state.pids.kubeProxy, paths.kubeProxyLog);
    log.info({ node: plan.name, nodeAddress: plan.nodeAddress, dir: plan.dir, pids: state.pids }, "real node ready");
    return {
      plan,
      images: { ...images, coredns: coreDNS.ref },
      exec: (args) => run(inNode(args)),
      ctr,
      importImage,
      routeFromHost: async (clusterIP) => {
        if (!/^10\.96\.\d{1,3}\.\d{1,3}$/.test(clusterIP)) throw new Error(`routeFromHost: a ClusterIP in ${SERVICE_CIDR} is required, got "${clusterIP}"`);
        const dest = `${clusterIP}/32`;
        const add = await run(["ip", "route", "add", dest, "via", plan.nodeAddress]);
        if (add.code !== 0) throw new Error(`routeFromHost: ip route add ${dest} via ${plan.nodeAddress}: ${add.stderr.trim()} (another cluster on this machine routes it?)`);
        state.hostRoutes = [...(state.hostRoutes ?? []), dest];
        await save();
      },
      // Appended in place: the bind mount over /etc/hosts holds this inode.
      addHost: (address, name) => appendFile(paths.hosts, `${address} ${name}\n`),
      stop: () => destroyRealNode(plan.dir),
    };
  } catch (err) {
    log.error({ node: plan.name, err: (err as Error).message }, "real node failed to start, removing what was made");
    // What the failed step had made already (a netns before its veth failed) is in state, not yet in the file.
    await save().catch(() => undefined);
    await destroyRealNode(plan.dir).catch((e: unknown) => log.error({ err: (e as Error).message }, "cleanup after failure failed"));
    throw err;
  }
}

/**
 * Removes everything the node dir's record says was made: kubelet stopped first (so it does not restart
 * what is killed), then every process in the node's cgroups (containerd, shims, pods, the relay, the
 * mount-namespace holder: its mounts go with it), the cgroups, the network namespace and veth, the Node
 * object, the host sysctls (restored once no real node is left), and the dir. Safe when nothing runs.
 */
export async function destroyRealNode(dir: string): Promise<void> {
  const paths = realNodePaths(dir);
  let state: RealNodeState;
  try {
    state = JSON.parse(await readFile(paths.stateFile, "utf8")) as RealNodeState;
  } catch {
    if (existsSync(dir) && readdirSync(dir).length > 0 && !existsSync(paths.containerdConfig)) {
      throw new Error(`${dir} is not empty and is not a real node's dir: refusing to delete it`);
    }
    await rm(dir, { recursive: true, force: true });
    return;
  }
  const plan = state.plan;
  // The reaper would run this same removal beside us; when it is the one running it, it is process.pid.
  if (state.pids.reaper && state.pids.reaper !== process.pid && isNodeProcess(state.pids.reaper, dir)) process.kill(state.pids.reaper, "SIGKILL");
  if (state.pids.kubelet && isNodeProcess(state.pids.kubelet, dir)) {
    process.kill(state.pids.kubelet, "SIGTERM");
    await waitFor(() => !isProcessAlive(state.pids.kubelet!), 10_000, () => "").catch(() => undefined);
  }
  for (const dest of state.hostRoutes ?? []) {
    // Only the route this node added (via its address): another node's route to the same address is not ours.
    const r = await run(["ip", "route", "del", dest, "via", plan.nodeAddress]);
    if (r.code !== 0 && !/No such process/.test(r.stderr)) log.warn({ node: plan.name, route: dest, err: r.stderr.trim() }, "host route not removed");
  }
  await killCgroupProcesses(plan);
  for (const cg of [...state.cgroupsCreated].reverse()) removeCgroupTree(cg);
  if (state.netnsCreated) {
    await run(["ip", "netns", "del", plan.netns]);
  }
  // The veth's host end goes with its peer; a node that failed between the two steps may leave it.
  if ((await run(["ip", "link", "show", plan.hostInterface])).code === 0) await run(["ip", "link", "del", plan.hostInterface]);
  if (state.sysctlsClaimed) {
    const restored = releaseSysctls(plan.name);
    if (Object.keys(restored).length > 0) log.info({ node: plan.name, restored }, "host sysctls restored");
  }
  await deleteNodeObject(state.adminKubeconfig, plan.name);
  await rm(dir, { recursive: true, force: true });
  log.info({ node: plan.name, dir }, "real node removed");
}

/** True when pid runs and names the node dir on its command line: the process we started, not a recycled pid. */
function isNodeProcess(pid: number, dir: string): boolean {
  try {
    return isProcessAlive(pid) && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir);
  } catch {
    return false;
  }
}

/** The reaper (reaper.ts): a detached process outside the node's cgroups that removes the node once owner is gone. */
function startReaper(owner: number, dir: string): number {
  const fd = openSync(join(dir, "reaper.log"), "a");
  const child = spawn(process.execPath, ["--import", tsxLoader, reaperScript, String(owner), dir], { detached: true, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  child.unref();
  if (child.pid === undefined) throw new Error("could not start the real node's reaper");
  return child.pid;
}

function checkPrerequisites(): void {
  const missing = ["/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/ctr", "/usr/bin/socat", "/usr/lib/cni/loopback", "/bin/busybox"].filter((f) => !existsSync(f));
  if (missing.length > 0) throw new Error(`real node: missing ${missing.join(", ")}: run scripts/install-deps.sh (containerd runc containernetworking-plugins for loopback, socat, busybox-static)`);
}

/**
 * The Membrane image, built here from the Containerfile's inputs (membrane-image.sh: Debian packages by
 * mmdebstrap, the pinned Node, the bundle, the eBPF objects, Hubble's .proto files), cached by content hash;
 * its reference is the chart's default image.
 */
export async function buildMembraneImage(): Promise<{ ref: string; archive: string }> {
  const dir = await runImageScript(membraneImageScript);
  const ref = /^MEMBRANE_IMAGE=(.+)$/m.exec(await readFile(join(dir, "membrane-image.env"), "utf8"))?.[1];
  if (!ref) throw new Error(`${dir}/membrane-image.env: MEMBRANE_IMAGE is required`);
  return { ref, archive: join(dir, "membrane.tar") };
}

function buildImages(): Promise<string> {
  return runImageScript(imagesScript);
}

/** Runs an image script (progress on stderr); resolves with the last line of its stdout, the directory it built into. */
function runImageScript(script: string): Promise<string> {
  return new Promise((done, reject) => {
    const child = spawn("bash", [script], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.on("error", reject);
    // "close", not "exit": under load the process can exit before its last stdout chunk (the dir) is read.
    child.on("close", (code) => {
      const dir = out.trim().split("\n").pop() ?? "";
      if (code === 0 && dir !== "") done(dir);
      else reject(new Error(`${script} failed with exit code ${code}`));
    });
  });
}

function parseImagesEnv(text: string): { pause: string; busybox: string } {
  const vars = Object.fromEntries(text.split("\n").filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
  if (!vars["PAUSE_IMAGE"] || !vars["BUSYBOX_IMAGE"]) throw new Error(`images.env: PAUSE_IMAGE and BUSYBOX_IMAGE are required, got ${JSON.stringify(vars)}`);
  return { pause: vars["PAUSE_IMAGE"], busybox: vars["BUSYBOX_IMAGE"] };
}

function cgroupDir(hierarchy: string, path: string): string {
  return join("/sys/fs/cgroup", hierarchy, path);
}

/** `/<cgroupName>` and `/<cgroupName>/node` in every hierarchy (cpuset needs its cpus and mems filled before a task can join). */
function createCgroups(state: RealNodeState): void {
  const root = `/${state.plan.cgroupName}`;
  for (const h of CGROUP_HIERARCHIES) {
    const base = cgroupDir(h, "");
    if (!existsSync(base)) continue;
    for (const path of [root, `${root}/node`]) {
      const dir = cgroupDir(h, path);
      if (existsSync(dir)) throw new Error(`cgroup ${dir} exists already: another node named ${state.plan.name} runs, or one crashed (remove it with rmdir)`);
      mkdirSync(dir); // not recursive: the parent is the hierarchy's root, never made by us
      if (h === "cpuset") {
        for (const f of ["cpuset.cpus", "cpuset.mems"]) writeFileSync(join(dir, f), readFileSync(join(base, f), "utf8").trim() || "0");
      }
    }
    if (!state.cgroupsCreated.includes(cgroupDir(h, root))) state.cgroupsCreated.push(cgroupDir(h, root));
  }
}

/** The pids in a cgroup tree (one hierarchy), deepest first. */
function cgroupTreePids(dir: string): number[] {
  if (!existsSync(dir)) return [];
  const pids: number[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) pids.push(...cgroupTreePids(join(dir, entry.name)));
  }
  for (const line of readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n")) if (line.trim()) pids.push(Number(line));
  return pids;
}

async function killCgroupProcesses(plan: RealNodePlan): Promise<void> {
  const tree = cgroupDir("pids", `/${plan.cgroupName}`);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const pids = cgroupTreePids(tree);
    if (pids.length === 0) return;
    if (Date.now() > deadline) throw new Error(`real node ${plan.name}: processes ${pids.join(",")} in ${tree} survive SIGKILL`);
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
    await sleep(100);
  }
}

/** rmdir of a cgroup tree, deepest first (a cgroup dir can only be removed empty of tasks and children). */
function removeCgroupTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroupTree(join(dir, entry.name));
  }
  rmdirSync(dir);
}

/** The node's network namespace, joined to the host by a veth whose host end carries the relay's address. */
async function createNetwork(state: RealNodeState): Promise<void> {
  const plan = state.plan;
  const inUse = (await run(["ip", "-4", "-o", "addr", "show"])).stdout;
  for (const addr of [plan.hostAddress, plan.nodeAddress]) {
    if (inUse.includes(` ${addr}/`)) throw new Error(`real node ${plan.name}: address ${addr} is in use on the host (choose another index)`);
  }
  await runChecked(["ip", "netns", "add", plan.netns]);
  state.netnsCreated = true;
  await runChecked(["ip", "link", "add", plan.hostInterface, "type", "veth", "peer", "name", "eth0", "netns", plan.netns]);
  await runChecked(["ip", "addr", "add", `${plan.hostAddress}/30`, "dev", plan.hostInterface]);
  await runChecked(["ip", "link", "set", plan.hostInterface, "up"]);
  const ns = (args: string[]): Promise<void> => runChecked(["ip", "-n", plan.netns, ...args]);
  await ns(["link", "set", "lo", "up"]);
  await ns(["addr", "add", `${plan.nodeAddress}/30`, "dev", "eth0"]);
  // A dual-stack node's IPv6 address: only its peers route to it (over the underlay), the host does not.
  if (plan.nodeAddress6) await ns(["-6", "addr", "add", `${plan.nodeAddress6}/128`, "dev", "eth0", "nodad"]);
  await ns(["link", "set", "eth0", "up"]);
  await ns(["route", "add", "default", "via", plan.hostAddress]);
  const rules = join(plan.dir, "kubernetes-service.nft");
  await writeFile(rules, kubernetesServiceRules(plan, RELAY_PORT));
  await runChecked(["ip", "netns", "exec", plan.netns, "nft", "-f", rules]);
}

/** Starts a detached process in the node's `node` cgroups (it joins them itself before exec), output to logFile. */
function spawnInCgroup(plan: RealNodePlan, args: string[], logFile: string): number {
  const procs = CGROUP_HIERARCHIES.map((h) => join(cgroupDir(h, `/${plan.cgroupName}/node`), "cgroup.procs")).filter((f) => existsSync(f));
  const fd = openSync(logFile, "a");
  const child = spawn("sh", ["-c", 'for f in $CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@"', "sh", ...args], {
    detached: true,
    stdio: ["ignore", fd, fd],
    env: { ...process.env, CGROUP_PROCS: procs.join(" ") },
  });
  closeSync(fd);
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${args[0]}`);
  return child.pid;
}

async function waitNodeReady(kubeconfig: string, plan: RealNodePlan, timeoutMs: number, kubeletPid: number, kubeletLog: string): Promise<void> {
  const name = plan.name;
  const kube = await KubeClient.fromKubeconfig(kubeconfig);
  try {
    let last = "not registered";
    await waitForAsync(
      async () => {
        if (!isProcessAlive(kubeletPid)) throw new Error(`kubelet exited: ${tail(kubeletLog)}`);
        try {
          const node = await kube.request<{ spec?: { podCIDRs?: string[] }; status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] } }>("GET", `/api/v1/nodes/${name}`);
          await assignPodCIDR(kube, plan, node.spec?.podCIDRs ?? []);
          const ready = node.status?.conditions?.find((c) => c.type === "Ready");
          last = ready ? `Ready=${ready.status} ${ready.reason ?? ""}: ${ready.message ?? ""}` : "no Ready condition";
          if (ready?.status !== "True") return false;
          await clearNotReadyTaint(kube, name);
          return true;
        } catch (err) {
          if (isNotFound(err)) return false;
          throw err;
        }
      },
      timeoutMs,
      () => `Node ${name} not Ready after ${timeoutMs} ms (${last}); kubelet log: ${tail(kubeletLog)}`,
    );
  } finally {
    kube.close();
  }
}

/** kube-proxy's /healthz answers 200 once it has written its rules for the Services and endpoints it knows. */
async function waitKubeProxySynced(inNode: (args: string[]) => string[], pid: number, logFile: string): Promise<void> {
  await waitForAsync(
    async () => {
      if (!isProcessAlive(pid)) throw new Error(`kube-proxy exited: ${tail(logFile)}`);
      return (await run(inNode(["busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:10256/healthz"]))).code === 0;
    },
    60_000,
    () => `kube-proxy not healthy after 60 s: ${tail(logFile)}`,
  );
}

/**
 * The Node's spec.podCIDR(s), once, as kube-controller-manager's node IPAM (--allocate-node-cidrs) sets them on a
 * cluster that has it (the local control plane runs without: its process-based nodes bring their own). It is
 * the one source of the node's pod CIDRs (a dual-stack node's IPv6 one second): the CNI plugin's ranges before the
 * agent, the CiliumNode's with the operator's --ipam kubernetes, the IPv4 one inside kube-proxy's cluster CIDR.
 * A Node that has others is refused.
 */
async function assignPodCIDR(kube: KubeClient, plan: RealNodePlan, current: readonly string[]): Promise<void> {
  const want = [plan.podCIDR, ...(plan.podCIDRv6 ? [plan.podCIDRv6] : [])];
  if (current.length === want.length && current.every((c, i) => c === want[i])) return;
  if (current.length > 0) throw new Error(`Node ${plan.name} has spec.podCIDRs ${current.join(",")}, not this node's ${want.join(",")}: another node of that name was registered`);
  await kube.request("PATCH", `/api/v1/nodes/${plan.name}`, { spec: { podCIDR: plan.podCIDR, podCIDRs: want } }, MERGE_PATCH);
  log.info({ node: plan.name, podCIDRs: want }, "Node pod CIDRs set");
}

/**
 * The kubelet registers its Node with the `node.kubernetes.io/not-ready:NoSchedule` taint, which the
 * node-lifecycle controller lifts once the Node is Ready. The local control plane runs without that
 * controller (its process-based nodes post no heartbeats: localcluster/controlplane/controllers.go), so
 * for a real node this does its one step, once, when the kubelet reports Ready.
 */
async function clearNotReadyTaint(kube: KubeClient, name: string): Promise<void> {
  const node = await kube.request<{ spec?: { taints?: { key: string; effect: string }[] } }>("GET", `/api/v1/nodes/${name}`);
  const taints = node.spec?.taints ?? [];
  const kept = taints.filter((t) => t.key !== "node.kubernetes.io/not-ready");
  if (kept.length === taints.length) return;
  await kube.request("PATCH", `/api/v1/nodes/${name}`, { spec: { taints: kept } }, MERGE_PATCH);
}

async function deleteNodeObject(kubeconfig: string, name: string): Promise<void> {
  if (!existsSync(kubeconfig)) return; // the control plane is gone already, and its Nodes with it
  let kube: KubeClient;
  try {
    kube = await KubeClient.fromKubeconfig(kubeconfig);
  } catch {
    return;
  }
  try {
    await kube.request("DELETE", `/api/v1/nodes/${name}`, undefined, "application/json", 5_000);
  } catch (err) {
    if (!isNotFound(err)) log.warn({ node: name, err: (err as Error).message }, "Node object not deleted (API server unreachable?)");
  } finally {
    kube.close();
  }
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

function run(args: string[]): Promise<CommandResult> {
  return new Promise((done) => {
    execFile(args[0]!, args.slice(1), { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      done({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr: err && typeof err.code !== "number" ? `${stderr}${err.message}` : stderr });
    });
  });
}

async function runChecked(args: string[]): Promise<void> {
  const r = await run(args);
  if (r.code !== 0) throw new Error(`${args.join(" ")}: ${r.stderr.trim()}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(cond: () => boolean, timeoutMs: number, message: () => string): Promise<void> {
  return waitForAsync(async () => cond(), timeoutMs, message);
}

async function waitForAsync(cond: () => Promise<boolean>, timeoutMs: number, message: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(message());
    await sleep(200);
  }
}
