// Bundles the `membrane` command (cli/main.ts) into dist/ with esbuild, so that a process starts as plain JavaScript instead of through tsx.
//
// Run by `make build`; prints nothing on success. The output:
//   dist/membrane.mjs      the entry (`node dist/membrane.mjs <command> …`, or `MEMBRANE_BUNDLE=1 bin/membrane …`)
//   dist/chunk-*.mjs       one chunk per lazily loaded command group and what they share
//   dist/cni/membrane-cni.mjs  the CNI plugin (node-agent/cni/main.ts) in one JavaScript file
//   dist/cni/membrane-cni  the CNI plugin as a single executable (`make build`, or bundle(…, { executable: true })):
//                          Node (stripped of its debug symbols), the plugin and koffi's native module in one file,
//                          which the agent of an installation without sources (the image) copies to the node
//                          (node-agent/cni-install.ts); the node needs no Node of its own
//   dist/membrane.mk       the make rule listing every source file the bundle was built from (incremental builds)
import { execFile } from "node:child_process";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { build, type Plugin } from "esbuild";
import { KOFFI_ASSET } from "../node-agent/cni/sea-koffi.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DIST = path.join(ROOT, "dist");

/**
 * Native and FFI modules cannot be bundled: they load a platform binary by path. The image keeps
 * them in node_modules/ (see Containerfile).
 */
export const EXTERNAL_PACKAGES = ["koffi"] as const;

/** CommonJS dependencies call require() for Node's built-ins; an ES module has none of its own. */
const REQUIRE_BANNER = 'import { createRequire as __membraneRequire } from "node:module"; const require = __membraneRequire(import.meta.url);';

/**
 * Our sources read files next to themselves (`new URL("./CILIUM_VERSION", import.meta.url)`,
 * `../../bpf/build/datapath.o`, `../package.json`) and compare `import.meta.url` with argv[1] to
 * know whether they run as a script. In the bundle every module's `import.meta.url` would be the
 * chunk's, in dist/: each source's own is put back as the chunk's URL plus the relative path from
 * dist/ to the source, so those paths resolve against the repository (or image) root as they do
 * under tsx, and no bundled module takes itself for the started script.
 */
function sourceUrls(root: string, outdir: string): Plugin {
  return {
    name: "membrane-source-urls",
    setup(b) {
      b.onLoad({ filter: /\.ts$/ }, async (args) => {
        if (!args.path.startsWith(root) || args.path.includes(`${path.sep}node_modules${path.sep}`)) return undefined;
        const text = await readFile(args.path, "utf8");
        const rel = path.relative(outdir, args.path).split(path.sep).join("/");
        const own = `new URL(${JSON.stringify(rel)}, import.meta.url).href`;
        return { contents: text.replaceAll("import.meta.url", own), loader: "ts" };
      });
    },
  };
}

/** In the CNI plugin's single executable, `koffi` is node-agent/cni/sea-koffi.ts: koffi's native module from the executable's asset. */
function koffiFromAsset(root: string): Plugin {
  return {
    name: "membrane-sea-koffi",
    setup(b) {
      b.onResolve({ filter: /^koffi$/ }, () => ({ path: path.join(root, "node-agent/cni/sea-koffi.ts") }));
    },
  };
}

/** The native module koffi loads on this platform (its @koromix package's, for glibc). */
function koffiNative(root: string): string {
  const require = createRequire(path.join(root, "package.json"));
  const pkg = path.dirname(require.resolve(`@koromix/koffi-${process.platform}-${process.arch}/package.json`));
  return path.join(pkg, `${process.platform}_${process.arch}`, "koffi.node");
}

/**
 * The CNI plugin as a Node single executable application (`node --build-sea`): the plugin bundled with `koffi`
 * replaced by koffiFromAsset, koffi's native module as an asset, injected into a copy of this Node stripped of its
 * debug symbols (`strip`, binutils: 150 MB → 117 MB). Written to `outdir/membrane-cni`.
 */
