// `membrane node cleanup`'s decision: refuse while an agent answers or a pod still has a Membrane-wired interface (naming each); otherwise the conflist first, processes before the pins they hold, a foreign overlay device kept.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { describeStep, planNodeCleanup, type NodeInventory } from "./plan.ts";
import { parseCleanupFlags } from "./main.ts";

const empty: NodeInventory = { wiredLinks: [], processes: [], wireguard: false, pinDirs: [], cniFiles: [], dirs: [], files: [] };

const leftovers: NodeInventory = {
  ...empty,
  processes: [{ what: "the runtime enforcer", pid: 4242 }],
  wireguard: true,
  overlayDevice: { name: "membrane_vxlan", membranes: true },
  pinDirs: ["/sys/fs/bpf/membrane/node-1", "/sys/fs/bpf/membrane/services"],
  cniFiles: ["/opt/cni/bin/membrane-cni", "/etc/cni/net.d/05-membrane.conflist"],
  dirs: ["/var/lib/membrane/cni/membrane", "/var/run/membrane/state"],
  files: ["/var/run/membrane/agent.sock"],
};

describe("membrane node cleanup decides", () => {
  test("to refuse while pods still have Membrane-wired interfaces, naming each with its address and pod, and to remove nothing", () => {
    const plan = planNodeCleanup({ ...leftovers, wiredLinks: [{ ifname: "mbr0123456789a", routes: ["10.244.1.7"], pod: "kube-system/coredns-5d8f" }, { ifname: "mbrfedcba98765", routes: [] }] });
    assert.equal(plan.ok, false);
    if (plan.ok) return;
    assert.deepEqual(plan.inUse, [
      "pod interface mbr0123456789a (10.244.1.7, kube-system/coredns-5d8f): delete or drain the node's pods first",
      "pod interface mbrfedcba98765: delete or drain the node's pods first",
    ]);
  });

  test("to refuse while an agent answers on its socket: Membrane is still installed and the removal is the agent's", () => {
    const plan = planNodeCleanup({ ...leftovers, agentSocket: "/var/run/membrane/agent.sock" });
    assert.equal(plan.ok, false);
    if (!plan.ok) assert.match(plan.inUse[0]!, /^an agent answers on \/var\/run\/membrane\/agent\.sock: Membrane is still installed/);
  });

  test("the conflist first, then the processes, the devices, the pins and the files, in that order", () => {
    const plan = planNodeCleanup(leftovers);
    assert.ok(plan.ok);
    assert.deepEqual(plan.steps.map(describeStep), [
      "remove CNI file /etc/cni/net.d/05-membrane.conflist",
      "remove CNI file /opt/cni/bin/membrane-cni",
      "stop the runtime enforcer (pid 4242)",
      "remove the WireGuard device, its rule and routing table",
      "delete overlay device membrane_vxlan",
      "detach the programs pinned in /sys/fs/bpf/membrane/node-1 and remove its pins",
      "detach the programs pinned in /sys/fs/bpf/membrane/services and remove its pins",
      "remove /var/lib/membrane/cni/membrane",
      "remove /var/run/membrane/state",
      "remove /var/run/membrane/agent.sock",
    ]);
    assert.deepEqual(plan.kept, []);
  });

  test("a link of the overlay's name that is not a collect-metadata VXLAN on the overlay port is kept and said so", () => {
    const plan = planNodeCleanup({ ...empty, overlayDevice: { name: "vxlan0", membranes: false, problem: "a VXLAN device on port 4789, not the overlay's 8472" } });
    assert.ok(plan.ok);
    assert.deepEqual(plan.steps, []);
    assert.deepEqual(plan.kept, ["link vxlan0: a VXLAN device on port 4789, not the overlay's 8472"]);
  });

  test("nothing left: no step", () => {
    assert.deepEqual(planNodeCleanup(empty), { ok: true, steps: [], kept: [] });
  });
});

describe("membrane node cleanup's flags", () => {
  test("default to the chart's paths and name the flag of a bad value", () => {
    const ok = parseCleanupFlags(["--tunnel-device", "membrane_vxlan", "--node-name", "n1"]);
    assert.ok(ok.ok);
    if (ok.ok) assert.deepEqual([ok.flags.cniConfDir, ok.flags.cniStateDir, ok.flags.stateDir, ok.flags.cniSocket, ok.flags.tunnelDevice, ok.flags.dryRun], ["/etc/cni/net.d", "/var/lib/membrane/cni/membrane", "/var/run/membrane/state", "/var/run/membrane/agent.sock", "membrane_vxlan", false]);
    const dflt = parseCleanupFlags([]);
    assert.ok(dflt.ok && dflt.flags.tunnelDevice === "membrane_vxlan", "the chart's overlay device by default (removed only when an agent made it)");
    assert.deepEqual(parseCleanupFlags(["--cni-conf-dir", "net.d"]), { ok: false, error: '--cni-conf-dir: must be an absolute path, got "net.d"' });
    assert.deepEqual(parseCleanupFlags(["--tunnel-device", "a b"]), { ok: false, error: '--tunnel-device: must be a name, got "a b"' });
    const unknown = parseCleanupFlags(["--force"]);
    assert.ok(!unknown.ok && unknown.error.includes("--force"), JSON.stringify(unknown));
  });
});
