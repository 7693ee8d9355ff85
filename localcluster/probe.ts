// Connectivity probes from the current network namespace (run inside a pod's): TCP connect, UDP request/reply or a DNS lookup through the namespace's resolv.conf, one JSON line per probe.
import { createSocket } from "node:dgram";
import { promises as dns } from "node:dns";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import dnsPacket from "dns-packet";
import { createInterface } from "node:readline";
import { parseFlags } from "../kube/flags.ts";

export type Verdict = "connected" | "refused" | "timeout";

export interface ProbeResult {
  verdict: Verdict;
  /** What the peer answered (a pod server answers with its pod name), when connected. */
  reply?: string;
}

// An ICMP "unreachable" means nobody answered on that address: to a user that is the same as silence.
const UNREACHABLE = new Set(["EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT"]);

function verdictOf(err: NodeJS.ErrnoException): Verdict {
  if (err.code === "ECONNREFUSED") return "refused";
  if (err.code !== undefined && UNREACHABLE.has(err.code)) return "timeout";
  throw err;
}

/** TCP: connected once the handshake completes (then reads what the peer sends until it closes or timeoutMs). */
export function probeTcp(host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port });
    let reply = "";
    let connected = false;
    const done = (r: ProbeResult): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done(connected ? { verdict: "connected", reply: reply.trim() } : { verdict: "timeout" }), timeoutMs);
    sock.on("connect", () => (connected = true));
    sock.on("data", (d: Buffer) => (reply += d.toString()));
    sock.on("end", () => done({ verdict: "connected", reply: reply.trim() }));
    sock.on("error", (err: NodeJS.ErrnoException) => {
      if (connected) return done({ verdict: "connected", reply: reply.trim() });
      try {
        done({ verdict: verdictOf(err) });
      } catch (e) {
        clearTimeout(timer);
        reject(e as Error);
      }
    });
  });
}

/** UDP: connected only when a reply datagram comes back; an ICMP port unreachable is "refused". */
export function probeUdp(host: string, port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const sock = createSocket("udp4");
    const done = (r: ProbeResult): void => {
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const timer = setTimeout(() => done({ verdict: "timeout" }), timeoutMs);
    sock.on("message", (msg) => done({ verdict: "connected", reply: msg.toString().trim() }));
    sock.on("error", (err: NodeJS.ErrnoException) => {
      try {
        done({ verdict: verdictOf(err) });
      } catch (e) {
        clearTimeout(timer);
        sock.close();
        reject(e as Error);
      }
    });
    // A connected socket is what makes the kernel report the ICMP error back to us.
    sock.connect(port, host, () => sock.send("probe\n"));
  });
}

/** A DNS lookup's outcome: the response code (or "timeout") and the A records' addresses. */
export interface LookupResult {
  verdict: "looked-up";
  rcode: string;
  addresses: string[];
}

const RCODE_OF: Record<string, string> = { EREFUSED: "REFUSED", ENOTFOUND: "NXDOMAIN", ESERVFAIL: "SERVFAIL", ENODATA: "NOERROR", ETIMEOUT: "timeout", ECONNREFUSED: "timeout" };

/**
 * An A lookup of `name` through the servers of this namespace's /etc/resolv.conf (a pod's: `ip netns
 * exec` mounts /etc/netns/NAME/resolv.conf there), or of `server` ("ip:port") when given, one try; `name.`
 * with a trailing dot skips the search list.
 */
export async function lookupA(name: string, timeoutMs: number, server?: string): Promise<LookupResult> {
  const resolver = new dns.Resolver({ timeout: timeoutMs, tries: 1 });
  if (server !== undefined) resolver.setServers([server]);
  try {
    return { verdict: "looked-up", rcode: "NOERROR", addresses: (await resolver.resolve4(name)).sort() };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    const rcode = RCODE_OF[code];
    if (rcode === undefined) throw err;
    return { verdict: "looked-up", rcode, addresses: [] };
  }
}

/**
 * The same lookup over TCP (what a resolver does after a truncated UDP answer), one query on one
 * connection to `server` ("ip:port") or the first nameserver of this namespace's /etc/resolv.conf;
 * `name` is asked as given (no search list). A connection refused or silent is "timeout", as for UDP.
 */
