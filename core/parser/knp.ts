// Kubernetes NetworkPolicy (networking.k8s.io/v1) → Policy, with the API server's validation rules.
import type { Direction, Peer, Policy, PortProtocol, PortRule, Protocol, Rule } from "../model.ts";
import { networkPolicyPeerSelector, selectorFrom } from "../selector.ts";
import { cidrBlock } from "./cidr.ts";
import {
  Errors,
  type Obj,
  checkKnown,
  field,
  has,
  ianaServiceNameProblem,
  isRecord,
  join,
  objectItems,
  optList,
  optObject,
  show,
  stringList,
  typeName,
} from "./fields.ts";
import { type CheckedLabelSelector, checkLabelSelector } from "./selectors.ts";

const NP_PROTOCOLS: readonly string[] = ["TCP", "UDP", "SCTP"];

function npPort(errs: Errors, item: Obj, path: string): PortProtocol | undefined {
  checkKnown(errs, path, item, ["protocol", "port", "endPort"]);
  const before = errs.count;
  const rawProto = field(item, "protocol");
  let protocol: Protocol = "TCP";
  if (rawProto !== undefined && rawProto !== null) {
    if (typeof rawProto === "string" && NP_PROTOCOLS.includes(rawProto)) protocol = rawProto as Protocol;
    else errs.add(join(path, "protocol"), `${show(rawProto)} is not a protocol: use TCP, UDP or SCTP`);
  }
  const raw = field(item, "port");
  let port = 0;
  let name: string | undefined;
  if (raw !== undefined && raw !== null) {
    if (typeof raw === "number") {
      if (!Number.isInteger(raw) || raw < 1 || raw > 65535)
        errs.add(join(path, "port"), `${show(raw)} is not a port (1-65535)`);
      else port = raw;
    } else if (typeof raw === "string") {
      if (/^[0-9]+$/.test(raw))
        errs.add(
          join(path, "port"),
          `${show(raw)} is a port number written as a string: write it without quotes (a string is a port name)`,
        );
      else {
        const problem = ianaServiceNameProblem(raw, true);
        if (problem) errs.add(join(path, "port"), `${show(raw)} is not a port name: ${problem}`);
        else name = raw;
      }
    } else errs.add(join(path, "port"), `must be a port number or a port name, not ${typeName(raw)}`);
  }
  let endPort = port;
  const rawEnd = field(item, "endPort");
  if (rawEnd !== undefined && rawEnd !== null) {
    const ep = join(path, "endPort");
    if (typeof rawEnd !== "number" || !Number.isInteger(rawEnd))
      errs.add(ep, `must be a whole number, not ${show(rawEnd)}`);
    else if (rawEnd < 1 || rawEnd > 65535) errs.add(ep, `${rawEnd} is not a port (1-65535)`);
    else if (name !== undefined)
      errs.add(ep, `endPort needs a numeric port, not the port name ${show(name)}`);
    else if (raw === undefined || raw === null) errs.add(ep, "endPort needs a port to start the range");
    else if (port !== 0 && rawEnd < port) errs.add(ep, `endPort ${rawEnd} is less than port ${port}`);
    else endPort = rawEnd;
  }
  if (errs.count !== before) return undefined;
  return name !== undefined ? { port: 0, endPort: 0, name, protocol } : { port, endPort, protocol };
}

function npPeer(errs: Errors, item: Obj, path: string, namespace: string): Peer | undefined {
  checkKnown(errs, path, item, ["podSelector", "namespaceSelector", "ipBlock"]);
  const hasPod = has(item, "podSelector");
  const hasNs = has(item, "namespaceSelector");
  const ipBlock = optObject(errs, item, "ipBlock", path);
  if (!hasPod && !hasNs && !has(item, "ipBlock")) {
    errs.add(path, "a peer needs a podSelector, a namespaceSelector or an ipBlock");
    return undefined;
  }
  if (has(item, "ipBlock") && (hasPod || hasNs)) {
    errs.add(
      path,
      "ipBlock cannot be combined with podSelector or namespaceSelector in one peer: write them as separate peers",
    );
    return undefined;
  }
  if (ipBlock) {
    const bp = join(path, "ipBlock");
    checkKnown(errs, bp, ipBlock, ["cidr", "except"]);
    const block = cidrBlock(errs, ipBlock, bp, true);
    return block ? { kind: "cidr", ...block, podAddresses: true } : undefined;
  }
  const pod = hasPod
    ? checkLabelSelector(errs, field(item, "podSelector"), join(path, "podSelector"), false)
    : undefined;
  const ns = hasNs
    ? checkLabelSelector(errs, field(item, "namespaceSelector"), join(path, "namespaceSelector"), false)
    : undefined;
  if ((hasPod && !pod) || (hasNs && !ns)) return undefined;
  const peer: { podSelector?: CheckedLabelSelector; namespaceSelector?: CheckedLabelSelector } = {};
  if (pod) peer.podSelector = pod;
  if (ns) peer.namespaceSelector = ns;
  const selector = networkPolicyPeerSelector(peer, namespace);
  return selector ? { kind: "selector", selector } : undefined;
}

