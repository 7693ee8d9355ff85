// `membrane dev`: the local cluster — a real control plane in a fixed state dir that outlives the CLI.
import { readdir, rmdir } from "node:fs/promises";
import { basename, dirname } from "node:path";
import {
  attachControlPlane,
  controllerProcesses,
  controlPlanePaths,
  destroyControlPlane,
  isProcessAlive,
  isReady,
  runningControlPlane,
  startControlPlane,
} from "../localcluster/cluster.ts";
import { loadDevClusterState } from "../localcluster/devcluster.ts";
import { buildDevImages, devRealNodes, devRealNodesDown, devRealNodesUp, hasDevRealNodes } from "../localcluster/realnode/dev.ts";
import { planNodes } from "../localcluster/nodes.ts";
import { ensureDatapathObject } from "../localcluster/prerequisites.ts";
import { devDir, devPrefix } from "./dev-dir.ts";
import { devClusterUp, devNodesDown, parseEncryptionFlag, parseNodesFlag, runDevExec, runDevProbe } from "./dev-pods.ts";


interface Subcommand {
  summary: string;
  run(args: string[]): Promise<number>;
}

const subcommands: Record<string, Subcommand> = {
  up: {
    summary:
      "start the local cluster (idempotent): the control plane, [--nodes N] real nodes (default 1: containerd, kubelet, kube-proxy), CoreDNS, and Membrane installed by its chart as pods\n" +
      "           --process-nodes: the process-based cluster instead (operator, webhook, agents as local processes) [--nodes N] [--host-firewall: agents enforce host policies on each node's eth0] [--encryption wireguard [--encryption-strict] [--wireguard-routing routed|vxlan: pod packets into the tunnel as they are (default) or VXLAN inside it]]; with nodes also the outside hosts and the cluster DNS (dnsmasq, kube-system/kube-dns)",
    run: up,
  },
  down: { summary: "stop it and remove its nodes, pods, processes and files; restore the host settings the nodes changed (idempotent)", run: down },
  env: { summary: "print `export KUBECONFIG=…` for the running control plane", run: env },
  status: { summary: "is it running, where, and is it ready", run: status },
  exec: {
    summary: "run a command in a pod's netns: exec NAMESPACE/POD -- CMD…",
    run: (a) => runDevExec(a, devDir()),
  },
  probe: {
    summary: "probe HOST PORT [--udp] from a pod: connected/refused/timeout",
    run: (a) => runDevProbe(a, devDir()),
  },
};

function usage(): string {
  const lines = Object.entries(subcommands).map(([name, s]) => `  ${name.padEnd(8)} ${s.summary}`);
  return `usage: membrane dev <subcommand>\n\nsubcommands:\n${lines.join("\n")}\n\nstate dir: ${devDir()} (MEMBRANE_DEV_DIR)\nnode/netns name prefix: "${devPrefix()}" (MEMBRANE_DEV_PREFIX)\n`;
}

export async function run(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  const sub = subcommands[name];
  if (!sub) {
    process.stderr.write(`membrane dev: unknown subcommand "${name}"\n\n${usage()}`);
    return 2;
  }
  return sub.run(rest);
}

function noArgs(cmd: string, args: string[]): boolean {
  if (args.length === 0) return true;
  process.stderr.write(`membrane dev ${cmd}: unexpected argument "${args[0]}"\n`);
  return false;
}

