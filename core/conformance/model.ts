// The Kubernetes NetworkPolicy conformance model (namespaces x/y/z, pods a/b/c) with cases and expected reachability.
import { canonicalPrefix } from "../cidr.ts";

/** Namespaces and pods as the upstream netpol e2e tests build them. */
export const NAMESPACES = ["x", "y", "z"] as const;
export const POD_NAMES = ["a", "b", "c"] as const;
export type Namespace = (typeof NAMESPACES)[number];

export interface ContainerPort {
  readonly name: string;
  readonly port: number;
  readonly protocol: "TCP" | "UDP";
}

export interface ModelPod {
  /** "x/a" */
  readonly id: string;
  readonly namespace: Namespace;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly ports: readonly ContainerPort[];
}

/** Every pod serves TCP and UDP on 80 and 81, with upstream's port names. */
export const CONTAINER_PORTS: readonly ContainerPort[] = [
  { name: "serve-80-tcp", port: 80, protocol: "TCP" },
  { name: "serve-80-udp", port: 80, protocol: "UDP" },
  { name: "serve-81-tcp", port: 81, protocol: "TCP" },
  { name: "serve-81-udp", port: 81, protocol: "UDP" },
];

export function namespaceLabels(ns: Namespace): Record<string, string> {
  return { ns, "kubernetes.io/metadata.name": ns };
}

/** Row and column order of every table: x/a x/b x/c y/a y/b y/c z/a z/b z/c. */
export const PODS: readonly ModelPod[] = NAMESPACES.flatMap((namespace) =>
  POD_NAMES.map((name) => ({
    id: `${namespace}/${name}`,
    namespace,
    name,
    labels: { pod: name },
    ports: CONTAINER_PORTS,
  })),
);

/**
 * Expected reachability for one probe: 9 rows (from) of 9 characters (to), in PODS order.
 * '.' = connected, 'X' = blocked, '-' = the pod to itself (not checked: a real datapath delivers a
 * pod's traffic to its own address over loopback, outside policy).
 */
export interface Probe {
  readonly protocol: "TCP" | "UDP";
  readonly port: number;
  readonly table: readonly string[];
}

/** A probe from a pod to an address outside the cluster (ipBlock cases). */
export interface ExternalProbe {
  readonly from: string;
  readonly ip: string;
  readonly protocol: "TCP" | "UDP";
  readonly port: number;
  readonly connected: boolean;
}

export interface ConformanceCase {
  readonly name: string;
  /**
   * One or more NetworkPolicy documents, separated by `---`. `{{ns/pod}}` stands for that pod's
   * address, `{{ns/pod/N}}` for the /N prefix holding it (upstream's ipBlock cases are written from
   * pod IPs): render them with renderCase().
   */
  readonly yaml: string;
  readonly probes: readonly Probe[];
  readonly external?: readonly ExternalProbe[];
}

const POD_ADDRESS = /\{\{([a-z]\/[a-z])(?:\/(\d+))?\}\}/g;

/**
 * The case's YAML with every `{{ns/pod}}` replaced by that pod's address and every `{{ns/pod/N}}`
 * by the /N prefix that holds it, written as the API server wants it (no host bits); an unknown pod
 * is an error naming it.
 */
export function renderCase(c: ConformanceCase, addressOf: (podId: string) => string | undefined): string {
  return c.yaml.replace(POD_ADDRESS, (_m, id: string, bits: string | undefined) => {
    const ip = addressOf(id);
    if (ip === undefined) throw new Error(`${c.name}: no address for pod ${id}`);
    if (bits === undefined) return ip;
    const p = canonicalPrefix(`${ip}/${bits}`);
    if (p === undefined) throw new Error(`${c.name}: ${ip}/${bits} is not a prefix`);
    return p;
  });
}

const ALL_OPEN = [
  "-........",
  ".-.......",
  "..-......",
  "...-.....",
  "....-....",
  ".....-...",
  "......-..",
  ".......-.",
  "........-",
];

/** x/a accepts nothing on this probe (column x/a blocked). */
const INTO_XA_BLOCKED = [
  "-........",
  "X-.......",
  "X.-......",
  "X..-.....",
  "X...-....",
  "X....-...",
  "X.....-..",
  "X......-.",
  "X.......-",
];

