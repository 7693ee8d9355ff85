// The CNI plugin's ADD latency and its size on the node, as the image installs it before and after issue #22 item 2:
// the bundled plugin run by its own Node copied beside it (a directory: node, membrane-cni.mjs, koffi) vs the single
// executable (dist/cni/membrane-cni), with the development launcher (tsx over the sources) for reference.
//
// Each round wires a pod netns from a node netns as a runtime does (no agent socket: veth, IPAM under its flock, address,
// routes) with every form in turn (order rotated each round), then DELs it. Prints one JSON line last: median and p95 ADD
// and DEL wall ms per form, and each form's bytes on the node. Needs root (netns) and `make build`.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { cniLauncher } from "../../node-agent/cni-install.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15);
const tag = `mbrbcni${process.pid}`;

const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]! * 10) / 10;
};

function duBytes(p: string): number {
  return Number(execFileSync("du", ["-sb", p]).toString().split("\t")[0]);
}

function main(): void {
  const executable = path.join(ROOT, "dist/cni/membrane-cni");
  const bundled = path.join(ROOT, "dist/cni/membrane-cni.mjs");
  for (const f of [executable, bundled]) if (!fs.existsSync(f)) throw new Error(`${f} does not exist: run make build`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-bench-cni-"));
  const netns: string[] = [];
  try {
    // Before: what the image's agent installed until now, a directory with Node, the bundle and koffi, behind a launcher.
    const dir = path.join(tmp, "bundle-dir");
    fs.mkdirSync(path.join(dir, "node_modules"), { recursive: true });
    fs.copyFileSync(process.execPath, path.join(dir, "node"));
    fs.chmodSync(path.join(dir, "node"), 0o755);
    fs.copyFileSync(bundled, path.join(dir, "membrane-cni.mjs"));
    for (const pkg of ["koffi", "@koromix"]) fs.cpSync(path.join(ROOT, "node_modules", pkg), path.join(dir, "node_modules", pkg), { recursive: true, dereference: true });
    const before = path.join(tmp, "before-launcher");
    fs.writeFileSync(before, `#!/bin/sh\nd=${dir}\nexec "$d/node" "$d/membrane-cni.mjs" "$@"\n`, { mode: 0o755 });
    // After: the executable alone, in a bin dir of its own (it writes koffi's native module beside itself once).
    const binDir = path.join(tmp, "bin");
    fs.mkdirSync(binDir);
    fs.copyFileSync(executable, path.join(binDir, "membrane-cni"));
    fs.chmodSync(path.join(binDir, "membrane-cni"), 0o755);
    const dev = path.join(tmp, "dev-launcher");
    fs.writeFileSync(dev, cniLauncher(), { mode: 0o755 });
    const forms: Record<string, string> = { bundle_dir: before, executable: path.join(binDir, "membrane-cni"), tsx_dev: dev };

    for (const n of ["node", "pod"]) {
      execFileSync("ip", ["netns", "add", `${tag}-${n}`]);
      netns.push(`${tag}-${n}`);
    }
    const conf = JSON.stringify({ cniVersion: "1.0.0", name: "membrane", type: "membrane-cni", podCIDR: "10.251.11.0/24", stateDir: path.join(tmp, "state"), logLevel: "silent" });
    const run = (file: string, command: string, id: string): number => {
      const t0 = process.hrtime.bigint();
      const r = spawnSync("ip", ["netns", "exec", `${tag}-node`, file], {
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: `/var/run/netns/${tag}-pod`, CNI_IFNAME: "eth0", CNI_PATH: binDir },
        input: conf,
        encoding: "utf8",
      });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (r.status !== 0) throw new Error(`${file} ${command}: exit ${r.status ?? r.signal}: ${r.stdout}${r.stderr}`);
      return ms;
    };
    const names = Object.keys(forms);
    const add: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
    const del: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
    // One uncounted warm-up of each (tsx's compile cache, the page cache, the executable's koffi written beside it).
    for (const n of names) {
      run(forms[n]!, "ADD", `warm-${n}`);
      run(forms[n]!, "DEL", `warm-${n}`);
    }
    for (let r = 0; r < ROUNDS; r++) {
      const order = names.map((_, i) => names[(i + r) % names.length]!);
      for (const n of order) {
        const id = `b${r}-${n}`;
        add[n]!.push(run(forms[n]!, "ADD", id));
        del[n]!.push(run(forms[n]!, "DEL", id));
      }
    }
    const result = {
      bench: "cni",
      rounds: ROUNDS,
      load: os.loadavg()[0]!.toFixed(1),
      add_ms: Object.fromEntries(names.map((n) => [n, { median: quantile(add[n]!, 0.5), p95: quantile(add[n]!, 0.95) }])),
      del_ms: Object.fromEntries(names.map((n) => [n, { median: quantile(del[n]!, 0.5), p95: quantile(del[n]!, 0.95) }])),
      bytes_on_node: { bundle_dir: duBytes(dir), executable: fs.statSync(executable).size },
      node_floor_ms: quantile(Array.from({ length: 5 }, () => { const t0 = process.hrtime.bigint(); spawnSync(process.execPath, ["-e", "0"]); return Number(process.hrtime.bigint() - t0) / 1e6; }), 0.5),
    };
    console.log(JSON.stringify(result));
  } finally {
    for (const n of netns) spawnSync("ip", ["netns", "del", n]);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main();