async function up(all: string[]): Promise<number> {
  const processNodes = all.includes("--process-nodes");
  const args = all.filter((a) => a !== "--process-nodes");
  if (!processNodes) return upReal(args);
  const nodesFlag = parseNodesFlag(args);
  const encFlag = nodesFlag.ok ? parseEncryptionFlag(nodesFlag.rest) : nodesFlag;
  if (!nodesFlag.ok || !encFlag.ok) {
    process.stderr.write(`membrane dev up: ${encFlag.ok ? "" : encFlag.error}\n`);
    return 2;
  }
  // With encryption the agents run WireGuard and new pods get the smaller MTU (node-agent/mtu.ts); agents already running keep their mode.
  const flags = { nodes: nodesFlag.nodes, rest: encFlag.rest, clusterOpts: { prefix: devPrefix(), clusterDns: true, ...(nodesFlag.hostFirewall ? { hostFirewall: true } : {}), ...(encFlag.encryption ? { encryption: encFlag.encryption } : {}) } };
  if (!noArgs("up", flags.rest)) return 2;
  const dir = devDir();
  // Everything that can be checked is checked before anything starts: a bad prefix or a missing
  // datapath object must not leave a half-started cluster behind.
  if (flags.nodes !== undefined) {
    const plan = planNodes({ prefix: devPrefix(), count: flags.nodes });
    if (!plan.ok) {
      process.stderr.write(`membrane dev up: MEMBRANE_DEV_PREFIX: ${plan.errors.join("; ")}\n`);
      return 2;
    }
    try {
      const dp = await ensureDatapathObject();
      if (dp.action === "built") process.stdout.write(`built ${dp.object}\n`);
    } catch (err) {
      process.stderr.write(`membrane dev up: nothing started: ${(err as Error).message}\n`);
      return 1;
    }
  }
  const running = await runningControlPlane(dir);
  if (running) {
    process.stdout.write(
      `control plane already running at ${running.server} (pid ${running.pid}, dir ${dir})\n`,
    );
    const cp = await attachControlPlane(dir);
    if (cp) process.stdout.write(await devClusterUp(dir, cp.kubeconfig, cp.kubectl, flags.nodes, flags.clusterOpts));
    return 0;
  }
  // Starting wipes the dir: remove what a crashed earlier run recorded first.
  await devNodesDown(dir);
  try {
    const cp = await startControlPlane({ dir, name: "membrane-dev", detached: true, controllers: true });
    process.stdout.write(`control plane running at ${cp.server} (pid ${cp.pid}, dir ${dir})\n`);
    process.stdout.write(await devClusterUp(dir, cp.kubeconfig, cp.kubectl, flags.nodes, flags.clusterOpts));
  } catch (err) {
    process.stderr.write(`membrane dev up: failed: ${(err as Error).message}\n`);
    process.stderr.write(`membrane dev up: removed what it started: ${await rollBack(dir)}\n`);
    return 1;
  }
  process.stdout.write(
    `use it:   eval "$(bin/membrane dev env)"; kubectl get ns\n` + `stop it:  bin/membrane dev down\n`,
  );
  return 0;
}

/**
 * `dev up` on real nodes: the control plane, `--nodes N` real nodes (default 1), CoreDNS and the chart. Everything that
 * can be checked (flags, names, the images) is before anything starts; a failure after that removes what it started.
 */
