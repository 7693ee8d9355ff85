// The bundle (scripts/bundle.ts, `make build`) answers real commands exactly as the TypeScript sources run through tsx do.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import { builtinModules } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundle } from "./bundle.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MEMBRANE = path.join(ROOT, "bin/membrane");
// A directory of its own, not the repository's dist/: another developer's `make build` may be swapping that one.
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-bundle-"));
const dist = path.join(tmp, "dist");
// What stays outside the bundle (koffi) is found from dist/ as in the image: in node_modules/ beside it.
fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(tmp, "node_modules"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Outcome {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(file: string, args: readonly string[]): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 60_000, env: { ...process.env, MEMBRANE_BUNDLE: "" } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr });
    });
  });
}
const viaTsx = (...args: string[]): Promise<Outcome> => run(MEMBRANE, args);
const viaBundle = (...args: string[]): Promise<Outcome> => run(process.execPath, [path.join(dist, "membrane.mjs"), ...args]);

const built = bundle(ROOT, dist);

async function same(args: string[]): Promise<Outcome> {
  await built;
  const [tsx, bundled] = await Promise.all([viaTsx(...args), viaBundle(...args)]);
  assert.deepEqual(bundled, tsx, `membrane ${args.join(" ")}: the bundle's exit code and output equal tsx's`);
  return bundled;
}

test("the bundle is an ES module entry with its chunks, and koffi (FFI) stays outside it", async () => {
  const inputs = await built;
  assert.ok(inputs.includes("cli/main.ts") && inputs.includes("flowapi/hubble/proto.ts"), `inputs: ${inputs.length}`);
  const files = fs.readdirSync(dist);
  assert.ok(files.includes("membrane.mjs") && files.includes("membrane.mk"), files.join(", "));
  // The chunks are flat; cni/ is the CNI plugin's build of its own.
  assert.ok(files.every((f) => /^(membrane\.mjs|membrane\.mk|chunk-[A-Z0-9]+\.mjs|cni)$/.test(f)), `flat output: ${files.join(", ")}`);
  const text = files.filter((f) => f.endsWith(".mjs")).map((f) => fs.readFileSync(path.join(dist, f), "utf8"));
  assert.ok(text.some((t) => /from "koffi"|import\("koffi"\)|require\("koffi"\)/.test(t)), "koffi is imported, not inlined");
  // The CNI plugin in one file (copied alone to the node): no chunk, koffi outside it.
  assert.deepEqual(fs.readdirSync(path.join(dist, "cni")), ["membrane-cni.mjs"]);
  const cni = fs.readFileSync(path.join(dist, "cni", "membrane-cni.mjs"), "utf8");
  assert.ok(/from "koffi"/.test(cni) && !/chunk-/.test(cni), "the plugin imports koffi and no chunk");
});

/**
 * Packages a dependency asks for inside try/catch and does without (ws: bufferutil, utf-8-validate; debug:
 * supports-color; a Yarn PnP probe: pnpapi). Any other package the bundle would load at run time is missing in the image.
 */
const OPTIONAL_AT_RUN_TIME = new Set(["bufferutil", "utf-8-validate", "supports-color", "pnpapi"]);

test("the bundle loads no package at run time but koffi: every other specifier is a Node built-in or a chunk", async () => {
  await built;
  const files = [...fs.readdirSync(dist).filter((f) => f.endsWith(".mjs")), path.join("cni", "membrane-cni.mjs")];
  const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
  const loads = [
    /^\s*(?:import|export)\b[^;]*?\bfrom\s*"([^"]+)"/gm, // static import/export
    /^\s*import\s*"([^"]+)"/gm, // import for effect
    /(?<![\w$.])(?:__)?require\(\s*"([^"]+)"\s*\)/g, // require, or esbuild's __require for a CommonJS dependency's
    /\bcreateRequire\([^\n]*?\)\(\s*"([^"]+)"/g, // createRequire(import.meta.url)("pkg"): resolved against the source path
    /(?<![\w$.])import\(\s*"([^"]+)"\s*\)/g, // dynamic import
  ];
  const unexpected: string[] = [];
  for (const file of files) {
    const text = fs.readFileSync(path.join(dist, file), "utf8");
    for (const pattern of loads) {
      for (const [, specifier = ""] of text.matchAll(pattern)) {
        if (specifier.startsWith("./") || specifier.startsWith("../") || builtins.has(specifier)) continue;
        if (specifier === "koffi" || OPTIONAL_AT_RUN_TIME.has(specifier)) continue;
        unexpected.push(`${file}: ${specifier}`);
      }
    }
  }
  assert.deepEqual(unexpected, [], "packages the image does not have (import them statically so that the bundle carries them)");
});

test("membrane --help and version: same output through the bundle as through tsx", async () => {
  const help = await same(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: membrane <command>/);
  const version = await same(["version"]);
  assert.equal(version.code, 0);
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string };
  assert.equal(version.stdout, `membrane ${pkg.version}\n`, "version reads package.json at the root, not next to the chunk");
  const unknown = await same(["no-such-command"]);
  assert.equal(unknown.code, 2);
});

test("every command's --help: same output through the bundle as through tsx", async () => {
  const top = await same(["--help"]);
  const listed = [...top.stdout.slice(top.stdout.indexOf("commands:")).matchAll(/^ {2}(\S+) /gm)].map((m) => m[1] ?? "");
  assert.ok(listed.length >= 10, listed.join(", "));
  for (const command of listed) {
    const out = await same([command, "--help"]);
    assert.equal(out.code, 0, `${command} --help: ${out.stderr}`);
  }
});

test("membrane observe loads Hubble's .proto files (found through CILIUM_VERSION next to its source) before it dials", async () => {
  // Port 1 refuses: the error comes from gRPC, after the Observer service was loaded from the .proto files.
  const out = await same(["observe", "--server", "127.0.0.1:1"]);
  assert.equal(out.code, 1);
  assert.match(out.stderr, /ECONNREFUSED/, out.stderr);
  const missing = await (async () => {
    await built;
    const env = { ...process.env, MEMBRANE_HUBBLE_PROTO_DIR: path.join(tmp, "no-protos") };
    return new Promise<string>((resolve) => execFile(process.execPath, [path.join(dist, "membrane.mjs"), "observe", "--server", "127.0.0.1:1"], { env }, (_e, _o, stderr) => resolve(stderr)));
  })();
  const version = fs.readFileSync(path.join(ROOT, "flowapi/hubble/CILIUM_VERSION"), "utf8").trim();
  assert.match(missing, new RegExp(`observer\\.proto not found .*cilium@${version.replace(/\./g, "\\.")}`), missing);
});

test("membrane policy validate: same verdicts and field errors through the bundle as through tsx", async () => {
  const good = path.join(tmp, "good.yaml");
  const bad = path.join(tmp, "bad.yaml");
  fs.writeFileSync(
    good,
    [
      "apiVersion: cilium.io/v2",
      "kind: CiliumNetworkPolicy",
      "metadata: {name: rule1, namespace: default}",
      "spec:",
      "  endpointSelector: {matchLabels: {org: empire, class: deathstar}}",
      "  ingress:",
      "  - fromEndpoints: [{matchLabels: {org: empire}}]",
      "    toPorts: [{ports: [{port: '80', protocol: TCP}]}]",
      "",
    ].join("\n"),
  );
  fs.writeFileSync(bad, fs.readFileSync(good, "utf8").replace("port: '80'", "port: '80000'"));
  const ok = await same(["policy", "validate", good]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  const refused = await same(["policy", "validate", bad]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stdout + refused.stderr, /spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.port/);
});
