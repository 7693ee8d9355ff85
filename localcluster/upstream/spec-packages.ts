// Which packages of the pinned Kubernetes module's test/e2e can hold specs the suite's focus picks (their spec text names NetworkPolicy), and which packages the suite's binary links (netpol_test.go): a spec in a package not linked would never run, and no dry run of our binary could show it.
import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const MODULE = "k8s.io/kubernetes";

/** The k8s.io/kubernetes version a go.mod requires (`require k8s.io/kubernetes vX` or a line of a require block). */
export function pinnedKubernetesVersion(goMod: string): string {
  const m = /^\s*(?:require\s+)?k8s\.io\/kubernetes\s+(v\S+)/m.exec(goMod);
  if (!m) throw new Error("go.mod: a require of k8s.io/kubernetes is required");
  return m[1]!;
}

/** Where the Go module cache holds that version of k8s.io/kubernetes ($GOMODCACHE, else `go env GOMODCACHE`). */
export async function kubernetesModuleDir(version: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const cache = env.GOMODCACHE || (await run("go", ["env", "GOMODCACHE"], { env })).stdout.trim();
  return join(cache, `${MODULE}@${version}`);
}

/**
 * A Go source split into its string literals (interpreted and raw, their text as written between the quotes) and
 * the code without comments, each string left in it as `"#<its index>"`: a word in a comment names no spec.
 */
export function goStringsAndCode(source: string): { strings: string[]; code: string } {
  const strings: string[] = [];
  let code = "";
  let i = 0;
  while (i < source.length) {
    const c = source[i]!;
    const next = source[i + 1];
    if (c === "/" && next === "/") {
      const end = source.indexOf("\n", i);
      i = end < 0 ? source.length : end;
    } else if (c === "/" && next === "*") {
      const end = source.indexOf("*/", i + 2);
      i = end < 0 ? source.length : end + 2;
      code += " ";
    } else if (c === "`") {
      const end = source.indexOf("`", i + 1);
      code += `"#${strings.length}"`;
      strings.push(source.slice(i + 1, end < 0 ? source.length : end));
      i = end < 0 ? source.length : end + 1;
    } else if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < source.length && source[j] !== c && source[j] !== "\n") j += source[j] === "\\" ? 2 : 1;
      if (c === '"') {
        code += `"#${strings.length}"`;
        strings.push(source.slice(i + 1, j));
      } else code += "' '";
      i = j + 1;
    } else {
      code += c;
      i++;
    }
  }
  return { strings, code };
}

/** Whether a Go file can put the word into a spec's text: in a string literal, or as the `feature.<word>` label. */
export function goSourceNames(source: string, word: string): boolean {
  const { strings, code } = goStringsAndCode(source);
  return strings.some((s) => s.includes(word)) || new RegExp(String.raw`\bfeature\.${word}\b`).test(code);
}

async function goFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith(".go")).map((e) => join(e.parentPath, e.name));
}

/** The import paths of the packages under `moduleDir/sub` with a Go file that names the word (sorted). */
export async function packagesNaming(moduleDir: string, sub: string, word: string): Promise<string[]> {
  const found = new Set<string>();
  for (const file of await goFiles(join(moduleDir, sub))) {
    if (!goSourceNames(await readFile(file, "utf8"), word)) continue;
    const dir = relative(moduleDir, file).split(sep).slice(0, -1).join("/");
    found.add(`${MODULE}/${dir}`);
  }
  return [...found].sort();
}

/** The k8s.io/kubernetes packages a Go file imports (for netpol_test.go: the packages the suite's binary links its specs from). */
export function importedKubernetesPackages(goSource: string): string[] {
  const { code, strings } = goStringsAndCode(goSource);
  const paths: string[] = [];
  for (const decl of code.matchAll(/\bimport\s*(\([^)]*\)|(?:[\w.]+\s+)?"#\d+")/g)) {
    for (const ref of decl[1]!.matchAll(/"#(\d+)"/g)) paths.push(strings[Number(ref[1])]!);
  }
  return [...new Set(paths.filter((p) => p === MODULE || p.startsWith(`${MODULE}/`)))].sort();
}
