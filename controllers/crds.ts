// CRD registration: the operator keeps the cluster's CRDs at least as new as its own, as Cilium's operator registers
// its CRDs (`--skip-crd-creation` turns it off, as there). Helm installs the chart's `crds/` once and never upgrades
// them, so after `helm upgrade` the API server would keep serving the old schemas and prune every field they lack.
// A CRD is created when missing and replaced when it is Membrane's (app.kubernetes.io/part-of=membrane) with an older
// schema version (membrane.io/crd-schema-version, or none: a release before the label); a newer one is kept (an old
// replica during a rolling upgrade never reverts it) and one of another owner (e.g. Cilium's own) is never touched.
import type { Logger } from "pino";
import { type KubeClient, type KubeObject, isConflict, isNotFound, resourcePath } from "../kube/kube.ts";
import { CUSTOM_RESOURCE_DEFINITIONS } from "../kube/resources.ts";
import type { CustomResourceDefinition } from "../crds/schema/index.ts";
import { CRD_SCHEMA_VERSION_LABEL, installedVersion, withSchemaVersion } from "../crds/version.ts";

const OWNER_LABEL = "app.kubernetes.io/part-of";
const ATTEMPTS = 5;
const ESTABLISHED_WAIT_MS = 30_000;

interface InstalledCRD extends KubeObject {
  status?: { conditions?: { type: string; status: string }[] };
}

export type CrdOutcome = "created" | "updated" | "current" | "newer" | "foreign";

export interface CrdRegistration {
  readonly name: string;
  readonly outcome: CrdOutcome;
  /** The version the cluster had (undefined: none, or no label). */
  readonly from?: number;
}

/** The CRDs this build installs, labelled with its schema version (loaded when asked for: the schemas are large). */
export async function bundledCRDs(): Promise<CustomResourceDefinition[]> {
  const [{ CRDS }, { CRD_SCHEMA_VERSION }] = await Promise.all([import("../crds/schema/index.ts"), import("../crds/generated/schema-version.ts")]);
  return CRDS.map((c) => withSchemaVersion(c, CRD_SCHEMA_VERSION));
}

/** Creates or upgrades every CRD in `crds` (each labelled with its schema version); one log line per CRD written or kept. */
export async function registerCRDs(client: KubeClient, crds: readonly CustomResourceDefinition[], log: Logger): Promise<CrdRegistration[]> {
  const results = await Promise.all(crds.map((crd) => registerOne(client, crd, log)));
  const created = results.filter((r) => r.outcome === "created").map((r) => r.name);
  await Promise.all(created.map((name) => waitEstablished(client, name)));
  return results;
}

async function registerOne(client: KubeClient, crd: CustomResourceDefinition, log: Logger): Promise<CrdRegistration> {
  const name = crd.metadata.name;
  const ours = installedVersion(crd.metadata.labels);
  if (ours === undefined) throw new Error(`CRD ${name}: no ${CRD_SCHEMA_VERSION_LABEL} label to register it by`);
  const path = resourcePath(CUSTOM_RESOURCE_DEFINITIONS, undefined, name);
  for (let attempt = 1; ; attempt++) {
    let existing: InstalledCRD | undefined;
    try {
      existing = await client.get<InstalledCRD>(path);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    try {
      if (!existing) {
        await client.create(resourcePath(CUSTOM_RESOURCE_DEFINITIONS), crd);
        log.info({ crd: name, version: ours }, "CRD created");
        return { name, outcome: "created" };
      }
      const labels = existing.metadata.labels ?? {};
      if (labels[OWNER_LABEL] !== "membrane") {
        log.warn({ crd: name, owner: labels[OWNER_LABEL] ?? null }, "CRD not Membrane's (no app.kubernetes.io/part-of=membrane): kept as it is");
        return { name, outcome: "foreign" };
      }
      const theirs = installedVersion(labels);
      if (theirs !== undefined && theirs >= ours) {
        if (theirs > ours) log.info({ crd: name, version: theirs, ours }, "CRD newer than this operator's: kept");
        return { name, outcome: theirs > ours ? "newer" : "current", from: theirs };
      }
      // Replaced under its resourceVersion: a writer in between makes this a conflict, and the CRD is looked at again.
      await client.replace(path, { ...crd, metadata: { ...existing.metadata, labels: { ...labels, ...crd.metadata.labels } } });
      log.info({ crd: name, from: theirs ?? null, version: ours }, "CRD upgraded to this operator's schema");
      return { name, outcome: "updated", ...(theirs !== undefined ? { from: theirs } : {}) };
    } catch (e) {
      if (!isConflict(e) || attempt >= ATTEMPTS) throw e;
    }
  }
}

/** A created CRD serves its resources only once Established: the controllers' informers list them right after. */
async function waitEstablished(client: KubeClient, name: string): Promise<void> {
  const deadline = Date.now() + ESTABLISHED_WAIT_MS;
  for (;;) {
    const crd = await client.get<InstalledCRD>(resourcePath(CUSTOM_RESOURCE_DEFINITIONS, undefined, name));
    if (crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) return;
    if (Date.now() > deadline) throw new Error(`CRD ${name}: not Established ${ESTABLISHED_WAIT_MS / 1000} s after it was created`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
