// Whether the kernel can do IPsec ESP: adds one XFRM state (AES-GCM, documentation addresses, a random SPI) in the node's namespace and removes it again.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { IPSEC_ALGORITHM } from "../../core/ipsec-key.ts";

export type EspProbe = { readonly ok: true } | { readonly ok: false; readonly reason: "KernelLacksESP" | "ProbeFailed"; readonly message: string };

/** What a kernel without ESP (or without the AEAD) answers to `ip xfrm state add` (the netlink ENOENT/ESRCH texts). */
const NO_ESP = /Requested type not found|Requested AEAD algorithm not found|Protocol not supported|Function not implemented/;

/** The probe's verdict from `ip`'s answer: pure, so the classification is tested on the texts themselves. */
export function classifyEspProbe(code: number, stderr: string): EspProbe {
  if (code === 0) return { ok: true };
  const text = stderr.trim().replace(/^Error:\s*/, "").replace(/\s+/g, " ");
  if (NO_ESP.test(text)) return { ok: false, reason: "KernelLacksESP", message: `the kernel refuses an ESP state (${IPSEC_ALGORITHM}): ${text}` };
  return { ok: false, reason: "ProbeFailed", message: `ip xfrm state add failed (exit ${code}): ${text || "no output"}` };
}

function ip(netns: string | undefined, args: readonly string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile("ip", [...(netns ? ["-n", netns] : []), ...args], { timeout: 10_000 }, (err, _stdout, stderr) => {
      const exit = (err as { code?: unknown } | null)?.code;
      const code = err ? (typeof exit === "number" ? exit : 1) : 0;
      resolve({ code, stderr: err && !stderr ? err.message : stderr });
    });
  });
}

/** Tries an ESP state in `netns` (the caller's own when absent); removes it when the kernel took it. */
export async function probeEsp(netns?: string): Promise<EspProbe> {
  // A random SPI above the 4-bit range Membrane's keys use: never one of ours.
  const spi = `0x${(0x10000000 + randomBytes(3).readUIntBE(0, 3)).toString(16)}`;
  const sel = ["src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", spi];
  const add = await ip(netns, ["xfrm", "state", "add", ...sel, "reqid", "1", "mode", "tunnel", "aead", IPSEC_ALGORITHM, `0x${randomBytes(20).toString("hex")}`, "128"]);
  const verdict = classifyEspProbe(add.code, add.stderr);
  if (verdict.ok) await ip(netns, ["xfrm", "state", "delete", ...sel]);
  return verdict;
}
