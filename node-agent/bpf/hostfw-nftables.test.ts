// Defence in depth: a user's nftables default-deny input ruleset and Membrane's host policy in one node namespace both apply, and removing Membrane leaves the user's ruleset exactly as it was.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { IDENTITY } from "../../core/identity.ts";
import { PROTO_NUMBER, type PolicyEntry } from "../../core/model.ts";
import { Datapath } from "./datapath.ts";
import { NetnsFixture, ifindexIn, waitForLine } from "./netns.ts";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const PROBE = path.join(here, "probe.ts");

const tag = `hnf${process.pid % 100000}`;
const NS_NODE = `${tag}-node`;
const NS_OUT = `${tag}-out`;
const NODE_IP = "10.208.0.1";
const OUT_IP = "10.208.0.2";
const BOTH = 7001; // nftables and Membrane allow it
const NFT_ONLY = 7002; // nftables allows, Membrane's host policy does not
const MEMBRANE_ONLY = 7003; // Membrane allows, nftables does not

/** The user's ruleset: default-deny input, established and loopback accepted, two ports open. */
const USER_RULESET = `table inet user_fw {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iif "lo" accept
    tcp dport { ${BOTH}, ${NFT_ONLY} } accept
  }
}
`;

const fx = new NetnsFixture();
let dp: Datapath | undefined;
let nodeIfindex = 0;
let attached = false;

async function reaches(port: number): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", NS_OUT, process.execPath, "--import", "tsx", PROBE, "connect", "tcp", NODE_IP, String(port), "1500"], { cwd: root });
    return true;
  } catch {
    return false;
  }
}

const ruleset = (): string => execFileSync("ip", ["netns", "exec", NS_NODE, "nft", "list", "ruleset"]).toString();

const allow = (port: number, ruleId: number): PolicyEntry => ({
  subject: IDENTITY.host, direction: "ingress", peer: IDENTITY.world, proto: PROTO_NUMBER.TCP, port, portPrefixLen: 16, proxyPort: 0, verdict: "allow", ruleId,
});

before(async () => {
  fx.addNetns(NS_NODE);
  fx.addNetns(NS_OUT);
  fx.addVeth({ netns: NS_NODE, ifname: "eth0", cidr: `${NODE_IP}/24` }, { netns: NS_OUT, ifname: "eth0", cidr: `${OUT_IP}/24` });
  execFileSync("ip", ["netns", "exec", NS_NODE, "nft", "-f", "-"], { input: USER_RULESET });
  nodeIfindex = ifindexIn(NS_NODE, "eth0");
  dp = Datapath.load(`test-${tag}`);
  dp.clearAll();
  dp.setConfig({ vxlanIfindex: 0, monitorAggregation: "maximum" });
  dp.setSubjectPolicy({ subject: IDENTITY.host, ingressEnforced: true, egressEnforced: false, entries: [allow(BOTH, 601), allow(MEMBRANE_ONLY, 602)] });
  dp.setHostAddress({ ip: NODE_IP, ingressEnforced: true, egressEnforced: false });
  dp.attachHostDevice(nodeIfindex, NS_NODE);
  attached = true;
  await waitForLine(fx.spawn(NS_NODE, process.execPath, ["--import", "tsx", PROBE, "serve", "tcp", String(BOTH), String(NFT_ONLY), String(MEMBRANE_ONLY)]), /^listening/, 15000);
});

after(() => {
  try {
    if (dp && attached) dp.detachHostDevice(nodeIfindex, NS_NODE);
  } catch {
    // the netns may already be gone
  }
  fx.cleanup();
  dp?.close();
  dp?.unpin();
});

test("both apply: a port open in both connects; open only in nftables or only in Membrane's host policy does not", async () => {
  assert.equal(await reaches(BOTH), true);
  assert.equal(await reaches(NFT_ONLY), false, "Membrane's host policy drops it");
  assert.equal(await reaches(MEMBRANE_ONLY), false, "the user's nftables drops it");
});

test("removing Membrane leaves the user's ruleset byte for byte, and it alone decides again", async () => {
  const before = ruleset();
  assert.match(before, /table inet user_fw/);
  dp!.detachHostDevice(nodeIfindex, NS_NODE);
  attached = false;
  dp!.close();
  dp!.unpin();
  dp = undefined;
  assert.equal(ruleset(), before);
  assert.equal(await reaches(NFT_ONLY), true, "nftables alone: open");
  assert.equal(await reaches(MEMBRANE_ONLY), false, "nftables alone: still dropped");
});
