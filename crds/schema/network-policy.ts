// Schema of CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (cilium.io/v2): the rule language
// shared by both kinds, their status, and the two CRDs. Field names and nesting follow Cilium's API.
import { ENTITIES } from "../../core/entities.ts";
import { EXTENDED_PROTOCOL_NAMES } from "../../core/model.ts";
import { ICMP_TYPES } from "../../core/icmp.ts";
import {
  AGE_COLUMN,
  type JSONSchemaProps,
  type PrinterColumn,
  DNS1123_SUBDOMAIN,
  arr,
  bool,
  conditions,
  defineCRD,
  int,
  labelSelector,
  map,
  obj,
  atLeastOneOf,
  atMostOneOf,
  secretRef,
  str,
  timestamp,
} from "./common.ts";

type Side = "from" | "to";

/** Entities: classes of peers that have no labels of their own; the list is core's (core/entities.ts). */
export { ENTITIES };

// The extended IP protocols pass the schema, as in Cilium's CRD; the webhook refuses them unless
// --enable-extended-ip-protocols is set, with a message naming the flag (a schema enum could not).
export const PROTOCOLS = ["TCP", "UDP", "SCTP", "ANY", ...EXTENDED_PROTOCOL_NAMES] as const;

/**
 * A port: a decimal number 0-65535 (no leading zeros; 0 means every port) or an IANA service name
 * (RFC 6335: letters, digits and single inner hyphens, at least one letter, at most 15 characters) that
 * names a container port. RE2 has no look-ahead, so "at least one letter" is spelled out.
 */
export const PORT_PATTERN =
  "^(0|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]|" +
  "([0-9]+-)*[0-9]*[a-zA-Z][a-zA-Z0-9]*(-[a-zA-Z0-9]+)*)$";

/** ICMP message types by name, as Cilium accepts them (IPv4 and IPv6 names together; core/icmp.ts). */
const ICMP_TYPE_NAMES = [...new Set([...ICMP_TYPES.IPv4, ...ICMP_TYPES.IPv6])];

const DNS_NAME_PATTERN = "^([-a-zA-Z0-9_]+[.]?)+$";
const DNS_WILDCARD_PATTERN = "^([-a-zA-Z0-9_*]+[.]?)+$";

function towards(side: Side): string {
  return side === "from" ? "from which the selected endpoints accept traffic" : "to which they may connect";
}

function cidr(description: string): JSONSchemaProps {
  return str(description, { format: "cidr" });
}

/**
 * Exactly one of cidr, cidrGroupRef, cidrGroupSelector. Not a schema rule: CEL rules this deep in
 * lists cost more than the API server's CRD budget allows (measured: 1.36x over even with pairwise
 * rules), and a oneOf answers without naming the fields. The webhook answers instead, with a
 * sentence and the field path (core/parser). The same holds for dnsMatch, l7Rules and services.
 */
function cidrRule(side: Side): JSONSchemaProps {
  return obj(`An IP block ${towards(side)}, given inline or by reference, minus optional sub-blocks.`, {
    cidr: cidr('The block in CIDR notation, e.g. "10.0.0.0/8" or "2001:db8::/32".'),
    cidrGroupRef: str("Name of a CiliumCIDRGroup whose blocks stand in for `cidr`.", {
      maxLength: 253,
      pattern: DNS1123_SUBDOMAIN,
    }),
    cidrGroupSelector: labelSelector("Selects CiliumCIDRGroups by their labels instead of by name."),
    except: arr(
      "Sub-blocks of `cidr` that this rule does not cover. They apply to this entry only.",
      cidr("A block inside `cidr`, in CIDR notation."),
    ),
  });
}

