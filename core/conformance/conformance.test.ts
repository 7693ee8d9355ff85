// NetworkPolicy conformance cases: compiled entries + lookup (with the datapath's ipBlock second look) and the reference evaluator both give the expected 9×9 tables.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import type { LabelSet, Policy } from "../model.ts";
import { PROTO_NUMBER } from "../model.ts";
import { securityLabels } from "../labels.ts";
import { cidrLabels, IDENTITY, RESERVED_IDENTITIES } from "../identity.ts";
import { parsePrefix, prefixContains } from "../cidr.ts";
import { parsePolicyObject } from "../parser/index.ts";
import { compileAll, policyPrefixes, type NamedPortResolver } from "../compiler.ts";
import { lookup } from "../policy/mapstate.ts";
import { verdict } from "../evaluator.ts";
import { ipBlockLabels, ipBlockPrefixes, longestBlock } from "../ipblock.ts";
import { CASES, PODS, namespaceLabels, renderCase, type ConformanceCase } from "./model.ts";

/** Pod addresses as the local cluster gives them: pods alternate between two nodes' pod CIDRs. */
const podIP = new Map(PODS.map((p, i) => [p.id, `10.244.${(i % 2) + 1}.${10 + i}`]));

const podIdentity = new Map(PODS.map((p, i) => [p.id, 256 + i]));

function parseCase(c: ConformanceCase): Policy[] {
  const out: Policy[] = [];
  for (const doc of parseAllDocuments(renderCase(c, (id) => podIP.get(id)))) {
    const r = parsePolicyObject(doc.toJS());
    if (!r.ok) assert.fail(`${c.name}: ${JSON.stringify(r.errors)}`);
    out.push(...r.value);
  }
  return out;
}

function identitiesFor(policies: readonly Policy[]): {
  ids: Map<number, LabelSet>;
  prefixes: [string, number][];
  blocks: [string, number][];
} {
  const ids = new Map<number, LabelSet>(RESERVED_IDENTITIES.map((r) => [r.id, r.labels]));
  for (const p of PODS) {
    ids.set(
      podIdentity.get(p.id)!,
      securityLabels({
        podLabels: p.labels,
        namespace: p.namespace,
        namespaceLabels: namespaceLabels(p.namespace),
      }),
    );
  }
  const prefixes: [string, number][] = [];
  let local = 1 << 24;
  for (const prefix of policyPrefixes(policies)) {
    ids.set(local, cidrLabels(prefix));
    prefixes.push([prefix, local++]);
  }
  const blocks: [string, number][] = [];
  for (const prefix of ipBlockPrefixes(policies)) {
    ids.set(local, ipBlockLabels(prefix));
    blocks.push([prefix, local++]);
  }
  return { ids, prefixes, blocks };
}

/** The ipcache's answer for an outside address: the longest policy prefix holding it, else world. */
function identityOfIP(ip: string, prefixes: readonly [string, number][]): number {
  const addr = parsePrefix(ip)!;
  let best: { bits: number; id: number } | undefined;
  for (const [text, id] of prefixes) {
    const p = parsePrefix(text)!;
    if (prefixContains(p, addr) && (!best || p.bits > best.bits)) best = { bits: p.bits, id };
  }
  return best?.id ?? IDENTITY.world;
}

const namedPorts: NamedPortResolver = (identity, name, protocol) => {
  const pod = PODS.find((p) => podIdentity.get(p.id) === identity);
  return (pod?.ports ?? [])
    .filter((cp) => cp.name === name && (protocol === "ANY" || cp.protocol === protocol))
    .map((cp) => cp.port);
};

for (const c of CASES) {
  test(`conformance: ${c.name}`, () => {
    const policies = parseCase(c);
    const { ids, prefixes, blocks } = identitiesFor(policies);
    const compiled = compileAll(policies, ids, { namedPorts });
    const addressOf = new Map(PODS.map((p) => [podIdentity.get(p.id)!, podIP.get(p.id)!]));
    // What the datapath's ipBlock map answers for a pod's address.
    const blockOf = (id: number): number | undefined => {
      const ip = addressOf.get(id);
      return ip === undefined ? undefined : longestBlock(ip, blocks);
    };
    const connected = (
      src: number,
      dst: number,
      protocol: number,
      port: number,
    ): { compiled: boolean; evaluated: boolean } => {
      const egress = lookup(compiled.snapshot(src), "egress", dst, protocol, port, blockOf(dst));
      const ingress = lookup(compiled.snapshot(dst), "ingress", src, protocol, port, blockOf(src));
      const endpoint = (id: number): { id: number; labels: LabelSet; address?: string } => {
        const address = addressOf.get(id);
        return { id, labels: ids.get(id)!, ...(address !== undefined ? { address } : {}) };
      };
      const ev = verdict({
        policies,
        src: endpoint(src),
        dst: endpoint(dst),
        protocol,
        port,
        namedPorts,
      });
      return {
        compiled: egress.verdict === "allow" && ingress.verdict === "allow",
        evaluated: ev.verdict === "allow",
      };
    };
    for (const probe of c.probes) {
      const proto = PROTO_NUMBER[probe.protocol];
      const viaLookup: string[] = [];
      const viaEvaluator: string[] = [];
      for (const from of PODS) {
        let rowL = "";
        let rowE = "";
        for (const to of PODS) {
          if (from.id === to.id) {
            rowL += "-";
            rowE += "-";
            continue;
          }
          const r = connected(podIdentity.get(from.id)!, podIdentity.get(to.id)!, proto, probe.port);
          rowL += r.compiled ? "." : "X";
          rowE += r.evaluated ? "." : "X";
        }
        viaLookup.push(rowL);
        viaEvaluator.push(rowE);
      }
      assert.deepEqual(viaLookup, [...probe.table], `${probe.protocol}/${probe.port} via compiled lookup`);
      assert.deepEqual(viaEvaluator, [...probe.table], `${probe.protocol}/${probe.port} via evaluator`);
    }
    for (const e of c.external ?? []) {
      const src = podIdentity.get(e.from)!;
      const dst = identityOfIP(e.ip, prefixes);
      const r = connected(src, dst, PROTO_NUMBER[e.protocol], e.port);
      assert.equal(r.compiled, e.connected, `${e.from} → ${e.ip} via compiled lookup`);
      assert.equal(r.evaluated, e.connected, `${e.from} → ${e.ip} via evaluator`);
    }
  });
}

test("conformance model: every table is 9×9 with '-' exactly on the diagonal", () => {
  for (const c of CASES) {
    for (const p of c.probes) {
      assert.equal(p.table.length, 9, c.name);
      p.table.forEach((row, i) => {
        assert.match(row, /^[.X-]{9}$/, c.name);
        for (let j = 0; j < 9; j++) assert.equal(row[j] === "-", i === j, `${c.name} row ${i}`);
      });
    }
  }
});