async function upReal(args: string[]): Promise<number> {
  const nodesFlag = parseNodesFlag(args);
  if (!nodesFlag.ok) {
    process.stderr.write(`membrane dev up: ${nodesFlag.error}\n`);
    return 2;
  }
  if (nodesFlag.hostFirewall) {
    process.stderr.write("membrane dev up: --host-firewall: needs --process-nodes (on real nodes the chart's values decide)\n");
    return 2;
  }
  const processOnly = nodesFlag.rest.find((a) => /^--(encryption|encryption-strict|wireguard-routing)(=|$)/.test(a));
  if (processOnly !== undefined) {
    process.stderr.write(`membrane dev up: ${processOnly.split("=")[0]}: needs --process-nodes (on real nodes the chart's values decide)\n`);
    return 2;
  }
  if (!noArgs("up", nodesFlag.rest)) return 2;
  const count = nodesFlag.nodes ?? 1;
  const plan = planNodes({ prefix: devPrefix(), count });
  if (!plan.ok) {
    process.stderr.write(`membrane dev up: MEMBRANE_DEV_PREFIX: ${plan.errors.join("; ")}\n`);
    return 2;
  }
  const dir = devDir();
  const running = await runningControlPlane(dir);
  if (running) {
    const nodes = await devRealNodes(dir);
    if (!hasDevRealNodes(dir)) {
      process.stderr.write(`membrane dev up: the cluster in ${dir} runs process-based nodes (dev up --process-nodes): stop it first with bin/membrane dev down\n`);
      return 1;
    }
    const down = nodes.filter((n) => !n.kubeletRunning).map((n) => n.name);
    if (nodes.length === 0 || down.length > 0) {
      process.stderr.write(`membrane dev up: the cluster in ${dir} runs without its real node${down.length === 1 ? "" : "s"} ${down.join(", ")}: start again with bin/membrane dev down; bin/membrane dev up\n`);
      return 1;
    }
    process.stdout.write(`control plane already running at ${running.server} (pid ${running.pid}, dir ${dir})\n`);
    process.stdout.write(nodes.map((n) => `real node ${n.name} already up (${n.nodeAddress}, pods ${n.podCIDR})\n`).join(""));
    return 0;
  }
  let images;
  try {
    images = await buildDevImages();
  } catch (err) {
    process.stderr.write(`membrane dev up: nothing started: ${(err as Error).message}\n`);
    return 1;
  }
  // Starting wipes the dir: remove what a crashed earlier run recorded first.
  await devRealNodesDown(dir);
  await devNodesDown(dir);
  try {
    const cp = await startControlPlane({ dir, name: "membrane-dev", detached: true, controllers: true });
    process.stdout.write(`control plane running at ${cp.server} (pid ${cp.pid}, dir ${dir})\n`);
    await devRealNodesUp(cp, { prefix: devPrefix(), count, images, say: (line) => process.stdout.write(`${line}\n`) });
  } catch (err) {
    process.stderr.write(`membrane dev up: failed: ${(err as Error).message}\n`);
    process.stderr.write(`membrane dev up: removed what it started: ${await rollBack(dir)}\n`);
    return 1;
  }
  process.stdout.write(
    `use it:   eval "$(bin/membrane dev env)"; kubectl get pods -A\n` + `observe:  bin/membrane observe --last 20\n` + `stop it:  bin/membrane dev down\n`,
  );
  return 0;
}

/** A `dev up` that failed part-way: stop and remove everything it started (as `dev down` does); says what, with pids. */
async function rollBack(dir: string): Promise<string> {
  const cp = await runningControlPlane(dir);
  const procs = await loadDevClusterState(dir);
  const realNodes = await devRealNodesDown(dir);
  const what = [
    ...realNodes,
    ...procs.agents.map((a) => `agent ${a.node} (pid ${a.pid})`),
    ...(procs.webhookPid !== undefined ? [`webhook (pid ${procs.webhookPid})`] : []),
    ...(procs.operatorPid !== undefined ? [`operator (pid ${procs.operatorPid})`] : []),
    ...(cp ? [`control plane (pid ${cp.pid})`] : []),
  ];
  await devNodesDown(dir, cp ? controlPlanePaths(dir).kubeconfig : undefined);
  await destroyControlPlane(dir);
  await removeIfEmptyMembraneDir(dirname(dir));
  return what.length === 0 ? `nothing was running; removed ${dir}` : `${what.join(", ")}; removed ${dir}`;
}

async function down(args: string[]): Promise<number> {
  if (!noArgs("down", args)) return 2;
  const dir = devDir();
  const running = await runningControlPlane(dir);
  // The real nodes first: their Node objects and the webhook's host route go while the API server answers.
  const realNodes = await devRealNodesDown(dir);
  await devNodesDown(dir, running ? controlPlanePaths(dir).kubeconfig : undefined);
  await destroyControlPlane(dir);
  await removeIfEmptyMembraneDir(dirname(dir));
  process.stdout.write(
    realNodes.map((n) => `${n} removed (its processes, pods, mounts, netns, cgroups and Node; host settings restored when no other real node runs)\n`).join("") +
      (running ? `control plane stopped (pid ${running.pid}); removed ${dir}\n` : `control plane not running; removed ${dir}\n`),
  );
  return 0;
}

async function env(args: string[]): Promise<number> {
  if (!noArgs("env", args)) return 2;
  const dir = devDir();
  if (!(await runningControlPlane(dir))) {
    process.stderr.write(
      `membrane dev env: no control plane running in ${dir}; start one with: bin/membrane dev up\n`,
    );
    return 1;
  }
  process.stdout.write(`export KUBECONFIG=${controlPlanePaths(dir).kubeconfig}\n`);
  return 0;
}

