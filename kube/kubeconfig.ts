// Loads a kubeconfig (or the in-cluster service account) into @kubernetes/client-node's KubeConfig.
// Ours on top is what the library lacks: client-go's `users[].user.tokenFile` (it reads only a
// nonstandard `token-file`, once) and exec commands relative to the kubeconfig, errors that name the
// missing field, and an error instead of its silent fallback to http://localhost:8080.
import fs from "node:fs";
import path from "node:path";
import { KubeConfig, findHomeDir, type User } from "@kubernetes/client-node";
import { parse } from "yaml";

export const IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/** The files KubeConfig.loadFromDefault reads: $KUBECONFIG's entries, else ~/.kube/config if it exists. */
function defaultFiles(): string[] {
  const fromEnv = process.env.KUBECONFIG?.split(path.delimiter).filter((f) => f !== "") ?? [];
  if (fromEnv.length > 0) return fromEnv;
  const home = findHomeDir();
  const file = home === null ? undefined : path.join(home, ".kube", "config");
  return file !== undefined && fs.existsSync(file) ? [file] : [];
}

/**
 * `file`, else $KUBECONFIG, else ~/.kube/config, else the in-cluster service account (whose token
 * file the library re-reads, so a rotated token is used). Throws an error naming the file and field.
 */
export function loadKubeConfig(file?: string): KubeConfig {
  const files = file !== undefined ? [file] : defaultFiles();
  const kc = new KubeConfig();
  if (files.length === 0) {
    if (!fs.existsSync(IN_CLUSTER_TOKEN)) {
      throw new Error(
        "no kubeconfig: pass --kubeconfig, set $KUBECONFIG or create ~/.kube/config (or run in a pod with a service account token)",
      );
    }
    if (!process.env.KUBERNETES_SERVICE_HOST)
      throw new Error(`in-cluster config: $KUBERNETES_SERVICE_HOST is not set (${IN_CLUSTER_TOKEN} exists)`);
    kc.loadFromCluster();
    return kc;
  }
  const where = `kubeconfig ${files.join(path.delimiter)}`;
  try {
    if (file !== undefined) kc.loadFromFile(file);
    else kc.loadFromDefault();
  } catch (e) {
    throw new Error(`${where}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  const ctxName = kc.getCurrentContext();
  const ctx = kc.getContextObject(ctxName);
  if (!ctx) throw new Error(`${where}: current-context "${ctxName ?? ""}" not found in contexts`);
  if (!kc.getCluster(ctx.cluster))
    throw new Error(`${where}: contexts[${ctxName}].context.cluster "${ctx.cluster}" not found in clusters`);
  useClientGoFields(kc, files);
  return kc;
}

/**
 * What client-go reads and the library does not: a user's `tokenFile` (and no other credential) gets
 * the library's token-file auth provider, which re-reads the file (every 60 s, and at once when
 * KubeClient sees a 401); an exec `command` with a path separator is relative to its kubeconfig's folder.
 */
function useClientGoFields(kc: KubeConfig, files: readonly string[]): void {
  const dirOf = new Map<string, string>(); // user name → the folder of the kubeconfig that defines it (first wins, as in merging)
  const tokenFiles = new Map<string, string>();
  for (const file of files) {
    if (!fs.existsSync(file)) continue;
    const doc = parse(fs.readFileSync(file, "utf8")) as {
      users?: { name?: unknown; user?: { tokenFile?: unknown } }[];
    } | null;
    for (const u of doc?.users ?? []) {
      if (typeof u.name !== "string" || dirOf.has(u.name)) continue;
      dirOf.set(u.name, path.dirname(path.resolve(file)));
      const tokenFile = u.user?.tokenFile;
      if (typeof tokenFile === "string" && tokenFile !== "")
        tokenFiles.set(u.name, path.resolve(path.dirname(file), tokenFile));
    }
  }
  let changed = false;
  const users = kc.getUsers().map((u): User => {
    const dir = dirOf.get(u.name);
    const command: unknown = u.exec?.command;
    if (
      dir !== undefined &&
      typeof command === "string" &&
      command.includes(path.sep) &&
      !path.isAbsolute(command)
    ) {
      changed = true;
      return { ...u, exec: { ...u.exec, command: path.resolve(dir, command) } };
    }
    const tokenFile = tokenFiles.get(u.name);
    if (tokenFile === undefined || u.token || u.exec || u.authProvider) return u;
    changed = true;
    return { ...u, authProvider: { name: "tokenFile", config: { tokenFile } } };
  });
  if (!changed) return;
  kc.loadFromOptions({
    clusters: kc.getClusters(),
    contexts: kc.getContexts(),
    users,
    currentContext: kc.getCurrentContext(),
  });
}
