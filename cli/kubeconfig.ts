// Which cluster a CLI command talks to when --kubeconfig is not given: the usual places first, then the running local cluster.
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { controlPlanePaths, runningControlPlane } from "../localcluster/cluster.ts";
import { IN_CLUSTER_TOKEN } from "../kube/kubeconfig.ts";
import { devDir } from "./dev-dir.ts";

/** What the usage texts say about the default. */
export const KUBECONFIG_DEFAULT = "$KUBECONFIG, ~/.kube/config, in-cluster, else the running `membrane dev` cluster";

/**
 * The kubeconfig to load: `flag` when given; undefined (the library's order: $KUBECONFIG,
 * ~/.kube/config, in-cluster) when one of those exists; otherwise the kubeconfig of the local
 * cluster `membrane dev up` runs in $MEMBRANE_DEV_DIR, so its commands work without `dev env`.
 */
export async function cliKubeconfig(flag: string | undefined): Promise<string | undefined> {
  if (flag !== undefined) return flag;
  if ((process.env.KUBECONFIG ?? "") !== "" || existsSync(join(homedir(), ".kube", "config")) || existsSync(IN_CLUSTER_TOKEN)) return undefined;
  const dir = devDir();
  return (await runningControlPlane(dir)) ? controlPlanePaths(dir).kubeconfig : undefined;
}
