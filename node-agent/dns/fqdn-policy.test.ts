// The node's learned addresses as world peers: which subjects' entries an answer writes, in which order, and what a forgotten address takes out.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MIN_FQDN_IDENTITY, MIN_LOCAL_IDENTITY, WORLD_CLASS_PEER } from "../../core/identity.ts";
import type { PolicyEntry, SubjectPolicy } from "../../core/model.ts";
import type { NodeState } from "../../core/wire.ts";
import { FqdnPolicy, type FqdnPolicyTarget } from "./fqdn-policy.ts";

const CIDR = MIN_LOCAL_IDENTITY + 5;
const TCP = 6;
const entry = (subject: number, peer: number, port: number, ruleId: number): PolicyEntry => ({ subject, direction: "egress", peer, proto: TCP, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId });
/** 300: toCIDR 10.205.0.0/24 on 8085 (entries of that CIDR identity's own) and the world on 8080 (class); 301: the world on 8080 only. */
const policies: SubjectPolicy[] = [
  { subject: 300, ingressEnforced: false, egressEnforced: true, entries: [entry(300, CIDR, 8085, 2), entry(300, WORLD_CLASS_PEER, 8080, 3)] },
  { subject: 301, ingressEnforced: false, egressEnforced: true, entries: [entry(301, WORLD_CLASS_PEER, 8080, 3)] },
];
const origin = (path: string) => ({ policyKind: "CiliumClusterwideNetworkPolicy" as const, name: "p", ruleIndex: 0, path });
const state: Pick<NodeState, "policies" | "ipcache" | "rules"> = {
  policies,
  ipcache: [{ prefix: "10.205.0.0/24", identity: CIDR }],
  rules: [{ id: 2, origin: origin("spec.egress[0]") }, { id: 3, origin: origin("spec.egress[1]") }],
};

/** A target that records every write in order. */
function recorder(): { target: FqdnPolicyTarget; log: string[] } {
  const log: string[] = [];
  const fmt = (es: readonly PolicyEntry[]) => es.map((e) => `${e.peer >= MIN_FQDN_IDENTITY ? "F" : e.peer}:${e.port}:r${e.ruleId}`).join(",");
  return {
    log,
    target: {
      setAddressIdentity: (ip) => log.push(`ipcache ${ip}`),
      deleteAddress: (ip) => log.push(`forget ${ip}`),
      installSubject: (subject, es) => log.push(`install ${subject} [${fmt(es)}]`),
      addSubjectEntries: (subject, es) => (log.push(`add ${subject} [${fmt(es)}]`), true),
    },
  };
}

test("a learned address inside a CIDR rule's prefix gets that rule's entries in the subject that has them, before the ipcache; an address outside it and a subject of the world class alone get none; forgetting it takes them out", () => {
  const { target, log } = recorder();
  const fqdn = new FqdnPolicy(target, { cache: { minTtlSeconds: 0, maxAddressesPerName: 10, graceSeconds: 0 } });
  fqdn.setNodeState(state);
  fqdn.learn([{ ip: "10.205.0.34", names: ["other.test."], ttl: 1 }, { ip: "8.8.8.8", names: ["dns.test."], ttl: 100 }], 0);
  assert.deepEqual(log, ["add 300 [F:8085:r2]", "ipcache 10.205.0.34", "ipcache 8.8.8.8"], "the CIDR rule's copy for the address inside, before its identity; the world class answers for the rest");
  const inside = fqdn.identity("10.205.0.34")!;
  log.length = 0;
  // Nothing asked for the subjects' entries in between (as when the agent only added the answer's): the forget still finds 300.
  fqdn.gc(10_000, () => false);
  assert.deepEqual(log, ["forget 10.205.0.34", "install 300 []"], "the expired address leaves the ipcache, then the subject is written without its copy");
  assert.equal(fqdn.identity("10.205.0.34"), undefined);
  fqdn.learn([{ ip: "10.205.0.34", names: ["other.test."], ttl: 100 }], 20_000);
  assert.deepEqual(fqdn.entriesFor(300).map((e) => [e.peer >= MIN_FQDN_IDENTITY, e.port, e.ruleId]), [[true, 8085, 2]], `learned again (was ${inside})`);
  assert.deepEqual(fqdn.entriesFor(301), [], "a subject with world class entries alone needs none");
});

test("a new node state moves a learned address's peer: a prefix that now holds it gives it that CIDR identity's entries", () => {
  const { target } = recorder();
  const fqdn = new FqdnPolicy(target, { cache: { minTtlSeconds: 0, maxAddressesPerName: 10, graceSeconds: 0 } });
  fqdn.setNodeState({ ...state, ipcache: [] });
  fqdn.learn([{ ip: "10.205.0.34", names: ["other.test."], ttl: 100 }], 0);
  assert.deepEqual(fqdn.entriesFor(300), [], "outside every prefix: the world class answers");
  fqdn.setNodeState(state);
  assert.deepEqual(fqdn.entriesFor(300).map((e) => [e.port, e.ruleId]), [[8085, 2]], "inside 10.205.0.0/24 now");
});
