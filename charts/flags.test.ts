// The chart's command lines against the real `membrane operator|webhook|agent`: every flag the chart passes is one the component accepts.
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseManifest, renderText, type K8sObject } from "../localcluster/chart.ts";
import { parseAgentFlags } from "../node-agent/flags.ts";

const MEMBRANE = fileURLToPath(new URL("../bin/membrane", import.meta.url));

/**
 * Flags the chart needs that a component does not accept yet, with why (printed as test
 * diagnostics). Any other unknown flag fails, and so does an entry the component has come to accept.
 */
const KNOWN_GAPS: Record<string, Record<string, string>> = {
  operator: {},
  webhook: {},
  agent: {},
};

interface Container {
  name: string;
  args: string[];
}

const flagName = (arg: string): string => arg.split("=")[0] ?? arg;

function containerOf(objects: K8sObject[], kind: string, name: string): Container {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name) as (K8sObject & { spec: { template: { spec: { containers: Container[] } } } }) | undefined;
  assert.ok(o, `${kind} ${name} rendered`);
  const c = o.spec.template.spec.containers[0];
  assert.ok(c);
  return c;
}

function membrane(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(MEMBRANE, args, { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }));
  });
}

describe("the chart's command lines match the components' flags", () => {
  // Everything switched on, so every optional flag is rendered.
  let objects: K8sObject[] = [];
  before(async () => {
    objects = parseManifest(await renderText({ "encryption.enabled": true, "encryption.type": "ipsec", "flowExport.enabled": true, "extendedIPProtocols.enabled": true, "hostFirewall.enabled": true, "hostFirewall.devices": "{eth0,eth1}", "runtime.enabled": true, "extraConfig.http-normalize-path": false }));
  });

  for (const [component, kind, name] of [
    ["operator", "Deployment", "membrane-operator"],
    ["webhook", "Deployment", "membrane-webhook"],
    ["agent", "DaemonSet", "membrane-agent"],
  ] as const) {
    it(`membrane ${component} accepts every flag and value the chart passes, apart from its listed gaps`, async (t) => {
      const c = containerOf(objects, kind, name);
      assert.equal(c.args[0], component);
      const gaps = KNOWN_GAPS[component] ?? {};
      const args = c.args.slice(1).filter((a) => !(flagName(a) in gaps));
      // With --help last, a component that parses in order reports the first bad flag or value, else prints its usage.
      const r = await membrane([component, ...args, "--help"]);
      const usage = r.stdout + r.stderr;
      assert.equal(r.code, 0, `membrane ${component} ${args.join(" ")}: ${r.stderr}`);
      assert.match(usage, new RegExp(`usage: membrane ${component}`));
      // A gap the component has closed must leave the list, so that its values are checked above.
      const closed = Object.keys(gaps).filter((flag) => new RegExp(`${flag}(?![\\w-])`).test(usage));
      assert.deepEqual(closed, [], `membrane ${component} now accepts these: remove them from KNOWN_GAPS`);
      for (const [flag, why] of Object.entries(gaps)) t.diagnostic(`gap: membrane ${component} does not accept ${flag} yet: ${why}`);
    });
  }

  // --help above checks flag names only; the agent refuses --wireguard-routing without --encryption wireguard or with
  // an unknown mode only when it parses, so the WireGuard command line (not rendered above: ipsec) is parsed here.
  for (const routing of ["routed", "vxlan"]) {
    it(`the agent parses the chart's WireGuard command line with encryption.wireguard.routing=${routing} into that routing`, async () => {
      const wg = parseManifest(await renderText({ "encryption.enabled": true, "encryption.type": "wireguard", "encryption.wireguard.routing": routing }));
      const c = containerOf(wg, "DaemonSet", "membrane-agent");
      // The kubelet's $(VAR) expansion, as on a node.
      const args = c.args.slice(1).map((a) => a.replaceAll("$(NODE_NAME)", "node-1").replaceAll("$(HOST_IPS)", "10.0.0.1").replaceAll("$(HOST_IP)", "10.0.0.1").replaceAll("$(MEMBRANE_OPERATOR_SERVICE_HOST)", "10.96.0.20"));
      const r = parseAgentFlags(args);
      assert.ok(r.ok, `membrane agent ${args.join(" ")}: ${r.ok ? "" : r.error}`);
      assert.equal(r.flags.encryption, "wireguard");
      assert.equal(r.flags.wireguardRouting, routing);
      // The operator at its Service's ClusterIP (the pod's service environment), its certificate checked for the Service's name.
      assert.deepEqual([r.flags.operator, r.flags.operatorServerName], ["10.96.0.20:9890", "membrane-operator.membrane-system.svc"]);
    });
  }
});
