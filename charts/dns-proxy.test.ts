// The chart's agents run the DNS proxy: their node address comes from the downward API and the dnsProxy values become flags the agent's own parser accepts.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseManifest, renderText, type K8sObject } from "../localcluster/chart.ts";
import { parseAgentFlags } from "../node-agent/flags.ts";

interface Container {
  readonly name: string;
  readonly args: string[];
  readonly env?: { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
}

function agentOf(objects: K8sObject[]): Container {
  const ds = objects.find((o) => o.kind === "DaemonSet" && o.metadata.name === "membrane-agent") as unknown as { spec: { template: { spec: { containers: Container[] } } } };
  return ds.spec.template.spec.containers.find((c) => c.name === "agent")!;
}

/** The agent's own flag parser on the args as the kubelet hands them over (`$(VAR)` expanded from the container's env, with a node's values, and the kubelet's service links). */
function flagsOf(c: Container, hostIPs = "10.0.0.1") {
  const node: Record<string, string> = { "spec.nodeName": "node-a", "status.hostIP": hostIPs.split(",")[0]!, "status.hostIPs": hostIPs };
  const env = new Map((c.env ?? []).map((e) => [e.name, node[e.valueFrom?.fieldRef?.fieldPath ?? ""]]));
  // The kubelet's service links: the operator Service's ClusterIP.
  env.set("MEMBRANE_OPERATOR_SERVICE_HOST", "10.96.0.20");
  const args = c.args.slice(1).map((a) =>
    a.replace(/\$\(([A-Z_]+)\)/g, (m, v: string) => {
      const value = env.get(v);
      assert.ok(value !== undefined, `${a}: $(${v}) is not set from the downward API in the container's env`);
      return value;
    }),
  );
  const parsed = parseAgentFlags(args);
  assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
  return parsed.flags;
}

describe("chart dnsProxy", () => {
  it("by default the agent gets its node addresses from status.hostIPs and runs the DNS proxy on them with the agent's defaults", async () => {
    const agent = agentOf(parseManifest(await renderText()));
    assert.equal(agent.env?.find((e) => e.name === "HOST_IPS")?.valueFrom?.fieldRef?.fieldPath, "status.hostIPs");
    const f = flagsOf(agent);
    assert.equal(f.nodeIP, "10.0.0.1");
    assert.deepEqual(f.proxyAddresses, { address: "10.0.0.1" });
    assert.deepEqual(f.dnsProxy, { cache: { minTtlSeconds: 0, maxAddressesPerName: 1000, graceSeconds: 5 }, rejectCode: "refused" });
  });

  it("on a dual-stack node the proxies get both addresses (IPv6 pods' DNS and HTTP are steered to the IPv6 one), the node address stays the first", async () => {
    const f = flagsOf(agentOf(parseManifest(await renderText())), "10.0.0.1,fd00:10::1");
    assert.equal(f.nodeIP, "10.0.0.1");
    assert.deepEqual(f.proxyAddresses, { address: "10.0.0.1", address6: "fd00:10::1" });
    assert.ok(f.dnsProxy && f.l7Proxy, "both proxies run");
  });

  it("on an IPv6-only node the default chart's agent starts with both proxies, on the node's IPv6 address", async () => {
    const f = flagsOf(agentOf(parseManifest(await renderText())), "fd00:10::1");
    assert.equal(f.nodeIP, "fd00:10::1");
    assert.deepEqual(f.proxyAddresses, { address6: "fd00:10::1" });
    assert.ok(f.dnsProxy && f.l7Proxy && f.l7ProxyExternal, "the DNS proxy and the external L7 proxy run");
  });

  it("also without hubble (HOST_IP does not depend on it)", async () => {
    const f = flagsOf(agentOf(parseManifest(await renderText({ "hubble.enabled": false }))));
    assert.equal(f.nodeIP, "10.0.0.1");
    assert.ok(f.dnsProxy, "the proxy runs");
  });

  it("passes minTtl, endpointMaxIpPerHostname, dnsRejectResponseCode and idleConnectionGracePeriod as Cilium's --tofqdns-* flags", async () => {
    const f = flagsOf(
      agentOf(
        parseManifest(
          await renderText({
            "dnsProxy.minTtl": 30,
            "dnsProxy.endpointMaxIpPerHostname": 50,
            "dnsProxy.dnsRejectResponseCode": "nameError",
            "dnsProxy.idleConnectionGracePeriod": "1m",
          }),
        ),
      ),
    );
    assert.deepEqual(f.dnsProxy, { cache: { minTtlSeconds: 30, maxAddressesPerName: 50, graceSeconds: 60 }, rejectCode: "nameError" });
  });

  it("dnsProxy.enabled=false switches the proxy off and passes no tuning flag", async () => {
    const agent = agentOf(parseManifest(await renderText({ "dnsProxy.enabled": false })));
    assert.deepEqual(agent.args.filter((a) => a.startsWith("--tofqdns")), []);
    const f = flagsOf(agent);
    assert.equal(f.nodeIP, "10.0.0.1", "the node address is still passed");
    assert.equal(f.dnsProxy, undefined);
  });

  for (const [what, values, field] of [
    ["a reject code Cilium does not know", { "dnsProxy.dnsRejectResponseCode": "servfail" }, /dnsRejectResponseCode/],
    ["a negative minimum TTL", { "dnsProxy.minTtl": -1 }, /minTtl/],
    ["zero addresses per name", { "dnsProxy.endpointMaxIpPerHostname": 0 }, /endpointMaxIpPerHostname/],
    ["a grace period that is not a duration", { "dnsProxy.idleConnectionGracePeriod": "soon" }, /idleConnectionGracePeriod/],
    ["a misspelt key", { "dnsProxy.minTTL": 5 }, /minTTL/],
  ] as const) {
    it(`the values schema refuses ${what}, naming the field`, async () => {
      await assert.rejects(renderText(values), field);
    });
  }
});
