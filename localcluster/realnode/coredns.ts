// The real-node cluster's DNS: CoreDNS (built from its Go module by coredns-image.sh) as the Deployment and Service
// `kube-dns` in kube-system, as kubeadm installs it, answering cluster.local from the API server's Services and
// EndpointSlices; the kubelets' clusterDNS points at the Service's fixed address.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { CommandResult } from "../cluster.ts";
import { CLUSTER_DNS } from "../kubelet.ts";
import { CLUSTER_DNS_ADDRESS, CLUSTER_DOMAIN } from "./config.ts";
const NAME = "coredns";

/**
 * CoreDNS's configuration: the cluster domain and reverse zones from the API server, pods' A records for their
 * dashed addresses (`pods insecure`, as kubeadm's), health and readiness for the probes. No `forward`: the real
 * nodes have no upstream resolver, so a name outside the cluster domain is answered SERVFAIL at once.
 */
export function corefile(): string {
  return `.:53 {
    errors
    health {
        lameduck 2s
    }
    ready
    kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loadbalance
}
`;
}

/** The objects kubeadm's CoreDNS addon makes, with this cluster's image and a single replica. */
export function coreDNSObjects(image: string): object[] {
  const ns = CLUSTER_DNS.namespace;
  const labels = { [CLUSTER_DNS.label]: CLUSTER_DNS.value };
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: NAME, namespace: ns } },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRole",
      metadata: { name: `system:${NAME}` },
      rules: [
        { apiGroups: [""], resources: ["endpoints", "services", "pods", "namespaces"], verbs: ["list", "watch"] },
        { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
      ],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: `system:${NAME}` },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: `system:${NAME}` },
      subjects: [{ kind: "ServiceAccount", name: NAME, namespace: ns }],
    },
    { apiVersion: "v1", kind: "ConfigMap", metadata: { name: NAME, namespace: ns }, data: { Corefile: corefile() } },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: NAME, namespace: ns, labels },
      spec: {
        replicas: 1,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: NAME,
            // Its own answers would loop back to itself through the Service: it resolves as the node does.
            dnsPolicy: "Default",
            terminationGracePeriodSeconds: 5,
            containers: [
              {
                name: "coredns",
                image,
                // Imported into every node's containerd, never pulled: there is no registry.
                imagePullPolicy: "Never",
                args: ["-conf", "/etc/coredns/Corefile"],
                ports: [
                  { name: "dns", containerPort: 53, protocol: "UDP" },
                  { name: "dns-tcp", containerPort: 53, protocol: "TCP" },
                ],
                livenessProbe: { httpGet: { path: "/health", port: 8080 }, periodSeconds: 10, failureThreshold: 5 },
                readinessProbe: { httpGet: { path: "/ready", port: 8181 }, periodSeconds: 1 },
                securityContext: { allowPrivilegeEscalation: false, capabilities: { add: ["NET_BIND_SERVICE"], drop: ["ALL"] }, readOnlyRootFilesystem: true },
                volumeMounts: [{ name: "config", mountPath: "/etc/coredns", readOnly: true }],
              },
            ],
            volumes: [{ name: "config", configMap: { name: NAME, items: [{ key: "Corefile", path: "Corefile" }] } }],
          },
        },
      },
    },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "kube-dns", namespace: ns, labels: { ...labels, "kubernetes.io/name": "CoreDNS" } },
      spec: {
        clusterIP: CLUSTER_DNS_ADDRESS,
        selector: labels,
        ports: [
          { name: "dns", port: 53, protocol: "UDP", targetPort: 53 },
          { name: "dns-tcp", port: 53, protocol: "TCP", targetPort: 53 },
        ],
      },
    },
  ];
}

const imageScript = fileURLToPath(new URL("./coredns-image.sh", import.meta.url));

/** Builds (or finds in the cache) the CoreDNS image; resolves with its reference and OCI archive. */
export async function buildCoreDNSImage(): Promise<{ ref: string; archive: string }> {
  const dir = await new Promise<string>((resolve, reject) => {
    execFile("bash", [imageScript], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`coredns-image.sh failed: ${stderr.trim().split("\n").slice(-10).join("\n")}`));
      else resolve(stdout.trim().split("\n").at(-1)!);
    });
  });
  const ref = /^COREDNS_IMAGE=(.+)$/m.exec(await readFile(join(dir, "coredns-image.env"), "utf8"))?.[1];
  if (!ref) throw new Error(`${dir}/coredns-image.env: COREDNS_IMAGE is required`);
  return { ref, archive: join(dir, "coredns.tar") };
}

/**
 * Applies CoreDNS's objects (the image must be imported on the nodes) and waits until the kube-dns Service has a
 * ready endpoint; throws naming the Deployment's state when it does not within timeoutMs.
 */
export async function installCoreDNS(kubectl: (args: string[], input?: string) => Promise<CommandResult>, image: string, timeoutMs = 120_000): Promise<void> {
  const applied = await kubectl(["apply", "-f", "-"], coreDNSObjects(image).map((o) => JSON.stringify(o)).join("\n"));
  if (applied.code !== 0) throw new Error(`kubectl apply of CoreDNS: ${applied.stderr.trim()}`);
  const r = await kubectl(["rollout", "status", "-n", CLUSTER_DNS.namespace, `deployment/${NAME}`, `--timeout=${Math.ceil(timeoutMs / 1000)}s`]);
  if (r.code !== 0) {
    const pods = await kubectl(["describe", "pods", "-n", CLUSTER_DNS.namespace, "-l", `${CLUSTER_DNS.label}=${CLUSTER_DNS.value}`]);
    throw new Error(`CoreDNS not ready: ${r.stderr.trim()}\n${pods.stdout.split("\n").slice(-15).join("\n")}`);
  }
}
