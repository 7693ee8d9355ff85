// Test support: captures every frame on one interface of a network namespace (a raw AF_PACKET socket, in Python: no tcpdump here) and says whether a marker, or TCP between two addresses (IPv4 or IPv6), crossed it in clear.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

const SCRIPT = String.raw`
import socket, sys, json, select, os, time
markers = [m.encode() for m in sys.argv[2:]]
pair = set(socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in os.environ.get("CAPTURE_TCP_BETWEEN", "").split(",") if a)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
frames = 0; hits = 0; udp = {}; tcp = 0
def tcp_between(ethertype, p):
    if len(pair) != 2:
        return False
    if ethertype == b"\x08\x00":
        return len(p) >= 20 and p[0] >> 4 == 4 and p[9] == 6 and {p[12:16], p[16:20]} == pair
    # IPv6 with TCP as the first next header (what a pod's stack sends).
    return ethertype == b"\x86\xdd" and len(p) >= 40 and p[0] >> 4 == 6 and p[6] == 6 and {p[8:24], p[24:40]} == pair
print("ready", flush=True)
stopping = None
while True:
    # Asked to stop: what the socket holds still counts (a loaded machine reads it late); done after 200 ms without a
    # frame, and at most 1 s after the request (traffic that never pauses, a stream, must not hold the capture open).
    if stopping is not None and time.monotonic() > stopping:
        break
    r, _, _ = select.select([s] if stopping is not None else [s, sys.stdin], [], [], 0.2 if stopping is not None else 0.5)
    if sys.stdin in r:
        stopping = time.monotonic() + 1.0
        continue
    if s not in r:
        if stopping is not None:
            break
        continue
    f = s.recv(65535)
    frames += 1
    if any(m in f for m in markers):
        hits += 1
    if tcp_between(f[12:14], f[14:]):
        tcp += 1
    # IPv4/UDP: count by destination port (VXLAN 8472 in clear, WireGuard 51871 encrypted).
    if len(f) > 37 and f[12:14] == b"\x08\x00" and f[23] == 17:
        ihl = (f[14] & 0x0f) * 4
        port = int.from_bytes(f[14 + ihl + 2:14 + ihl + 4], "big")
        udp[port] = udp.get(port, 0) + 1
        # VXLAN: the inner frame after the UDP (8) and VXLAN (8) headers.
        inner = f[14 + ihl + 16:]
        if port == 8472 and tcp_between(inner[12:14], inner[14:]):
            tcp += 1
print(json.dumps({"frames": frames, "markerFrames": hits, "udpByPort": udp, "tcpBetweenFrames": tcp}), flush=True)
`;

export interface CaptureResult {
  readonly frames: number;
  readonly markerFrames: number;
  /** Frames of IPv4 UDP by destination port. */
  readonly udpByPort: Readonly<Record<string, number>>;
  /** Frames of TCP between the two addresses `tcpBetween` named (either way; IPv4 or IPv6), bare or inside VXLAN; 0 without them. */
  readonly tcpBetweenFrames: number;
}

export class Capture {
  private constructor(
    private readonly child: ChildProcess,
    private readonly lines: AsyncIterator<string>,
  ) {}

  /** Starts capturing on `ifname` in `netns` (markerFrames: frames carrying any of `marker`; tcpBetweenFrames: TCP between the two addresses of `tcpBetween`); resolves once the socket is bound. */
  static async start(netns: string, ifname: string, marker: string | readonly string[], tcpBetween?: readonly [string, string]): Promise<Capture> {
    const env = { ...process.env, CAPTURE_TCP_BETWEEN: tcpBetween?.join(",") ?? "" };
    const child = spawn("ip", ["netns", "exec", netns, "python3", "-c", SCRIPT, ifname, ...(typeof marker === "string" ? [marker] : marker)], { stdio: ["pipe", "pipe", "pipe"], env });
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