export const CASES: readonly ConformanceCase[] = [
  {
    name: "default-deny ingress in namespace x",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`,
    probes: [
      {
        protocol: "TCP",
        port: 80,
        table: [
          "-XX......",
          "X-X......",
          "XX-......",
          "XXX-.....",
          "XXX.-....",
          "XXX..-...",
          "XXX...-..",
          "XXX....-.",
          "XXX.....-",
        ],
      },
    ],
  },
  {
    name: "default-deny egress in namespace x",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
`,
    probes: [
      {
        protocol: "UDP",
        port: 81,
        table: [
          "-XXXXXXXX",
          "X-XXXXXXX",
          "XX-XXXXXX",
          "...-.....",
          "....-....",
          ".....-...",
          "......-..",
          ".......-.",
          "........-",
        ],
      },
    ],
  },
  {
    name: "allow ingress from the same namespace",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-same-ns, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
`,
    probes: [
      {
        protocol: "TCP",
        port: 81,
        table: [
          "-........",
          ".-.......",
          "..-......",
          "XXX-.....",
          "XXX.-....",
          "XXX..-...",
          "XXX...-..",
          "XXX....-.",
          "XXX.....-",
        ],
      },
    ],
  },
  {
    name: "namespaceSelector: x/a accepts namespace y",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "y"}}
`,
    probes: [
      {
        protocol: "TCP",
        port: 80,
        table: [
          "-........",
          "X-.......",
          "X.-......",
          "...-.....",
          "....-....",
          ".....-...",
          "X.....-..",
          "X......-.",
          "X.......-",
        ],
      },
    ],
  },
  {
    name: "podSelector and namespaceSelector in one peer: only y/b reaches x/a",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-y-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "y"}}
      podSelector: {matchLabels: {pod: b}}
`,
    probes: [
      {
        protocol: "TCP",
        port: 80,
        table: [
          "-........",
          "X-.......",
          "X.-......",
          "X..-.....",
          "....-....",
          "X....-...",
          "X.....-..",
          "X......-.",
          "X.......-",
        ],
      },
    ],
  },
  {
    name: "podSelector and namespaceSelector as two peers: namespace y or x/b reach x/a",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-y-or-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "y"}}
    - podSelector: {matchLabels: {pod: b}}
`,
    probes: [
      {
        protocol: "TCP",
        port: 80,
        table: [
          "-........",
          ".-.......",
          "X.-......",
          "...-.....",
          "....-....",
          ".....-...",
          "X.....-..",
          "X......-.",
          "X.......-",
        ],
      },
    ],
  },
  {
    name: "ipBlock with except: x/a may only reach 198.51.100.0/24 outside 198.51.100.128/25 (no pod is inside that block)",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-ipblock, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.128/25]}
`,
    probes: [
      {
        protocol: "TCP",
        port: 80,
        table: [
          "-XXXXXXXX",
          ".-.......",
          "..-......",
          "...-.....",
          "....-....",
          ".....-...",
          "......-..",
          ".......-.",
          "........-",
        ],
      },
    ],
    external: [
      { from: "x/a", ip: "198.51.100.10", protocol: "TCP", port: 80, connected: true },
      { from: "x/a", ip: "198.51.100.200", protocol: "TCP", port: 80, connected: false },
      { from: "x/a", ip: "203.0.113.5", protocol: "TCP", port: 80, connected: false },
      { from: "x/b", ip: "203.0.113.5", protocol: "TCP", port: 80, connected: true },
    ],
  },
  {
    name: "port range with endPort: x/a accepts TCP 81-90 only",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-81-90, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {}
    ports:
    - {protocol: TCP, port: 81, endPort: 90}
`,
    probes: [
      { protocol: "TCP", port: 80, table: INTO_XA_BLOCKED },
      { protocol: "TCP", port: 81, table: ALL_OPEN },
    ],
  },
  {
    name: "named port: x/a accepts serve-81-tcp only",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-named-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {}
    ports:
    - {protocol: TCP, port: serve-81-tcp}
`,
    probes: [
      { protocol: "TCP", port: 80, table: INTO_XA_BLOCKED },
      { protocol: "TCP", port: 81, table: ALL_OPEN },
      { protocol: "UDP", port: 81, table: INTO_XA_BLOCKED },
    ],
  },
  {
    name: "policyTypes Egress only: x/a may reach x/b on TCP 80; its ingress rules are ignored",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-only, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: c}}
  egress:
  - to:
    - podSelector: {matchLabels: {pod: b}}
    ports:
    - {protocol: TCP, port: 80}
`,
    probes: [
      {
        protocol: "TCP",
        port: 80,
        table: [
          "-.XXXXXXX",
          ".-.......",
          "..-......",
          "...-.....",
          "....-....",
          ".....-...",
          "......-..",
          ".......-.",
          "........-",
        ],
      },
      {
        protocol: "TCP",
        port: 81,
        table: [
          "-XXXXXXXX",
          ".-.......",
          "..-......",
          "...-.....",
          "....-....",
          ".....-...",
          "......-..",
          ".......-.",
          "........-",
        ],
      },
    ],
  },
  {
    name: "multiple policies are unioned: x/a accepts x/b and y/c",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-x-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-y-c, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "y"}}
      podSelector: {matchLabels: {pod: c}}
