// The local control plane (real kube-apiserver + etcd, and on request kube-scheduler + kube-controller-manager) for tests and `membrane dev`: certificates, the child process, kubectl and helm.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, openSync, closeSync, readFileSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { generateKeyPairSync } from "node:crypto";
import { request } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { stringify } from "yaml";
import { issueCA, issueCert, type Issued } from "../kube/pki.ts";

const log = pino(
  { name: "controlplane", level: process.env.MEMBRANE_LOG_LEVEL ?? "info" },
  pino.destination({ fd: 2, sync: true }),
);

const buildScript = fileURLToPath(new URL("./controlplane/build.sh", import.meta.url));
const binaryName = "membrane-controlplane";

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ControlPlane {
  /** The directory holding everything of this control plane; removed by stop(). */
  dir: string;
  /** The admin kubeconfig (client certificate in group system:masters). */
  kubeconfig: string;
  /** https://127.0.0.1:PORT */
  server: string;
  caFile: string;
  pid: number;
  kubectl(args: string[], input?: string): Promise<CommandResult>;
  helm(args: string[], input?: string): Promise<CommandResult>;
  /** Stops the API server (kept data and certificates) and starts it again on the same port. */
  restart(): Promise<void>;
  /** Kills exactly the process this control plane started (SIGTERM, then SIGKILL) and removes its dir. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Where to keep certificates, etcd data, pid file and log; default: a fresh temp dir. */
  dir?: string;
  /** The kubeconfig cluster/context name and temp-dir prefix; default "membrane". */
  name?: string;
  /** Outlive this process (for `membrane dev up`); by default the child exits when its parent dies. */
  detached?: boolean;
  /**
   * Also run kube-scheduler and kube-controller-manager (children of the control-plane process, with
   * their own client certificates; stopped with it). Off by default: a test that watches only its own
   * API objects does not want Deployments, EndpointSlices or garbage collection acting beside it.
   */
  controllers?: boolean;
  /** More kube-apiserver flags (e.g. an audit log a test reads: which requests a component made). */
  apiserverArgs?: readonly string[];
  readyTimeoutMs?: number;
}

/** What a control-plane dir records about its running process, so another process can find and stop it. */
export interface ControlPlaneState {
  pid: number;
  server: string;
  securePort: number;
  name: string;
  startedAt: string;
  /** kube-scheduler and kube-controller-manager run as children of pid. */
  controllers?: boolean;
}

/** The files inside a control-plane dir. */
export function controlPlanePaths(dir: string) {
  const pki = join(dir, "pki");
  return {
    dir,
    pki,
    etcd: join(dir, "etcd"),
    kubeconfig: join(dir, "kubeconfig"),
    pidFile: join(dir, "controlplane.pid"),
    stateFile: join(dir, "controlplane.json"),
    logFile: join(dir, "controlplane.log"),
    schedulerLog: join(dir, "kube-scheduler.log"),
    controllerManagerLog: join(dir, "kube-controller-manager.log"),
    kubeCache: join(dir, "kube-cache"),
    helmHome: join(dir, "helm"),
    caFile: join(pki, "ca.crt"),
    adminCert: join(pki, "admin.crt"),
    adminKey: join(pki, "admin.key"),
  };
}

let built: Promise<string> | undefined;