function groups(side: Side): JSONSchemaProps {
  return arr(
    `Peers ${towards(side)}, resolved through an external provider (today: AWS security groups).`,
    obj("One provider-specific group of peers.", {
      aws: obj("AWS resources whose addresses are the peers.", {
        labels: map("Tags the instances must carry.", str("Tag value.")),
        region: str("AWS region to look the resources up in."),
        securityGroupsIds: arr("Security group IDs, e.g. sg-0123456789abcdef0.", str("A security group ID.")),
        securityGroupsNames: arr("Security group names.", str("A security group name.")),
      }),
    }),
  );
}

function icmps(verb: string): JSONSchemaProps {
  return arr(
    `ICMP messages the selected endpoints ${verb}, by type. An ICMP rule applies to ICMP only, never to ports.`,
    obj("A group of ICMP fields.", {
      fields: arr(
        "ICMP message types, each for one IP family.",
        obj(
          "One ICMP message type.",
          {
            family: str("IP family of the message: IPv4 (used when omitted) or IPv6.", {
              enum: ["IPv4", "IPv6"],
            }),
            type: {
              description:
                "ICMP type: a number 0-255 or its CamelCase name, e.g. 8 or EchoRequest, 128 or EchoRequest for IPv6.",
              // No anyOf [integer, string]: int-or-string already checks the type, and the anyOf only added
              // a second error without a field path (`<nil>: ... must validate at least one schema`).
              "x-kubernetes-int-or-string": true,
              minimum: 0,
              maximum: 255,
              pattern: `^([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5]|${ICMP_TYPE_NAMES.join("|")})$`,
            },
          },
          { required: ["type"] },
        ),
        { maxItems: 40 },
      ),
    }),
  );
}

function authentication(): JSONSchemaProps {
  return obj(
    "Mutual authentication the peers must complete before traffic is allowed.",
    {
      mode: str("disabled (default), required, or test-always-fail (for testing the drop path).", {
        enum: ["disabled", "required", "test-always-fail"],
      }),
    },
    { required: ["mode"] },
  );
}

function portProtocol(): JSONSchemaProps {
  return obj("A destination port or port range and its transport protocol.", {
    port: str(
      'Destination port: a number "0"-"65535" as a string ("0" = every port) or a named container port ' +
        'such as "http" (IANA service name syntax, at most 15 characters).',
      { pattern: PORT_PATTERN, maxLength: 15 },
    ),
    endPort: int("Last port of a range that starts at `port` (numeric `port` only).", {
      format: "int32",
      minimum: 0,
      maximum: 65535,
    }),
    protocol: str(`Transport protocol: TCP, UDP, SCTP, or ANY (used when omitted) for all three; or, with --enable-extended-ip-protocols, one of ${EXTENDED_PROTOCOL_NAMES.join(", ")} without a port.`, {
      enum: PROTOCOLS,
    }),
  });
}

function ports(): JSONSchemaProps {
  return arr("Ports and protocols; omitted means every port (an explicitly empty list is rejected by admission).", portProtocol(), { maxItems: 40 });
}

function tlsContext(role: string): JSONSchemaProps {
  return obj(
    role,
    {
      secret: secretRef(
        "Secret holding the certificates and key (by default the items ca.crt, tls.crt and tls.key).",
        "Namespace of the Secret; defaults depend on where the policy lives.",
      ),
      trustedCA: str("Item of the Secret holding trusted CA certificates (default ca.crt)."),
      certificate: str("Item of the Secret holding the certificate chain (default tls.crt)."),
      privateKey: str("Item of the Secret holding the private key (default tls.key)."),
    },
    { required: ["secret"] },
  );
}

