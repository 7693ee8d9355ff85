// A real node's plan and files: names and addresses that parallel nodes keep apart, bad input named by field, and the settings this machine needs.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CHART_DIR } from "../chart.ts";
import { parseAgentFlags } from "../../node-agent/flags.ts";
import { parseNetConf } from "../../node-agent/cni/spec.ts";
import { parsePrefix, prefixContains } from "../../core/cidr.ts";

const contains = (outer: string, inner: string): boolean => prefixContains(parsePrefix(outer)!, parsePrefix(inner)!);
import { selectsDevice } from "../../core/devices.ts";
import { CLUSTER_DNS_ADDRESS, CLUSTER_POD_CIDR_V6, KUBERNETES_SERVICE, MEMBRANE_CHART_VALUES, SERVICE_CIDR, SERVICE_CIDR_V6, realNodeApiserverArgs, TUNNEL_DEVICE, underlayMesh, cniConflist, containerdConfig, holderScript, kubeProxyConfig, kubeProxyKubeconfig, kubeletConfig, kubeletKubeconfig, kubernetesServiceRules, planRealNode } from "./config.ts";

describe("real node plan", () => {
  test("names the netns, host veth, cgroup and a /30 from the name and index", () => {
    const r = planRealNode({ name: "worker-1", dir: "/tmp/n", index: 3 });
    assert.ok(r.ok);
    assert.equal(r.plan.netns, "rn-worker-1");
    assert.match(r.plan.hostInterface, /^rn[0-9a-f]{8}$/);
    assert.ok(r.plan.hostInterface.length <= 15, "an interface name fits IFNAMSIZ");
    assert.equal(r.plan.hostAddress, "10.254.0.13");
    assert.equal(r.plan.nodeAddress, "10.254.0.14");
    assert.equal(r.plan.podCIDR, "10.244.3.0/24");
    assert.equal(r.plan.cgroupName, "membrane-realnode-worker-1");
  });

  test("dual-stack pods: each index gets its own /64 of the IPv6 cluster pod CIDR, and the CNI config carries it; other families are refused naming the field", () => {
    const plans = [0, 3, 255].map((index) => planRealNode({ name: "d", dir: "/tmp/d", index, ipFamilies: ["IPv4", "IPv6"] }));
    assert.deepEqual(plans.map((r) => (r.ok ? r.plan.podCIDRv6 : r.errors)), ["fd00:10:244::/64", "fd00:10:244:3::/64", "fd00:10:244:ff::/64"]);
    for (const r of plans) assert.ok(r.ok && contains(CLUSTER_POD_CIDR_V6, r.plan.podCIDRv6!));
    const plan = plans[1]!;
    assert.ok(plan.ok);
    const c = JSON.parse(cniConflist(plan.plan)) as { plugins: Record<string, unknown>[] };
    assert.deepEqual(c.plugins, [{ type: "membrane-cni", podCIDR: "10.244.3.0/24", podCIDRv6: "fd00:10:244:3::/64", mtu: 1500 }]);
    const v4 = planRealNode({ name: "d", dir: "/tmp/d", index: 3 });
    assert.ok(v4.ok && v4.plan.podCIDRv6 === undefined && v4.plan.nodeAddress6 === undefined && v4.plan.linkLocal6 === undefined);
    // Each dual-stack node also an IPv6 address of its own (the kubelet's second --node-ip) and a link-local address per index.
    assert.deepEqual(plans.map((r) => (r.ok ? [r.plan.nodeAddress6, r.plan.linkLocal6] : r.errors)), [["fd00:10:254::2", "fe80::1"], ["fd00:10:254::3:2", "fe80::4"], ["fd00:10:254::ff:2", "fe80::100"]]);
    const [x, y] = [plans[0]!, plans[1]!];
    assert.ok(x.ok && y.ok);
    const mesh = underlayMesh([{ ...x.plan, netns: "rn-x", hostInterface: "rnaaaaaaaa" }, { ...y.plan, netns: "rn-y", hostInterface: "rnbbbbbbbb" }]);
    assert.deepEqual(mesh.links.map((l) => [l.linkLocal6, l.peerLinkLocal6]), [["fe80::1", "fe80::4"]]);
    assert.deepEqual(mesh.routes.filter((r) => r.netns === "rn-x" && r.dest.includes(":")), [
      { netns: "rn-x", dest: "fd00:10:254::3:2/128", device: "rnmbbbbbbbb", via: "fe80::4" },
      { netns: "rn-x", dest: "fd00:10:244:3::/64", device: "rnmbbbbbbbb", via: "fe80::4" },
    ], "the peer's IPv6 address and pod CIDR via its link-local address (an IPv4 next hop is refused for IPv6 routes)");
    const bad = planRealNode({ name: "d", dir: "/tmp/d", ipFamilies: ["IPv6", "IPv4"] });
    assert.ok(!bad.ok && bad.errors.some((e) => e.startsWith("ipFamilies: ")), JSON.stringify(bad));
  });

  test("the last index stays inside 10.254.0.0/16", () => {
    const r = planRealNode({ name: "n", dir: "/tmp/n", index: 255 });
    assert.ok(r.ok);
    assert.equal(r.plan.hostAddress, "10.254.3.253");
    assert.equal(r.plan.nodeAddress, "10.254.3.254");
  });

  test("different names get different host interfaces", () => {
    const a = planRealNode({ name: "a", dir: "/tmp/a" });
    const b = planRealNode({ name: "b", dir: "/tmp/b" });
    assert.ok(a.ok && b.ok);
    assert.notEqual(a.plan.hostInterface, b.plan.hostInterface);
  });

  test("bad input is refused naming every field", () => {
    const r = planRealNode({ name: "Bad_Name", dir: "relative", index: 300 });
    assert.ok(!r.ok);
    assert.equal(r.errors.length, 3);
    assert.match(r.errors[0]!, /^name: /);
    assert.match(r.errors[1]!, /^dir: /);
    assert.match(r.errors[2]!, /^index: /);
  });
});