async function status(args: string[]): Promise<number> {
  if (!noArgs("status", args)) return 2;
  const dir = devDir();
  const running = await runningControlPlane(dir);
  if (!running) {
    process.stdout.write(`control plane: not running (dir ${dir})\n`);
    return 1;
  }
  const ready = await isReady(dir, running.server);
  if (hasDevRealNodes(dir)) return realStatus(dir, running, ready);
  const procs = await loadDevClusterState(dir);
  const alive = (pid: number | undefined): string => (pid === undefined ? "not started" : `pid ${pid}${isProcessAlive(pid) ? "" : " (exited)"}`);
  process.stdout.write(
    `control plane: running (pid ${running.pid}, since ${running.startedAt})\n` +
      `server: ${running.server}\nready: ${ready ? "yes" : "no"}\nkubeconfig: ${controlPlanePaths(dir).kubeconfig}\n` +
      controllerLines(running.pid, running.controllers ?? false) +
      `operator: ${alive(procs.operatorPid)}\n` +
      (procs.hubbleRelay && procs.operatorPid !== undefined && isProcessAlive(procs.operatorPid)
        ? `hubble relay: ${procs.hubbleRelay} (hubble observe --server ${procs.hubbleRelay})\n`
        : "hubble relay: not running\n") +
      `webhook: ${alive(procs.webhookPid)}${procs.webhookUrl ? ` at ${procs.webhookUrl}` : ""}\n` +
      procs.agents.map((a) => `agent ${a.node}: ${alive(a.pid)}\n`).join(""),
  );
  return ready ? 0 : 1;
}

/** `dev status` of a cluster on real nodes: its nodes, whether their kubelets run, and Membrane's pods as the API server sees them. */
async function realStatus(dir: string, running: NonNullable<Awaited<ReturnType<typeof runningControlPlane>>>, ready: boolean): Promise<number> {
  const nodes = await devRealNodes(dir);
  let pods = "";
  const cp = ready ? await attachControlPlane(dir) : undefined;
  if (cp) {
    const r = await cp.kubectl(["get", "pods", "-n", "membrane-system", "-o", "wide"]);
    pods = r.code === 0 ? r.stdout : `(kubectl get pods: ${r.stderr.trim()})\n`;
  }
  const down = nodes.filter((n) => !n.kubeletRunning);
  process.stdout.write(
    `control plane: running (pid ${running.pid}, since ${running.startedAt})\n` +
      `server: ${running.server}\nready: ${ready ? "yes" : "no"}\nkubeconfig: ${controlPlanePaths(dir).kubeconfig}\n` +
      controllerLines(running.pid, running.controllers ?? false) +
      nodes.map((n) => `real node ${n.name}: ${n.nodeAddress}, pods ${n.podCIDR}, kubelet ${n.kubeletRunning ? "running" : "NOT running"} (dir ${n.dir})\n`).join("") +
      (nodes.length > 0 ? `hubble: every agent at its node's address, port 4244, mutual TLS (bin/membrane observe finds them)\n` : "") +
      (pods ? `Membrane's pods (membrane-system):\n${pods}` : ""),
  );
  return ready && nodes.length > 0 && down.length === 0 ? 0 : 1;
}

/** One line per controller component the control plane should run: its pid, or that it is not running (it restarts within seconds). */
function controllerLines(controlPlanePid: number, expected: boolean): string {
  if (!expected) return "kube-scheduler, kube-controller-manager: not started (control plane without controllers)\n";
  const running = controllerProcesses(controlPlanePid);
  return (["kube-scheduler", "kube-controller-manager"] as const)
    .map((c) => {
      const p = running.find((r) => r.component === c);
      return `${c}: ${p ? `pid ${p.pid}` : "not running"}\n`;
    })
    .join("");
}

/** `dev up` may have created /var/lib/membrane: take it away again when nothing else lives there. */
async function removeIfEmptyMembraneDir(parent: string): Promise<void> {
  if (basename(parent) !== "membrane") return;
  try {
    if ((await readdir(parent)).length === 0) await rmdir(parent);
  } catch {
    // missing or not ours to remove
  }
}