/** Runs localcluster/controlplane/build.sh (a no-op when cached) once per process; resolves to the binaries' dir. */
export function ensureControlPlaneBuilt(): Promise<string> {
  built ??= new Promise<string>((resolvePromise, reject) => {
    const child = spawn(buildScript, [], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.on("error", reject);
    // "close", not "exit": the exit can come before the last of stdout was read (an empty dir with exit code 0).
    child.on("close", (code) => {
      const dir = out.trim().split("\n").pop() ?? "";
      if (code === 0 && dir !== "") resolvePromise(dir);
      else reject(new Error(`${buildScript} failed with exit code ${code}`));
    });
  });
  return built;
}

/** Starts a control plane on free loopback ports and waits until /readyz answers ok. */
export async function startControlPlane(opts: StartOptions = {}): Promise<ControlPlane> {
  const name = opts.name ?? "membrane";
  const binDir = await ensureControlPlaneBuilt();
  const dir = opts.dir ? resolve(opts.dir) : await mkdtemp(join(tmpdir(), `${name}-cp-`));
  const paths = controlPlanePaths(dir);

  await stopRecorded(dir); // a crashed previous run in the same dir
  await removeControlPlaneDir(dir);
  await mkdir(paths.etcd, { recursive: true, mode: 0o700 });
  await mkdir(paths.pki, { recursive: true, mode: 0o700 });
  await generatePki(paths.pki, opts.controllers ?? false);

  let child: ChildProcess | undefined;
  let securePort: number;
  for (let attempt = 1; ; attempt++) {
    securePort = await freeLoopbackPort();
    try {
      child = await launch(binDir, paths, securePort, opts);
      break;
    } catch (err) {
      // Another process may have taken the port between our probe and the bind: try fresh ports.
      const portRace = err instanceof Error && /address already in use/.test(err.message);
      if (!portRace || attempt >= 3) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
      log.warn({ securePort, attempt }, "port taken, retrying");
    }
  }
  const server = `https://127.0.0.1:${securePort}`;
  await writeFile(paths.kubeconfig, adminKubeconfig(name, server, paths), { mode: 0o600 });
  const state: ControlPlaneState = {
    pid: child.pid!,
    server,
    securePort,
    name,
    startedAt: new Date().toISOString(),
    ...(opts.controllers ? { controllers: true } : {}),
  };
  await writeFile(paths.stateFile, JSON.stringify(state, null, 2) + "\n");
  log.info({ dir, server, controlPlanePid: state.pid }, "control plane ready");
  return controlPlaneHandle(binDir, dir, state, child, opts);
}

/** The handle for a control plane whose state file exists (started by this or another process). */
export async function attachControlPlane(dir: string): Promise<ControlPlane | undefined> {
  const state = await readState(dir);
  if (!state || !isOurProcess(state.pid, dir)) return undefined;
  return controlPlaneHandle(await ensureControlPlaneBuilt(), resolve(dir), state, undefined, {
    detached: true,
    controllers: state.controllers ?? false,
  });
}

/** The recorded state of the control plane in dir, if its process is still alive. */
export async function runningControlPlane(dir: string): Promise<ControlPlaneState | undefined> {
  const state = await readState(dir);
  return state && isOurProcess(state.pid, dir) ? state : undefined;
}

/** GET /readyz with the admin credentials of dir: true when the API server says ok. */
export async function isReady(dir: string, server: string): Promise<boolean> {
  const p = controlPlanePaths(dir);
  try {
    const [ca, cert, key] = await Promise.all([
      readFile(p.caFile),
      readFile(p.adminCert),
      readFile(p.adminKey),
    ]);
    return await new Promise<boolean>((done) => {
      const req = request(`${server}/readyz`, { ca, cert, key, timeout: 5_000 }, (res) => {
        res.resume();
        done(res.statusCode === 200);
      });
      req.on("error", () => done(false));
      req.on("timeout", () => req.destroy());
      req.end();
    });
  } catch {
    return false;
  }
}

/**
 * Stops the process recorded in dir's pid file if it is still our control plane (the pid may have
 * been reused by something else after a crash: then it is left alone). Keeps the dir.
 */
export async function stopRecorded(dir: string): Promise<void> {
  const pidFile = controlPlanePaths(dir).pidFile;
  let pid: number;
  try {
    pid = Number.parseInt(await readFile(pidFile, "utf8"), 10);
  } catch {
    return;
  }
  if (Number.isInteger(pid) && pid > 0 && isOurProcess(pid, dir)) {
    log.info({ dir, controlPlanePid: pid }, "stopping control plane");
    await killAndWait(pid);
  }
  await rm(pidFile, { force: true });
}

/** Stops the control plane in dir (if any) and removes the dir. Safe to call when nothing runs. */
export async function destroyControlPlane(dir: string): Promise<void> {
  await stopRecorded(dir);
  await removeControlPlaneDir(dir);
}

/** Removes dir, but only if it is missing, empty, or looks like a control-plane dir: never a user's folder by mistake. */
async function removeControlPlaneDir(dir: string): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return;
  }
  const ours = ["pki", "etcd", "controlplane.pid", "controlplane.json", "kubeconfig", "controlplane.log", "kube-scheduler.log", "kube-controller-manager.log", "flexvolume"];
  if (entries.length > 0 && !entries.some((e) => ours.includes(e))) {
    throw new Error(`${dir} is not empty and is not a control-plane dir: refusing to delete it`);
  }
  await rm(dir, { recursive: true, force: true });
}

