// The chart rendered with the local cluster's helm (lint, template, golden files): finds helm, renders the chart into objects, and normalises what is random (generated certificates).
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, stringify } from "yaml";
import { parseAgentFlags, type AgentFlags } from "../node-agent/flags.ts";
import { ensureControlPlaneBuilt } from "./cluster.ts";

export const CHART_DIR = fileURLToPath(new URL("../charts/membrane", import.meta.url));
export const TESTDATA_DIR = fileURLToPath(new URL("../charts/testdata", import.meta.url));
export const RELEASE = "membrane";
export const NAMESPACE = "membrane-system";
/** The Kubernetes version the local control plane runs (localcluster/controlplane/go.mod). */
export const KUBE_VERSION = "1.36.3";

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** $MEMBRANE_HELM when set, else the helm that localcluster/controlplane/build.sh builds (and caches) with the control plane. */
export async function helmBinary(): Promise<string> {
  return process.env.MEMBRANE_HELM ?? join(await ensureControlPlaneBuilt(), "helm");
}

let helmHome: string | undefined;

/** helm's cache/config/data dirs: private to this process, removed when it exits. */
function helmEnv(): NodeJS.ProcessEnv {
  if (helmHome === undefined) {
    const dir = mkdtempSync(join(tmpdir(), "membrane-chart-helm-"));
    helmHome = dir;
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return { ...process.env, HELM_CACHE_HOME: join(helmHome, "cache"), HELM_CONFIG_HOME: join(helmHome, "config"), HELM_DATA_HOME: join(helmHome, "data") };
}

/** Runs helm without a cluster (lint, template). */
export async function helm(args: string[]): Promise<Run> {
  const bin = await helmBinary();
  return new Promise((resolve) => {
    execFile(bin, args, { maxBuffer: 64 * 1024 * 1024, env: helmEnv() }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** `--set`-style overrides → helm arguments. */
export function setArgs(values: Record<string, string | number | boolean>): string[] {
  return Object.entries(values).flatMap(([k, v]) => [typeof v === "string" ? "--set-string" : "--set", `${k}=${String(v)}`]);
}

/** `helm template` of the chart with these overrides; throws with helm's stderr when it fails. */
export async function renderText(values: Record<string, string | number | boolean> = {}): Promise<string> {
  const r = await helm(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, "--include-crds", ...setArgs(values)]);
  if (r.code !== 0) throw new Error(`helm template failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Every YAML document of a manifest stream that is an object, in order. */
export function parseManifest(text: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`manifest does not parse: ${doc.errors.map((e) => e.message).join("; ")}`);
    const value = doc.toJS() as K8sObject | null;
    if (value !== null && typeof value === "object") objects.push(value);
  }
  return objects;
}

const GENERATED = "<generated at install>";

/**
 * Masks what helm generates afresh on every render (the distribution certificates and the
 * checksums derived from them) so that the rest can be compared byte for byte.
 */
export function normalise(objects: K8sObject[]): K8sObject[] {
  return objects.map((o) => {
    const copy = structuredClone(o);
    if (copy.kind === "Secret" && (copy.metadata.name.startsWith("membrane-distribution-tls-") || copy.metadata.name.startsWith("membrane-hubble-"))) {
      const data = copy.data as Record<string, string>;
      for (const key of Object.keys(data)) data[key] = GENERATED;
    }
    const template = (copy.spec as { template?: { metadata?: { annotations?: Record<string, string> } } } | undefined)?.template;
    const annotations = template?.metadata?.annotations;
    if (annotations) for (const key of Object.keys(annotations)) if (key.startsWith("checksum/")) annotations[key] = GENERATED;
    return copy;
  });
}

/** The golden form: normalised objects, one YAML document each, in helm's order; the CRDs are left to the drift check of charts/crds.ts. */
export function goldenText(objects: K8sObject[]): string {
  return normalise(objects.filter((o) => o.kind !== "CustomResourceDefinition"))
    .map((o) => stringify(o, { lineWidth: 0 }))
    .join("---\n");
}

export const objectKey = (o: Pick<K8sObject, "kind" | "metadata">): string => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;

/** What a kubelet sets for the agent's `$(VAR)` references on one node (tests render the chart for "node-a"). */
export const NODE_A_ENV: Readonly<Record<string, string>> = { NODE_NAME: "node-a", HOST_IP: "10.0.0.1", HOST_IPS: "10.0.0.1", MEMBRANE_OPERATOR_SERVICE_HOST: "10.96.0.20" };

/**
 * A container's args as the kubelet hands them to the process: the leading `agent` subcommand dropped and every
 * `$(VAR)` it knows expanded (an unknown reference stays as written, as the kubelet leaves it).
 */
export function kubeletArgs(args: readonly string[], env: Readonly<Record<string, string>> = NODE_A_ENV): string[] {
  return (args[0] === "agent" ? args.slice(1) : args).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => env[v] ?? m));
}

// The rendered DaemonSets as the chart tests read them.

export interface RenderedContainer {
  readonly name: string;
  readonly args: string[];
  readonly securityContext?: { privileged?: boolean; runAsUser?: number; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[]; add?: string[] } };
  readonly volumeMounts?: { name: string; mountPath: string }[];
}

export interface RenderedPod {
  readonly hostPID?: boolean;
  readonly hostNetwork?: boolean;
  readonly automountServiceAccountToken?: boolean;
  readonly containers: RenderedContainer[];
  readonly volumes: { name: string; hostPath?: { path: string } }[];
}

/** The pod template of the DaemonSet `name`, if rendered. */
export const daemonSetPod = (objects: K8sObject[], name: string): RenderedPod | undefined =>
  (objects.find((o) => o.kind === "DaemonSet" && o.metadata.name === name) as unknown as { spec: { template: { spec: RenderedPod } } } | undefined)?.spec.template.spec;

/** The agent's flags as its parser reads them (downward-API variables given a node's values). */
export function renderedAgentFlags(objects: K8sObject[]): AgentFlags {
  const parsed = parseAgentFlags(kubeletArgs(daemonSetPod(objects, "membrane-agent")!.containers.find((c) => c.name === "agent")!.args));
  if (!parsed.ok) throw new Error(`the rendered agent's flags: ${parsed.error}`);
  return parsed.flags;
}

/** The host directory a pod's container mounts at `mountPath`. */
export function hostDirAt(pod: RenderedPod, container: RenderedContainer, mountPath: string): string | undefined {
  const mount = container.volumeMounts?.find((m) => m.mountPath === mountPath);
  return pod.volumes.find((v) => v.name === mount?.name)?.hostPath?.path;
}
