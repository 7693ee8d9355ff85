// Test fixture: the node side of the DNS path in its own netns — the datapath's pinned maps, the DNS service, flows on stdout.
//   node-dns.ts '<config JSON>'   prints "ready", then "flow <JSON>" per query; SIGTERM stops it.
//   MEMBRANE_DNS_CPU_PROF=DIR: a V8 CPU profile from "ready" to SIGTERM is written there (started after the
//   datapath loads: the profiler's signals would interrupt the verifier, whose load then fails with EAGAIN).
//   With manualGc, nothing is garbage-collected on a timer: each stdin line "gc <epoch ms>" runs the GC as of
//   that time and prints "gc <JSON of the addresses removed>" (a test then decides time, not the machine's load).
import fs from "node:fs";
import { Session } from "node:inspector/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import type { CompiledPort, SubjectPolicy } from "../../../core/model.ts";
import type { DnsRuleRef } from "../../../core/dns/query-decision.ts";
import { Datapath } from "../../bpf/datapath.ts";
import { DnsService } from "../service.ts";
import type { FqdnSelectorTerm } from "../fqdn-policy.ts";

interface Config {
  scope: string;
  proxyAddress: string;
  stateFile?: string;
  rejectCode?: "refused" | "nameError";
  cache: { minTtlSeconds: number; maxAddressesPerName: number; graceSeconds: number };
  policy: SubjectPolicy;
  endpoints: { ip: string; ifindex: number }[];
  /** ruleId → its DNS rules, and (optional) the port blocks of their toPorts entry. */
  dnsRules: [number, DnsRuleRef[], CompiledPort[]?][];
  fqdnSelectors: FqdnSelectorTerm[];
  /** false: no "flow" lines (a benchmark's load would measure stdout). */
  printFlows?: boolean;
  /** GC only when told on stdin, as of the time given (no timer). */
  manualGc?: boolean;
}

const config = JSON.parse(process.argv[2] ?? "") as Config;
const dp = Datapath.load(config.scope);
const service = new DnsService(dp, {
  proxyAddress: config.proxyAddress,
  cache: config.cache,
  // A day: with manualGc the timer never fires within a test.
  gcIntervalMs: config.manualGc ? 86_400_000 : 200,
  ...(config.stateFile ? { stateFile: config.stateFile } : {}),
  ...(config.rejectCode ? { rejectCode: config.rejectCode } : {}),
  ...(config.printFlows === false ? {} : { onFlow: (f) => console.log(`flow ${JSON.stringify(f)}`) }),
});
await service.start();
await service.setSubject(config.policy.subject, {
  policy: config.policy,
  endpoints: config.endpoints,
  dnsRules: config.dnsRules.map(([ruleId, rules, ports]) => ({ ruleId, rules, ...(ports ? { ports } : {}) })),
  fqdnSelectors: config.fqdnSelectors,
});
if (config.manualGc) {
  createInterface({ input: process.stdin }).on("line", (line) => {
    const m = /^gc (\d+)$/.exec(line.trim());
    if (m) console.log(`gc ${JSON.stringify(service.gc(Number(m[1])))}`);
  });
}
const profileDir = process.env.MEMBRANE_DNS_CPU_PROF;
const profiler = profileDir ? new Session() : undefined;
if (profiler) {
  profiler.connect();
  await profiler.post("Profiler.enable");
  await profiler.post("Profiler.start");
}
console.log("ready");
process.on("SIGTERM", () => {
  void (async () => {
    if (profiler && profileDir) {
      const { profile } = await profiler.post("Profiler.stop");
      fs.mkdirSync(profileDir, { recursive: true });
      fs.writeFileSync(path.join(profileDir, `node-dns-${process.pid}.cpuprofile`), JSON.stringify(profile));
    }
    await service.stop();
  })().then(() => {
    dp.close();
    process.exit(0);
  });
});