function controlPlaneHandle(
  binDir: string,
  dir: string,
  initial: ControlPlaneState,
  initialChild: ChildProcess | undefined,
  opts: StartOptions,
): ControlPlane {
  const paths = controlPlanePaths(dir);
  let child = initialChild;
  const env = {
    ...process.env,
    KUBECONFIG: paths.kubeconfig,
    HELM_CACHE_HOME: join(paths.helmHome, "cache"),
    HELM_CONFIG_HOME: join(paths.helmHome, "config"),
    HELM_DATA_HOME: join(paths.helmHome, "data"),
  };
  const handle: ControlPlane = {
    dir,
    kubeconfig: paths.kubeconfig,
    server: initial.server,
    caFile: paths.caFile,
    pid: initial.pid,
    kubectl: (args, input) => kubectlWithWaitRetry((a) => runCommand("kubectl", [`--cache-dir=${paths.kubeCache}`, ...a], env, input), args),
    helm: (args, input) => runCommand(join(binDir, "helm"), args, env, input),
    async restart() {
      await killAndWait(handle.pid, child);
      child = await launch(binDir, paths, initial.securePort, opts);
      handle.pid = child.pid!;
      const state: ControlPlaneState = { ...initial, pid: handle.pid, startedAt: new Date().toISOString() };
      await writeFile(paths.stateFile, JSON.stringify(state, null, 2) + "\n");
    },
    async stop() {
      const running = isOurProcess(handle.pid, dir);
      if (running) await killAndWait(handle.pid, child);
      await removeControlPlaneDir(dir);
      if (running) log.info({ dir, controlPlanePid: handle.pid }, "control plane stopped");
    },
  };
  return handle;
}

