// Test fixture: a separate process using the IPAM store, as concurrent plugin invocations would.
//   alloc <stateDir> <podCIDR> <idPrefix> <count>   allocates count addresses, prints "ip owner" lines
//   hold <stateDir>                                 takes the lock, prints "holding", never lets go
import { allocate, podRange } from "./ipam.ts";
import { IpamStore } from "./ipam-store.ts";

const [mode, dir, ...rest] = process.argv.slice(2);
if (mode === "alloc" && dir && rest.length === 3) {
  const range = podRange(rest[0]!);
  if (!range.ok) throw new Error(range.reason);
  const store = new IpamStore(dir, { lockTimeoutMs: 60_000 });
  for (let i = 0; i < Number(rest[2]); i++) {
    const owner = { containerId: `${rest[1]}-${i}`, ifname: "eth0" };
    const ip = await store.update((state) => {
      const r = allocate(state, range.range, owner);
      if (!r.ok) throw new Error(r.message);
      return { state: r.state, value: r.ip };
    });
    process.stdout.write(`${ip} ${owner.containerId}\n`);
  }
} else if (mode === "hold" && dir) {
  const store = new IpamStore(dir);
  await store.update((_state) => {
    process.stdout.write("holding\n");
    // Blocks the process inside the lock until it is killed.
    for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1_000);
  });
} else {
  process.stderr.write("usage: ipam-worker alloc DIR CIDR PREFIX COUNT | hold DIR\n");
  process.exitCode = 2;
}
