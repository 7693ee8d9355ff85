// The loader against the kernel: the verifier accepts every program, pins are reused, failed batches roll back.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PROTO_NUMBER, type PolicyEntry } from "../../core/model.ts";
import { DATAPATH_OBJECT, Datapath, MAPS, PROGRAMS } from "./datapath.ts";
import { BPFFS_ROOT, BpfError, BpfObject, pinNewMap, testRun } from "./loader.ts";
import { frame } from "./frames.ts";
import { CONST, LAYOUT, encodeIpcacheValue, encodePolicyKey, encodePolicyValue, parseAddress } from "./layout.ts";

const SCOPE = `test-maps-${process.pid}`;
const bpfDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bpf");
let dp: Datapath;

const entry = (peer: number, ruleId: number): PolicyEntry => ({
  subject: 42, direction: "ingress", peer, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId,
});

before(() => {
  dp = Datapath.load(SCOPE);
});
after(() => {
  dp?.close();
  dp?.unpin();
});

test("the verifier on this kernel accepts every program of the object", () => {
  for (const name of Object.values(PROGRAMS)) assert.ok(dp.programFd(name) > 0, name);
});

test("every map is pinned under /sys/fs/bpf/membrane/<scope>/ and a second load reuses it", () => {
  for (const name of Object.values(MAPS)) assert.ok(fs.existsSync(path.join(dp.object.pinDir, name)), name);
  const e = entry(7, 1);
  dp.object.map(MAPS.policy).update(encodePolicyKey(e), encodePolicyValue(e));
  const again = Datapath.load(SCOPE);
  try {
    assert.deepEqual(again.object.map(MAPS.policy).lookup(encodePolicyKey(e)), encodePolicyValue(e));
  } finally {
    again.close();
  }
});

/** The trie key of ip/len as the datapath writes it. */
function trieKey(ip: string, len: number): Buffer {
  const k = Buffer.alloc(LAYOUT.ipcache_key.size);
  k.writeUInt32LE(CONST.IPCACHE_FIXED_PREFIX_BITS + len, LAYOUT.ipcache_key.fields.prefixlen.offset);
  k.writeUInt8(CONST.FAMILY_IPV4, LAYOUT.ipcache_key.fields.family.offset);
  parseAddress(ip).bytes.copy(k, LAYOUT.ipcache_key.fields.addr.offset);
  return k;
}

/** Whether the trie holds exactly this key (a trie lookup answers with the longest prefix instead). */
const trieHas = (d: Datapath, key: Buffer): boolean => d.object.map(MAPS.ipcache).keys().some((k) => k.equals(key));

test("an address is written to the hosts hash and to the trie, where programs of an earlier version look; a delete removes both", () => {
  const pod = { cidr: "10.9.1.7/32", identity: 4243 };
  dp.setIpcache(pod);
  assert.deepEqual(dp.ipcacheValue(pod.cidr), encodeIpcacheValue(pod));
  assert.ok(trieHas(dp, trieKey("10.9.1.7", 32)), "in the trie too");
  dp.deleteIpcache(pod.cidr);
  assert.equal(dp.ipcacheValue(pod.cidr), undefined);
  assert.ok(!trieHas(dp, trieKey("10.9.1.7", 32)), "gone from the trie");
});

test("addresses an earlier agent kept only in the ipcache trie are copied to the hosts hash at load", () => {
  dp.pruneIpcache([]); // as an earlier version left it: no hosts hash entries at all
  const pod = { cidr: "10.9.0.7/32", identity: 4242, tunnelEndpoint: "192.168.9.2" };
  const cidr = { cidr: "10.9.0.0/16", identity: 16777300 };
  const trie = dp.object.map(MAPS.ipcache);
  trie.update(trieKey("10.9.0.7", 32), encodeIpcacheValue(pod));
  trie.update(trieKey("10.9.0.0", 16), encodeIpcacheValue(cidr));
  const again = Datapath.load(SCOPE);
  try {
    assert.deepEqual(again.ipcacheValue(pod.cidr), encodeIpcacheValue(pod), "the address is in the hosts hash");
    assert.ok(trieHas(again, trieKey("10.9.0.7", 32)), "and still in the trie");
    assert.deepEqual(again.ipcacheValue(cidr.cidr), encodeIpcacheValue(cidr), "the CIDR stays in the trie");
    again.deleteIpcache(pod.cidr);
    assert.equal(again.ipcacheValue(pod.cidr), undefined);
    assert.ok(!trieHas(again, trieKey("10.9.0.7", 32)));
  } finally {
    again.deleteIpcache(cidr.cidr);
    again.close();
  }
});