/** Starts the binary, records its pid, and resolves once /readyz is ok; rejects with the log tail if it dies. */
async function launch(
  binDir: string,
  paths: ReturnType<typeof controlPlanePaths>,
  securePort: number,
  opts: StartOptions,
): Promise<ChildProcess> {
  const detached = opts.detached ?? false;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 180_000;
  const server = `https://127.0.0.1:${securePort}`;
  if (opts.controllers) {
    // The binary finds them by these names in --cert-dir (localcluster/controlplane/controllers.go).
    for (const component of controllerComponents) {
      await writeFile(join(paths.pki, `${component}.kubeconfig`), componentKubeconfig(component, server, paths.pki), { mode: 0o600 });
    }
  }
  const args = [
    `--data-dir=${paths.etcd}`,
    `--cert-dir=${paths.pki}`,
    `--secure-port=${securePort}`,
    ...(opts.controllers ? ["--controllers", `--controllers-dir=${paths.dir}`] : []),
    ...(detached ? [] : ["--exit-with-parent"]),
    ...(opts.apiserverArgs?.length ? ["--", ...opts.apiserverArgs] : []),
  ];
  const logFd = openSync(paths.logFile, "a");
  // Its own process group either way, so a terminal's Ctrl-C reaches us, not the API server mid-write.
  const child = spawn(join(binDir, binaryName), args, { detached: true, stdio: ["ignore", logFd, logFd] });
  closeSync(logFd);
  if (detached) child.unref();
  const exited = new Promise<never>((_, reject) => {
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      const tail = existsSync(paths.logFile)
        ? readFileSync(paths.logFile, "utf8").split("\n").slice(-25).join("\n")
        : "";
      reject(
        new Error(
          `${binaryName} exited (code ${code}, signal ${signal}) before ready; log ${paths.logFile}:\n${tail}`,
        ),
      );
    });
  });
  exited.catch(() => undefined); // observed below; avoid an unhandled rejection after success
  if (child.pid === undefined) await exited;
  await writeFile(paths.pidFile, `${child.pid}\n`);

  const deadline = Date.now() + readyTimeoutMs;
  const ready = (async () => {
    while (Date.now() < deadline) {
      if (await isReady(paths.dir, server)) return;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`${server}/readyz not ok after ${readyTimeoutMs} ms; log ${paths.logFile}`);
  })();
  try {
    await Promise.race([ready, exited]);
  } catch (err) {
    await killAndWait(child.pid!, child);
    await rm(paths.pidFile, { force: true });
    throw err;
  }
  return child;
}

/** True when pid is alive and is the control-plane binary serving dir (not a recycled pid). */
function isOurProcess(pid: number, dir: string): boolean {
  if (!isProcessAlive(pid)) return false;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return (
      argv[0]?.endsWith(`/${binaryName}`) === true &&
      argv.includes(`--data-dir=${controlPlanePaths(resolve(dir)).etcd}`)
    );
  } catch {
    return false;
  }
}

/** True while pid exists and is not a zombie. */
export function isProcessAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

/** SIGTERM (the API server shuts down gracefully, then etcd), SIGKILL after a grace period; waits for exit. */
async function killAndWait(pid: number, child?: ChildProcess, graceMs = 20_000): Promise<void> {
  const gone = (): boolean =>
    child ? child.exitCode !== null || child.signalCode !== null : !isProcessAlive(pid);
  const waitGone = async (ms: number): Promise<boolean> => {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      if (gone()) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return gone();
  };
  if (gone()) return;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  if (await waitGone(graceMs)) return;
  log.warn({ controlPlanePid: pid }, "control plane ignored SIGTERM, sending SIGKILL");
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  await waitGone(5_000);
}

async function readState(dir: string): Promise<ControlPlaneState | undefined> {
  try {
    return JSON.parse(await readFile(controlPlanePaths(dir).stateFile, "utf8")) as ControlPlaneState;
  } catch {
    return undefined;
  }
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((done, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => done(port));
    });
  });
}

function runCommand(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  input?: string,
): Promise<CommandResult> {
  return new Promise((done) => {
    const child = execFile(cmd, args, { env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      done({
        code,
        stdout,
        stderr: err && typeof err.code !== "number" ? `${stderr}${err.message}` : stderr,
      });
    });
    // The command may exit without reading its stdin (EPIPE): its exit code and stderr say what happened.
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input ?? "");
  });
}

/** The components the control-plane binary runs beside the API server with --controllers, by their certificate's user. */
const controllerComponents = ["kube-scheduler", "kube-controller-manager"] as const;
type ControllerComponent = (typeof controllerComponents)[number];

/**
 * CA, API server serving cert, service-account key pair and an admin client cert, all ECDSA P-256;
 * with `controllers`, a client cert for each controller component as the user Kubernetes' bootstrap
 * RBAC gives its role (`system:kube-scheduler`, `system:kube-controller-manager`).
 */