function httpRule(): JSONSchemaProps {
  return obj(
    "One allowed kind of HTTP request; every field given must match, an empty rule allows every request.",
    {
      method: str('Extended POSIX regular expression matched against the request method, e.g. "GET".'),
      path: str('Extended POSIX regular expression matched against the request path, e.g. "/public/.*".'),
      host: str("Extended POSIX regular expression matched against the Host header."),
      headers: arr(
        'Headers that must be present, as "Name" or "Name: value".',
        str("A header name, optionally with a required value."),
      ),
      headerMatches: arr(
        "Headers matched against literal or secret values, with a choice of what to do on mismatch.",
        obj(
          "One header requirement.",
          {
            name: str("Header name.", { minLength: 1 }),
            value: str("Required value; used as a fallback when the secret cannot be read."),
            mismatch: str(
              "On mismatch: drop the request (omitted), or LOG, ADD, DELETE or REPLACE the header.",
              {
                enum: ["LOG", "ADD", "DELETE", "REPLACE"],
              },
            ),
            secret: secretRef(
              "Secret whose single item holds the required value.",
              "Namespace of the Secret.",
            ),
          },
          { required: ["name"] },
        ),
      ),
    },
  );
}

function kafkaRule(): JSONSchemaProps {
  return obj("One allowed kind of Kafka request; every field given must match.", {
    role: str("Shorthand for a set of API keys: produce or consume.", { enum: ["produce", "consume"] }),
    apiKey: str('Kafka API key name or number, e.g. "produce", "fetch", "0".'),
    apiVersion: str("Kafka API version, as a decimal string."),
    clientID: str("Client identifier the request must carry."),
    topic: str("Topic name the request must address.", { maxLength: 255, pattern: "^[a-zA-Z0-9._-]+$" }),
  });
}

/** Exactly one of matchName, matchPattern (checked by the webhook: see cidrRule). */
function dnsMatch(what: string): JSONSchemaProps {
  return obj(what, {
    matchName: str('An exact DNS name, e.g. "api.example.com" (a trailing dot is implied).', {
      maxLength: 255,
      pattern: DNS_NAME_PATTERN,
    }),
    matchPattern: str(
      'A DNS name with wildcards: "*" matches any run of DNS characters within one label ("*" alone ' +
        'matches every name), a leading "**." matches any number of subdomain levels.',
      { maxLength: 255, pattern: DNS_WILDCARD_PATTERN },
    ),
  });
}

/** One kind of L7 rule, and l7 only with l7proto (checked by the webhook: see cidrRule). */
function l7Rules(): JSONSchemaProps {
  return obj(
    "Layer 7 rules for the traffic on these ports; the traffic goes through the L7 proxy. One protocol per port rule.",
    {
      http: arr("HTTP requests that are allowed; any one matching allows the request.", httpRule()),
      kafka: arr(
        "Kafka requests that are allowed. Refused by Membrane's admission: Cilium removed Kafka rules in 1.20.",
        kafkaRule(),
      ),
      dns: arr(
        "DNS lookups that are allowed through the DNS proxy; their answers feed toFQDNs rules.",
        dnsMatch("One allowed DNS name or pattern."),
      ),
      l7proto: str(
        "Name of a generic L7 parser of the proxy, for protocols other than HTTP, Kafka and DNS.",
      ),
      l7: arr(
        "Generic key-value rules interpreted by the parser named in l7proto.",
        map("One rule: keys and values the parser understands.", str("A value the parser matches.")),
      ),
    },
  );
}

