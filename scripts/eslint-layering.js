// The folder "may import" table (docs/ARCHITECTURE.md) as an ESLint rule: a production file that imports
// another top-level folder of ours outside its row, or any test support, fails lint.
import { dirname, relative, resolve, sep } from "node:path";

/** Top-level folder → the folders of ours its production code may import. "*" = every folder. */
export const MAY_IMPORT = {
  core: [],
  crds: ["core"],
  kube: ["core"],
  flowapi: ["core", "kube"],
  controllers: ["core", "kube", "flowapi", "crds"],
  webhooks: ["core", "kube", "crds"],
  "node-agent": ["core", "kube", "flowapi"],
  cli: ["core", "kube", "flowapi", "crds", "localcluster"],
  charts: ["core", "crds"],
  localcluster: "*",
  e2e: "*",
  bench: "*",
  scripts: "*",
};

/**
 * The one composition root: the `membrane` command's entry starts each component, so it may load a
 * component's entry (`<folder>/main.ts`, `<folder>/<sub>/main.ts`) with a literal `import()`, and
 * nothing else of it. Literal, so that the bundler (scripts/bundle.ts) sees every command.
 */
export const COMMAND_ENTRY = "cli/main.ts";

/** Test support: a `*.test.ts` file, a `testing/` folder, a `testing.ts` fixture. Tests may import anything. */
export function isTestSupport(rel) {
  const parts = rel.split(sep);
  return rel.endsWith(".test.ts") || parts.includes("testing") || parts[parts.length - 1] === "testing.ts";
}

const rule = {
  meta: {
    type: "problem",
    docs: { description: "enforce the folder import table of docs/ARCHITECTURE.md" },
    schema: [{ type: "object", properties: { root: { type: "string" } }, additionalProperties: false }],
    messages: {
      wrongWay: "{{from}}/ may not import {{to}}/ ({{spec}}): {{from}} may import {{allowed}} (docs/ARCHITECTURE.md, scripts/eslint-layering.js)",
      testSupport: "production code may not import test support ({{spec}}): move what it needs out of the test fixture",
    },
  },
  create(context) {
    const root = context.options[0]?.root ?? context.cwd;
    const file = relative(root, context.filename);
    const from = file.split(sep)[0];
    if (file.startsWith("..") || file.endsWith(".test.ts") || !(from in MAY_IMPORT)) return {};
    // Fixtures (a testing/ folder, a testing.ts file) follow their folder's row but may use test support.
    const fixture = isTestSupport(file);
    const allowed = MAY_IMPORT[from];
    function check(node, spec) {
      if (typeof spec !== "string" || !spec.startsWith(".")) return;
      const target = relative(root, resolve(dirname(context.filename), spec));
      if (target.startsWith("..")) return;
      const to = target.split(sep)[0];
      if ((to === "e2e" && from !== "e2e") || (isTestSupport(target) && !fixture && !["e2e", "bench", "localcluster"].includes(from))) {
        context.report({ node, messageId: "testSupport", data: { spec } });
        return;
      }
      if (to === from || allowed === "*" || !(to in MAY_IMPORT) || allowed.includes(to)) return;
      if (file === COMMAND_ENTRY && node.parent?.type === "ImportExpression" && target.split(sep).pop() === "main.ts") return;
      context.report({ node, messageId: "wrongWay", data: { from, to, spec, allowed: allowed.length ? allowed.join(", ") : "nothing of ours" } });
    }
    return {
      ImportDeclaration: (n) => check(n.source, n.source.value),
      ExportNamedDeclaration: (n) => n.source && check(n.source, n.source.value),
      ExportAllDeclaration: (n) => check(n.source, n.source.value),
      ImportExpression: (n) => n.source.type === "Literal" && check(n.source, n.source.value),
    };
  },
};

export default { rules: { layering: rule } };
