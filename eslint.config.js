// Lint configuration: typescript-eslint's recommended rules over all TypeScript sources, and the folder
// import table (scripts/eslint-layering.js).
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import layering from "./scripts/eslint-layering.js";

export default tseslint.config(
  { ignores: ["node_modules/**", "dist/**", "**/*.js", "charts/membrane/**", "localcluster/controlplane/**", ".tools/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    plugins: { membrane: layering },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-explicit-any": "error",
      "membrane/layering": ["error", { root: import.meta.dirname }],
    },
  },
);