export function lookupATcp(name: string, timeoutMs: number, server?: string): Promise<LookupResult> {
  const [host, port] = server !== undefined ? splitServer(server) : [firstNameserver(), 53];
  const query = dnsPacket.streamEncode({ type: "query", id: 1 + Math.floor(Math.random() * 0xfffe), flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name: name.replace(/\.$/, "") }] });
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    let buf = Buffer.alloc(0);
    const done = (r: LookupResult): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ verdict: "looked-up", rcode: "timeout", addresses: [] }), timeoutMs);
    sock.on("error", () => done({ verdict: "looked-up", rcode: "timeout", addresses: [] }));
    sock.on("connect", () => sock.write(query));
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const answer = dnsPacket.streamDecode(buf) as dnsPacket.DecodedPacket & { rcode?: string };
      const addresses = (answer.answers ?? []).flatMap((a) => (a.type === "A" ? [a.data] : [])).sort();
      done({ verdict: "looked-up", rcode: answer.rcode ?? "NOERROR", addresses });
    });
  });
}

function splitServer(server: string): [string, number] {
  const m = /^\[?(.+?)\]?:(\d+)$/.exec(server);
  return m ? [m[1]!, Number(m[2])] : [server, 53];
}

function firstNameserver(): string {
  const m = /^nameserver\s+(\S+)/m.exec(readFileSync("/etc/resolv.conf", "utf8"));
  if (!m) throw new Error("/etc/resolv.conf names no nameserver");
  return m[1]!;
}

/** One request to `--serve` mode: probe host:port, or look `lookup` up; the answer echoes `id`. */
export type ProbeRequest = { id: number; timeoutMs: number } & ({ host: string; port: number; udp?: boolean } | { lookup: string; server?: string; tcp?: boolean });

export type ProbeAnswer = { id: number } & (ProbeResult | LookupResult | { verdict: "error"; error: string });

/**
 * `--serve`: reads one JSON ProbeRequest per stdin line and runs each at once (many in flight), writing
 * one JSON ProbeAnswer per line as each finishes; exits when stdin ends and every probe has answered.
 * One long-lived process per pod makes a probe cost a socket, not a process start.
 */
function serve(): void {
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim() === "") return;
    let req: ProbeRequest;
    try {
      req = JSON.parse(line) as ProbeRequest;
    } catch {
      process.stdout.write(JSON.stringify({ id: -1, verdict: "error", error: `not JSON: ${line.slice(0, 80)}` }) + "\n");
      return;
    }
    const probe: Promise<ProbeResult | LookupResult> = "lookup" in req ? (req.tcp ? lookupATcp : lookupA)(req.lookup, req.timeoutMs, req.server) : req.udp ? probeUdp(req.host, req.port, req.timeoutMs) : probeTcp(req.host, req.port, req.timeoutMs);
    probe.then(
      (r) => process.stdout.write(JSON.stringify({ id: req.id, ...r }) + "\n"),
      (e: unknown) => process.stdout.write(JSON.stringify({ id: req.id, verdict: "error", error: (e as Error).message }) + "\n"),
    );
  });
}

async function main(): Promise<void> {
  if (process.argv[2] === "--serve") return serve();
  const usage = "usage: probe.ts HOST PORT [--udp] [--timeout-ms N] | probe.ts --serve";
  const flags = parseFlags({ args: process.argv.slice(2), options: { udp: { type: "boolean" }, "timeout-ms": { type: "string" } }, allowPositionals: true });
  if (!flags.ok) throw new Error(`${flags.error}\n${usage}`);
  const [host, portText] = flags.parsed.positionals;
  const port = Number(portText);
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535 || flags.parsed.positionals.length !== 2) throw new Error(usage);
  const udp = flags.parsed.values.udp === true;
  const timeoutMs = Number(flags.parsed.values["timeout-ms"] ?? 2_000);
  if (!(timeoutMs > 0)) throw new Error(`--timeout-ms: "${flags.parsed.values["timeout-ms"]}" is not a positive number of milliseconds`);
  const result = udp ? await probeUdp(host, port, timeoutMs) : await probeTcp(host, port, timeoutMs);
  process.stdout.write(JSON.stringify(result) + "\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    process.stderr.write(`probe: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
