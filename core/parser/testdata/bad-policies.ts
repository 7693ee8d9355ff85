// Bad policies, each with the exact field errors the parser reports: the shared corpus for parser tests and `kubectl apply` tests.
import type { FieldError } from "../../model.ts";

export interface BadPolicy {
  readonly name: string;
  readonly yaml: string;
  readonly errors: readonly FieldError[];
}

const cnp = (spec: string, name = "bad"): string => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: ${name}
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      app: web
${spec}`;
const ccnp = (spec: string, name = "bad"): string => `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: ${name}
spec:
${spec}`;
const np = (spec: string, name = "bad"): string => `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: ${name}
  namespace: default
spec:
  podSelector:
    matchLabels:
      app: web
${spec}`;
const egressPorts = (ports: string, rules = ""): string => `  egress:
  - toPorts:
    - ports:
${ports}${rules}`;

export const BAD_POLICIES: readonly BadPolicy[] = [
  {
    name: "port out of range",
    yaml: cnp(egressPorts(`      - port: "70000"\n        protocol: TCP\n`)),
    errors: [{ path: "spec.egress[0].toPorts[0].ports[0].port", message: '"70000" is not a port (1-65535)' }],
  },
  {
    name: "port written as a number",
    yaml: cnp(egressPorts(`      - port: 80\n        protocol: TCP\n`)),
    errors: [
      { path: "spec.egress[0].toPorts[0].ports[0].port", message: 'must be a string: write "80" in quotes' },
    ],
  },
  {
    name: "port name with underscore",
    yaml: cnp(egressPorts(`      - port: "http_web"\n`)),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports[0].port",
        message:
          "\"http_web\" is neither a port number nor a port name: a port name may only contain letters, digits and '-'",
      },
    ],
  },
  {
    name: "port missing",
    yaml: cnp(egressPorts(`      - protocol: TCP\n`)),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports[0].port",
        message: 'a port is required (a number such as "80", a port name, or "0" for every port)',
      },
    ],
  },
  {
    name: "endPort below port",
    yaml: cnp(egressPorts(`      - port: "8080"\n        endPort: 8000\n        protocol: TCP\n`)),
    errors: [
      { path: "spec.egress[0].toPorts[0].ports[0].endPort", message: "endPort 8000 is less than port 8080" },
    ],
  },
  {
    name: "endPort with a named port",
    yaml: cnp(egressPorts(`      - port: "http"\n        endPort: 8000\n`)),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports[0].endPort",
        message: 'endPort needs a numeric port, not the port name "http"',
      },
    ],
  },
  {
    name: "endPort above 65535",
    yaml: cnp(egressPorts(`      - port: "8000"\n        endPort: 70000\n`)),
    errors: [
      { path: "spec.egress[0].toPorts[0].ports[0].endPort", message: "70000 is not a port (1-65535)" },
    ],
  },
  {
    name: "protocol in lower case",
    yaml: cnp(egressPorts(`      - port: "80"\n        protocol: tcp\n`)),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports[0].protocol",
        message: '"tcp" is not a protocol: use TCP, UDP, SCTP or ANY (write it in capitals: TCP)',
      },
    ],
  },
  {
    name: "protocol ICMP in ports",
    yaml: cnp(egressPorts(`      - port: "0"\n        protocol: ICMP\n`)),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports[0].protocol",
        message: '"ICMP" is not a protocol: use TCP, UDP, SCTP or ANY (use icmps for ICMP)',
      },
    ],
  },
  {
    name: "too many ports",
    yaml: cnp(egressPorts(Array.from({ length: 41 }, (_, i) => `      - port: "${1000 + i}"\n`).join(""))),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports",
        message: "41 ports in one port rule; the most Cilium allows is 40",
      },
    ],
  },
  {
    name: "HTTP rules on protocol ANY by default",
    yaml: cnp(egressPorts(`      - port: "80"\n`, `      rules:\n        http:\n        - method: GET\n`)),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports[0].protocol",
        message: "HTTP rules apply to TCP only: set protocol: TCP (it is ANY, Cilium's default)",
      },
    ],
  },
  {
    name: "HTTP rules on UDP",
    yaml: cnp(
      egressPorts(
        `      - port: "80"\n        protocol: UDP\n`,
        `      rules:\n        http:\n        - method: GET\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports[0].protocol",
        message: "HTTP rules apply to TCP only: set protocol: TCP (it is UDP)",
      },
    ],
  },
  {
    name: "Kafka rules (removed in Cilium 1.20)",
    yaml: cnp(
      egressPorts(
        `      - port: "9092"\n        protocol: TCP\n`,
        `      rules:\n        kafka:\n        - role: produce\n          topic: orders\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules.kafka",
        message:
          "Kafka rules are not supported by Membrane (Cilium removed them in 1.20): allow the Kafka port without L7 rules, or enforce topics in the broker's ACLs",
      },
    ],
  },
  {
    name: "listener (CiliumEnvoyConfig redirect)",
    yaml: cnp(
      egressPorts(
        `      - port: "80"\n        protocol: TCP\n`,
        `      listener:\n        envoyConfig:\n          kind: CiliumEnvoyConfig\n          name: my-envoy\n        name: my-listener\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].listener",
        message:
          "listener (a redirect to a CiliumEnvoyConfig listener) is not supported by Membrane: it runs no Envoy that a CiliumEnvoyConfig could configure; use L7 rules (rules.http) instead",
      },
    ],
  },
  {
    name: "toFQDNs entry with both matchName and matchPattern",
    yaml: cnp(`  egress:\n  - toFQDNs:\n    - matchName: example.com\n      matchPattern: "*.example.com"\n`),
    errors: [{ path: "spec.egress[0].toFQDNs[0].matchPattern", message: "set only one of matchName or matchPattern" }],
  },
  {
    name: "toCIDRSet entry with both cidr and cidrGroupRef",
    yaml: cnp(`  egress:\n  - toCIDRSet:\n    - cidr: 10.0.0.0/8\n      cidrGroupRef: office\n`),
    errors: [{ path: "spec.egress[0].toCIDRSet[0].cidrGroupRef", message: "set only one of cidr, cidrGroupRef" }],
  },
  {
    name: "L7 rules object with no rule in it",
    yaml: cnp(egressPorts(`      - port: "80"\n        protocol: TCP\n`, `      rules: {}\n`)),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules",
        message: "rules has no L7 rule: set http, dns or l7proto, or remove rules to allow the ports without L7 rules",
      },
    ],
  },
  {
    name: "a rule whose only section is an empty ingress list",
    yaml: cnp(`  ingress: []\n`),
    errors: [
      {
        path: "spec.ingress",
        message:
          "a rule needs at least one of ingress, ingressDeny, egress, egressDeny (ingress is an empty list): add a rule such as ingress: [{}] to deny all ingress",
      },
    ],
  },
  {
    name: "a rule with only enableDefaultDeny",
    yaml: ccnp(`  endpointSelector: {}\n  enableDefaultDeny:\n    egress: true\n`),
    errors: [
      {
        path: "spec",
        message:
          "a rule needs at least one of ingress, ingressDeny, egress, egressDeny: add a rule such as ingress: [{}] to deny all ingress",
      },
    ],
  },
  {
    name: "HTTP path regex does not compile",
    yaml: cnp(
      egressPorts(
        `      - port: "80"\n        protocol: TCP\n`,
        `      rules:\n        http:\n        - path: "/api/(v1"\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules.http[0].path",
        message: '"/api/(v1" is not a valid regular expression: Unterminated group',
      },
    ],
  },
  {
    name: "HTTP method regex uses lookahead",
    yaml: cnp(
      egressPorts(
        `      - port: "80"\n        protocol: TCP\n`,
        `      rules:\n        http:\n        - method: "(?!DELETE).*"\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules.http[0].method",
        message: '"(?!DELETE).*" uses a lookaround, which Cilium\'s regular expressions (RE2) do not support',
      },
    ],
  },
  {
    name: "HTTP rules on port 0",
    yaml: cnp(
      egressPorts(
        `      - port: "0"\n        protocol: TCP\n`,
        `      rules:\n        http:\n        - path: "/"\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports[0].port",
        message: 'HTTP rules cannot be used on port "0" (every port): name the port',
      },
    ],
  },
  {
    name: "L7 rules in ingressDeny",
    yaml: cnp(
      `  ingressDeny:\n  - fromEntities: ["world"]\n    toPorts:\n    - ports:\n      - port: "80"\n        protocol: TCP\n      rules:\n        http:\n        - method: GET\n`,
    ),
    errors: [
      {
        path: "spec.ingressDeny[0].toPorts[0].rules",
        message: "L7 rules are not allowed in deny rules: a deny applies to whole ports",
      },
    ],
  },
  {
    name: "toFQDNs in egressDeny",
    yaml: cnp(`  egressDeny:\n  - toFQDNs:\n    - matchName: "example.com"\n`),
    errors: [
      {
        path: "spec.egressDeny[0].toFQDNs",
        message: "toFQDNs is not allowed in egressDeny: deny by toCIDRSet or toEndpoints instead",
      },
    ],
  },
  {
    name: "DNS rules on ingress",
    yaml: cnp(
      `  ingress:\n  - toPorts:\n    - ports:\n      - port: "53"\n        protocol: UDP\n      rules:\n        dns:\n        - matchPattern: "*"\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].toPorts[0].rules.dns",
        message: "DNS rules are only allowed in egress rules (they inspect lookups the endpoint makes)",
      },
    ],
  },
  {
    name: "DNS rules without a port",
    yaml: cnp(
      `  egress:\n  - toEndpoints:\n    - matchLabels:\n        k8s-app: kube-dns\n    toPorts:\n    - rules:\n        dns:\n        - matchPattern: "*"\n`,
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports",
        message: 'DNS rules need their port listed: add { port: "53", protocol: ANY }',
      },
    ],
  },
  {
    name: "DNS rules on a port range",
    yaml: cnp(
      egressPorts(
        `      - port: "53"\n        endPort: 60\n        protocol: UDP\n`,
        `      rules:\n        dns:\n        - matchPattern: "*"\n`,
      ),
    ),
    errors: [
      { path: "spec.egress[0].toPorts[0].ports[0].endPort", message: "DNS rules do not support port ranges" },
    ],
  },
  {
    name: "DNS rule with both matchName and matchPattern",
    yaml: cnp(
      egressPorts(
        `      - port: "53"\n        protocol: ANY\n`,
        `      rules:\n        dns:\n        - matchName: "a.example.com"\n          matchPattern: "*.example.com"\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules.dns[0].matchPattern",
        message: "set only one of matchName or matchPattern",
      },
    ],
  },
  {
    name: "two kinds of L7 rules in one port rule",
    yaml: cnp(
      egressPorts(
        `      - port: "80"\n        protocol: TCP\n`,
        `      rules:\n        http:\n        - method: GET\n        l7proto: envoy.filters.network.redis_proxy\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules",
        message:
          "only one kind of L7 rule per port rule, found http and l7proto: write separate toPorts entries",
      },
    ],
  },
  {
    name: "l7 rules without l7proto",
    yaml: cnp(
      egressPorts(
        `      - port: "7000"\n        protocol: TCP\n`,
        `      rules:\n        l7:\n        - action: read\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules.l7",
        message: "l7 rules need l7proto to say which protocol parser applies them",
      },
    ],
  },
  {
    name: "terminatingTLS without a secret",
    yaml: cnp(
      egressPorts(
        `      - port: "443"\n        protocol: TCP\n`,
        `      terminatingTLS:\n        trustedCA: ca.crt\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].terminatingTLS.secret",
        message: "terminatingTLS needs a secret (name and optional namespace) holding the TLS material",
      },
    ],
  },
  {
    name: "terminatingTLS secret without a name",
    yaml: cnp(
      egressPorts(
        `      - port: "443"\n        protocol: TCP\n`,
        `      terminatingTLS:\n        secret:\n          namespace: kube-system\n`,
      ),
    ),
    errors: [
      { path: "spec.egress[0].toPorts[0].terminatingTLS.secret.name", message: "the secret needs a name" },
    ],
  },
  {
    name: "originatingTLS secret with an empty name",
    yaml: cnp(
      egressPorts(
        `      - port: "443"\n        protocol: TCP\n`,
        `      originatingTLS:\n        secret:\n          name: ""\n`,
      ),
    ),
    errors: [
      { path: "spec.egress[0].toPorts[0].originatingTLS.secret.name", message: "the secret needs a name" },
    ],
  },
  {
    name: "two toPorts of one rule with HTTP rules and different TLS on ports both allow",
    yaml: cnp(
      `  egress:
  - toPorts:
    - ports:
      - port: "443"
        protocol: TCP
      terminatingTLS:
        secret:
          name: a-tls
      rules:
        http:
        - method: GET
    - ports:
      - port: "400"
        endPort: 500
        protocol: TCP
      terminatingTLS:
        secret:
          name: b-tls
      rules:
        http:
        - method: GET
`,
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[1]",
        message:
          "its TLS (terminatingTLS, originatingTLS, serverNames) differs from spec.egress[0].toPorts[0]'s on ports both allow: a connection to such a port cannot be inspected with both; give them separate ports or the same TLS",
      },
    ],
  },
  {
    name: "serverNames with L7 rules but no terminatingTLS",
    yaml: cnp(
      egressPorts(
        `      - port: "443"\n        protocol: TCP\n`,
        `      serverNames: ["api.example.com"]\n      rules:\n        http:\n        - method: GET\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].serverNames",
        message:
          "serverNames with L7 rules need terminatingTLS: the proxy must terminate TLS to see the requests",
      },
    ],
  },
  {
    name: "toEndpoints combined with toCIDR",
    yaml: cnp(
      `  egress:\n  - toEndpoints:\n    - matchLabels:\n        app: db\n    toCIDR:\n    - 10.0.0.0/8\n`,
    ),
    errors: [
      {
        path: "spec.egress[0].toCIDR",
        message: "toEndpoints and toCIDR cannot be combined in one rule: write them as separate rules",
      },
    ],
  },
  {
    name: "toFQDNs combined with toEndpoints",
    yaml: cnp(`  egress:\n  - toEndpoints:\n    - {}\n    toFQDNs:\n    - matchName: example.com\n`),
    errors: [
      {
        path: "spec.egress[0].toFQDNs",
        message: "toEndpoints and toFQDNs cannot be combined in one rule: write them as separate rules",
      },
    ],
  },
  {
    name: "fromEndpoints combined with fromEntities",
    yaml: cnp(
      `  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: fe\n    fromEntities: ["host"]\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].fromEntities",
        message:
          "fromEndpoints and fromEntities cannot be combined in one rule: write them as separate rules",
      },
    ],
  },
  {
    name: "toServices combined with toPorts",
    yaml: cnp(
      `  egress:\n  - toServices:\n    - k8sService:\n        serviceName: db\n    toPorts:\n    - ports:\n      - port: "5432"\n        protocol: TCP\n`,
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts",
        message: "toServices cannot be combined with toPorts in one rule (Cilium does not support it)",
      },
    ],
  },
  {
    name: "icmps combined with toPorts",
    yaml: cnp(
      `  egress:\n  - icmps:\n    - fields:\n      - type: 8\n    toPorts:\n    - ports:\n      - port: "80"\n`,
    ),
    errors: [
      {
        path: "spec.egress[0].icmps",
        message: "icmps cannot be combined with toPorts in one rule: write a separate rule for ICMP",
      },
    ],
  },
  {
    name: "ICMP type that does not exist",
    yaml: cnp(`  egress:\n  - icmps:\n    - fields:\n      - type: 300\n        family: IPv4\n`),
    errors: [
      {
        path: "spec.egress[0].icmps[0].fields[0].type",
        message: "300 is not an ICMP type (0-255 or a name such as EchoRequest)",
      },
    ],
  },
  {
    name: "neither spec nor specs",
    yaml: `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: bad\n  namespace: default\nspecs: []\n`,
    errors: [{ path: "spec", message: "a CiliumNetworkPolicy needs a spec or a non-empty specs list" }],
  },
  {
    name: "endpointSelector and nodeSelector together",
    yaml: ccnp(`  endpointSelector: {}\n  nodeSelector: {}\n  ingress:\n  - fromEntities: ["cluster"]\n`),
    errors: [{ path: "spec.nodeSelector", message: "set only one of endpointSelector or nodeSelector" }],
  },
  {
    name: "neither endpointSelector nor nodeSelector",
    yaml: ccnp(`  ingress:\n  - fromEntities: ["cluster"]\n`),
    errors: [
      {
        path: "spec.endpointSelector",
        message:
          "a rule needs an endpointSelector (or, in a CiliumClusterwideNetworkPolicy, a nodeSelector) saying which endpoints it applies to",
      },
    ],
  },
  {
    name: "nodeSelector in a namespaced policy",
    yaml: `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: bad\n  namespace: default\nspec:\n  nodeSelector:\n    matchLabels:\n      role: worker\n  ingress:\n  - fromEntities: ["cluster"]\n`,
    errors: [
      {
        path: "spec.nodeSelector",
        message:
          "a CiliumNetworkPolicy cannot have a nodeSelector: host policies must be CiliumClusterwideNetworkPolicy",
      },
    ],
  },
  {
    name: "host policy with L7 rules",
    yaml: ccnp(
      `  nodeSelector:\n    matchLabels:\n      role: worker\n  ingress:\n  - toPorts:\n    - ports:\n      - port: "80"\n        protocol: TCP\n      rules:\n        http:\n        - method: GET\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].toPorts[0].rules.http",
        message: "host policies (nodeSelector) do not support L7 rules",
      },
    ],
  },
  {
    name: "endpointSelector names another namespace",
    yaml: cnp(`  ingress:\n  - {}\n`).replace(
      "      app: web\n",
      "      app: web\n      k8s:io.kubernetes.pod.namespace: other\n",
    ),
    errors: [
      {
        path: 'spec.endpointSelector.matchLabels["k8s:io.kubernetes.pod.namespace"]',
        message:
          'a CiliumNetworkPolicy applies only in its own namespace "default", not "other": remove this label or use a CiliumClusterwideNetworkPolicy',
      },
    ],
  },
  {
    name: "fromCIDR that is not a CIDR",
    yaml: cnp(`  ingress:\n  - fromCIDR:\n    - 10.0.0.300/8\n`),
    errors: [
      {
        path: "spec.ingress[0].fromCIDR[0]",
        message: '"10.0.0.300/8" is not a CIDR (expected address/prefix-length, such as 10.0.0.0/8)',
      },
    ],
  },
  {
    name: "fromCIDRSet except outside its cidr",
    yaml: cnp(`  ingress:\n  - fromCIDRSet:\n    - cidr: 10.0.0.0/16\n      except:\n      - 10.1.0.0/24\n`),
    errors: [
      {
        path: "spec.ingress[0].fromCIDRSet[0].except[0]",
        message: 'except "10.1.0.0/24" is not inside cidr "10.0.0.0/16"',
      },
    ],
  },
  {
    name: "toCIDRSet cidr without prefix length",
    yaml: cnp(`  egress:\n  - toCIDRSet:\n    - cidr: 192.168.1.1\n`),
    errors: [
      {
        path: "spec.egress[0].toCIDRSet[0].cidr",
        message: '"192.168.1.1" is not a CIDR: the prefix length is missing (such as 192.168.1.1/32)',
      },
    ],
  },
  {
    name: "except of another address family",
    yaml: cnp(`  egress:\n  - toCIDRSet:\n    - cidr: 10.0.0.0/8\n      except:\n      - "2001:db8::/64"\n`),
    errors: [
      {
        path: "spec.egress[0].toCIDRSet[0].except[0]",
        message: 'except "2001:db8::/64" is IPv6 but cidr "10.0.0.0/8" is IPv4',
      },
    ],
  },
  {
    name: "cidrGroupRef with an except that is not a CIDR",
    yaml: cnp(
      `  ingress:\n  - fromCIDRSet:\n    - cidrGroupRef: office\n      except:\n      - 10.0.0.0\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].fromCIDRSet[0].except[0]",
        message: '"10.0.0.0" is not a CIDR: the prefix length is missing (such as 10.0.0.0/32)',
      },
    ],
  },
  {
    name: "matchExpressions entry without a key",
    yaml: cnp(`  ingress:\n  - fromEndpoints:\n    - matchExpressions:\n      - operator: Exists\n`),
    errors: [
      { path: "spec.ingress[0].fromEndpoints[0].matchExpressions[0].key", message: "a key is required" },
    ],
  },
  {
    name: "HTTP host regex does not compile",
    yaml: cnp(
      egressPorts(
        `      - port: "80"\n        protocol: TCP\n`,
        `      rules:\n        http:\n        - host: "*.example.com"\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules.http[0].host",
        message: '"*.example.com" is not a valid regular expression: Nothing to repeat',
      },
    ],
  },
  {
    name: "HTTP path regex uses a backreference",
    yaml: cnp(
      egressPorts(
        `      - port: "80"\n        protocol: TCP\n`,
        `      rules:\n        http:\n        - path: "/(a)\\\\1"\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules.http[0].path",
        message: '"/(a)\\\\1" uses a backreference, which Cilium\'s regular expressions (RE2) do not support',
      },
    ],
  },
  {
    name: "HTTP rules with protocol ANY written out",
    yaml: cnp(
      `  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: fe\n    toPorts:\n    - ports:\n      - port: "8080"\n        protocol: ANY\n      rules:\n        http:\n        - path: "/api/.*"\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].toPorts[0].ports[0].protocol",
        message: "HTTP rules apply to TCP only: set protocol: TCP (it is ANY)",
      },
    ],
  },
  {
    name: "endPort after port 0",
    yaml: cnp(egressPorts(`      - port: "0"\n        endPort: 100\n        protocol: TCP\n`)),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports[0].endPort",
        message: 'endPort needs a start port other than "0" (port "0" already means every port)',
      },
    ],
  },
  {
    name: "cidr except larger than the cidr",
    yaml: cnp(`  ingress:\n  - fromCIDRSet:\n    - cidr: 10.0.0.0/16\n      except:\n      - 10.0.0.0/8\n`),
    errors: [
      {
        path: "spec.ingress[0].fromCIDRSet[0].except[0]",
        message: 'except "10.0.0.0/8" is not inside cidr "10.0.0.0/16"',
      },
    ],
  },
  {
    name: "except outside its cidr in egressDeny",
    yaml: cnp(
      `  egressDeny:\n  - toCIDRSet:\n    - cidr: 192.168.0.0/16\n      except:\n      - 192.169.0.0/24\n`,
    ),
    errors: [
      {
        path: "spec.egressDeny[0].toCIDRSet[0].except[0]",
        message: 'except "192.169.0.0/24" is not inside cidr "192.168.0.0/16"',
      },
    ],
  },
  {
    name: "toRequires In without values",
    yaml: cnp(
      `  egress:\n  - toRequires:\n    - matchExpressions:\n      - key: env\n        operator: NotIn\n`,
    ),
    errors: [
      {
        path: "spec.egress[0].toRequires[0].matchExpressions[0].values",
        message: "operator NotIn needs at least one value",
      },
    ],
  },
  {
    name: "endpointSelector DoesNotExist with values",
    yaml: cnp(`  ingress:\n  - {}\n`).replace(
      "    matchLabels:\n      app: web\n",
      "    matchExpressions:\n    - key: app\n      operator: DoesNotExist\n      values: [web]\n",
    ),
    errors: [
      {
        path: "spec.endpointSelector.matchExpressions[0].values",
        message: "operator DoesNotExist takes no values",
      },
    ],
  },
  {
    name: "label key with two slashes",
    yaml: cnp(`  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        example.com/team/app: fe\n`),
    errors: [
      {
        path: 'spec.ingress[0].fromEndpoints[0].matchLabels["example.com/team/app"]',
        message: "\"example.com/team/app\" is not a label key: at most one '/'",
      },
    ],
  },
  {
    name: "DNS rule pattern with ** not first",
    yaml: cnp(
      egressPorts(
        `      - port: "53"\n        protocol: ANY\n`,
        `      rules:\n        dns:\n        - matchPattern: "api.**.example.com"\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules.dns[0].matchPattern",
        message:
          '"api.**.example.com" is not a DNS pattern: \'**\' is only allowed as the whole first label, as in "**.example.com"',
      },
    ],
  },
  {
    name: "DNS rule name with a leading dot",
    yaml: cnp(
      egressPorts(
        `      - port: "53"\n        protocol: ANY\n`,
        `      rules:\n        dns:\n        - matchName: ".example.com"\n`,
      ),
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].rules.dns[0].matchName",
        message:
          '".example.com" is not a DNS name: it has an empty label (two dots in a row or a leading dot)',
      },
    ],
  },
  {
    name: "empty server name",
    yaml: cnp(egressPorts(`      - port: "443"\n        protocol: TCP\n`, `      serverNames: [""]\n`)),
    errors: [
      { path: "spec.egress[0].toPorts[0].serverNames[0]", message: "a server name must not be empty" },
    ],
  },
  {
    name: "empty toFQDNs list",
    yaml: cnp(`  egress:\n  - toFQDNs: []\n`),
    errors: [
      {
        path: "spec.egress[0].toFQDNs",
        message:
          "an empty list selects nothing; list names such as {matchName: example.com}, or remove the field",
      },
    ],
  },
  {
    name: "empty toPorts list next to toEndpoints",
    yaml: cnp(`  egress:\n  - toEndpoints:\n    - matchLabels:\n        app: db\n    toPorts: []\n`),
    errors: [
      {
        path: "spec.egress[0].toPorts",
        message:
          'an empty list is read as "not set", so this rule would allow every port; list rules such as {ports: [{port: "443", protocol: TCP}]}, or remove the field if every port is meant',
      },
    ],
  },
  {
    name: "empty ports list in a port rule",
    yaml: cnp(`  ingress:\n  - fromEndpoints:\n    - {}\n    toPorts:\n    - ports: []\n`),
    errors: [
      {
        path: "spec.ingress[0].toPorts[0].ports",
        message:
          'an empty list selects no port; list ports such as {port: "443", protocol: TCP}, or use port "0" for every port',
      },
    ],
  },
  {
    name: "empty ports list in a port rule with DNS rules",
    yaml: cnp(
      `  egress:\n  - toEndpoints:\n    - {}\n    toPorts:\n    - ports: []\n      rules:\n        dns:\n        - matchPattern: "*"\n`,
    ),
    errors: [
      {
        path: "spec.egress[0].toPorts[0].ports",
        message: 'an empty list selects no port; list ports such as {port: "53", protocol: ANY}',
      },
    ],
  },
  {
    name: "empty fields list in an ICMP rule",
    yaml: cnp(`  ingress:\n  - fromEntities:\n    - cluster\n    icmps:\n    - fields: []\n`),
    errors: [
      {
        path: "spec.ingress[0].icmps[0].fields",
        message:
          "an empty list selects no ICMP type; list fields such as {family: IPv4, type: EchoRequest}, or remove this ICMP rule",
      },
    ],
  },
  {
    name: "DNS rules in the second port rule of an ingress rule",
    yaml: cnp(
      `  ingress:\n  - toPorts:\n    - ports:\n      - port: "80"\n        protocol: TCP\n      rules:\n        http:\n        - method: GET\n    - ports:\n      - port: "53"\n        protocol: UDP\n      rules:\n        dns:\n        - matchName: example.com\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].toPorts[1].rules.dns",
        message: "DNS rules are only allowed in egress rules (they inspect lookups the endpoint makes)",
      },
    ],
  },
  {
    name: "unknown entity",
    yaml: cnp(`  egress:\n  - toEntities: ["internet"]\n`),
    errors: [
      {
        path: "spec.egress[0].toEntities[0]",
        message:
          '"internet" is not an entity (all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, health, init, ingress, unmanaged, none)',
      },
    ],
  },
  {
    name: "toFQDNs matchName with a double dot",
    yaml: cnp(`  egress:\n  - toFQDNs:\n    - matchName: "api..example.com"\n`),
    errors: [
      {
        path: "spec.egress[0].toFQDNs[0].matchName",
        message:
          '"api..example.com" is not a DNS name: it has an empty label (two dots in a row or a leading dot)',
      },
    ],
  },
  {
    name: "toFQDNs matchName with a wildcard",
    yaml: cnp(`  egress:\n  - toFQDNs:\n    - matchName: "*.example.com"\n`),
    errors: [
      {
        path: "spec.egress[0].toFQDNs[0].matchName",
        message: "\"*.example.com\" is not a DNS name: '*' wildcards belong in matchPattern",
      },
    ],
  },
  {
    name: "toFQDNs matchPattern with ** not first",
    yaml: cnp(`  egress:\n  - toFQDNs:\n    - matchPattern: "api.**.example.com"\n`),
    errors: [
      {
        path: "spec.egress[0].toFQDNs[0].matchPattern",
        message:
          '"api.**.example.com" is not a DNS pattern: \'**\' is only allowed as the whole first label, as in "**.example.com"',
      },
    ],
  },
  {
    name: "toFQDNs matchPattern with a slash",
    yaml: cnp(`  egress:\n  - toFQDNs:\n    - matchPattern: "example.com/*"\n`),
    errors: [
      {
        path: "spec.egress[0].toFQDNs[0].matchPattern",
        message:
          "\"example.com/*\" is not a DNS pattern: only letters, digits, '-', '_', '.' and '*' are allowed",
      },
    ],
  },
  {
    name: "toServices with both k8sService and k8sServiceSelector",
    yaml: cnp(
      `  egress:\n  - toServices:\n    - k8sService:\n        serviceName: db\n      k8sServiceSelector:\n        selector:\n          matchLabels:\n            app: db\n`,
    ),
    errors: [
      {
        path: "spec.egress[0].toServices[0].k8sServiceSelector",
        message: "set only one of k8sService or k8sServiceSelector",
      },
    ],
  },
  {
    name: "selector In without values",
    yaml: cnp(
      `  ingress:\n  - fromEndpoints:\n    - matchExpressions:\n      - key: app\n        operator: In\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values",
        message: "operator In needs at least one value",
      },
    ],
  },
  {
    name: "selector Exists with values",
    yaml: cnp(
      `  ingress:\n  - fromEndpoints:\n    - matchExpressions:\n      - key: app\n        operator: Exists\n        values: ["fe"]\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values",
        message: "operator Exists takes no values",
      },
    ],
  },
  {
    name: "selector with an unknown operator",
    yaml: cnp(
      `  ingress:\n  - fromEndpoints:\n    - matchExpressions:\n      - key: app\n        operator: Equals\n        values: ["fe"]\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator",
        message: '"Equals" is not an operator (In, NotIn, Exists or DoesNotExist)',
      },
    ],
  },
  {
    name: "label key with a space",
    yaml: cnp(`  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        "my app": fe\n`),
    errors: [
      {
        path: 'spec.ingress[0].fromEndpoints[0].matchLabels["my app"]',
        message:
          "\"my app\" is not a label key: the name must consist of letters, digits, '-', '_' or '.', and start and end with a letter or digit",
      },
    ],
  },
  {
    name: "label value too long",
    yaml: cnp(`  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: ${"x".repeat(64)}\n`),
    errors: [
      {
        path: 'spec.ingress[0].fromEndpoints[0].matchLabels["app"]',
        message:
          'label value "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" must be at most 63 characters',
      },
    ],
  },
  {
    name: "label value that is a number",
    yaml: cnp(`  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        version: 2\n`),
    errors: [
      {
        path: 'spec.ingress[0].fromEndpoints[0].matchLabels["version"]',
        message: 'label value must be a string, not a number (quote it: "2")',
      },
    ],
  },
  {
    name: "misspelt field",
    yaml: cnp(`  ingress:\n  - fromEndpoint:\n    - matchLabels:\n        app: fe\n`),
    errors: [{ path: "spec.ingress[0].fromEndpoint", message: 'unknown field "fromEndpoint"' }],
  },
  {
    name: "enableDefaultDeny that is not a boolean",
    yaml: cnp(`  enableDefaultDeny:\n    ingress: "no"\n  ingress:\n  - {}\n`),
    errors: [{ path: "spec.enableDefaultDeny.ingress", message: 'must be true or false, not "no"' }],
  },
  {
    name: "mutual authentication, which Membrane does not support",
    yaml: cnp(`  ingress:\n  - fromEndpoints:\n    - {}\n    authentication:\n      mode: required\n`),
    errors: [
      {
        path: "spec.ingress[0].authentication.mode",
        message:
          'mutual authentication (mode "required") is not supported by Membrane: remove authentication or set mode: disabled',
      },
    ],
  },
  {
    name: "fromNodes with a selector that is not one",
    yaml: cnp(`  ingress:\n  - fromNodes:\n    - matchLabels: [zone-a]\n`),
    errors: [{ path: "spec.ingress[0].fromNodes[0].matchLabels", message: "must be a map of label keys to values, not a list" }],
  },
  {
    name: "fromNodes with an operator that does not exist",
    yaml: cnp(`  ingress:\n  - fromNodes:\n    - matchExpressions:\n      - {key: zone, operator: Near, values: [a]}\n`),
    errors: [{ path: "spec.ingress[0].fromNodes[0].matchExpressions[0].operator", message: '"Near" is not an operator (In, NotIn, Exists or DoesNotExist)' }],
  },
  {
    name: "toNodes and toEntities in one rule",
    yaml: cnp(`  egress:\n  - toEntities: [remote-node]\n    toNodes:\n    - matchLabels: {zone: a}\n`),
    errors: [{ path: "spec.egress[0].toNodes", message: "toEntities and toNodes cannot be combined in one rule: write them as separate rules" }],
  },
  {
    name: "authentication mode that does not exist",
    yaml: cnp(`  ingress:\n  - fromEndpoints:\n    - {}\n    authentication:\n      mode: always\n`),
    errors: [
      {
        path: "spec.ingress[0].authentication.mode",
        message: '"always" is not an authentication mode (disabled, required or test-always-fail)',
      },
    ],
  },
  {
    name: "wrong apiVersion for the kind",
    yaml: `apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy\nmetadata:\n  name: bad\n  namespace: default\nspec:\n  endpointSelector: {}\n  ingress:\n  - {}\n`,
    errors: [
      {
        path: "apiVersion",
        message: '"cilium.io/v1" is not the apiVersion of CiliumNetworkPolicy (cilium.io/v2)',
      },
    ],
  },
  {
    name: "metadata without a name",
    yaml: `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  namespace: default\nspec:\n  endpointSelector: {}\n  ingress:\n  - {}\n`,
    errors: [{ path: "metadata.name", message: "a name is required" }],
  },
  {
    name: "error inside the second of specs",
    yaml: `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: bad\n  namespace: default\nspecs:\n- endpointSelector: {}\n  ingress:\n  - {}\n- endpointSelector: {}\n  egress:\n  - toPorts:\n    - ports:\n      - port: "99999"\n`,
    errors: [
      { path: "specs[1].egress[0].toPorts[0].ports[0].port", message: '"99999" is not a port (1-65535)' },
    ],
  },
  {
    name: "several errors reported at once",
    yaml: cnp(
      `  ingress:\n  - fromEntities: ["everyone"]\n  egress:\n  - toPorts:\n    - ports:\n      - port: "70000"\n        protocol: tcp\n`,
    ),
    errors: [
      {
        path: "spec.ingress[0].fromEntities[0]",
        message:
          '"everyone" is not an entity (all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, health, init, ingress, unmanaged, none)',
      },
      { path: "spec.egress[0].toPorts[0].ports[0].port", message: '"70000" is not a port (1-65535)' },
      {
        path: "spec.egress[0].toPorts[0].ports[0].protocol",
        message: '"tcp" is not a protocol: use TCP, UDP, SCTP or ANY (write it in capitals: TCP)',
      },
    ],
  },
  {
    name: "NetworkPolicy port out of range",
    yaml: np(`  ingress:\n  - ports:\n    - port: 70000\n`),
    errors: [{ path: "spec.ingress[0].ports[0].port", message: "70000 is not a port (1-65535)" }],
  },
  {
    name: "NetworkPolicy endPort below port",
    yaml: np(`  egress:\n  - ports:\n    - port: 32000\n      endPort: 31000\n`),
    errors: [{ path: "spec.egress[0].ports[0].endPort", message: "endPort 31000 is less than port 32000" }],
  },
  {
    name: "NetworkPolicy endPort with a named port",
    yaml: np(`  ingress:\n  - ports:\n    - port: http\n      endPort: 8080\n`),
    errors: [
      {
        path: "spec.ingress[0].ports[0].endPort",
        message: 'endPort needs a numeric port, not the port name "http"',
      },
    ],
  },
  {
    name: "NetworkPolicy port number in quotes",
    yaml: np(`  ingress:\n  - ports:\n    - port: "80"\n`),
    errors: [
      {
        path: "spec.ingress[0].ports[0].port",
        message:
          '"80" is a port number written as a string: write it without quotes (a string is a port name)',
      },
    ],
  },
  {
    name: "NetworkPolicy protocol ANY",
    yaml: np(`  ingress:\n  - ports:\n    - port: 80\n      protocol: ANY\n`),
    errors: [
      { path: "spec.ingress[0].ports[0].protocol", message: '"ANY" is not a protocol: use TCP, UDP or SCTP' },
    ],
  },
  {
    name: "NetworkPolicy ipBlock except outside its cidr",
    yaml: np(
      `  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/16\n        except:\n        - 192.168.0.0/24\n`,
    ),
    errors: [
      {
        path: "spec.egress[0].to[0].ipBlock.except[0]",
        message: 'except "192.168.0.0/24" is not inside cidr "10.0.0.0/16"',
      },
    ],
  },
  {
    name: "NetworkPolicy ipBlock with podSelector in one peer",
    yaml: np(`  ingress:\n  - from:\n    - ipBlock:\n        cidr: 10.0.0.0/8\n      podSelector: {}\n`),
    errors: [
      {
        path: "spec.ingress[0].from[0]",
        message:
          "ipBlock cannot be combined with podSelector or namespaceSelector in one peer: write them as separate peers",
      },
    ],
  },
  {
    name: "NetworkPolicy ipBlock except equal to its cidr",
    yaml: np(
      `  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/16\n        except:\n        - 10.0.0.0/16\n`,
    ),
    errors: [
      {
        path: "spec.egress[0].to[0].ipBlock.except[0]",
        message: 'except "10.0.0.0/16" must be smaller than cidr "10.0.0.0/16" (it would exclude all of it)',
      },
    ],
  },
  {
    name: "NetworkPolicy empty peer",
    yaml: np(`  ingress:\n  - from:\n    - {}\n`),
    errors: [
      {
        path: "spec.ingress[0].from[0]",
        message: "a peer needs a podSelector, a namespaceSelector or an ipBlock",
      },
    ],
  },
  {
    name: "NetworkPolicy unknown policyType",
    yaml: np(`  policyTypes: ["Ingress", "Outgress"]\n`),
    errors: [{ path: "spec.policyTypes[1]", message: '"Outgress" is not a policy type (Ingress or Egress)' }],
  },
  {
    name: "NetworkPolicy selector with a Cilium source prefix",
    yaml: np(`  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          k8s:app: fe\n`),
    errors: [
      {
        path: 'spec.ingress[0].from[0].podSelector.matchLabels["k8s:app"]',
        message: '"k8s:app" is not a label key: NetworkPolicy selectors take plain Kubernetes label keys',
      },
    ],
  },
];