export function parseNetworkPolicySpec(
  errs: Errors,
  spec: unknown,
  meta: { namespace: string; name: string; uid?: string; generation?: number },
): Policy | undefined {
  const path = "spec";
  if (!isRecord(spec)) {
    errs.add(
      path,
      spec === undefined || spec === null
        ? "a NetworkPolicy needs a spec (podSelector, policyTypes, ingress, egress)"
        : `must be an object, not ${typeName(spec)}`,
    );
    return undefined;
  }
  const before = errs.count;
  checkKnown(errs, path, spec, ["podSelector", "policyTypes", "ingress", "egress"]);
  const rawPodSelector = field(spec, "podSelector");
  const podSelector =
    rawPodSelector === undefined || rawPodSelector === null
      ? { matchLabels: {}, matchExpressions: [] }
      : checkLabelSelector(errs, rawPodSelector, join(path, "podSelector"), false);

  const types = stringList(errs, spec, "policyTypes", path);
  types.forEach((t, i) => {
    const tp = `${join(path, "policyTypes")}[${i}]`;
    if (t !== "Ingress" && t !== "Egress")
      errs.add(tp, `${show(t)} is not a policy type (Ingress or Egress)`);
    else if (types.indexOf(t) !== i) errs.add(tp, `${show(t)} is listed twice`);
  });
  const egressCount = optList(new Errors(), spec, "egress", path).length;
  const typesGiven = has(spec, "policyTypes") && types.length > 0;
  // Kubernetes' default: Ingress always; Egress when the policy has egress rules.
  const enforced = {
    ingress: typesGiven ? types.includes("Ingress") : true,
    egress: typesGiven ? types.includes("Egress") : egressCount > 0,
  };

  const rules: Rule[] = [];
  for (const direction of ["ingress", "egress"] as Direction[]) {
    const peersKey = direction === "ingress" ? "from" : "to";
    for (const { item, path: rp, index } of objectItems(errs, spec, direction, path)) {
      checkKnown(errs, rp, item, [peersKey, "ports"]);
      const ruleBefore = errs.count;
      const peers: Peer[] = [];
      for (const { item: pi, path: pp } of objectItems(errs, item, peersKey, rp)) {
        const peer = npPeer(errs, pi, pp, meta.namespace);
        if (peer) peers.push(peer);
      }
      const ports: PortProtocol[] = [];
      for (const { item: pi, path: pp } of objectItems(errs, item, "ports", rp)) {
        const port = npPort(errs, pi, pp);
        if (port) ports.push(port);
      }
      if (errs.count !== ruleBefore || !enforced[direction]) continue; // Kubernetes ignores rules of a direction not in policyTypes
      const portRules: PortRule[] = ports.length ? [{ ports }] : [];
      rules.push({
        direction,
        verdict: "allow",
        // An absent or empty from/to means every peer, including outside the cluster.
        peers: optList(new Errors(), item, peersKey, rp).length === 0 ? [{ kind: "any" }] : peers,
        ports: portRules,
        icmps: [],
        requires: [],
        origin: {
          policyKind: "NetworkPolicy",
          namespace: meta.namespace,
          name: meta.name,
          ruleIndex: index,
          path: rp,
        },
      });
    }
  }
  if (errs.count !== before || !podSelector) return undefined;
  return {
    kind: "NetworkPolicy",
    namespace: meta.namespace,
    name: meta.name,
    ...(meta.uid !== undefined ? { uid: meta.uid } : {}),
    ...(meta.generation !== undefined ? { generation: meta.generation } : {}),
    subject: selectorFrom(podSelector, { role: "subject", namespace: meta.namespace, kubernetesKeys: true }),
    rules,
    defaultDeny: enforced,
  };
}
