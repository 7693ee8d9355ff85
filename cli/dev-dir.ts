// Where the local cluster of `membrane dev` lives: a module of its own so commands can find it without loading the cluster code.

/** Where `dev up` keeps the control plane (certificates, etcd data, pid file, kubeconfig). */
export function devDir(): string {
  return process.env.MEMBRANE_DEV_DIR ?? "/var/lib/membrane/dev";
}

/** Prefix of the nodes' names and network namespaces (MEMBRANE_DEV_PREFIX), so a test's `dev up` never meets a developer's. */
export function devPrefix(): string {
  return process.env.MEMBRANE_DEV_PREFIX ?? "";
}
