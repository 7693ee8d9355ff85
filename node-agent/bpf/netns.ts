// Test and benchmark fixture: named network namespaces and veth links, created and removed by exact name.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";

export function sh(cmd: string, args: readonly string[]): string {
  return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
}

export function ipIn(netns: string, ...args: string[]): string {
  return sh("ip", ["-n", netns, ...args]);
}

export function execIn(netns: string, cmd: string, args: readonly string[]): string {
  return sh("ip", ["netns", "exec", netns, cmd, ...args]);
}

export function spawnIn(netns: string, cmd: string, args: readonly string[]): ChildProcess {
  return spawn("ip", ["netns", "exec", netns, cmd, ...args], { stdio: ["ignore", "pipe", "pipe"] });
}

export function ifindexIn(netns: string, ifname: string): number {
  const out = JSON.parse(ipIn(netns, "-j", "link", "show", "dev", ifname)) as { ifindex: number }[];
  const ifindex = out[0]?.ifindex;
  if (ifindex === undefined) throw new Error(`no link ${ifname} in ${netns}`);
  return ifindex;
}

/** Tracks what a test created so that cleanup() removes exactly that, even after a failure. */
export class NetnsFixture {
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];

  addNetns(name: string): string {
    if (fs.existsSync(`/var/run/netns/${name}`)) sh("ip", ["netns", "del", name]);
    sh("ip", ["netns", "add", name]);
    this.namespaces.push(name);
    ipIn(name, "link", "set", "lo", "up");
    // No duplicate address detection on the links made here: a link-local address stays tentative for a second or more
    // after its link comes up, and until then the kernel sends no neighbour solicitation from that link for an address
    // it does not hold (a proxy's or router's forwarded IPv6 traffic), so a first connection there could wait out a test's timeout.
    execIn(name, "sysctl", ["-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"]);
    return name;
  }

  /** A veth pair with one end in each namespace, both up, addressed. */
  addVeth(a: { netns: string; ifname: string; cidr: string }, b: { netns: string; ifname: string; cidr: string }): void {
    sh("ip", ["link", "add", a.ifname, "netns", a.netns, "type", "veth", "peer", "name", b.ifname, "netns", b.netns]);
    for (const end of [a, b]) {
      if (end.cidr) ipIn(end.netns, "addr", "add", end.cidr, "dev", end.ifname);
      ipIn(end.netns, "link", "set", end.ifname, "up");
    }
  }

  /** A long-lived child in a namespace, killed by pid at cleanup. */
  spawn(netns: string, cmd: string, args: readonly string[]): ChildProcess {
    const child = spawnIn(netns, cmd, args);
    this.children.push(child);
    return child;
  }

  /** The pids of the children still running (a bench reads their CPU time). */
  pids(): number[] {
    return this.children.filter((c) => c.exitCode === null && c.pid !== undefined).map((c) => c.pid!);
  }

  cleanup(): void {
    for (const c of this.children) if (c.exitCode === null && c.pid) c.kill("SIGKILL");
    this.children.length = 0;
    // Deleting a namespace removes its links (and the veth peer in the other namespace).
    for (const ns of this.namespaces.splice(0).reverse()) {
      try {
        sh("ip", ["netns", "del", ns]);
      } catch {
        // already gone
      }
    }
  }
}

/** Waits until a child prints a line matching re on stdout. */
export function waitForLine(child: ChildProcess, re: RegExp, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}; got ${JSON.stringify(buf)}`)), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const line = buf.split("\n").find((l) => re.test(l));
      if (line !== undefined) {
        clearTimeout(timer);
        child.stdout?.off("data", onData);
        resolve(line);
      }
    };
    child.stdout?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`child exited (${code}) before ${re}; got ${JSON.stringify(buf)}`));
    });
  });
}
