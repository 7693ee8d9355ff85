// The image built here without a container engine (membrane-image.sh) against the Containerfile that builds it elsewhere:
// the same entrypoint, working directory and environment, and the same files in Membrane's layer as the final stage's COPYs.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildMembraneImage } from "./realnode.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-image-test-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The Containerfile's final stage: its COPY destinations (absolute), WORKDIR, ENV and ENTRYPOINT. */
function finalStage(): { dests: string[]; workdir: string; env: string[]; entrypoint: string[] } {
  const text = fs.readFileSync(path.join(ROOT, "Containerfile"), "utf8");
  const lines = text
    .split("\n")
    .filter((l) => !l.trimStart().startsWith("#"))
    .join("\n")
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim());
  const last = lines.map((l, i) => (l.startsWith("FROM ") ? i : -1)).filter((i) => i >= 0).at(-1)!;
  let workdir = "/";
  const dests: string[] = [];
  const env: string[] = [];
  let entrypoint: string[] = [];
  for (const l of lines.slice(last)) {
    const [op, ...rest] = l.split(/\s+/);
    if (op === "WORKDIR") workdir = rest[0]!;
    if (op === "COPY") dests.push(path.posix.resolve(workdir, rest.at(-1)!));
    if (op === "ENV") env.push(rest.join(" "));
    if (op === "ENTRYPOINT") entrypoint = JSON.parse(rest.join(" ")) as string[];
  }
  return { dests, workdir, env, entrypoint };
}

test("membrane-image.sh builds what the Containerfile's final stage holds: entrypoint, workdir, env and Membrane's files", async () => {
  const { archive } = await buildMembraneImage();
  const layout = path.join(tmp, "layout");
  fs.mkdirSync(layout);
  execFileSync("tar", ["-xf", archive, "-C", layout]);
  const blob = (digest: string): string => path.join(layout, "blobs", digest.replace(":", "/"));
  const index = JSON.parse(fs.readFileSync(path.join(layout, "index.json"), "utf8")) as { manifests: { digest: string }[] };
  const manifest = JSON.parse(fs.readFileSync(blob(index.manifests[0]!.digest), "utf8")) as { config: { digest: string }; layers: { digest: string }[] };
  const config = (JSON.parse(fs.readFileSync(blob(manifest.config.digest), "utf8")) as { config: { Entrypoint: string[]; WorkingDir: string; Env: string[] } }).config;

  const recipe = finalStage();
  assert.deepEqual(config.Entrypoint, recipe.entrypoint);
  assert.equal(config.WorkingDir, recipe.workdir);
  for (const e of recipe.env) assert.ok(config.Env.includes(e), `ENV ${e} in the image's Env ${JSON.stringify(config.Env)}`);

  // Membrane's layer (the last; the one below is Debian's packages, compared with the recipe's apt-get in scripts/containerfile.test.ts).
  const layer = blob(manifest.layers.at(-1)!.digest);
  const files = execFileSync("tar", ["-tf", layer], { maxBuffer: 64 << 20 })
    .toString()
    .split("\n")
    .filter(Boolean)
    .map((f) => path.posix.resolve("/", f));
  const has = new Set(files);
  for (const d of recipe.dests) assert.ok(has.has(d) || has.has(`${d}/`) || files.some((f) => f.startsWith(`${d}/`)), `the recipe's COPY to ${d} is in the layer`);
  const stray = files.filter((f) => !recipe.dests.some((d) => f === d || f.startsWith(`${d}/`) || d.startsWith(`${f}/`)) && f !== "/");
  assert.deepEqual(stray, [], "files in the layer the recipe does not copy");
  for (const f of ["/opt/membrane/dist/cni/membrane-cni", "/usr/local/bin/wireguard-go", "/usr/local/bin/node"]) assert.ok(has.has(f), `${f} in the image`);

  // The binaries the image carries run: the CNI plugin's executable (no Node beside it), wireguard-go and the stripped Node.
  const out = path.join(tmp, "layer");
  fs.mkdirSync(out);
  execFileSync("tar", ["-xf", layer, "-C", out, "./opt/membrane/dist/cni/membrane-cni", "./usr/local/bin/wireguard-go", "./usr/local/bin/node"]);
  const clean = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };
  const version = execFileSync(path.join(out, "opt/membrane/dist/cni/membrane-cni"), [], { env: { ...clean, CNI_COMMAND: "VERSION" }, input: "{}" }).toString();
  assert.ok((JSON.parse(version) as { supportedVersions: string[] }).supportedVersions.includes("1.0.0"), version);
  assert.match(execFileSync(path.join(out, "usr/local/bin/wireguard-go"), ["--version"], { env: clean }).toString(), /wireguard-go v/);
  assert.equal(execFileSync(path.join(out, "usr/local/bin/node"), ["--version"], { env: clean }).toString().trim(), `v${fs.readFileSync(path.join(ROOT, ".node-version"), "utf8").trim()}`);
  assert.match(execFileSync("file", [path.join(out, "usr/local/bin/node")]).toString(), /, stripped/);
});
