// Keeps charts/membrane/crds/ an exact copy of crds/generated/ (the one source of the CRDs): `node --import tsx charts/crds.ts` syncs.
import { copyFileSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = fileURLToPath(new URL("..", import.meta.url));
export const GENERATED_DIR = join(repo, "crds", "generated");
export const CHART_CRDS_DIR = join(repo, "charts", "membrane", "crds");

const yamlFiles = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith(".yaml")).sort();

/** The differences between the chart's CRDs and the generated ones, one line each; empty when in sync. */
export function crdDrift(generatedDir = GENERATED_DIR, chartDir = CHART_CRDS_DIR): string[] {
  const want = yamlFiles(generatedDir);
  const have = yamlFiles(chartDir);
  const drift: string[] = [];
  for (const f of want) {
    if (!have.includes(f)) drift.push(`${f}: missing from charts/membrane/crds`);
    else if (readFileSync(join(generatedDir, f), "utf8") !== readFileSync(join(chartDir, f), "utf8")) drift.push(`${f}: differs from crds/generated`);
  }
  for (const f of have) if (!want.includes(f)) drift.push(`${f}: in charts/membrane/crds but not in crds/generated`);
  return drift;
}

/** Makes the chart's crds/ equal to crds/generated/; returns what it changed. */
export function syncCrds(): string[] {
  const drift = crdDrift();
  const want = yamlFiles(GENERATED_DIR);
  for (const f of yamlFiles(CHART_CRDS_DIR)) if (!want.includes(f)) rmSync(join(CHART_CRDS_DIR, f));
  for (const f of want) copyFileSync(join(GENERATED_DIR, f), join(CHART_CRDS_DIR, f));
  return drift;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const changed = syncCrds();
  process.stdout.write(changed.length === 0 ? "charts/membrane/crds: already in sync\n" : `charts/membrane/crds: synced\n  ${changed.join("\n  ")}\n`);
}
