// The typed policy model: what the parser produces from NetworkPolicy/CNP/CCNP objects and what the
// compiler, the reference evaluator and the webhooks consume. Source formats are gone at this point:
// every rule states its peers, ports and verdict explicitly.

/** A security label: `source:key=value`, e.g. `k8s:app=web`, `reserved:world`. */
export interface Label {
  readonly source: string; // "k8s" | "reserved" | "cidr" | "fqdn" | "unspec" | "container" | ...
  readonly key: string;
  readonly value: string;
}

/** A canonical, sorted, de-duplicated label list; equal sets have equal `key` strings. */
export interface LabelSet {
  readonly labels: readonly Label[];
  readonly key: string;
}

export type Direction = "ingress" | "egress";
export type Verdict = "allow" | "deny";

/**
 * The IP protocols a port-less rule may name when extended IP protocols are enabled
 * (`--enable-extended-ip-protocols`, as in Cilium): name → IANA protocol number. The one table;
 * the parser, the compiler and the datapath test read it.
 */
export const EXTENDED_PROTO_NUMBER = { IGMP: 2, IPIP: 4, IPV6: 41, GRE: 47, ESP: 50, AH: 51, VRRP: 112 } as const;
export type ExtendedProtocol = keyof typeof EXTENDED_PROTO_NUMBER;
export const EXTENDED_PROTOCOL_NAMES = Object.keys(EXTENDED_PROTO_NUMBER) as readonly ExtendedProtocol[];

export function isExtendedProtocol(p: string): p is ExtendedProtocol {
  return Object.hasOwn(EXTENDED_PROTO_NUMBER, p);
}

/**
 * L4 protocols as they appear in policy; "ANY" expands to TCP, UDP and SCTP when compiled. The
 * extended IP protocols carry no port and are matched by protocol number alone.
 */
export type Protocol = "TCP" | "UDP" | "SCTP" | "ANY" | ExtendedProtocol;

/** IANA protocol numbers used in compiled entries and in the datapath (0 = any). */
export const PROTO_NUMBER = {
  ANY: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  ICMPv6: 58,
  SCTP: 132,
  ...EXTENDED_PROTO_NUMBER,
} as const;

export type SelectorOperator = "In" | "NotIn" | "Exists" | "DoesNotExist";

/**
 * One requirement over security labels. `key` carries its source: `any:org` (a bare key in YAML),
 * `k8s:org`, `reserved:host`. For `any:` the requirement matches a label of that key from any source.
 */
export interface LabelRequirement {
  readonly key: string;
  readonly operator: SelectorOperator;
  readonly values: readonly string[];
}

/**
 * A selector over identities' security labels: all requirements must hold (an empty list selects
 * every identity it is applied to). `canonical` is a stable string used as the selector-cache key.
 */
export interface Selector {
  readonly requirements: readonly LabelRequirement[];
  readonly canonical: string;
}

export type Entity =
  | "all"
  | "world"
  | "world-ipv4"
  | "world-ipv6"
  | "cluster"
  | "host"
  | "remote-node"
  | "kube-apiserver"
  | "health"
  | "init"
  | "ingress"
  | "unmanaged"
  | "none";

/** Who a rule talks to. A rule's peers are a union: traffic from/to any listed peer matches. */
export type Peer =
  | { readonly kind: "any" } // L3 wildcard: every identity, including world
  | { readonly kind: "selector"; readonly selector: Selector } // endpoints / nodes / NetworkPolicy peers
  | { readonly kind: "entity"; readonly entity: Entity }
  | {
      readonly kind: "cidr";
      readonly cidr: string;
      readonly except: readonly string[];
      /**
       * Kubernetes NetworkPolicy ipBlock: the block also matches a pod whose address is inside it and
       * outside `except`, whatever the pod's identity (Kubernetes' meaning). Absent for CNP/CCNP CIDR
       * peers, which stand for addresses outside the cluster only (Cilium's meaning).
       */
      readonly podAddresses?: true;
    }
  | {
      /**
       * CNP fromCIDRSet/toCIDRSet `cidrGroupRef` (`name`) or `cidrGroupSelector` (`selector`, over the
       * CiliumCIDRGroups' labels): every CIDR of the groups, minus `except`. The operator replaces it with
       * `cidr` peers from the groups it watches (core/cidr-group.ts); unreplaced, it selects nothing.
       */
      readonly kind: "cidrGroup";
      readonly name?: string;
      readonly selector?: Selector;
      readonly except: readonly string[];
    }
  | {
      /**
       * CNP toNodes/fromNodes: the nodes whose Node labels the selector matches, each by its addresses (this node
       * as reserved:host, another as reserved:remote-node; core/node-peers.ts).
       */
      readonly kind: "nodes";
      readonly selector: Selector;
    }
  | { readonly kind: "fqdn"; readonly matchName?: string; readonly matchPattern?: string }
  | {
      readonly kind: "service";
      readonly namespace?: string;
      readonly name?: string;
      readonly selector?: Selector;
    };

