// Parsing the CNI environment and network config: every rejection names the field and the reason.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { CniError, encodeResult, parseCniArgs, parseEnv, parseNetConf } from "./spec.ts";

const base = { cniVersion: "1.0.0", name: "pods", type: "membrane-cni", podCIDR: "10.244.3.0/24" };

function rejects(fn: () => unknown, code: number, msg: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof CniError && err.code === code && msg.test(err.message));
}

describe("network config", () => {
  it("fills defaults: mtu 1500, stateDir under /var/lib/membrane/cni/<name>, no agent", () => {
    const c = parseNetConf(base);
    assert.equal(c.mtu, 1500);
    assert.equal(c.stateDir, "/var/lib/membrane/cni/pods");
    assert.equal(c.agentSocket, undefined);
    assert.equal(c.range.gateway, "10.244.3.1");
  });

  it("takes the pod CIDR from ipam.podCIDR too, and refuses two that disagree", () => {
    const { podCIDR: _drop, ...noTop } = base;
    assert.equal(parseNetConf({ ...noTop, ipam: { podCIDR: "10.9.0.0/16" } }).podCIDR, "10.9.0.0/16");
    rejects(
      () => parseNetConf({ ...base, ipam: { podCIDR: "10.9.0.0/16" } }),
      7,
      /^network config: ipam.podCIDR: "10.9.0.0\/16" disagrees with podCIDR/,
    );
  });

  it("names the field and the reason for each bad value", () => {
    rejects(
      () => parseNetConf({ ...base, type: "bridge" }),
      7,
      /^network config: type: must be "membrane-cni"/,
    );
    rejects(() => parseNetConf({ ...base, name: "a b" }), 7, /^network config: name:/);
    rejects(() => parseNetConf({ ...base, mtu: 70000 }), 7, /^network config: mtu: must be an integer/);
    rejects(
      () => parseNetConf({ ...base, agentSocket: "agent.sock" }),
      7,
      /^network config: agentSocket: must be an absolute path/,
    );
    rejects(
      () => parseNetConf({ ...base, stateDir: 3 }),
      7,
      /^network config: stateDir: must be an absolute path/,
    );
    rejects(() => parseNetConf({ ...base, podCIDR: "fd00::/64" }), 7, /^network config: podCIDR: only IPv4/);
    rejects(() => parseNetConf({ ...base, podCIDRv6: "10.1.0.0/16" }), 7, /^network config: podCIDRv6: an IPv6 CIDR is required/);
    rejects(() => parseNetConf({ ...base, podCIDRv6: 64 }), 7, /^network config: podCIDRv6: must be a string/);
    rejects(
      () => parseNetConf({ ...base, ipam: { type: "host-local" } }),
      2,
      /^network config: ipam.type: "host-local" is not supported/,
    );
    rejects(() => parseNetConf({ ...base, cniVersion: "0.2.0" }), 1, /cniVersion: "0.2.0" is not supported/);
    rejects(() => parseNetConf([]), 6, /must be a JSON object/);
  });
});

describe("CNI environment", () => {
  const env = {
    CNI_COMMAND: "ADD",
    CNI_CONTAINERID: "abc123",
    CNI_NETNS: "/var/run/netns/x",
    CNI_IFNAME: "eth0",
  };

  it("reads the pod's namespace and name from CNI_ARGS", () => {
    const e = parseEnv({ ...env, CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0" });
    assert.deepEqual([e.podNamespace, e.podName], ["prod", "web-0"]);
    assert.deepEqual(parseCniArgs("A=1;B=x=y"), { A: "1", B: "x=y" });
  });

  it("lets DEL go without CNI_NETNS but not ADD", () => {
    assert.equal(parseEnv({ ...env, CNI_COMMAND: "DEL", CNI_NETNS: "" }).netns, "");
    rejects(() => parseEnv({ ...env, CNI_NETNS: "" }), 4, /^CNI_NETNS is not set \(required for ADD\)/);
  });

  it("rejects a bad container id, interface name, command or CNI_ARGS with code 4", () => {
    rejects(() => parseEnv({ ...env, CNI_CONTAINERID: "-x" }), 4, /^CNI_CONTAINERID:/);
    rejects(() => parseEnv({ ...env, CNI_IFNAME: "a-very-long-ifname0" }), 4, /^CNI_IFNAME:/);
    rejects(() => parseEnv({ ...env, CNI_COMMAND: "STATUS" }), 4, /unknown command "STATUS"/);
    rejects(
      () => parseEnv({ ...env, CNI_ARGS: "K8S_POD_NAME" }),
      4,
      /^CNI_ARGS: "K8S_POD_NAME" is not KEY=VALUE/,
    );
  });
});

describe("result encoding", () => {
  const r = {
    interfaces: [{ name: "eth0", mac: "aa:bb:cc:dd:ee:ff", sandbox: "/ns" }],
    ips: [{ address: "10.0.0.2/32", gateway: "10.0.0.1", interface: 0 }],
    routes: [],
  };

  it("adds the IP version for pre-1.0 results only", () => {
    assert.deepEqual((encodeResult("1.0.0", r).ips as object[])[0], {
      address: "10.0.0.2/32",
      gateway: "10.0.0.1",
      interface: 0,
    });
    assert.deepEqual((encodeResult("0.4.0", r).ips as object[])[0], {
      version: "4",
      address: "10.0.0.2/32",
      gateway: "10.0.0.1",
      interface: 0,
    });
  });
});
