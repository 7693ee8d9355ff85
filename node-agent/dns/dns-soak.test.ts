// Real packets, many lookups: names answering fresh addresses each followed at once by a connect, and the node's DNS service killed -9 in the middle of such a stream.
//   DNS_SOAK_LOOKUPS (default 1,000) sets the first test's lookups; `make test-dns-soak` runs it with 10,000.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { PROTO_NUMBER } from "../../core/model.ts";
import { decodeFqdnStateWithJournal } from "../../core/dns/cache-state.ts";
import { DnsTopology, RESOLVER_IDENTITY as RESOLVER_ID, podDnsPolicy } from "./testing/topology.ts";

const LOOKUPS = Number(process.env.DNS_SOAK_LOOKUPS ?? 1000);
const KILL_STREAM = 400;
const DNS_RULE = 7;
const FQDN_RULE = 8;
const PROXY_PORT = 10053;
// c<i>.fresh.test answers 10.206.0.0 + i, o<i>.other.test 10.206.128.0 + i (resolver.ts "synth:").
const ZONE = {
  "*.fresh.test": [{ type: "A", data: "synth:10.206.0.0", ttl: 300 }],
  "*.kill.test": [{ type: "A", data: "synth:10.206.64.0", ttl: 300 }],
  "*.other.test": [{ type: "A", data: "synth:10.206.128.0", ttl: 300 }],
  "*.denied.test": [{ type: "A", data: "10.205.0.99", ttl: 300 }],
};
const POLICY = podDnsPolicy([{ port: 53, protos: ["UDP", "TCP"], proxyPort: PROXY_PORT, ruleId: DNS_RULE }]);
const tcp8080 = [{ proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16 }];

const topo = new DnsTopology(`m5s${process.pid % 100000}`);
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-dns-soak-"));
const stateFile = path.join(stateDir, "fqdn-cache.json");

async function startNodeDns(): Promise<void> {
  await topo.startNodeDns({
    printFlows: false,
    stateFile,
    cache: { minTtlSeconds: 0, maxAddressesPerName: 10, graceSeconds: 5 },
    policy: POLICY,
    dnsRules: [[DNS_RULE, [
      { ruleId: DNS_RULE, index: 0, matchPattern: "*.fresh.test" },
      { ruleId: DNS_RULE, index: 1, matchPattern: "*.kill.test" },
      { ruleId: DNS_RULE, index: 2, matchPattern: "*.other.test" },
    ]]],
    fqdnSelectors: [
      { ruleId: FQDN_RULE, matchPattern: "*.fresh.test", ports: tcp8080 },
      { ruleId: FQDN_RULE, matchPattern: "*.kill.test", ports: tcp8080 },
    ],
  });
}

function learnedOnDisk(): Set<string> {
  const journal = fs.existsSync(`${stateFile}.journal`) ? fs.readFileSync(`${stateFile}.journal`, "utf8") : "";
  const state = decodeFqdnStateWithJournal(fs.readFileSync(stateFile, "utf8"), journal);
  assert.ok(state.ok, "the state file and its journal read back");
  return new Set(state.value.entries.map((e) => e.ip));
}

before(async () => {
  await topo.setUp({ zone: ZONE, resolverPorts: [53], resolverIdentity: RESOLVER_ID, policy: POLICY, quietResolver: true });
  await startNodeDns();
});

after(async () => {
  await topo.cleanup();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

test(`${LOOKUPS} lookups of names answering fresh addresses, each followed at once by a connect: none dropped`, async () => {
  const started = Date.now();
  const r = await topo.lookupConnect({ count: LOOKUPS, allowSuffix: "fresh.test", tcpPort: 8080 });
  assert.equal(r.unanswered, 0, "every lookup answered");
  assert.equal(r.first_connect_drops, 0, `no allowed connection dropped (${JSON.stringify(r.dropped)})`);
  assert.equal(learnedOnDisk().size, LOOKUPS, "every address learned and on disk");
  console.log(`# ${LOOKUPS} lookups + connects in ${Date.now() - started} ms, connect p50 ${r.connect_p50_ms} ms p99 ${r.connect_p99_ms} ms`);
});

test("kill -9 of the DNS service mid-stream: no allowed connection dropped, no denied name let through, queries fail while it is down and succeed on retry, the cache restored", async () => {
  let killedAt = -1;
  let restarted: Promise<void> | undefined;
  const learnedBefore = new Set<string>();
  const stream = topo.lookupConnect(
    { count: KILL_STREAM, allowSuffix: "kill.test", tcpPort: 8080, retry: true, lookupTimeoutMs: 300, giveUpMs: 60_000, checkEvery: 20, refusedSuffix: "denied.test", unselectedSuffix: "other.test", progress: true },
    (i) => {
      if (i !== 100 || killedAt >= 0) return;
      killedAt = i;
      restarted = (async () => {
        await topo.stopNodeDns("SIGKILL");
        for (const ip of learnedOnDisk()) learnedBefore.add(ip);
        await new Promise((r) => setTimeout(r, 1500)); // the stream keeps asking and connecting while it is down
        await startNodeDns();
      })();
    },
  );
  const r = await stream;
  await restarted;
  assert.equal(killedAt, 100, "killed mid-stream");
  assert.equal(r.unanswered, 0, "every lookup answered in the end (the client's retries)");
  assert.ok((r.failed_attempts as number) > 0, "lookups failed while the service was down (never answered around the rules)");
  assert.equal(r.first_connect_drops, 0, `no allowed connection dropped (${JSON.stringify(r.dropped)})`);
  assert.equal(r.refused_leaks, 0, "no name the DNS rules refuse was answered");
  assert.equal(r.unselected_leaks, 0, "no address of a name no toFQDNs selects was reachable");
  assert.ok((r.checks as number) >= KILL_STREAM / 20);
  // Every address learned before the kill came back from disk and is allowed again.
  const kill = [...learnedBefore].filter((ip) => ip.startsWith("10.206.64."));
  assert.ok(kill.length >= 100, `the addresses learned before the kill were on disk (${kill.length})`);
  const after = learnedOnDisk();
  assert.deepEqual(kill.filter((ip) => !after.has(ip)), [], "all restored");
  assert.equal(await topo.connects("10.206.64.0", 8080), true, "c0.kill.test's address (learned before the kill, no lookup since) connects after the restart");
});
