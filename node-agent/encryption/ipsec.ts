// The agent's IPsec mode: probes the kernel for ESP in the node's namespace and says on the CiliumNode whether the node can use the cluster's IPsec key.
import type { Logger } from "pino";
import { type EspProbe, probeEsp } from "./esp-probe.ts";
import { ENCRYPTION_READY, type EncryptionPublication } from "./publication.ts";

/** EncryptionReady from the probe: pure. */
export function ipsecPublication(probe: EspProbe | undefined): EncryptionPublication {
  if (probe === undefined) return { condition: { type: ENCRYPTION_READY, status: "Unknown", reason: "Probing", message: "probing the kernel for ESP" }, spec: { key: 0 } };
  if (!probe.ok) return { condition: { type: ENCRYPTION_READY, status: "False", reason: probe.reason, message: probe.message }, spec: { key: 0 } };
  // The kernel takes ESP states, but programming them for peers is not built: say so instead of claiming encryption.
  return {
    condition: { type: ENCRYPTION_READY, status: "False", reason: "XfrmNotProgrammed", message: "the kernel has ESP; programming XFRM states and policies for peers is not built in this version" },
    spec: { key: 0 },
  };
}

export class IpsecEncryption {
  private probe: EspProbe | undefined;
  private readonly listeners = new Set<() => void>();

  constructor(private readonly o: { readonly netns?: string; readonly log: Logger }) {}

  async start(): Promise<void> {
    this.probe = await probeEsp(this.o.netns);
    const p = this.publication().condition;
    this.o.log[this.probe.ok ? "info" : "warn"]({ netns: this.o.netns, ready: p.status, reason: p.reason, message: p.message }, "IPsec encryption state");
    for (const f of this.listeners) f();
  }

  publication(): EncryptionPublication {
    return ipsecPublication(this.probe);
  }

  onChange(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }
}