function portRule(): JSONSchemaProps {
  return obj("Ports and protocols with optional L7 rules and TLS handling.", {
    ports: ports(),
    rules: l7Rules(),
    terminatingTLS: tlsContext(
      "TLS the L7 proxy terminates: the server side of the connection the endpoint (egress) or the peer (ingress) opens.",
    ),
    originatingTLS: tlsContext(
      "TLS the L7 proxy originates towards the destination after inspecting the traffic (the client side).",
    ),
    serverNames: arr(
      "Allowed TLS SNI names; when set, TLS is required and the handshake must name one of them. Wildcards as in matchPattern.",
      str("An allowed server name or pattern.", { maxLength: 255, pattern: DNS_WILDCARD_PATTERN }),
      { minItems: 1, "x-kubernetes-list-type": "set" },
    ),
    listener: obj(
      "A custom Envoy listener (defined in a CiliumEnvoyConfig) to send this traffic to. Refused by Membrane's " +
        "admission: Membrane runs no Envoy that a CiliumEnvoyConfig could configure.",
      {
        envoyConfig: obj(
          "The CiliumEnvoyConfig or CiliumClusterwideEnvoyConfig that defines the listener.",
          {
            kind: str("Kind of the referenced resource; defaults to the one matching the policy's scope.", {
              enum: ["CiliumEnvoyConfig", "CiliumClusterwideEnvoyConfig"],
            }),
            name: str("Name of the referenced resource.", { minLength: 1 }),
          },
          { required: ["name"] },
        ),
        name: str("Name of the listener inside that resource.", { minLength: 1 }),
        priority: int(
          "Preference when several rules pick different listeners for the same traffic (1-100).",
          {
            minimum: 1,
            maximum: 100,
          },
        ),
      },
      { required: ["envoyConfig", "name"] },
    ),
  });
}

function portDenyRule(): JSONSchemaProps {
  return obj("Ports and protocols to deny (deny rules have no L7 part).", { ports: ports() });
}

function services(verb: string): JSONSchemaProps {
  return arr(
    `Kubernetes Services the selected endpoints ${verb}; traffic to the Service's backends matches.`,
    // At most one of the two (checked by the webhook: see cidrRule); neither is legal, as in Cilium,
    // and the webhook warns that it selects nothing.
    obj("One Service, by name (k8sService) or by label selector (k8sServiceSelector).", {
      k8sService: obj("A Service by name.", {
        serviceName: str("Name of the Service."),
        namespace: str("Namespace of the Service; defaults to the policy's namespace."),
      }),
      k8sServiceSelector: obj(
        "Services selected by their labels.",
        {
          selector: labelSelector("Labels of the Services."),
          namespace: str("Namespace of the Services; defaults to the policy's namespace."),
        },
        { required: ["selector"] },
      ),
    }),
  );
}

interface RuleShape {
  side: Side;
  deny: boolean;
}

/** One ingress/ingressDeny/egress/egressDeny rule. All fields given must match for the rule to apply. */
function rule({ side, deny }: RuleShape): JSONSchemaProps {
  const verb = deny ? "may not" : "may";
  const dirWord = side === "from" ? "receive traffic from" : "send traffic to";
  const peerVerb = `${verb} ${dirWord}`;
  const p = side; // field prefix: fromX for ingress, toX for egress
  const properties: Record<string, JSONSchemaProps> = {
    [`${p}Endpoints`]: arr(
      `Endpoints (pods) the selected endpoints ${peerVerb}, by security labels. An empty selector ({}) selects every endpoint in scope: the policy's namespace for a CiliumNetworkPolicy (unless the selector names a namespace), the whole cluster for a cluster-wide one.`,
      labelSelector("Security labels of the peer endpoints."),
    ),
    [`${p}Requires`]: arr(
      `Labels every peer must also carry for this policy's other ${side === "from" ? "ingress" : "egress"} rules to match (narrows them).`,
      labelSelector("Labels a peer must carry."),
    ),
    [`${p}CIDR`]: arr(
      `IP blocks outside the cluster the selected endpoints ${peerVerb}.`,
      cidr('An IP block in CIDR notation, e.g. "192.0.2.0/24".'),
    ),
    [`${p}CIDRSet`]: arr(
      `IP blocks the selected endpoints ${peerVerb}, each with optional exceptions.`,
      cidrRule(side),
    ),
    [`${p}Entities`]: arr(
      `Classes of peers without labels of their own that the selected endpoints ${peerVerb}: ${ENTITIES.join(", ")}.`,
      str("One entity.", { enum: ENTITIES }),
    ),
  };
  if (side === "to") {
    properties.toServices = services(peerVerb);
  }
  if (side === "to" && !deny) {
    properties.toFQDNs = arr(
      "DNS names the selected endpoints may connect to. The addresses come from DNS answers seen by the DNS proxy, " +
        "so the endpoints also need an egress rule that allows their DNS lookups with rules.dns.",
      dnsMatch("One DNS name or pattern."),
    );
  }
  properties[`${p}Nodes`] = arr(
    `Cluster nodes (their host addresses) the selected endpoints ${peerVerb}, by node labels.`,
    labelSelector("Labels of the peer nodes."),
  );
  properties[`${p}Groups`] = groups(side);
  properties.toPorts = deny
    ? arr(
        `Ports the ${side === "from" ? "traffic is addressed to" : "selected endpoints connect to"} that are denied; omitted means every port.`,
        portDenyRule(),
      )
    : arr(
        `Destination ports (and optional L7 rules) the allowed traffic must use; omitted means every port.`,
        portRule(),
      );
  properties.icmps = icmps(
    deny ? `may not ${side === "from" ? "receive" : "send"}` : side === "from" ? "accept" : "may send",
  );
  if (!deny) properties.authentication = authentication();

  const directionName = `${side === "from" ? "ingress" : "egress"}${deny ? "Deny" : ""}`;
  return obj(
    `One ${directionName} rule: traffic matches when it matches every field given. Peers listed in different ` +
      "fields are alternatives.",
    properties,
  );
}

