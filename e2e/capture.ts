// Test support: captures every frame on one interface of a network namespace (a raw AF_PACKET socket, in Python: no tcpdump here) and says whether a marker crossed it in clear.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

const SCRIPT = String.raw`
import socket, sys, json, select
markers = [m.encode() for m in sys.argv[2:]]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
frames = 0; hits = 0; udp = {}
print("ready", flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 0.5)
    if sys.stdin in r:
        break
    if s in r:
        f = s.recv(65535)
        frames += 1
        if any(m in f for m in markers):
            hits += 1
        # IPv4/UDP: count by destination port (VXLAN 8472 in clear, WireGuard 51871 encrypted).
        if len(f) > 37 and f[12:14] == b"\x08\x00" and f[23] == 17:
            ihl = (f[14] & 0x0f) * 4
            port = int.from_bytes(f[14 + ihl + 2:14 + ihl + 4], "big")
            udp[port] = udp.get(port, 0) + 1
print(json.dumps({"frames": frames, "markerFrames": hits, "udpByPort": udp}), flush=True)
`;

export interface CaptureResult {
  readonly frames: number;
  readonly markerFrames: number;
  /** Frames of IPv4 UDP by destination port. */
  readonly udpByPort: Readonly<Record<string, number>>;
}

export class Capture {
  private constructor(
    private readonly child: ChildProcess,
    private readonly lines: AsyncIterator<string>,
  ) {}

  /** Starts capturing on `ifname` in `netns` (markerFrames: frames carrying any of `marker`); resolves once the socket is bound. */
  static async start(netns: string, ifname: string, marker: string | readonly string[]): Promise<Capture> {
    const child = spawn("ip", ["netns", "exec", netns, "python3", "-c", SCRIPT, ifname, ...(typeof marker === "string" ? [marker] : marker)], { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done || first.value !== "ready") throw new Error(`capture on ${netns}/${ifname} did not start: ${stderr}`);
    return new Capture(child, lines);
  }

  /** Stops the capture and returns what it saw. */
  async stop(): Promise<CaptureResult> {
    this.child.stdin!.end("stop\n");
    const line = await this.lines.next();
    if (line.done) throw new Error("capture ended without a result");
    return JSON.parse(line.value) as CaptureResult;
  }
}