async function buildCniExecutable(root: string, outdir: string, sourcesDir: string): Promise<string[]> {
  const work = path.join(outdir, ".sea");
  await mkdir(work, { recursive: true });
  const main = path.join(work, "membrane-cni.mjs");
  const cni = await build({
    entryPoints: [path.join(root, "node-agent/cni/main.ts")],
    outfile: main,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node26",
    external: ["node:sea"],
    banner: { js: REQUIRE_BANNER },
    plugins: [koffiFromAsset(root), sourceUrls(root, sourcesDir)],
    absWorkingDir: root,
    metafile: true,
    logLevel: "warning",
  });
  const node = path.join(work, "node");
  await promisify(execFile)("strip", ["-o", node, process.execPath]).catch((err: unknown) => {
    throw new Error(`strip (binutils) of ${process.execPath} for the CNI executable: ${(err as Error).message}`);
  });
  const config = path.join(work, "sea.json");
  const output = path.join(outdir, "membrane-cni");
  await writeFile(
    config,
    JSON.stringify({ main, mainFormat: "module", executable: node, output, disableExperimentalSEAWarning: true, assets: { [KOFFI_ASSET]: koffiNative(root) } }),
  );
  await promisify(execFile)(process.execPath, ["--build-sea", config]);
  await rm(work, { recursive: true, force: true });
  return Object.keys(cni.metafile.inputs);
}

export interface BundleOptions {
  /** Also build the CNI plugin's single executable (dist/cni/membrane-cni; ~5 s and 117 MB more). */
  readonly executable?: boolean;
}

/** Builds into a fresh directory beside dist/ and swaps it in, so a running bundle never sees a half-written one. */
export async function bundle(root = ROOT, dist = DIST, opts: BundleOptions = {}): Promise<string[]> {
  const tmp = `${dist}.${process.pid}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  // Chunks land flat in the output directory (never in subdirectories): sourceUrls relies on it.
  const result = await build({
    entryPoints: { membrane: path.join(root, "cli/main.ts") },
    outdir: tmp,
    outExtension: { ".js": ".mjs" },
    chunkNames: "chunk-[hash]",
    bundle: true,
    splitting: true,
    platform: "node",
    format: "esm",
    target: "node26",
    external: [...EXTERNAL_PACKAGES],
    banner: { js: REQUIRE_BANNER },
    plugins: [sourceUrls(root, dist)],
    absWorkingDir: root,
    metafile: true,
    logLevel: "warning",
  });
  // The CNI plugin runs on the node, outside the agent's installation: one file, nothing shared with the chunks.
  const cni = await build({
    entryPoints: { "membrane-cni": path.join(root, "node-agent/cni/main.ts") },
    outdir: path.join(tmp, "cni"),
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node26",
    external: [...EXTERNAL_PACKAGES],
    banner: { js: REQUIRE_BANNER },
    plugins: [sourceUrls(root, path.join(dist, "cni"))],
    absWorkingDir: root,
    metafile: true,
    logLevel: "warning",
  });
  const sea = opts.executable ? await buildCniExecutable(root, path.join(tmp, "cni"), path.join(dist, "cni")) : [];
  const inputs = [...new Set([...Object.keys(result.metafile.inputs), ...Object.keys(cni.metafile.inputs), ...sea])]
    .filter((f) => !f.includes("node_modules/"))
    .sort();
  const rule = `dist/membrane.mjs: ${[...inputs, "package-lock.json", "scripts/bundle.ts"].join(" \\\n  ")}\n`;
  await writeFile(path.join(tmp, "membrane.mk"), rule);
  await rm(dist, { recursive: true, force: true });
  await rename(tmp, dist);
  return inputs;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  bundle(ROOT, DIST, { executable: true }).catch((err: unknown) => {
    process.stderr.write(`bundle: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
