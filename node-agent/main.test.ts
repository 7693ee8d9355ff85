// `membrane agent` flags: the chart's names, their values, and errors that name the flag.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseAgentFlags } from "./flags.ts";

const required = ["--node-name", "n1", "--operator", "op:9000", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca"];
const flags = (...extra: string[]) => {
  const r = parseAgentFlags([...required, ...extra]);
  if (!r.ok) throw new Error(r.error);
  return r.flags;
};
const error = (...extra: string[]) => {
  const r = parseAgentFlags([...required, ...extra]);
  assert.equal(r.ok, false);
  return (r as { error: string }).error;
};

describe("membrane agent flags", () => {
  it("--policy-enforcement-mode takes default, always or never (default: default)", () => {
    assert.equal(flags().policyEnforcementMode, "default");
    assert.equal(flags("--policy-enforcement-mode=always").policyEnforcementMode, "always");
    assert.equal(flags("--policy-enforcement-mode", "never").policyEnforcementMode, "never");
    assert.equal(error("--policy-enforcement-mode=strict"), '--policy-enforcement-mode: must be one of default, always, never, got "strict"');
  });

  it("--owner-daemonset names the agent's DaemonSet as NAMESPACE/NAME (none by default: the node's state always stays); anything else is refused naming the flag", () => {
    assert.equal(flags().ownerDaemonSet, undefined);
    assert.deepEqual(flags("--owner-daemonset=membrane-system/membrane-agent").ownerDaemonSet, { namespace: "membrane-system", name: "membrane-agent" });
    assert.equal(error("--owner-daemonset=membrane-agent"), '--owner-daemonset: must be NAMESPACE/NAME, got "membrane-agent"');
  });

  it("--policy-audit-mode switches the node's audit mode on (also =true / =false, as Cilium's); another value is refused naming the flag", () => {
    assert.equal(flags().policyAuditMode, false);
    assert.equal(flags("--policy-audit-mode").policyAuditMode, true);
    assert.equal(flags("--policy-audit-mode=true").policyAuditMode, true);
    assert.equal(flags("--policy-audit-mode=false").policyAuditMode, false);
    assert.equal(error("--policy-audit-mode=yes"), '--policy-audit-mode: must be true or false, got "yes"');
  });

  it("--http-normalize-path (Cilium's name): true by default, =false or =true as given, another value refused naming the flag", () => {
    assert.equal(flags().httpNormalizePath, true);
    assert.equal(flags("--http-normalize-path=false").httpNormalizePath, false);
    assert.equal(flags("--http-normalize-path").httpNormalizePath, true);
    assert.equal(flags("--http-normalize-path=true").httpNormalizePath, true);
    assert.equal(error("--http-normalize-path=off"), '--http-normalize-path: must be true or false, got "off"');
  });

  it("the L7 proxy is on by default with a --node-ip of either family (Cilium's --enable-l7-proxy); off with =false; refused naming the flag", () => {
    assert.equal(flags().l7Proxy, false, "no --node-ip: no address to listen on");
    assert.equal(flags("--node-ip", "192.0.2.1").l7Proxy, true);
    assert.equal(flags("--node-ip", "192.0.2.1", "--enable-l7-proxy=false").l7Proxy, false);
    assert.equal(flags("--node-ip", "192.0.2.1", "--enable-l7-proxy").l7Proxy, true);
    assert.equal(flags("--node-ip", "fd00::1").l7Proxy, true, "an IPv6-only node: on, listening on its IPv6 address");
    assert.equal(error("--enable-l7-proxy"), "--enable-l7-proxy: needs --node-ip (the address the proxy listens on)");
    assert.equal(error("--node-ip", "192.0.2.1", "--enable-l7-proxy=maybe"), '--enable-l7-proxy: must be true or false, got "maybe"');
  });

  it("--node-ip takes one address or a dual-stack pair (as the kubelet's): the first is the node's address, the proxies listen on each family's; --proxy-ipv6-address overrides the IPv6 one; bad values refused naming the flag", () => {
    assert.deepEqual([flags("--node-ip", "192.0.2.1").nodeIP, flags("--node-ip", "192.0.2.1").proxyAddresses], ["192.0.2.1", { address: "192.0.2.1" }]);
    const dual = flags("--node-ip", "192.0.2.1,fd00::1");
    assert.deepEqual([dual.nodeIP, dual.proxyAddresses], ["192.0.2.1", { address: "192.0.2.1", address6: "fd00::1" }]);
    const sixFirst = flags("--node-ip", "fd00::1,192.0.2.1");
    assert.deepEqual([sixFirst.nodeIP, sixFirst.proxyAddresses], ["fd00::1", { address: "192.0.2.1", address6: "fd00::1" }]);
    const six = flags("--node-ip", "fd00::1");
    assert.deepEqual([six.nodeIP, six.proxyAddresses, six.dnsProxy !== undefined, six.l7Proxy], ["fd00::1", { address6: "fd00::1" }, true, true]);
    assert.deepEqual(flags("--node-ip", "192.0.2.1", "--proxy-ipv6-address", "fd00::9").proxyAddresses, { address: "192.0.2.1", address6: "fd00::9" });
    assert.equal(flags().proxyAddresses, undefined, "no --node-ip: no proxy address");
    // Cilium's dual-stack (an address outside the ipcache is world-ipv4/-ipv6 by its family): a pair only.
    assert.deepEqual([dual.dualStack, sixFirst.dualStack, six.dualStack, flags("--node-ip", "192.0.2.1").dualStack, flags("--node-ip", "192.0.2.1", "--proxy-ipv6-address", "fd00::9").dualStack, flags().dualStack], [true, true, false, false, false, false]);
    assert.equal(error("--node-ip", "192.0.2.1,192.0.2.2"), '--node-ip: a pair must be one IPv4 and one IPv6 address, got "192.0.2.1,192.0.2.2"');
    assert.equal(error("--node-ip", "192.0.2.1,fd00::1,fd00::2"), '--node-ip: must be an IP address or an IPv4,IPv6 pair, got "192.0.2.1,fd00::1,fd00::2"');
    assert.equal(error("--node-ip", ""), '--node-ip: must be an IP address or an IPv4,IPv6 pair, got ""');
    assert.equal(error("--node-ip", "192.0.2.1", "--proxy-ipv6-address", "192.0.2.9"), '--proxy-ipv6-address: must be an IPv6 address, got "192.0.2.9"');
  });

  it("the runtime enforcer is off by default; --enable-runtime[=true|false]; refused naming the flag", () => {
    assert.equal(flags().runtime, false);
    assert.equal(flags("--enable-runtime").runtime, true);
    assert.equal(flags("--enable-runtime=true").runtime, true);
    assert.equal(flags("--enable-runtime=false").runtime, false);
    assert.equal(error("--enable-runtime=on"), '--enable-runtime: must be true or false, got "on"');
  });

  it("--external-runtime: the runtime is a pod of its own (off by default); only with the enforcer on", () => {
    assert.equal(flags("--enable-runtime").runtimeExternal, false);
    assert.equal(flags("--enable-runtime", "--external-runtime").runtimeExternal, true);
    assert.equal(flags("--enable-runtime", "--external-runtime=false").runtimeExternal, false);
    assert.equal(error("--external-runtime"), "--external-runtime: the runtime enforcer is off (--enable-runtime)");
    assert.equal(error("--enable-runtime", "--external-runtime=yes"), '--external-runtime: must be true or false, got "yes"');
  });

  it("--runtime-bpf-scope: the runtime enforcer's pin scope (absent: the runtime's own default); refused naming the flag", () => {
    assert.equal(flags("--enable-runtime").runtimeBpfScope, undefined);
    assert.equal(flags("--enable-runtime", "--runtime-bpf-scope", "rn-node-1-runtime").runtimeBpfScope, "rn-node-1-runtime");
    assert.equal(error("--runtime-bpf-scope", "../x"), `--runtime-bpf-scope: must be letters, digits, '.', '_' or '-', got "../x"`);
  });

  it("the DNS proxy is on by default with --node-ip, with Cilium's tofqdns flags; off with --enable-dns-proxy=false; bad values are refused naming the flag", () => {
    assert.equal(flags().dnsProxy, undefined, "no --node-ip: no address to listen on");
    assert.deepEqual(flags("--node-ip", "192.0.2.1").dnsProxy, { cache: { minTtlSeconds: 0, maxAddressesPerName: 1000, graceSeconds: 5 }, rejectCode: "refused" });
    assert.equal(flags("--node-ip", "192.0.2.1", "--enable-dns-proxy=false").dnsProxy, undefined);
    assert.deepEqual(
      flags("--node-ip", "192.0.2.1", "--enable-dns-proxy", "--tofqdns-min-ttl", "3600", "--tofqdns-max-ips-per-hostname", "20", "--tofqdns-dns-reject-response-code", "nameError", "--tofqdns-idle-connection-grace-period", "1m").dnsProxy,
      { cache: { minTtlSeconds: 3600, maxAddressesPerName: 20, graceSeconds: 60 }, rejectCode: "nameError" },
    );
    assert.equal(flags("--node-ip", "192.0.2.1", "--tofqdns-endpoint-max-ip-per-hostname", "7").dnsProxy?.cache.maxAddressesPerName, 7);
    assert.equal(error("--enable-dns-proxy"), "--enable-dns-proxy: needs --node-ip (the address the proxy listens on)");
    assert.equal(error("--node-ip", "192.0.2.1", "--enable-dns-proxy=maybe"), '--enable-dns-proxy: must be true or false, got "maybe"');
    assert.equal(error("--node-ip", "192.0.2.1", "--enable-dns-proxy=false", "--tofqdns-min-ttl", "5"), "--tofqdns-min-ttl: not with --enable-dns-proxy=false");
    assert.equal(error("--node-ip", "192.0.2.1", "--tofqdns-min-ttl=-1"), '--tofqdns-min-ttl: must be an integer >= 0, got "-1"');
    assert.equal(error("--node-ip", "192.0.2.1", "--tofqdns-max-ips-per-hostname", "0"), '--tofqdns-max-ips-per-hostname: must be an integer >= 1, got "0"');
    assert.equal(error("--node-ip", "192.0.2.1", "--tofqdns-dns-reject-response-code", "servfail"), '--tofqdns-dns-reject-response-code: must be refused or nameError, got "servfail"');
    assert.equal(error("--node-ip", "192.0.2.1", "--tofqdns-idle-connection-grace-period", "soon"), '--tofqdns-idle-connection-grace-period: must be a duration such as 5s or 1m, got "soon"');
    assert.ok(flags("--node-ip", "fd00::1", "--enable-dns-proxy").dnsProxy, "an IPv6-only node runs it on its IPv6 address");
  });

  it("--host-firewall-device (repeatable) needs --node-ip; the API server port defaults to 6443; bad values are refused naming the flag", () => {
    assert.equal(flags().hostFirewall, undefined);
    assert.deepEqual(flags("--node-ip", "10.0.0.1", "--host-firewall-device", "eth0", "--host-firewall-device", "eth1").hostFirewall, { devices: ["eth0", "eth1"], apiServerPort: 6443 });
    assert.equal(flags("--node-ip", "10.0.0.1", "--host-firewall-device", "eth0", "--host-firewall-api-server-port", "443").hostFirewall?.apiServerPort, 443);
    assert.equal(error("--host-firewall-device", "eth0"), "--host-firewall-device: needs --node-ip (the address whose traffic is the host's)");
    assert.equal(error("--host-firewall-api-server-port", "443"), "--host-firewall-api-server-port: only with --host-firewall-device");
    assert.equal(error("--node-ip", "10.0.0.1", "--host-firewall-device", "eth0", "--host-firewall-api-server-port", "0"), '--host-firewall-api-server-port: must be a port number 1..65535, got "0"');
    assert.match(error("--node-ip", "10.0.0.1", "--host-firewall-device", "eth 0"), /--host-firewall-device: must be an interface name/);
  });

  it("--monitor-aggregation takes none, low, medium or maximum (default: medium, one event per new connection); another value is refused naming the flag", () => {
    assert.equal(flags().monitorAggregation, "medium");
    for (const level of ["none", "low", "medium", "maximum"]) assert.equal(flags(`--monitor-aggregation=${level}`).monitorAggregation, level);
    assert.equal(error("--monitor-aggregation=max"), '--monitor-aggregation: must be one of none, low, medium, maximum, got "max"');
    assert.equal(error("--monitor-aggregation", "MEDIUM"), '--monitor-aggregation: must be one of none, low, medium, maximum, got "MEDIUM"');
    assert.equal(error("--monitor-aggregation="), '--monitor-aggregation: must be one of none, low, medium, maximum, got ""');
  });

  it("--policy-map-max sizes the node's policy map: an integer 1024..16777216 (absent: the datapath's 262144); anything else is refused naming the flag", () => {
    assert.equal(flags().policyMapMax, undefined);
    assert.equal(flags("--policy-map-max=1048576").policyMapMax, 1_048_576);
    assert.equal(flags("--policy-map-max", "1024").policyMapMax, 1024);
    assert.equal(flags("--policy-map-max", "16777216").policyMapMax, 16_777_216);
    for (const bad of ["1023", "16777217", "-5", "1e6", "256k", "", "4096.5"]) {
      assert.equal(error(`--policy-map-max=${bad}`), `--policy-map-max: must be an integer 1024..16777216, got ${JSON.stringify(bad)}`);
    }
  });

  it("--health-port serves /healthz, /readyz and /metrics on the node's loopback, where the chart's probes go", () => {
    assert.equal(flags("--health-port=9962").metricsAddress, "127.0.0.1:9962");
    assert.equal(error("--health-port=99999"), '--health-port: must be a port number 0..65535, got "99999"');
    assert.equal(error("--health-port=1", "--metrics-address=127.0.0.1:2"), "--health-port: not together with --metrics-address (the same server)");
  });

  it("the chart's flow export flags: path, size in MiB, backups, compress", () => {
    assert.deepEqual(flags("--flow-export-path=/var/run/membrane/flows/flows.jsonl", "--flow-export-max-size-mib=100", "--flow-export-max-backups=5", "--flow-export-compress=true").flowExport, {
      path: "/var/run/membrane/flows/flows.jsonl",
      maxBytes: 100 * 1024 * 1024,
      keep: 5,
      compress: true,
    });
    assert.deepEqual(flags("--flow-export-path=/f").flowExport, { path: "/f", maxBytes: 10 * 1024 * 1024, keep: 5, compress: false });
    assert.equal(error("--flow-export-path=/f", "--flow-export-compress=yes"), '--flow-export-compress: must be true or false, got "yes"');
    assert.equal(error("--flow-export-compress=true"), "--flow-export-compress: only with --flow-export-path");
    assert.equal(error("--flow-export-max-size-mib=0", "--flow-export-path=/f"), '--flow-export-max-size-mib: must be an integer >= 1, got "0"');
    assert.equal(error("--flow-export-max-backups=2"), "--flow-export-max-backups: only with --flow-export-path");
    assert.equal(error("--flow-export-path=/f", "--flow-export=/g"), "--flow-export: not together with --flow-export-path (the same setting)");
  });

  it("--cni-bin-dir, --cni-conf-dir and --kubeconfig are paths", () => {
    const f = flags("--cni-bin-dir=/host/opt/cni/bin", "--cni-conf-dir=/host/etc/cni/net.d", "--kubeconfig=/k");
    assert.deepEqual([f.cniBinDir, f.cniConfDir, f.kubeconfig], ["/host/opt/cni/bin", "/host/etc/cni/net.d", "/k"]);
    assert.equal(error("--cni-conf-dir="), "--cni-conf-dir: must be a path");
  });

  it("--encryption: disabled by default, ipsec or wireguard; strict and the wireguard-go path only with wireguard", () => {
    assert.equal(flags().encryption, "disabled");
    assert.equal(flags("--encryption=ipsec").encryption, "ipsec");
    const wg = flags("--encryption=wireguard", "--encryption-strict", "--wireguard-go=/opt/wg");
    assert.deepEqual([wg.encryption, wg.encryptionStrict, wg.wireguardGo], ["wireguard", true, "/opt/wg"]);
    assert.deepEqual([flags("--encryption=wireguard").encryptionStrict, flags("--encryption=wireguard").wireguardGo], [false, "wireguard-go"]);
    assert.equal(error("--encryption=aes"), '--encryption: must be one of disabled, ipsec, wireguard, got "aes"');
    assert.equal(error("--encryption=ipsec", "--encryption-strict"), "--encryption-strict: only with --encryption wireguard (the mode whose traffic can flow here)");
    assert.equal(error("--wireguard-go=/x"), "--wireguard-go: only with --encryption wireguard");
  });

  it("--wireguard-routing: routed (no VXLAN inside the tunnel) by default, or vxlan; only with wireguard, anything else refused by name", () => {
    assert.equal(flags("--encryption=wireguard").wireguardRouting, "routed");
    assert.equal(flags("--encryption=wireguard", "--wireguard-routing=vxlan").wireguardRouting, "vxlan");
    assert.equal(error("--encryption=wireguard", "--wireguard-routing=native"), '--wireguard-routing: must be one of routed, vxlan, got "native"');
    assert.equal(error("--wireguard-routing=vxlan"), "--wireguard-routing: only with --encryption wireguard");
  });
});