/** A port or port range; port 0 means every port. `name` is set for a named port (resolved later). */
export interface PortProtocol {
  readonly port: number;
  readonly endPort: number; // == port for a single port
  readonly name?: string;
  readonly protocol: Protocol;
}

export interface TLSContext {
  readonly secret: { readonly namespace?: string; readonly name: string };
  readonly trustedCA?: string;
  readonly certificate?: string;
  readonly privateKey?: string;
}

export interface HTTPRule {
  readonly method?: string; // a regular expression
  readonly path?: string; // a regular expression
  readonly host?: string;
  readonly headers?: readonly string[];
  readonly headerMatches?: readonly {
    readonly name: string;
    readonly value?: string;
    readonly mismatch?: "LOG" | "ADD" | "DELETE" | "REPLACE";
    readonly secret?: { readonly namespace?: string; readonly name: string };
  }[];
}

export interface DNSRule {
  readonly matchName?: string;
  readonly matchPattern?: string;
}

/** Kafka rules are refused at admission (Cilium removed them in 1.20), so they have no model. */
export type L7Rules =
  | { readonly kind: "http"; readonly http: readonly HTTPRule[] }
  | { readonly kind: "dns"; readonly dns: readonly DNSRule[] }
  | { readonly kind: "l7"; readonly l7proto: string; readonly l7: readonly Record<string, string>[] };

export interface PortRule {
  readonly ports: readonly PortProtocol[]; // empty = every port of every protocol
  readonly rules?: L7Rules;
  readonly terminatingTLS?: TLSContext;
  readonly originatingTLS?: TLSContext;
  readonly serverNames?: readonly string[];
}

export interface ICMPField {
  readonly family: "IPv4" | "IPv6";
  readonly type: number | string;
}

/** Where a rule came from, carried into every compiled entry so every verdict can name it. */
export interface RuleOrigin {
  readonly policyKind: PolicyKind;
  readonly namespace?: string; // absent for cluster-wide policies
  readonly name: string;
  readonly ruleIndex: number; // index within its direction's list in the source object
  readonly path: string; // field path of the rule, e.g. "spec.ingressDeny[2]" or "specs[1].egress[0]"
}

export interface Rule {
  readonly direction: Direction;
  readonly verdict: Verdict;
  readonly peers: readonly Peer[]; // empty = matches no peer (the rule only enables default deny)
  readonly ports: readonly PortRule[]; // empty = every port and protocol
  readonly icmps: readonly ICMPField[];
  /** fromRequires/toRequires: peers must also match every selector here (narrows the policy's other rules). */
  readonly requires: readonly Selector[];
  readonly origin: RuleOrigin;
}

export type PolicyKind = "NetworkPolicy" | "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy";

/** One parsed policy object. A CNP with `specs` yields one Policy per spec (subject differs). */
export interface Policy {
  readonly kind: PolicyKind;
  readonly namespace?: string;
  readonly name: string;
  readonly uid?: string;
  readonly generation?: number;
  readonly description?: string;
  /** The identities the policy applies to (endpointSelector/podSelector, namespace-defaulted). */
  readonly subject: Selector;
  /** Set for host policies (nodeSelector): the subject is the host identity of matching nodes. */
  readonly nodeSelector?: Selector;
  readonly rules: readonly Rule[];
  /**
   * Which directions this policy puts its subjects into default-deny for. Cilium: a direction is
   * enforced when the policy has any rule in it (unless enableDefaultDeny says false);
   * NetworkPolicy: from policyTypes.
   */
  readonly defaultDeny: { readonly ingress: boolean; readonly egress: boolean };
  /**
   * What the parser saw that is legal but selects nothing (e.g. a toServices entry naming no
   * Service): the model cannot show it, so the parser hands it to core/warnings.ts this way.
   */
  readonly parseWarnings?: readonly FieldError[];
}

/** A field error: a Kubernetes-style field path and a reason a user understands. */
export interface FieldError {
  readonly path: string;
  readonly message: string;
}

export type Result<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly errors: readonly FieldError[] };

// ---------------------------------------------------------------------------------------------
// Compiled policy: the datapath's map entries (DESIGN decision 3).
//
// Lookup order, shared by core/mapstate lookup and bpf/lib/policy.h: for a packet
// (subject, direction, peer, proto, port) the first hit wins among
//   1. (peer, proto, port)   longest port prefix
//   2. (peer, ANY,   *)
//   C. levels 1 and 2 for the class that answers for the peer (core/identity.ts answeringClass): EVERY_POD_CLASS_PEER
//      for a pod peer when the subject direction has such entries, else CLUSTER_CLASS_PEER for a peer in the `cluster` class;
//      WORLD_CLASS_PEER for a peer in the `world` class (reserved world ones, CIDR identities, an agent's FQDN identities),
//      or instead WORLD_IPV4/6_CLASS_PEER for one other than reserved:world by the packet's family when the subject
//      direction has that class's entries
//   3. (0,    proto, port)   longest port prefix
//   4. (0,    ANY,   *)
// A miss means default: deny if the subject is enforced in that direction, else allow.
// The compiler makes the entries such that this lookup gives the policy's verdict (deny wins over
// any allow that matches the same packet): where a deny and an allow overlap, it adds the
// intersection as a deny entry.
// ---------------------------------------------------------------------------------------------

