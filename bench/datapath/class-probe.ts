// bench/datapath/class-probe: from-container's cost per new flow (BPF_PROG_TEST_RUN) for a subject without class entries, with the cluster class's, the every-pod class's, both, or the world class's, to a pod and to a CIDR identity (issue #21). Prints one JSON line.
// Usage (root): node --import tsx bench/datapath/class-probe.ts [checkout] — another checkout's programs and loader for a side-by-side run (default: this one).
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadavg } from "node:os";
import type { PolicyEntry } from "../../core/model.ts";

const root = resolve(process.argv[2] ?? resolve(dirname(fileURLToPath(import.meta.url)), "../.."));
// Imported from `root` so that a run against another checkout measures its programs (their layouts may differ).
const { Datapath, PROGRAMS } = (await import(`${root}/node-agent/bpf/datapath.ts`)) as typeof import("../../node-agent/bpf/datapath.ts");
const { testRun } = (await import(`${root}/node-agent/bpf/loader.ts`)) as typeof import("../../node-agent/bpf/loader.ts");
const { frame } = (await import(`${root}/node-agent/bpf/frames.ts`)) as typeof import("../../node-agent/bpf/frames.ts");

const TC_ACT_SHOT = 2;
const POD = { ip: "10.0.0.1", ip6: "fd00::1", identity: 1000 };
const PEER = { ip: "10.1.0.5", identity: 3000 };
/** A CIDR identity (the operator's local scope): in the world class. */
const CIDR_PEER = { ip: "10.2.0.5", identity: (1 << 24) + 7 };
const CLUSTER_CLASS = 255;
const EVERY_POD_CLASS = 254;
const WORLD_CLASS = 253;
let rule = 1;
const allow = (peer: number, proto: number, port: number): PolicyEntry => ({ subject: POD.identity, direction: "egress", peer, proto, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: rule++ });
// 100 entries of other peers and a wildcard entry; the probed flow (TCP 9999 to a pod) misses every key: default deny, the most probes.
const base = [...Array.from({ length: 100 }, (_, i) => allow(4000 + i, 6, 80)), allow(0, 6, 443)];
const world = [...base, allow(WORLD_CLASS, 6, 8443)];
// The flow to the pod peer, then (cidr_*) the same flow to the CIDR identity.
const cases: Record<string, { entries: PolicyEntry[]; to: { ip: string } }> = {
  none: { entries: base, to: PEER },
  cluster: { entries: [...base, allow(CLUSTER_CLASS, 6, 8080)], to: PEER },
  pods: { entries: [...base, allow(EVERY_POD_CLASS, 17, 53)], to: PEER },
  both: { entries: [...base, allow(CLUSTER_CLASS, 6, 8080), allow(EVERY_POD_CLASS, 17, 53), allow(EVERY_POD_CLASS, 6, 8080)], to: PEER },
  world: { entries: world, to: PEER },
  cidr_none: { entries: base, to: CIDR_PEER },
  cidr_world: { entries: world, to: CIDR_PEER },
};

const load = [loadavg()[0]!];
const dp = Datapath.load(`bench-class-probe-${process.pid}`);
const ns: Record<string, number> = {};
try {
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "medium" });
  dp.setIpcache({ cidr: "10.1.0.0/24", identity: PEER.identity });
  dp.setIpcache({ cidr: "10.2.0.0/24", identity: CIDR_PEER.identity });
  const from = dp.programFd(PROGRAMS.fromContainer);
  for (const [name, { entries, to }] of Object.entries(cases)) {
    const f = frame({ src: POD.ip, dst: to.ip, proto: 6, sport: 40000, dport: 9999 });
    dp.setSubjectPolicy({ subject: POD.identity, ingressEnforced: false, egressEnforced: true, entries }, [{ ip: POD.ip, ifindex: 1 }, { ip: POD.ip6, ifindex: 1 }]);
    testRun(from, f, { ifindex: 1, repeat: 2000 }); // warm-up, not counted
    const samples: number[] = [];
    for (let i = 0; i < 15; i++) {
      dp.clearConntrack();
      const r = testRun(from, f, { ifindex: 1, repeat: 2000 });
      if (r.retval !== TC_ACT_SHOT) throw new Error(`${name}: the flow should meet default deny, the program returned ${r.retval}`);
      samples.push(r.durationNs);
    }
    samples.sort((a, b) => a - b);
    ns[name] = samples[7]!;
  }
} finally {
  dp.clearAll();
  dp.close();
  dp.unpin();
}
load.push(loadavg()[0]!);
console.log(JSON.stringify({ bench: "datapath-class-probe", checkout: root, new_flow_ns: ns, load_1m: load }));