test("pruning the ipcache keeps exactly the given prefixes, addresses and CIDRs alike", () => {
  const keep = [{ cidr: "10.8.0.1/32", identity: 300 }, { cidr: "fd00:8::1/128", identity: 301 }, { cidr: "10.8.0.0/16", identity: 302 }];
  const gone = [{ cidr: "10.8.0.2/32", identity: 303 }, { cidr: "10.7.0.0/16", identity: 304 }];
  for (const e of [...keep, ...gone]) dp.setIpcache(e);
  dp.pruneIpcache(keep.map((e) => e.cidr));
  for (const e of keep) assert.deepEqual(dp.ipcacheValue(e.cidr), encodeIpcacheValue(e), e.cidr);
  for (const e of gone) assert.equal(dp.ipcacheValue(e.cidr), undefined, e.cidr);
  dp.pruneIpcache([]);
  for (const e of keep) assert.equal(dp.ipcacheValue(e.cidr), undefined, e.cidr);
});

/** Pins what an earlier version left in a fresh scope, loads this version's object over it, and removes the scope after. */
function upgradeFrom(tag: string, earlier: (dir: string) => void, check: (upgraded: Datapath, dir: string) => void): void {
  const scope = `test-maps-${tag}-${process.pid}`;
  const dir = path.join(BPFFS_ROOT, scope);
  fs.mkdirSync(dir, { recursive: true });
  let upgraded: Datapath | undefined;
  try {
    earlier(dir);
    upgraded = Datapath.load(scope);
    check(upgraded, dir);
  } finally {
    upgraded?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("a policy map pinned by an earlier version as an LPM trie is replaced at load: entries copied, lens rebuilt, verdicts kept", () => {
  const allow: PolicyEntry = { subject: 1000, direction: "egress", peer: 3000, proto: PROTO_NUMBER.TCP, port: 8080, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 7 };
  const range: PolicyEntry = { ...allow, port: 8960, portPrefixLen: 8, ruleId: 8 }; // 8960-9215
  upgradeFrom(
    "upgrade",
    // What the version before the hash lookup pinned: same key and value bytes, in an LPM trie.
    (dir) =>
      pinNewMap(
        { type: 11 /* LPM_TRIE */, keySize: LAYOUT.policy_key.size, valueSize: LAYOUT.policy_value.size, maxEntries: 262144, flags: 1 /* NO_PREALLOC */ },
        "membrane_policy",
        path.join(dir, MAPS.policy),
        [allow, range].map((e) => ({ key: encodePolicyKey(e), value: encodePolicyValue(e) })),
      ),
    (upgraded, dir) => {
      assert.equal(upgraded.object.map(MAPS.policy).type(), 1, "a hash now");
      assert.deepEqual(upgraded.object.replaced, [{ name: MAPS.policy, complete: true }]);
      assert.equal(upgraded.lostPinnedState(), false, "every entry came along: the agent may resume");
      assert.ok(!fs.existsSync(path.join(dir, `${MAPS.policy}-previous`)), "the old pin is gone");
      for (const e of [allow, range]) assert.deepEqual(upgraded.object.map(MAPS.policy).lookup(encodePolicyKey(e)), encodePolicyValue(e), `rule ${e.ruleId} copied`);
      upgraded.setIpcache({ cidr: "10.9.9.9/32", identity: 3000 });
      upgraded.setEndpoint({ ip: "10.9.9.1", ifindex: 1, identity: 1000, ingressEnforced: true, egressEnforced: true });
      const verdict = (dport: number): number =>
        testRun(upgraded.programFd(PROGRAMS.fromContainer), frame({ src: "10.9.9.1", dst: "10.9.9.9", proto: PROTO_NUMBER.TCP, sport: 40000 + (dport % 1000), dport }), { ifindex: 1 }).retval;
      assert.equal(verdict(8080), 0, "the exact port passes: its lens bit was rebuilt");
      assert.equal(verdict(9100), 0, "inside the copied range");
      assert.equal(verdict(8081), 2, "default deny");
    },
  );
});

test("a conntrack map and config pinned before the conntrack stamp (16- and 8-byte values) are replaced with their entries: established flows pass and are stamped, the settings stay", () => {
  const POD = "10.9.8.1";
  const PEER = "10.9.8.9";
  /** The pod's connection from sport to PEER:dport as conntrack keys it (egress, the originator's tuple). */
  const ctKey = (sport: number, dport = 81): Buffer => {
    const K = LAYOUT.ct_key.fields;
    const k = Buffer.alloc(LAYOUT.ct_key.size);
    parseAddress(POD).bytes.copy(k, K.saddr.offset);
    parseAddress(PEER).bytes.copy(k, K.daddr.offset);
    k.writeUInt16BE(sport, K.sport.offset);
    k.writeUInt16BE(dport, K.dport.offset);
    k.writeUInt8(PROTO_NUMBER.TCP, K.proto.offset);
    k.writeUInt8(CONST.FAMILY_IPV4, K.family.offset);
    k.writeUInt8(CONST.DIR_EGRESS, K.direction.offset);
    return k;
  };
  const OLD_CT_VALUE = 16;
  const OLD_CONFIG_VALUE = 8;
  upgradeFrom(
    "ctstamp",
    (dir) => {
      // An established connection as the version before the stamp kept it: deadline, rule, state, seen reply, CT_F_NO_TUNNEL.
      const v = Buffer.alloc(OLD_CT_VALUE);
      v.writeBigUInt64LE(process.hrtime.bigint() + 3_600_000_000_000n, 0);
      v.writeUInt32LE(7, 8);
      Buffer.from([2 /* CT_TCP_ESTABLISHED */, 1, 1 /* CT_F_NO_TUNNEL */, 0]).copy(v, 12);
      pinNewMap({ type: 9 /* LRU_HASH */, keySize: LAYOUT.ct_key.size, valueSize: OLD_CT_VALUE, maxEntries: 262144, flags: 0 }, "membrane_conntrack", path.join(dir, MAPS.conntrack), [{ key: ctKey(40000), value: v }]);
      const cfg = Buffer.alloc(OLD_CONFIG_VALUE);
      cfg.writeUInt32LE(77, 0); // the tunnel device
      cfg.writeUInt32LE(CONST.CONFIG_F_EVENTS_FORWARDED | CONST.CONFIG_F_POLICY_AUDIT, 4);
      pinNewMap({ type: 2 /* ARRAY */, keySize: 4, valueSize: OLD_CONFIG_VALUE, maxEntries: 1, flags: 0 }, "membrane_config", path.join(dir, MAPS.config), [{ key: Buffer.alloc(4), value: cfg }]);
    },
    (upgraded) => {
      assert.deepEqual([...upgraded.object.replaced].sort((a, b) => a.name.localeCompare(b.name)), [{ name: MAPS.config, complete: true }, { name: MAPS.conntrack, complete: true }]);
      assert.equal(upgraded.lostPinnedState(), false);
      const cfg = upgraded.object.map(MAPS.config).lookup(Buffer.alloc(4))!;
      assert.equal(cfg.readUInt32LE(LAYOUT.config_value.fields.vxlan_ifindex.offset), 77, "the tunnel device kept");
      assert.equal(upgraded.policyAuditMode(), true, "audit mode kept");
      const ct = upgraded.object.map(MAPS.conntrack);
      const V = LAYOUT.ct_value.fields;
      assert.deepEqual([ct.lookup(ctKey(40000))!.readUInt32LE(V.ifindex.offset), ct.lookup(ctKey(40000))!.readUInt32LE(V.rule_id.offset)], [0, 7], "copied, unstamped");
      // The pod's egress is enforced and allows PEER on port 80 only: the copied entry alone lets port 81 through.
      upgraded.setIpcache({ cidr: `${PEER}/32`, identity: 3000 });
      upgraded.setSubjectPolicy({ subject: 1000, ingressEnforced: false, egressEnforced: true, entries: [{ subject: 1000, direction: "egress", peer: 3000, proto: PROTO_NUMBER.TCP, port: 80, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 9 }] }, [{ ip: POD, ifindex: 1 }]);
      upgraded.setPolicyAuditMode(false);
      const send = (sport: number, dport: number): number => testRun(upgraded.programFd(PROGRAMS.fromContainer), frame({ src: POD, dst: PEER, proto: PROTO_NUMBER.TCP, sport, dport, tcpFlags: 0x10 /* ACK */ }), { ifindex: 1 }).retval;
      assert.equal(send(40000, 81), 0, "the established connection's next packet passes (the endpoint check judged it)");
      assert.deepEqual([ct.lookup(ctKey(40000))!.readUInt32LE(V.ifindex.offset), ct.lookup(ctKey(40000))!.readUInt32LE(V.ep_gen.offset)], [1, upgraded.endpointGeneration()], "and stamped");
      // A connection whose entry did not follow (e.g. opened after the copy, before the new programs were attached).
      assert.equal(send(40001, 80), 0, "a mid-stream packet without an entry is judged by policy as a new connection: allowed");
      assert.equal(ct.lookup(ctKey(40001, 80))?.readUInt8(V.state.offset), 2, "and tracked as established from there");
      assert.equal(send(40002, 81), 2, "one policy does not allow is dropped");
    },
  );
});

test("a pinned map whose entries cannot follow (another value layout) is replaced empty, and the datapath says its state is lost", () => {
  upgradeFrom(
    "relayout",
    (dir) => {
      const key = Buffer.alloc(LAYOUT.ipcache_host_key.size, 1);
      pinNewMap({ type: 1 /* HASH */, keySize: LAYOUT.ipcache_host_key.size, valueSize: 4, maxEntries: 1024, flags: 1 }, "membrane_ipcache_hosts", path.join(dir, MAPS.ipcacheHosts), [{ key, value: Buffer.alloc(4, 7) }]);
    },
    (upgraded) => {
      assert.deepEqual(upgraded.object.replaced, [{ name: MAPS.ipcacheHosts, complete: false }]);
      assert.equal(upgraded.object.map(MAPS.ipcacheHosts).keys().length, 0, "replaced empty");
      assert.equal(upgraded.lostPinnedState(), true, "so the agent asks for a snapshot instead of resuming");
    },
  );
});

test("a batch that fails part-way leaves the previous entries in force and says why", () => {
  // A one-entry policy map: the batch's second write does not fit, after its first has replaced the old entry.
  const small = Datapath.load(`${SCOPE}-small`, { policyMapEntries: 1 });
  try {
    const m = small.object.map(MAPS.policy);
    const old = entry(100, 1);
    m.update(encodePolicyKey(old), encodePolicyValue(old));
    const replaced = entry(100, 9);
    const added = entry(101, 2);
    assert.throws(
      () => m.applyBatch({ upserts: [{ key: encodePolicyKey(replaced), value: encodePolicyValue(replaced) }, { key: encodePolicyKey(added), value: encodePolicyValue(added) }], deletes: [] }),
      (err: unknown) => err instanceof BpfError && err.errno === 7 && /update membrane_policy: E2BIG/.test(err.message),
    );
    assert.deepEqual(m.lookup(encodePolicyKey(old)), encodePolicyValue(old), "the old entry is back as it was");
    assert.equal(m.lookup(encodePolicyKey(added)), undefined, "the new entry was not written");
  } finally {
    small.close();
    small.unpin();
  }
});

test("a batch applies additions before removals and replaces a subject's entries", () => {
  const policy = (entries: PolicyEntry[]) => ({ subject: 42, ingressEnforced: true, egressEnforced: false, entries });
  const m = dp.object.map(MAPS.policy);
  m.clear();
  dp.setSubjectPolicy(policy([entry(1, 1), entry(2, 2)]));
  dp.setSubjectPolicy(policy([entry(2, 3), entry(3, 4)]));
  assert.equal(m.lookup(encodePolicyKey(entry(1, 0))), undefined);
  assert.equal(m.lookup(encodePolicyKey(entry(2, 0)))?.readUInt32LE(4), 3, "updated in place with its new ruleId");
  assert.ok(m.lookup(encodePolicyKey(entry(3, 0))));
});

test("keys and values of the wrong size are refused before reaching the kernel", () => {
  assert.throws(() => dp.object.map(MAPS.policy).update(Buffer.alloc(3), Buffer.alloc(8)), /key of 3 bytes, want 16/);
});

test("the build fails loudly when clang is missing", () => {
  const r = spawnSync("make", ["-C", bpfDir, "CLANG=membrane-no-such-clang", "-B"], { encoding: "utf8" });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /membrane-no-such-clang not found: install clang/);
  assert.ok(fs.existsSync(DATAPATH_OBJECT), "the existing object is untouched");
});

test("after a restart, a subject's entries written by the previous process are replaced, not left behind", () => {
  const policy = (entries: PolicyEntry[]) => ({ subject: 42, ingressEnforced: true, egressEnforced: false, entries });
  const m = dp.object.map(MAPS.policy);
  m.clear();
  dp.setSubjectPolicy(policy([entry(1, 1), entry(2, 2)]));
  const restarted = Datapath.load(SCOPE); // a new process knows nothing of what was written
  try {
    restarted.setSubjectPolicy(policy([entry(3, 3)]));
    assert.equal(m.lookup(encodePolicyKey(entry(1, 0))), undefined);
    assert.equal(m.lookup(encodePolicyKey(entry(2, 0))), undefined);
    assert.ok(m.lookup(encodePolicyKey(entry(3, 0))));
  } finally {
    restarted.close();
  }
});

test("a load that fails leaves no scope directory behind (and keeps one that was already there)", (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-badobj-"));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const notElf = path.join(tmp, "not-an-object.o");
  fs.writeFileSync(notElf, "this is not an ELF file\n");
  for (const object of [path.join(tmp, "missing.o"), notElf]) {
    const scope = `test-badobj-${process.pid}`;
    assert.throws(() => BpfObject.load(object, { scope }), BpfError, object);
    assert.equal(fs.existsSync(path.join(BPFFS_ROOT, scope)), false, `${object}: the scope directory it made is gone`);
  }
  // The scope of a loaded object stays whole when another load into it fails.
  assert.throws(() => BpfObject.load(notElf, { scope: SCOPE }), BpfError);
  for (const name of Object.values(MAPS)) assert.ok(fs.existsSync(path.join(dp.object.pinDir, name)), name);
});

test("a process's first writes of subjects pinned by an earlier one remove what each no longer has, also for a subject a delta touched in between", () => {
  const scope = `${SCOPE}-first-writes`;
  const e = (subject: number, port: number): PolicyEntry => ({ subject, direction: "ingress", peer: 9, proto: PROTO_NUMBER.TCP, port, portPrefixLen: 16, verdict: "allow", proxyPort: 0, ruleId: 1 });
  const policy = (subject: number, ports: number[]) => ({ subject, ingressEnforced: true, egressEnforced: false, entries: ports.map((p) => e(subject, p)) });
  const ports = (d: Datapath, subject: number): number[] =>
    d.object.map(MAPS.policy).keys().filter((k) => k.readUInt32LE(LAYOUT.policy_key.fields.subject.offset) === subject).map((k) => k.readUInt16BE(LAYOUT.policy_key.fields.dport.offset)).sort((a, b) => a - b);
  const earlier = Datapath.load(scope);
  let later: Datapath | undefined;
  try {
    for (const s of [501, 502, 503]) assert.equal(earlier.setSubjectPolicy(policy(s, [80, 81, 82])).installed, true);
    earlier.close();
    later = Datapath.load(scope);
    // One synchronous pass, as a snapshot writes: each subject's pinned keys come from one walk of the map.
    later.setSubjectPolicy(policy(501, [80]));
    later.setSubjectPolicy(policy(502, [81, 83]));
    assert.deepEqual([ports(later, 501), ports(later, 502), ports(later, 503)], [[80], [81, 83], [80, 81, 82]]);
    // A delta on 503 (added, then a full install before its removals): the map's keys of 503 now, not the ones found at start.
    assert.equal(later.addSubjectEntries(policy(503, [80, 81, 82, 84]), [e(503, 84)]), true);
    later.setSubjectPolicy(policy(503, [85]));
    assert.deepEqual(ports(later, 503), [85], "the added 84 goes too");
  } finally {
    later?.close();
    (later ?? earlier).unpin();
  }
});