export const IDENTITY_WILDCARD = 0;

export interface PolicyEntryKey {
  readonly subject: number; // the endpoint's identity
  readonly direction: Direction;
  readonly peer: number; // 0 = any identity
  readonly proto: number; // IANA number, 0 = any protocol (then port must be 0/0)
  readonly port: number; // first port of the prefix block; 0 with prefixLen 0 = any port
  readonly portPrefixLen: number; // 0..16 fixed high bits of the port
}

export interface PolicyEntry extends PolicyEntryKey {
  readonly verdict: Verdict;
  readonly proxyPort: number; // non-zero: redirect to the L7 proxy on this port
  readonly ruleId: number; // index into the compiled rule table (which policy and rule)
}

/** Per subject identity: whether each direction is default-deny, and its entries. */
export interface SubjectPolicy {
  readonly subject: number;
  readonly ingressEnforced: boolean;
  readonly egressEnforced: boolean;
  readonly entries: readonly PolicyEntry[];
  /** What the node's DNS proxy needs beyond the entries; absent when the subject has neither DNS rules nor toFQDNs. */
  readonly dns?: SubjectDns;
  /** The HTTP rules of its L7 allow rules, for the node's L7 proxy; absent when it has none. */
  readonly http?: readonly RuleHttpRules[];
}

/**
 * The HTTP rules of one toPorts entry of an allow rule (`toPorts[portRule].rules.http`, in source
 * order), and the proxy ports that serve them. On a proxy port the proxy ORs the rules of every part
 * that lists the port: two entries allowing one key (peer, protocol, port) with HTTP rules share the
 * port of their union.
 */
export interface RuleHttpRules {
  readonly ruleId: number;
  /** The entry's index in the rule's toPorts; absent (an operator from before parts): the rule's HTTP rules over all its toPorts. */
  readonly portRule?: number;
  readonly direction: Direction;
  readonly rules: readonly HTTPRule[];
  /**
   * The proxy ports whose requests these rules judge (with the other rules listing the same port),
   * ascending. Absent (an operator from before the union): the ports of the entries carrying this
   * ruleId, these rules alone.
   */
  readonly proxyPorts?: readonly number[];
  /** TLS inspection on the entry's ports (its terminatingTLS, originatingTLS, serverNames); absent: plain HTTP. */
  readonly tls?: RuleTls;
}

/** What the node's L7 proxy needs to inspect a rule's TLS: the Secrets it uses, and the server names it admits. */
export interface RuleTls {
  readonly terminating?: TlsSecretUse;
  readonly originating?: TlsSecretUse;
  readonly serverNames?: readonly string[];
}

/**
 * One Secret a TLS context reads (namespace defaulted: the policy's, "default" for a cluster-wide
 * policy) and the items it reads (absent: Cilium's defaults tls.crt, tls.key, ca.crt). The operator
 * fills `material` (the items' PEM text) or `unavailable` (why not) for the nodes it sends it to;
 * the compiler never sees either.
 */
export interface TlsSecretUse {
  readonly secret: { readonly namespace: string; readonly name: string };
  readonly certificate?: string;
  readonly privateKey?: string;
  readonly trustedCA?: string;
  readonly material?: TlsMaterial;
  readonly unavailable?: string;
}

/** A Secret's items as the proxy uses them, PEM text. */
export interface TlsMaterial {
  readonly certificate?: string;
  readonly privateKey?: string;
  readonly trustedCA?: string;
}

/** One compiled port block of a rule: protocol number, first port, port prefix length (as in a map key). */
export interface CompiledPort {
  readonly proto: number;
  readonly port: number;
  readonly portPrefixLen: number;
}

/** One port block a toFQDNs rule allows to its learned addresses; `proxyPort` when the block's toPorts entry has HTTP rules (the L7 proxy judges each request). */
export interface FqdnPort extends CompiledPort {
  readonly proxyPort?: number;
}

/** One toFQDNs peer of a subject's egress allow rule, with the ports the rule allows to it. */
export interface FqdnSelectorTerm {
  readonly ruleId: number;
  readonly matchName?: string;
  readonly matchPattern?: string;
  readonly ports: readonly FqdnPort[];
}

/**
 * The DNS rules of one toPorts entry of an egress allow rule (its entries carry the proxy port), in
 * source order, and the ports of that entry: a query is judged by the rules of the entries whose
 * ports it was sent to, never by another entry's (Cilium keys them by port and protocol).
 */
export interface RuleDnsRules {
  readonly ruleId: number;
  readonly rules: readonly DNSRule[];
  /** The entry's port blocks; absent (an operator from before per-entry rules): every port of the rule. */
  readonly ports?: readonly CompiledPort[];
}

/**
 * A subject's DNS-relevant egress policy: which queries its proxied ports let through, and the
 * names whose learned addresses its toFQDNs peers allow (the node turns those into entries).
 */
export interface SubjectDns {
  readonly dnsRules: readonly RuleDnsRules[];
  readonly fqdnSelectors: readonly FqdnSelectorTerm[];
}