/** The body shared by `spec` and each entry of `specs`. */
export function policyRule(description: string): JSONSchemaProps {
  return {
    ...obj(description, {
      description: str("Free text explaining the purpose of the rule, for humans."),
      endpointSelector: labelSelector(
        "Endpoints (pods) the rule applies to, by security labels; {} selects every endpoint in scope " +
          "(the policy's namespace for a CiliumNetworkPolicy). Exactly one of endpointSelector and nodeSelector.",
      ),
      nodeSelector: labelSelector(
        "Nodes the rule applies to (host policy), by node labels. CiliumClusterwideNetworkPolicy only. Exactly " +
          "one of endpointSelector and nodeSelector.",
      ),
      ingress: arr(
        "Traffic the selected endpoints accept. Any rule here puts them into default-deny for ingress.",
        rule({ side: "from", deny: false }),
      ),
      ingressDeny: arr(
        "Traffic the selected endpoints never accept; deny wins over any allow.",
        rule({ side: "from", deny: true }),
      ),
      egress: arr(
        "Traffic the selected endpoints may send. Any rule here puts them into default-deny for egress.",
        rule({ side: "to", deny: false }),
      ),
      egressDeny: arr(
        "Traffic the selected endpoints may never send; deny wins over any allow.",
        rule({ side: "to", deny: true }),
      ),
      enableDefaultDeny: obj(
        "Whether this rule puts its endpoints into default-deny. Omitted fields default to true when the rule has " +
          "rules in that direction; false lets the rule add allows without denying other traffic.",
        {
          ingress: bool("Default-deny for ingress when the rule has ingress rules."),
          egress: bool("Default-deny for egress when the rule has egress rules."),
        },
      ),
      log: obj("Flow-log settings for traffic this rule decides.", {
        value: str("Free text (up to 32 printable characters) attached to the flow events of this rule.", {
          maxLength: 32,
        }),
      }),
      labels: arr(
        "Labels identifying this rule (metadata for tooling; they do not select anything).",
        obj(
          "One label.",
          {
            key: str("Label key."),
            value: str("Label value."),
            source: str('Label source, e.g. "k8s" or "unspec".'),
          },
          { required: ["key"] },
        ),
      ),
    }),
    "x-kubernetes-validations": [
      atLeastOneOf(
        ["endpointSelector", "nodeSelector"],
        "a rule needs an endpointSelector (or, in a CiliumClusterwideNetworkPolicy, a nodeSelector) saying which endpoints it applies to",
        ".endpointSelector",
      ),
      atMostOneOf(
        ["endpointSelector", "nodeSelector"],
        "set only one of endpointSelector or nodeSelector",
        ".nodeSelector",
      ),
    ],
  };
}

