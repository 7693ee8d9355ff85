// Reads a kubeconfig (current context: server, CA, client certificate/key or bearer token). Ours
// because @kubernetes/client-node 2.0.1 cannot be imported on Node 20 (its undici 8 needs Node ≥ 22.19).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse } from "yaml";

export interface ClusterCredentials {
  readonly server: string;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly token?: string;
  readonly insecureSkipTLSVerify: boolean;
}

interface Named<T> {
  name: string;
  [k: string]: unknown;
  cluster?: T;
  user?: T;
  context?: T;
}

type Fields = Record<string, unknown>;

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** Inline base64 data wins over a file path; relative paths are relative to the kubeconfig. */
function material(fields: Fields, dataKey: string, fileKey: string, baseDir: string): Buffer | undefined {
  const data = str(fields[dataKey]);
  if (data) return Buffer.from(data, "base64");
  const file = str(fields[fileKey]);
  return file ? fs.readFileSync(path.resolve(baseDir, file)) : undefined;
}

const IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** `path`, else $KUBECONFIG (first entry), else ~/.kube/config, else the in-cluster service account. */
export function loadKubeconfig(file?: string): ClusterCredentials {
  const candidate = file ?? process.env.KUBECONFIG?.split(path.delimiter).find((p) => p !== "") ?? path.join(os.homedir(), ".kube", "config");
  if (!fs.existsSync(candidate) && file === undefined && process.env.KUBERNETES_SERVICE_HOST) {
    return {
      server: `https://${process.env.KUBERNETES_SERVICE_HOST}:${process.env.KUBERNETES_SERVICE_PORT ?? "443"}`,
      ca: fs.readFileSync(path.join(IN_CLUSTER_DIR, "ca.crt")),
      token: fs.readFileSync(path.join(IN_CLUSTER_DIR, "token"), "utf8").trim(),
      insecureSkipTLSVerify: false,
    };
  }
  const doc = parse(fs.readFileSync(candidate, "utf8")) as {
    "current-context"?: string;
    contexts?: Named<Fields>[];
    clusters?: Named<Fields>[];
    users?: Named<Fields>[];
  };
  const where = `kubeconfig ${candidate}`;
  const ctxName = doc["current-context"];
  const ctx = doc.contexts?.find((c) => c.name === ctxName)?.context;
  if (!ctx) throw new Error(`${where}: current-context "${ctxName ?? ""}" not found in contexts`);
  const cluster = doc.clusters?.find((c) => c.name === ctx.cluster)?.cluster;
  if (!cluster) throw new Error(`${where}: contexts[${String(ctxName)}].context.cluster "${String(ctx.cluster)}" not found`);
  const user = doc.users?.find((u) => u.name === ctx.user)?.user ?? {};
  const server = str(cluster.server);
  if (!server) throw new Error(`${where}: clusters[${String(ctx.cluster)}].cluster.server is required`);
  const dir = path.dirname(path.resolve(candidate));
  const tokenFile = str(user.tokenFile);
  return {
    server,
    ca: material(cluster, "certificate-authority-data", "certificate-authority", dir),
    cert: material(user, "client-certificate-data", "client-certificate", dir),
    key: material(user, "client-key-data", "client-key", dir),
    token: str(user.token) ?? (tokenFile ? fs.readFileSync(path.resolve(dir, tokenFile), "utf8").trim() : undefined),
    insecureSkipTLSVerify: cluster["insecure-skip-tls-verify"] === true,
  };
}
