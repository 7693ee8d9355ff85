// Bundles the `membrane` command (cli/main.ts) into dist/ with esbuild, so that a process starts as plain JavaScript instead of through tsx.
//
// Run by `make build`; prints nothing on success. The output:
//   dist/membrane.mjs      the entry (`node dist/membrane.mjs <command> …`, or `MEMBRANE_BUNDLE=1 bin/membrane …`)
//   dist/chunk-*.mjs       one chunk per lazily loaded command group and what they share
//   dist/cni/membrane-cni.mjs  the CNI plugin (node-agent/cni/main.ts) in one file: the agent of an installation
//                          without sources (the image) copies it to the node with Node and koffi (node-agent/cni-install.ts)
//   dist/membrane.mk       the make rule listing every source file the bundle was built from (incremental builds)
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";

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

/** Builds into a fresh directory beside dist/ and swaps it in, so a running bundle never sees a half-written one. */
export async function bundle(root = ROOT, dist = DIST): Promise<string[]> {
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
  const inputs = [...new Set([...Object.keys(result.metafile.inputs), ...Object.keys(cni.metafile.inputs)])]
    .filter((f) => !f.includes("node_modules/"))
    
    .sort();
  const rule = `dist/membrane.mjs: ${[...inputs, "package-lock.json", "scripts/bundle.ts"].join(" \\\n  ")}\n`;
  await writeFile(path.join(tmp, "membrane.mk"), rule);
  await rm(dist, { recursive: true, force: true });
  await rename(tmp, dist);
  return inputs;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  bundle().catch((err: unknown) => {
    process.stderr.write(`bundle: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
