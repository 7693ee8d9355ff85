// Device lists as Cilium's --devices spells them: comma-separated interface names, a trailing "+" a prefix wildcard ("eth+").

/** One entry of a device list: a link by its exact name, or every link whose name starts with a prefix. */
export type DeviceSelector = { readonly kind: "name"; readonly name: string } | { readonly kind: "prefix"; readonly prefix: string };

export type DeviceListResult = { readonly ok: true; readonly value: readonly DeviceSelector[] } | { readonly ok: false; readonly error: string };

/** What the kernel accepts as a link name (IFNAMSIZ less the NUL), in the characters a flag or chart value carries safely. */
const IFNAME = /^[A-Za-z0-9._@-]{1,15}$/;

/**
 * Parses "eth0,bond0,rnm+" into its selectors. The error names the entry and says why (the caller prefixes its flag):
 * an empty entry, a bad name, a "+" that is not the last character or has no prefix, an entry listed twice.
 */
export function parseDeviceList(text: string): DeviceListResult {
  if (text === "") return { ok: false, error: "must name at least one device" };
  const value: DeviceSelector[] = [];
  const seen = new Set<string>();
  for (const [i, entry] of text.split(",").entries()) {
    const at = `entry ${i + 1}`;
    if (entry === "") return { ok: false, error: `${at} is empty, got ${JSON.stringify(text)}` };
    if (seen.has(entry)) return { ok: false, error: `${JSON.stringify(entry)} is listed twice` };
    seen.add(entry);
    const wildcard = entry.endsWith("+");
    const name = wildcard ? entry.slice(0, -1) : entry;
    if (wildcard && name === "") return { ok: false, error: `${at}: a wildcard needs a prefix before its "+" (as in "eth+"), got "+"` };
    if (name.includes("+")) return { ok: false, error: `${at}: "+" is only a wildcard at the end of a name, got ${JSON.stringify(entry)}` };
    if (!IFNAME.test(name)) return { ok: false, error: `${at}: must be an interface name (1-15 of A-Z a-z 0-9 . _ @ -)${wildcard ? ' before the "+"' : ""}, got ${JSON.stringify(entry)}` };
    if (!wildcard && (name === "none" || name === "." || name === "..")) return { ok: false, error: `${at}: ${JSON.stringify(name)} is not a device name${name === "none" ? ' ("none" stands alone: no device)' : ""}` };
    value.push(wildcard ? { kind: "prefix", prefix: name } : { kind: "name", name });
  }
  return { ok: true, value };
}

/** Whether a link of this name is one the list selects (a prefix wildcard also selects the bare prefix, as Cilium's). */
export function selectsDevice(list: readonly DeviceSelector[], ifname: string): boolean {
  return list.some((s) => (s.kind === "name" ? s.name === ifname : ifname.startsWith(s.prefix)));
}

/** The list as the flag spells it. */
export function formatDeviceList(list: readonly DeviceSelector[]): string {
  return list.map((s) => (s.kind === "name" ? s.name : `${s.prefix}+`)).join(",");
}