function policyStatus(): JSONSchemaProps {
  return obj("State observed by the Membrane operator and agents. Written through the status subresource.", {
    conditions: conditions(
      "Valid: the policy parsed (reason and message name the field on failure). Enforced: every node that hosts a " +
        "selected endpoint applied it.",
    ),
    observedGeneration: int("metadata.generation the status describes.", { minimum: 0, format: "int64" }),
    enforced: str('Nodes enforcing the current generation out of the nodes it concerns, e.g. "3/3".'),
    enforcedNodes: int("Nodes that acknowledged the current generation.", { minimum: 0, format: "int32" }),
    totalNodes: int("Nodes that host an endpoint the policy selects.", { minimum: 0, format: "int32" }),
    selectedEndpoints: int("Endpoints (pods or hosts) the policy currently selects.", {
      minimum: 0,
      format: "int32",
    }),
    nodeErrors: arr(
      "Nodes that refused the current generation, and why; they keep enforcing their last good state.",
      obj(
        "One refusing node.",
        {
          node: str("Node name."),
          message: str("The agent's error."),
          lastTransitionTime: timestamp("When the node refused."),
        },
        { required: ["node", "message"] },
      ),
      { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["node"] },
    ),
  });
}

const POLICY_COLUMNS: PrinterColumn[] = [
  {
    name: "Valid",
    type: "string",
    jsonPath: '.status.conditions[?(@.type=="Valid")].status',
    description: "Whether the policy parsed (status of the Valid condition).",
  },
  {
    name: "Enforced",
    type: "string",
    jsonPath: ".status.enforced",
    description: "Nodes enforcing the current generation out of those it concerns.",
  },
  {
    name: "Selected",
    type: "integer",
    jsonPath: ".status.selectedEndpoints",
    description: "Endpoints the policy selects.",
  },
  AGE_COLUMN,
];

/** One object for spec, specs[] and both kinds, so derived types share it (see crds/typegen.ts). */
export const POLICY_RULE = policyRule(
  "A policy rule: the endpoints or nodes it applies to and the traffic they may or may not exchange. A policy " +
    "object has spec, specs or both.",
);
export const POLICY_STATUS = policyStatus();

function policySchema(kindDescription: string): JSONSchemaProps {
  return {
    ...obj(kindDescription, {
      spec: POLICY_RULE,
      specs: arr("Several policy rules in one object, each with its own selector.", POLICY_RULE),
      status: POLICY_STATUS,
    }),
    required: ["metadata"],
  };
}

export const ciliumNetworkPolicyCRD = defineCRD({
  group: "cilium.io",
  version: "v2",
  kind: "CiliumNetworkPolicy",
  plural: "ciliumnetworkpolicies",
  shortNames: ["cnp", "ciliumnp"],
  categories: ["cilium", "ciliumpolicy"],
  scope: "Namespaced",
  statusSubresource: true,
  printerColumns: POLICY_COLUMNS,
  schema: policySchema(
    "Identity-based network policy for the endpoints of one namespace: which peers (by labels, entities, CIDRs, " +
      "DNS names, Services) they may exchange traffic with, on which ports, with optional L7 rules.",
  ),
});

export const ciliumClusterwideNetworkPolicyCRD = defineCRD({
  group: "cilium.io",
  version: "v2",
  kind: "CiliumClusterwideNetworkPolicy",
  plural: "ciliumclusterwidenetworkpolicies",
  shortNames: ["ccnp"],
  categories: ["cilium", "ciliumpolicy"],
  scope: "Cluster",
  statusSubresource: true,
  printerColumns: POLICY_COLUMNS,
  schema: policySchema(
    "Identity-based network policy for endpoints in every namespace and for nodes (host policy); same rule " +
      "language as CiliumNetworkPolicy, cluster-scoped.",
  ),
});