describe("real node files", () => {
  const r = planRealNode({ name: "worker-1", dir: "/tmp/n", index: 3 });
  assert.ok(r.ok);
  const plan = r.plan;

  test("the kubelet runs on hybrid cgroup v1 with the cgroupfs driver under the node's own cgroup root", () => {
    const c = parse(kubeletConfig(plan, "/pki/ca.crt")) as Record<string, unknown>;
    assert.equal(c["failCgroupV1"], false);
    assert.equal(c["cgroupDriver"], "cgroupfs");
    assert.equal(c["cgroupRoot"], "/membrane-realnode-worker-1");
    assert.equal(c["address"], "10.254.0.14");
    assert.equal(c["readOnlyPort"], 0);
    assert.deepEqual(c["authentication"], { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: "/pki/ca.crt" } });
    assert.deepEqual(c["authorization"], { mode: "Webhook" });
    assert.equal(c["volumePluginDir"], "/tmp/n/volume-plugins", "nothing created under /usr/libexec on the host");
  });

  test("containerd keeps its own root, state and socket, restricts oom_score_adj and agrees on the cgroup driver", () => {
    const c = containerdConfig(plan, "registry.k8s.io/pause:3.10.2");
    assert.match(c, /^root = "\/tmp\/n\/containerd"$/m);
    assert.match(c, /^state = "\/run\/containerd"$/m);
    assert.match(c, /address = "\/run\/containerd\/containerd.sock"/);
    assert.match(c, /restrict_oom_score_adj = true/);
    assert.match(c, /SystemdCgroup = false/);
    assert.match(c, /sandbox_image = "registry.k8s.io\/pause:3.10.2"/);
    assert.match(c, /conf_dir = "\/var\/lib\/realnode\/cni\/net.d"/);
  });

  test("pods are wired by Membrane's CNI plugin on the node's pod CIDR, its IPAM state where the agent's own conflist keeps it", () => {
    const c = JSON.parse(cniConflist(plan)) as { name: string; plugins: Record<string, unknown>[] };
    assert.equal(c.name, "membrane");
    // No stateDir: the plugin's default, which the agent reads at start (--cni-state-dir) to adopt these pods.
    assert.deepEqual(c.plugins, [{ type: "membrane-cni", podCIDR: "10.244.3.0/24", mtu: 1500 }]);
    const agent = parseAgentFlags(["--node-name", "n", "--operator", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]);
    assert.ok(agent.ok);
    assert.equal(parseNetConf({ cniVersion: "1.0.0", name: c.name, ...c.plugins[0] }).stateDir, agent.flags.cniStateDir);
  });

  test("one pod CIDR source: every node's pod CIDR lies in kube-proxy's cluster CIDR, which is the clusterPodCIDR the chart is installed with, taken from each Node by the operator", () => {
    const chartDefault = (parse(readFileSync(join(CHART_DIR, "values.yaml"), "utf8")) as { clusterPodCIDR: string }).clusterPodCIDR;
    for (const index of [0, 1, 7, 255]) {
      const p = planRealNode({ name: `n${index}`, dir: "/tmp/n", index });
      assert.ok(p.ok);
      const proxy = parse(kubeProxyConfig(p.plan)) as { clusterCIDR: string };
      assert.equal(proxy.clusterCIDR, MEMBRANE_CHART_VALUES.clusterPodCIDR);
      assert.ok(contains(proxy.clusterCIDR, p.plan.podCIDR), `${p.plan.podCIDR} in ${proxy.clusterCIDR}`);
      assert.ok(contains(chartDefault, p.plan.podCIDR), `${p.plan.podCIDR} in the chart's default ${chartDefault}`);
    }
    assert.equal(MEMBRANE_CHART_VALUES["ipam.mode"], "kubernetes");
    assert.match(containerdConfig(plan, "p"), /bin_dir = "\/var\/lib\/realnode\/cni\/bin"/);
    // The same path on every node, each node's own dir behind it: one chart value for all agents.
    assert.match(holderScript(plan), /mount --bind "\/tmp\/n\/cni\/bin" \/var\/lib\/realnode\/cni\/bin$/m);
  });

  test("the kubelet reaches the API server through the relay on the host end, checked against the name in its certificate", () => {
    const k = parse(kubeletKubeconfig(plan, 6443, "/pki/ca.crt")) as { clusters: { cluster: Record<string, string> }[] };
    assert.equal(k.clusters[0]!.cluster["server"], "https://10.254.0.13:6443");
    assert.equal(k.clusters[0]!.cluster["tls-server-name"], "kubernetes");
  });

  test("the holder gives the node its own hostname, /run, /var/lib, /var/log and bpffs", () => {
    const s = holderScript(plan);
    assert.match(s, /^hostname worker-1$/m);
    for (const m of [/tmpfs .* \/run$/m, /tmpfs .* \/var\/lib$/m, /--bind "\/tmp\/n\/log" \/var\/log$/m, /-t bpf .* \/sys\/fs\/bpf$/m]) assert.match(s, m);
    // Shared only after the namespace's own mounts exist, inside it (the holder runs under --propagation private).
    assert.ok(s.indexOf("mount --make-rshared /") > s.indexOf("-t bpf"), s);
  });

  test("the kubernetes Service's address leads to the node's relay of the API server", () => {
    const rules = kubernetesServiceRules(plan, 6443);
    assert.match(rules, /ip daddr 10\.96\.0\.1 tcp dport 443 dnat to 10\.254\.0\.13:6443/);
    // From the node and from pods, before kube-proxy's reject of a Service without endpoints (priority -110).
    assert.match(rules, /hook output priority -111;/);
    assert.match(rules, /hook prerouting priority -111;/);
    // The host routes back only to the node's address.
    assert.match(rules, /ip saddr != 10\.254\.0\.14 ip daddr 10\.254\.0\.13 tcp dport 6443 masquerade/);
  });

  test("kube-proxy runs in nftables mode as system:kube-proxy through the relay, changing no host conntrack setting", () => {
    const c = parse(kubeProxyConfig(plan)) as Record<string, unknown> & { conntrack: Record<string, unknown>; clientConnection: { kubeconfig: string } };
    assert.equal(c["mode"], "nftables");
    assert.equal(c["hostnameOverride"], "worker-1");
    assert.equal(c["clusterCIDR"], "10.244.0.0/16");
    assert.equal(c.clientConnection.kubeconfig, "/tmp/n/kube-proxy.kubeconfig");
    assert.deepEqual(c.conntrack, { maxPerCore: 0, min: 0, tcpEstablishedTimeout: "0s", tcpCloseWaitTimeout: "0s", udpTimeout: "0s", udpStreamTimeout: "0s" });
    const k = parse(kubeProxyKubeconfig(plan, 6443, "/pki/ca.crt")) as { clusters: { cluster: Record<string, string> }[]; users: { user: Record<string, string> }[] };
    assert.equal(k.clusters[0]!.cluster["server"], "https://10.254.0.13:6443");
    assert.equal(k.users[0]!.user["client-certificate"], "/tmp/n/pki/kube-proxy.crt");
  });

  test("dual-stack Services: the API server gets an IPv6 Service range after the IPv4 one, apart from the pods' and nodes' IPv6 ranges, and a dual-stack node's kube-proxy counts both pod ranges as the cluster's", () => {
    assert.deepEqual(realNodeApiserverArgs(["IPv4"]), ["--service-cluster-ip-range=10.96.0.0/16"]);
    assert.deepEqual(realNodeApiserverArgs(["IPv4", "IPv6"]), ["--service-cluster-ip-range=10.96.0.0/16,fd00:10:96::/112"]);
    // IPv4 stays the primary family: the kubernetes Service and the cluster DNS keep their IPv4 addresses.
    for (const a of [KUBERNETES_SERVICE.address, CLUSTER_DNS_ADDRESS]) assert.ok(contains(SERVICE_CIDR, a), `${a} in ${SERVICE_CIDR}`);
    const dual = planRealNode({ name: "d", dir: "/tmp/d", index: 255, ipFamilies: ["IPv4", "IPv6"] });
    assert.ok(dual.ok);
    for (const range of [CLUSTER_POD_CIDR_V6, dual.plan.podCIDRv6!, `${dual.plan.nodeAddress6!}/128`, `${dual.plan.linkLocal6!}/128`]) {
      assert.ok(!contains(SERVICE_CIDR_V6, range) && !contains(range, SERVICE_CIDR_V6), `${SERVICE_CIDR_V6} apart from ${range}`);
    }
    const proxy = parse(kubeProxyConfig(dual.plan)) as { clusterCIDR: string; nodePortAddresses: string[] };
    assert.equal(proxy.clusterCIDR, `10.244.0.0/16,${CLUSTER_POD_CIDR_V6}`);
    assert.deepEqual(proxy.nodePortAddresses, ["10.254.3.254/32", "fd00:10:254::ff:2/128"]);
    // An IPv4-only node's kube-proxy as before.
    assert.deepEqual((parse(kubeProxyConfig(plan)) as { nodePortAddresses: string[] }).nodePortAddresses, ["10.254.0.14/32"]);
  });

  test("three nodes: one veth per pair, each node routes every peer's address over its link and the peer's pod CIDR via that address", () => {
    const plans = [0, 1, 2].map((index) => {
      const p = planRealNode({ name: `mesh-${index}`, dir: `/tmp/m${index}`, index: 10 + index });
      assert.ok(p.ok);
      return p.plan;
    });
    const { links, routes } = underlayMesh(plans);
    assert.equal(links.length, 3);
    for (const l of links) assert.ok(l.device.length <= 15 && l.peerDevice.length <= 15, "names fit IFNAMSIZ");
    const [a, b] = plans as [typeof plans[0], typeof plans[0]];
    const ab = links.find((l) => l.netns === a.netns && l.peerNetns === b.netns)!;
    assert.ok(ab, "a link between the first two nodes");
    const fromA = routes.filter((r) => r.netns === a.netns);
    assert.deepEqual(fromA.filter((r) => r.device === ab.device), [
      { netns: a.netns, dest: `${b.nodeAddress}/32`, device: ab.device },
      { netns: a.netns, dest: "10.244.11.0/24", device: ab.device, via: b.nodeAddress },
    ]);
    assert.equal(routes.length, 3 * 2 * 2, "two routes to each of two peers on each node");
    assert.ok(!routes.some((r) => r.dest === `${a.nodeAddress}/32` && r.netns === a.netns), "no route to itself");
    // The chart's node devices are the underlay links, and only they: the agent's wildcard selects each link's name.
    const devices = parseAgentFlags(["--node-name", "n", "--operator", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a", "--node-device", MEMBRANE_CHART_VALUES["agent.nodeDevice"]]);
    assert.ok(devices.ok && devices.flags.nodeDevices, JSON.stringify(devices));
    for (const l of links) for (const d of [l.device, l.peerDevice]) assert.ok(selectsDevice(devices.flags.nodeDevices, d), `${d} is a node device`);
    for (const p of plans) assert.ok(!selectsDevice(devices.flags.nodeDevices, p.hostInterface) && !selectsDevice(devices.flags.nodeDevices, "eth0"), "the link to the host is none");
  });

  test("a node joining a running mesh gets exactly the links and routes the mesh of all nodes has beyond the others' (both ways, IPv6 too)", () => {
    const plans = [0, 1, 2].map((index) => {
      const p = planRealNode({ name: `join-${index}`, dir: `/tmp/j${index}`, index: 20 + index, ipFamilies: ["IPv4", "IPv6"] });
      assert.ok(p.ok);
      return p.plan;
    });
    const key = (x: object): string => JSON.stringify(x);
    const all = underlayMesh(plans);
    const before = underlayMesh(plans.slice(0, 2));
    const joined = underlayMesh(plans, plans[2]);
    const beyond = <T extends object>(a: readonly T[], b: readonly T[]): string[] => a.map(key).filter((k) => !b.map(key).includes(k)).sort();
    assert.deepEqual(joined.links.map(key).sort(), beyond(all.links, before.links));
    assert.deepEqual(joined.routes.map(key).sort(), beyond(all.routes, before.routes));
    assert.equal(joined.links.length, 2, "a link to each of the two running nodes");
    // Each running node routes the newcomer's address and pod CIDRs over its new link, and the newcomer theirs.
    assert.equal(joined.routes.filter((r) => r.netns !== plans[2]!.netns && r.dest === plans[2]!.podCIDR).length, 2);
    assert.equal(joined.routes.filter((r) => r.netns === plans[2]!.netns).length, 2 * 4);
  });

  test("the chart on real nodes makes its agents' VXLAN overlay device by default (no value for it), under a name the agent accepts", () => {
    assert.ok(!Object.keys(MEMBRANE_CHART_VALUES).some((k) => k === "routingMode" || k.startsWith("agent.tunnel")), "the real-node cluster installs the overlay as a user's helm install gets it");
    const agent = parseAgentFlags(["--node-name", "n", "--operator", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a", "--tunnel-device", TUNNEL_DEVICE]);
    assert.ok(agent.ok && agent.flags.tunnelDevice === TUNNEL_DEVICE);
    const bad = parseAgentFlags(["--node-name", "n", "--operator", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a", "--tunnel-device", "a-name-far-too-long"]);
    assert.ok(!bad.ok && /--tunnel-device/.test(bad.error));
  });
});
