// The local cluster's DNS: dnsmasq (Debian) as the kube-system pod and Service `kube-dns` (labelled k8s-app=kube-dns, as Cilium's docs select it), answering the outside hosts' names.
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { KubeClient, isNotFound, resourcePath, type KubeObject } from "../kube/kube.ts";
import { PODS, SERVICES } from "../kube/resources.ts";
import { CLUSTER_DNS } from "./kubelet.ts";
import type { OutsideHost } from "./outside.ts";

const log = pino({ name: "cluster-dns", level: process.env.MEMBRANE_LOG_LEVEL ?? "info" }, pino.destination({ fd: 2, sync: true }));

/** The pod's and the Service's name (as kubeadm names the Service). */
export const CLUSTER_DNS_NAME = "kube-dns";
/** The domain dnsmasq answers for itself: a name under it that it does not know is NXDOMAIN (other names: REFUSED, it has no upstream). */
export const CLUSTER_DNS_LOCAL_DOMAIN = "test";
/** The TTL of every answer (dnsmasq's default for its own records is 0). */
export const CLUSTER_DNS_TTL = 60;

/** dnsmasq's command line: in the foreground, no config file, no upstream, only the given records. */
export function dnsmasqCommand(hosts: readonly OutsideHost[], cnames: readonly (readonly [string, string])[]): string[] {
  return [
    "dnsmasq",
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--no-poll",
    "--pid-file=",
    "--log-facility=-",
    "--log-queries",
    "--port=53",
    `--local-ttl=${CLUSTER_DNS_TTL}`,
    `--local=/${CLUSTER_DNS_LOCAL_DOMAIN}/`,
    // A pod's search list (ns.svc.cluster.local …) gets NXDOMAIN, as from CoreDNS, so its resolver moves on to the next.
    "--local=/cluster.local/",
    ...hosts.flatMap((h) => h.names.map((n) => `--host-record=${n},${h.ip}`)),
    ...cnames.map(([alias, target]) => `--cname=${alias},${target}`),
  ];
}

/** The Service and the Pod (on `node`), as kubeadm's kube-dns Service and CoreDNS pods are labelled. */
export function clusterDnsObjects(node: string, hosts: readonly OutsideHost[], cnames: readonly (readonly [string, string])[]): { service: KubeObject; pod: KubeObject } {
  const labels = { [CLUSTER_DNS.label]: CLUSTER_DNS.value };
  const ports = [
    { name: "dns", port: 53, protocol: "UDP" },
    { name: "dns-tcp", port: 53, protocol: "TCP" },
  ];
  const [cmd, ...args] = dnsmasqCommand(hosts, cnames);
  return {
    service: {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: CLUSTER_DNS_NAME, namespace: CLUSTER_DNS.namespace, labels: { ...labels, "kubernetes.io/name": "dnsmasq" } },
      spec: { selector: labels, ports: ports.map((p) => ({ ...p, targetPort: p.port })) },
    } as KubeObject,
    pod: {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: CLUSTER_DNS_NAME, namespace: CLUSTER_DNS.namespace, labels },
      spec: {
        nodeName: node,
        // The resolver itself resolves nothing through the cluster.
        dnsPolicy: "Default",
        automountServiceAccountToken: false,
        containers: [{ name: "dnsmasq", image: "debian/dnsmasq-base", command: [cmd], args, ports: ports.map((p) => ({ name: p.name, containerPort: p.port, protocol: p.protocol })) }],
      },
    } as KubeObject,
  };
}

/** What startClusterDns created (uids), so removeClusterDns deletes exactly those objects. */
interface ClusterDnsState {
  version: 1;
  service?: string;
  pod?: string;
  podIP?: string;
}

const stateFile = (dir: string): string => join(dir, "cluster-dns.json");

async function load(dir: string): Promise<ClusterDnsState | undefined> {
  try {
    return JSON.parse(await readFile(stateFile(dir), "utf8")) as ClusterDnsState;
  } catch {
    return undefined;
  }
}

interface PodView extends KubeObject {
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

/**
 * Creates the kube-dns Service and pod (the local kubelet runs dnsmasq in the pod's netns) and waits
 * until the pod is Ready; resolves to its address (what pods created from now on resolve through).
 * Idempotent: a recorded pod is waited for again. An object of that name made by someone else is
 * refused (409), never taken over.
 */
export async function startClusterDns(dir: string, kubeconfig: string, node: string, hosts: readonly OutsideHost[], cnames: readonly (readonly [string, string])[], timeoutMs = 120_000): Promise<string> {
  const kube = await KubeClient.fromKubeconfig(kubeconfig);
  try {
    const state: ClusterDnsState = (await load(dir)) ?? { version: 1 };
    const objs = clusterDnsObjects(node, hosts, cnames);
    const save = (): Promise<void> => writeFile(stateFile(dir), JSON.stringify(state, null, 2) + "\n");
    if (state.service === undefined) {
      state.service = (await kube.create<KubeObject>(resourcePath(SERVICES, CLUSTER_DNS.namespace), objs.service)).metadata.uid;
      await save();
    }
    if (state.pod === undefined) {
      state.pod = (await kube.create<KubeObject>(resourcePath(PODS, CLUSTER_DNS.namespace), objs.pod)).metadata.uid;
      await save();
    }
    const end = Date.now() + timeoutMs;
    for (;;) {
      const pod = await kube.get<PodView>(resourcePath(PODS, CLUSTER_DNS.namespace, CLUSTER_DNS_NAME));
      const ready = pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
      if (ready && pod.status?.podIP) {
        state.podIP = pod.status.podIP;
        await save();
        log.info({ pod: `${CLUSTER_DNS.namespace}/${CLUSTER_DNS_NAME}`, ip: state.podIP, node }, "cluster DNS ready");
        return state.podIP;
      }
      if (Date.now() > end) throw new Error(`the cluster DNS pod ${CLUSTER_DNS.namespace}/${CLUSTER_DNS_NAME} is not Ready after ${timeoutMs} ms (kubelet log, pods/${CLUSTER_DNS.namespace}_${CLUSTER_DNS_NAME}.log)`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    kube.close();
  }
}

/** The address of the running cluster DNS recorded in `dir`, if any. */
export async function clusterDnsAddress(dir: string): Promise<string | undefined> {
  return (await load(dir))?.podIP;
}

/**
 * Deletes the recorded Service and pod (by uid: an object re-created by someone else under the name
 * stays; the pod with grace period 0, its process and netns are the kubelet's records') and the file.
 * Without a kubeconfig (API server gone) only the file goes.
 */
export async function removeClusterDns(dir: string, kubeconfig?: string): Promise<void> {
  const state = await load(dir);
  if (!state) return;
  if (kubeconfig) {
    try {
      const kube = await KubeClient.fromKubeconfig(kubeconfig);
      try {
        for (const [resource, uid] of [
          [PODS, state.pod],
          [SERVICES, state.service],
        ] as const) {
          if (uid === undefined) continue;
          await kube
            .request("DELETE", resourcePath(resource, CLUSTER_DNS.namespace, CLUSTER_DNS_NAME), { kind: "DeleteOptions", apiVersion: "v1", gracePeriodSeconds: 0, preconditions: { uid } })
            .catch((e: unknown) => {
              if (!isNotFound(e)) throw e;
            });
        }
      } finally {
        kube.close();
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, "could not delete the cluster DNS objects (API server down?)");
    }
  }
  await rm(stateFile(dir), { force: true });
}