async function generatePki(pki: string, controllers: boolean): Promise<void> {
  const write = async (base: string, issued: Issued): Promise<void> => {
    await writeFile(join(pki, `${base}.key`), issued.key, { mode: 0o600 });
    await writeFile(join(pki, `${base}.crt`), issued.cert);
  };
  const ca = await issueCA({ commonName: "membrane-local-ca", days: 3650 });
  await write("ca", ca);
  await write(
    "apiserver",
    await issueCert(ca, {
      commonName: "kube-apiserver",
      usage: "server",
      ipAddresses: ["127.0.0.1", "10.96.0.1"],
      dnsNames: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
      days: 365,
    }),
  );
  await write("admin", await issueCert(ca, { commonName: "membrane-admin", organization: "system:masters", usage: "client", days: 365 }));
  // The API server's client for a real node's kubelet (logs, exec, port-forward; localcluster/realnode); the
  // kubelet authorises it by a SubjectAccessReview, and system:masters may do all of it (kubeadm's old setting).
  await write(
    "apiserver-kubelet-client",
    await issueCert(ca, { commonName: "kube-apiserver-kubelet-client", organization: "system:masters", usage: "client", days: 365 }),
  );
  if (controllers) {
    for (const component of controllerComponents) {
      await write(component, await issueCert(ca, { commonName: `system:${component}`, usage: "client", days: 365 }));
    }
  }
  // The API server signs service-account tokens with sa.key and checks them with sa.pub.
  const sa = generateKeyPairSync("ec", { namedCurve: "P-256" });
  await writeFile(join(pki, "sa.key"), sa.privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  await writeFile(join(pki, "sa.pub"), sa.publicKey.export({ type: "spki", format: "pem" }));
}

/** A controller component's kubeconfig: its own client certificate (files in pki), the local server. */
function componentKubeconfig(component: ControllerComponent, server: string, pki: string): string {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "local", cluster: { server, "certificate-authority": join(pki, "ca.crt") } }],
    users: [{ name: component, user: { "client-certificate": join(pki, `${component}.crt`), "client-key": join(pki, `${component}.key`) } }],
    contexts: [{ name: component, context: { cluster: "local", user: component } }],
    "current-context": component,
  });
}

/**
 * The controller processes the control plane at pid runs (its direct children, by their component
 * name in argv[1]); empty when it runs none or has exited.
 */
export function controllerProcesses(pid: number): { component: ControllerComponent; pid: number }[] {
  const found: { component: ControllerComponent; pid: number }[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return found;
  }
  for (const tid of tasks) {
    let children: string[];
    try {
      children = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").split(" ").filter((c) => c !== "");
    } catch {
      continue;
    }
    for (const c of children) {
      const childPid = Number.parseInt(c, 10);
      try {
        const component = readFileSync(`/proc/${childPid}/cmdline`, "utf8").split("\0")[1];
        const known = controllerComponents.find((k) => k === component);
        if (known && isProcessAlive(childPid)) found.push({ component: known, pid: childPid });
      } catch {
        // exited meanwhile
      }
    }
  }
  return found.sort((a, b) => a.component.localeCompare(b.component));
}

function adminKubeconfig(name: string, server: string, paths: ReturnType<typeof controlPlanePaths>): string {
  const user = `${name}-admin`;
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name, cluster: { server, "certificate-authority": paths.caFile } }],
    users: [{ name: user, user: { "client-certificate": paths.adminCert, "client-key": paths.adminKey } }],
    contexts: [{ name, context: { cluster: name, user } }],
    "current-context": name,
  });
}

/**
 * `kubectl wait --for=condition=…` gives up at once, instead of waiting, when it reads an object that
 * has no status.conditions yet (a CRD just created: "accessor error: <nil> is of the type <nil>");
 * such a wait is asked again until it answers otherwise (bounded, 60 s).
 */
export async function kubectlWithWaitRetry(run: (args: string[]) => Promise<CommandResult>, args: string[]): Promise<CommandResult> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await run(args);
    const early = args[0] === "wait" && r.code !== 0 && /accessor error: <nil> is of the type <nil>/.test(r.stderr);
    if (!early || Date.now() > deadline) return r;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