`,
    probes: [
      {
        protocol: "UDP",
        port: 80,
        table: [
          "-........",
          ".-.......",
          "X.-......",
          "X..-.....",
          "X...-....",
          ".....-...",
          "X.....-..",
          "X......-.",
          "X.......-",
        ],
      },
    ],
  },
  {
    name: "protocol matters: x/a accepts TCP 80 from everywhere, not UDP 80",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-tcp-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {}
    ports:
    - {protocol: TCP, port: 80}
`,
    probes: [
      { protocol: "TCP", port: 80, table: ALL_OPEN },
      { protocol: "UDP", port: 80, table: INTO_XA_BLOCKED },
    ],
  },
  // ipBlock peers match pods by address, whatever their identity (Kubernetes' meaning; upstream's
  // "should enforce except clause while egress access to server in CIDR block" and siblings).
  // The /8 of a pod address covers every pod of the cluster (upstream writes a pod address with /4;
  // the API server now refuses host bits, so the prefix is written masked).
  {
    name: "ingress ipBlock covering the pod network, one pod's /32 in except: only y/b is denied into namespace x",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ingress-ipblock-except-pod, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from:
    - ipBlock: {cidr: "{{x/a/8}}", except: ["{{y/b}}/32"]}
`,
    probes: [
      {
        protocol: "TCP",
        port: 80,
        table: [
          "-........",
          ".-.......",
          "..-......",
          "...-.....",
          "XXX.-....",
          ".....-...",
          "......-..",
          ".......-.",
          "........-",
        ],
      },
    ],
  },
  {
    name: "egress ipBlock to the pod network except x/b's /32: x/a reaches every pod but x/b",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-ipblock-except-pod, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: "{{x/a/8}}", except: ["{{x/b}}/32"]}
`,
    probes: [
      {
        protocol: "TCP",
        port: 80,
        table: [
          "-X.......",
          ".-.......",
          "..-......",
          "...-.....",
          "....-....",
          ".....-...",
          "......-..",
          ".......-.",
          "........-",
        ],
      },
    ],
  },
  {
    name: "an address in one ipBlock's except and in another ipBlock is allowed: x/a reaches x/b again",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-ipblock-except-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: "{{x/a/8}}", except: ["{{x/b}}/32"]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-ipblock-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: "{{x/b}}/32"}
`,
    probes: [{ protocol: "TCP", port: 80, table: ALL_OPEN }],
  },
  {
    name: "egress ipBlock of one pod's /32 on UDP 81: x/a reaches only y/c",
    yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-ipblock-one-pod, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: "{{y/c}}/32"}
    ports:
    - {protocol: UDP, port: 81}
`,
    probes: [
      {
        protocol: "UDP",
        port: 81,
        table: [
          "-XXXX.XXX",
          ".-.......",
          "..-......",
          "...-.....",
          "....-....",
          ".....-...",
          "......-..",
          ".......-.",
          "........-",
        ],
      },
      { protocol: "TCP", port: 81, table: ["-XXXXXXXX", ...ALL_OPEN.slice(1)] },
    ],
  },
];
