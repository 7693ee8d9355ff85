// The transparent DNS proxy: queries the datapath steered here are decided by the DNS rules of their policy, forwarded to the server the pod asked, and their answers learned before release.
import { randomFillSync } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import { performance } from "node:perf_hooks";
import dnsPacket from "dns-packet";
// Record type names by number (the table its question decoder uses). Imported, not required at run time: the bundle
// must carry it, the image has no node_modules/dns-packet.
import dnsTypes from "dns-packet/types.js";
import pino from "pino";
import { PROTO_NUMBER } from "../../core/model.ts";
import { learnedAddresses, type LearnedAddress } from "../../core/dns/answers.ts";
import { decideQuery, rejectRcode, type DnsRuleRef, type RejectCode } from "../../core/dns/query-decision.ts";
import type { OriginalDestination, RedirectProto } from "../bpf/redirect.ts";
import { LOCAL_SOCKETS, type SocketFactory } from "./netns-sockets.ts";
import { UdpOutbox } from "./udp-outbox.ts";
import { UdpInbox } from "./udp-inbox.ts";
import { readAnswer, type AnswerSummary } from "./answer-reader.ts";
import { readName } from "./wire-name.ts";

const log = pino({ name: "dns-proxy", level: process.env.LOG_LEVEL ?? "info" });

/** One DNS query the proxy handled, for flows and metrics. */
export interface DnsFlow {
  readonly time: Date;
  readonly protocol: RedirectProto;
  readonly source: { readonly ip: string; readonly port: number; readonly identity: number };
  readonly server: { readonly ip: string; readonly port: number };
  readonly query: string;
  readonly qtype: string;
  readonly verdict: "allowed" | "denied" | "error";
  /** The DNS rule that allowed it; absent for a denied query (no rule matched). */
  readonly rule?: DnsRuleRef;
  /** The policy entry's rule that sent the query here. */
  readonly ruleId: number;
  /** The answer's response code (REFUSED/NXDOMAIN for a denied query). */
  readonly rcode?: string;
  readonly addresses: readonly string[];
  /** An allowed answer's: the smallest TTL of its addresses (CNAME hops included), in seconds. */
  readonly ttl?: number;
  /** An allowed answer's CNAME chain from the question on, without the question. */
  readonly cnames?: readonly string[];
  readonly latencyMs: number;
  readonly error?: string;
}

export interface DnsProxyOptions {
  /** The node's IPv4 address the datapath steers IPv4 pods' queries to (bpf/lib/redirect.h's redirect_config); absent on an IPv6-only node. */
  readonly address?: string;
  /** The node's IPv6 address, where IPv6 pods' queries are steered; the proxy listens on both when both are given. */
  readonly address6?: string;
  /** The datapath's record of where each redirected flow was going. */
  readonly originalDestination: (ip: string, port: number, proto: RedirectProto) => OriginalDestination | undefined;
  /** The DNS rules of a subject's policy entry (ruleId) for a query to `port` over `proto` (IANA number); none: every such query is denied. */
  readonly rules: (subject: number, ruleId: number, port: number, proto: number) => readonly DnsRuleRef[];
  /** Called with an allowed answer's addresses before the answer is released; must have made them usable when it returns. */
  readonly learn: (addresses: readonly LearnedAddress[], flow: { readonly sourceIp: string; readonly identity: number }) => void;
  readonly onFlow?: (flow: DnsFlow) => void;
  readonly rejectCode?: RejectCode;
  readonly upstreamTimeoutMs?: number;
  /** Where its sockets are opened (the node's network namespace); this process's own when absent. */
  readonly sockets?: SocketFactory;
}

/** A port's sockets on one of the node's addresses. */
interface Listener {
  readonly udp: dgram.Socket;
  readonly tcp: net.Server;
}

/** An allowed UDP query upstream: the server asked (only it may answer), and where and how its answer goes back. */
interface PendingQuery {
  readonly ip: string;
  readonly port: number;
  readonly podId: number;
  readonly deadline: number;
  /** The proxy socket the query came in on, and the pod's address on it. */
  readonly sock: dgram.Socket;
  readonly podIp: string;
  readonly podPort: number;
  readonly orig: OriginalDestination;
  readonly allowed: Allowed;
  readonly started: number;
}

/** An upstream socket: its opening, and the socket itself once open (so a query can be sent without waiting a tick). */
interface Upstream {
  readonly ready: Promise<dgram.Socket>;
  sock?: dgram.Socket;
}

/** Upstream query ids from the system's CSPRNG, drawn in batches (a random id is what stands between the shared socket and a spoofed answer). */
class UpstreamIds {
  private readonly pool = new Uint16Array(1024);
  private next = this.pool.length;

  take(): number {
    if (this.next === this.pool.length) {
      randomFillSync(this.pool);
      this.next = 0;
    }
    return this.pool[this.next++]!;
  }
}

const DNS_HEADER_BYTES = 12;
/** dns-packet's decoder of one question (exported by the library, left out of its type declarations). */
const wireQuestion = (dnsPacket as unknown as { readonly question: { decode(buf: Buffer, offset: number): dnsPacket.Question } }).question;

/** Servers with a connected upstream socket of their own; queries to others share one socket per family. */
const MAX_CONNECTED_UPSTREAMS = 256;

type Outcome = { readonly reply: Buffer | undefined; readonly flow: Omit<DnsFlow, "time" | "protocol" | "source" | "server" | "latencyMs" | "ruleId"> };
/** The flow of an answered query when nobody reads flows (none is built). */
const UNREAD: Outcome["flow"] = { query: "", qtype: "", verdict: "allowed", addresses: [] };

/** A query the DNS rules allow: what its flow says of it, until the answer comes. */
interface Allowed {
  readonly name: string;
  readonly qtype: string;
  readonly rule: DnsRuleRef;
}

/** Serves proxy ports (UDP and TCP on each) on the node's addresses (IPv4, IPv6 or both). */
export class DnsProxy {
  /** Per port, its sockets on each address. */
  private readonly listeners = new Map<number, readonly Listener[]>();
  private readonly tcpSockets = new Set<net.Socket>();
  /** The shared unconnected socket per family, for servers beyond MAX_CONNECTED_UPSTREAMS. */
  private readonly upstream = new Map<"udp4" | "udp6", Upstream>();
  /** A connected socket per server (address → port → socket). */
  private readonly connected = new Map<string, Map<number, Upstream>>();
  private connectedCount = 0;
  private readonly pending = new Map<number, PendingQuery>();
  /** Expires the upstream queries whose answer is late (one timer for all, not one per query). */
  private sweeper: NodeJS.Timeout | undefined;
  private readonly ids = new UpstreamIds();
  /** The last UDP query's redirect record, and the inbox read, proxy port and pod address it was looked up for. */
  private readonly lastSteered: { read: number; port: number; ip: string; srcPort: number; orig: OriginalDestination | undefined } = { read: 0, port: 0, ip: "", srcPort: 0, orig: undefined };
  /** UDP datagrams out, batched per event-loop turn. */
  readonly outbox = new UdpOutbox();
  /** UDP datagrams in, the rest of a wake-up's read together. */
  readonly inbox = new UdpInbox();

  constructor(private readonly opts: DnsProxyOptions) {
    if (opts.address === undefined && opts.address6 === undefined) throw new Error("DNS proxy: no address to listen on (IPv4 or IPv6)");
    if (opts.address !== undefined && !net.isIPv4(opts.address)) throw new Error(`DNS proxy: address ${opts.address} is not an IPv4 address`);
    if (opts.address6 !== undefined && !net.isIPv6(opts.address6)) throw new Error(`DNS proxy: address6 ${opts.address6} is not an IPv6 address`);
  }

  /** The node addresses it listens on, IPv4 first. */
  addresses(): string[] {
    return [this.opts.address, this.opts.address6].filter((a): a is string => a !== undefined);
  }

  /** Starts serving a proxy port on every address; resolves once all its sockets listen (none stays open when one fails). */
  async listen(port: number): Promise<void> {
    if (this.listeners.has(port)) return;
    const opened: Listener[] = [];
    try {
      for (const address of this.addresses()) opened.push(await this.listenOn(address, port));
    } catch (err) {
      for (const l of opened) closeListener(l);
      throw err;
    }
    this.listeners.set(port, opened);
    log.info({ addresses: this.addresses(), port }, "DNS proxy listening");
  }

  private async listenOn(address: string, port: number): Promise<Listener> {
    const udp = await this.sockets().udp(net.isIPv6(address) ? "udp6" : "udp4", address, port);
    this.inbox.attach(udp, (msg, podIp, podPort, read) => this.onUdp(udp, port, msg, podIp, podPort, read));
    udp.on("error", (err) => log.error({ address, port, error: err.message }, "DNS proxy UDP socket error"));
    let tcp: net.Server;
    try {
      tcp = await this.sockets().tcpServer(address, port);
    } catch (err) {
      udp.close();
      throw err;
    }
    tcp.on("connection", (sock: net.Socket) => this.onTcp(sock, port));
    tcp.on("error", (err) => log.error({ address, port, error: err.message }, "DNS proxy TCP server error"));
    return { udp, tcp };
  }

  /** Stops serving a port. */
  async unlisten(port: number): Promise<void> {
    const ls = this.listeners.get(port);
    if (!ls) return;
    this.listeners.delete(port);
    await Promise.all(ls.map(closeListener));
  }

  ports(): number[] {
    return [...this.listeners.keys()].sort((a, b) => a - b);
  }

  async stop(): Promise<void> {
    for (const s of this.tcpSockets) s.destroy();
    this.outbox.flush();
    for (const s of this.upstream.values()) void s.ready.then((u) => u.close()).catch(() => undefined);
    this.upstream.clear();
    for (const byPort of this.connected.values()) for (const s of byPort.values()) void s.ready.then((u) => u.close()).catch(() => undefined);
    this.connected.clear();
    this.connectedCount = 0;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.pending.clear();
    await Promise.all(this.ports().map((p) => this.unlisten(p)));
  }

  /** A UDP query: decided at once; an allowed one is answered when its server's answer is learned (udpAnswered). */
  private onUdp(sock: dgram.Socket, port: number, msg: Buffer, podIp: string, podPort: number, read: number): void {
    const started = performance.now();
    const orig = this.steeredUdp(port, podIp, podPort, read);
    if (!orig) return;
    const judged = this.judge(msg, orig, "udp");
    if ("rule" in judged) {
      const podId = msg.readUInt16BE(0);
      return this.udpExchange(msg, { ip: orig.ip, port: orig.port, podId, deadline: started + this.timeout(), sock, podIp, podPort, orig, allowed: judged, started });
    }
    this.emit("udp", podIp, podPort, orig, started, judged);
    if (judged.reply) this.outbox.send(sock, judged.reply, podPort, podIp);
  }

  /** An allowed UDP query's end: its server's answer (its id already the pod's), learned before it is sent on, or why there is none. */
  private udpAnswered(q: PendingQuery, err: Error | undefined, answer?: Buffer): void {
    const outcome = err ? upstreamFailed(q.allowed, err) : this.answered(answer!, q.allowed, q.orig, q.podIp);
    this.emit("udp", q.podIp, q.podPort, q.orig, q.started, outcome);
    if (outcome.reply) this.outbox.send(q.sock, outcome.reply, q.podPort, q.podIp);
  }

  private onTcp(sock: net.Socket, port: number): void {
    this.tcpSockets.add(sock);
    sock.on("close", () => this.tcpSockets.delete(sock));
    sock.on("error", () => sock.destroy());
    let buf = Buffer.alloc(0);
    let chain = Promise.resolve();
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        // Answers go back in the order the queries came (one TCP stream).
        chain = chain.then(async () => {
          const reply = await this.handleTcp(port, msg, sock.remoteAddress ?? "", sock.remotePort ?? 0);
          if (!reply || sock.destroyed) return;
          const len = Buffer.alloc(2);
          len.writeUInt16BE(reply.length, 0);
          sock.write(Buffer.concat([len, reply]));
        });
      }
    });
  }

  /** One TCP query: its answer bytes, or undefined when nothing may be sent back (fail closed). */
  private async handleTcp(port: number, msg: Buffer, ip: string, srcPort: number): Promise<Buffer | undefined> {
    const started = performance.now();
    const orig = this.steered("tcp", port, ip, srcPort);
    if (!orig) return undefined;
    const judged = this.judge(msg, orig, "tcp");
    let outcome: Outcome;
    if (!("rule" in judged)) outcome = judged;
    else {
      try {
        outcome = this.answered(await this.tcpExchange(msg, orig), judged, orig, ip);
      } catch (err) {
        outcome = upstreamFailed(judged, err as Error);
      }
    }
    this.emit("tcp", ip, srcPort, orig, started, outcome);
    return outcome.reply;
  }

  /**
   * steered for a UDP query: a pod's queries read together from one socket (a busy client's burst from
   * one source port) take the record looked up for the first of them. The datapath writes a record when
   * a flow's first packet passes, before the packet is queued, so a lookup made after the read returned
   * is what a lookup per query would have found (each later lookup could only see flows newer than the query).
   */
  private steeredUdp(port: number, ip: string, srcPort: number, read: number): OriginalDestination | undefined {
    const last = this.lastSteered;
    if (last.read === read && last.port === port && last.srcPort === srcPort && last.ip === ip && last.orig) return last.orig;
    const orig = this.steered("udp", port, ip, srcPort);
    last.read = read;
    last.port = port;
    last.ip = ip;
    last.srcPort = srcPort;
    last.orig = orig;
    return orig;
  }

  /** Where the datapath says the query was going; undefined (and logged) when it did not steer it to this port. */
  private steered(protocol: RedirectProto, port: number, ip: string, srcPort: number): OriginalDestination | undefined {
    const orig = this.opts.originalDestination(ip, srcPort, protocol);
    if (!orig || orig.proxyPort !== port) {
      // Not steered here by the datapath (or its record is gone): nobody to forward to.
      log.warn({ ip, port: srcPort, protocol, proxyPort: port }, "DNS query without a redirect record dropped");
      return undefined;
    }
    return orig;
  }

  /** The DNS rules' verdict on a query: allowed (to be forwarded), or the outcome already (refused, malformed). */
  private judge(msg: Buffer, orig: OriginalDestination, protocol: RedirectProto): Allowed | Outcome {
    // Only the header and the question are read (as the library's question decoder reads them): the
    // rest of the query (EDNS options) is the server's to read, and a full decode per query costs more.
    let name = "";
    let qtype = "";
    let asked = false;
    try {
      if (msg.length < DNS_HEADER_BYTES) throw new RangeError(`${msg.length} bytes, shorter than a DNS header`);
      // A query asks one question: with more, only the first would be decided, so it is refused.
      if (msg.readUInt16BE(4) === 1) {
        name = readName(msg, DNS_HEADER_BYTES);
        const typeAt = DNS_HEADER_BYTES + readName.bytes;
        // No room for the type and class: the library's decoder throws what it throws.
        if (typeAt + 4 > msg.length) ({ name, type: qtype } = wireQuestion.decode(msg, DNS_HEADER_BYTES));
        else qtype = dnsTypes.toString(msg.readUInt16BE(typeAt));
        asked = true;
      }
    } catch (err) {
      return { reply: undefined, flow: { query: "", qtype: "", verdict: "error", addresses: [], error: `malformed query: ${(err as Error).message}` } };
    }
    const decision = decideQuery(name, this.opts.rules(orig.subject, orig.ruleId, orig.port, PROTO_NUMBER[protocol === "tcp" ? "TCP" : "UDP"]));
    if (decision.verdict === "allow" && asked) return { name, qtype, rule: decision.rule };
    // The refusal repeats the question as the library decodes it.
    const question = asked ? wireQuestion.decode(msg, DNS_HEADER_BYTES) : undefined;
    const rcode = rejectRcode(this.opts.rejectCode ?? "refused");
    const reply = dnsPacket.encode({
      type: "response",
      id: msg.readUInt16BE(0),
      flags: (msg.readUInt16BE(2) & dnsPacket.RECURSION_DESIRED) | dnsPacket.RECURSION_AVAILABLE | rcode,
      questions: question ? [question] : [],
    });
    return { reply, flow: { query: name, qtype, verdict: "denied", rcode: rcode === 5 ? "REFUSED" : "NXDOMAIN", addresses: [] } };
  }

  /** The server's answer to an allowed query: learned before it is released, or withheld when it cannot be. */
  private answered(answerBytes: Buffer, q: Allowed, orig: OriginalDestination, sourceIp: string): Outcome {
    const { name, qtype, rule } = q;
    // Only the rcode and the answer section's addresses and CNAMEs are read: the rest is the pod's resolver's to read.
    let answer: AnswerSummary;
    try {
      answer = readAnswer(answerBytes);
    } catch (err) {
      // An answer we cannot read cannot be learned: the pod gets nothing rather than an address policy would drop.
      return { reply: undefined, flow: { query: name, qtype, verdict: "error", rule, addresses: [], error: `malformed answer: ${(err as Error).message}` } };
    }
    const learned = learnedAddresses(name, answer.records);
    try {
      if (learned.length) this.opts.learn(learned, { sourceIp, identity: orig.subject });
    } catch (err) {
      log.error({ name, error: (err as Error).message }, "learning an answer failed; the answer is withheld");
      return { reply: undefined, flow: { query: name, qtype, verdict: "error", rule, addresses: learned.map((l) => l.ip), error: (err as Error).message } };
    }
    if (!this.flowsRead()) return { reply: answerBytes, flow: UNREAD };
    const chain = learned.reduce<readonly string[]>((longest, l) => (l.names.length > longest.length ? l.names : longest), []);
    const answeredFlow = {
      ...(learned.length ? { ttl: Math.min(...learned.map((l) => l.ttl)) } : {}),
      ...(chain.length > 1 ? { cnames: chain.slice(1) } : {}),
    };
    return { reply: answerBytes, flow: { query: name, qtype, verdict: "allowed", rule, rcode: answer.rcode, addresses: learned.map((l) => l.ip), ...answeredFlow } };
  }

  /**
   * Forwards over a connected socket per server (its sends skip the route lookup and Node's address
   * handling, and the kernel lets only that server answer on it), or the shared socket of the family
   * past MAX_CONNECTED_UPSTREAMS servers; a socket per query would cost more than the rest of the
   * proxy. Each query gets a random id of its own upstream, its answer is matched by that id and the
   * server's address, and the pod's id is put back.
   */
  private udpExchange(msg: Buffer, q: PendingQuery): void {
    const server = this.connectedUpstream(q.ip, q.port);
    const up = server ?? this.upstreamSocket(net.isIPv6(q.ip) ? "udp6" : "udp4");
    if (up.sock) return this.sendUpstream(up.sock, server !== undefined, msg, q);
    up.ready.then(
      (sock) => this.sendUpstream(sock, server !== undefined, msg, q),
      (err: unknown) => this.udpAnswered(q, err instanceof Error ? err : new Error(String(err))),
    );
  }

  private sendUpstream(sock: dgram.Socket, connected: boolean, msg: Buffer, q: PendingQuery): void {
    let id = this.ids.take();
    for (let tries = 0; this.pending.has(id); tries++) {
      if (tries > 64) return this.udpAnswered(q, new Error("too many queries in flight upstream"));
      id = this.ids.take();
    }
    this.pending.set(id, q);
    this.sweepLate();
    // The query's buffer is this proxy's own (read from its socket): its id is replaced in place.
    msg.writeUInt16BE(id, 0);
    // A failed send is the socket's "error" event, and the query times out or is failed there.
    if (connected) this.outbox.send(sock, msg);
    else this.outbox.send(sock, msg, q.port, q.ip);
  }

  /** The connected socket for a server, opened on first use; undefined past the limit (the shared socket serves). */
  private connectedUpstream(ip: string, port: number): Upstream | undefined {
    const known = this.connected.get(ip)?.get(port);
    if (known) return known;
    if (this.connectedCount >= MAX_CONNECTED_UPSTREAMS) return undefined;
    // An IPv6 socket handed over from the node's netns (netns-sockets.ts) cannot be connected in Node 26 (its send
    // then asks for a port): IPv6 servers share the family's unconnected socket, where the id and the peer are checked.
    if (net.isIPv6(ip) && this.opts.sockets !== undefined) return undefined;
    const family = net.isIPv6(ip) ? "udp6" : "udp4";
    const forget = (): void => {
      const byPort = this.connected.get(ip);
      if (byPort?.delete(port)) this.connectedCount--;
      if (byPort?.size === 0) this.connected.delete(ip);
    };
    const up: Upstream = {
      ready: this.sockets()
        .udp(family, family === "udp6" ? "::" : "0.0.0.0", 0)
        .then(
          (s) =>
            new Promise<dgram.Socket>((resolve, reject) => {
              s.once("error", reject);
              s.connect(port, ip, () => {
                s.off("error", reject);
                resolve((up.sock = this.upstreamReady(s, { ip, port })));
              });
            }),
        )
        .catch((err: unknown) => {
          forget(); // the next query asks again
          throw err;
        }),
    };
    let byPort = this.connected.get(ip);
    if (!byPort) this.connected.set(ip, (byPort = new Map()));
    byPort.set(port, up);
    this.connectedCount++;
    return up;
  }

  /** While queries are upstream, a timer checks every tenth of the timeout for the late ones. */
  private sweepLate(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => {
      const now = performance.now();
      for (const [id, p] of this.pending) {
        if (p.deadline > now) continue;
        this.pending.delete(id);
        this.udpAnswered(p, new Error(`no answer from ${p.ip}:${p.port} within ${this.timeout()} ms`));
      }
      if (this.pending.size === 0) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, Math.max(10, this.timeout() / 10));
    this.sweeper.unref();
  }

  private upstreamSocket(family: "udp4" | "udp6"): Upstream {
    const known = this.upstream.get(family);
    if (known) return known;
    const up: Upstream = {
      ready: this.sockets()
        .udp(family, family === "udp6" ? "::" : "0.0.0.0", 0)
        .then((s) => (up.sock = this.upstreamReady(s)))
        .catch((err: unknown) => {
          this.upstream.delete(family); // the next query asks again
          throw err;
        }),
    };
    this.upstream.set(family, up);
    return up;
  }

  private upstreamReady(sock: dgram.Socket, server?: { readonly ip: string; readonly port: number }): dgram.Socket {
    this.inbox.attach(sock, (answer, address, port) => {
      if (answer.length < 12) return;
      const id = answer.readUInt16BE(0);
      const p = this.pending.get(id);
      // Only the server asked may answer (an answer from anywhere else could plant addresses).
      if (!p || p.ip !== address || p.port !== port) return;
      this.pending.delete(id);
      answer.writeUInt16BE(p.podId, 0);
      this.udpAnswered(p, undefined, answer);
    });
    sock.on("error", (err) => {
      if (!server) {
        log.error({ error: err.message }, "DNS proxy upstream socket error");
        return;
      }
      // A connected socket's error is its server's (a refused port, an unreachable host): the queries waiting on it fail now.
      log.debug({ server: server.ip, port: server.port, error: err.message }, "DNS proxy upstream error");
      for (const [id, p] of this.pending) {
        if (p.ip !== server.ip || p.port !== server.port) continue;
        this.pending.delete(id);
        this.udpAnswered(p, new Error(`${server.ip}:${server.port}: ${err.message}`));
      }
    });
    return sock;
  }

  private sockets(): SocketFactory {
    return this.opts.sockets ?? LOCAL_SOCKETS;
  }

  private async tcpExchange(msg: Buffer, orig: OriginalDestination): Promise<Buffer> {
    const connected = this.sockets().connect(orig.ip, orig.port);
    const sock = await withTimeout(connected, this.timeout(), `no TCP connection to ${orig.ip}:${orig.port} within ${this.timeout()} ms`).catch((err: unknown) => {
      void connected.then((s) => s.destroy()).catch(() => undefined);
      throw err;
    });
    return new Promise<Buffer>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => done(new Error(`no answer from ${orig.ip}:${orig.port} over TCP within ${this.timeout()} ms`)), this.timeout());
      const done = (err: Error | undefined, answer?: Buffer): void => {
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(answer!);
      };
      sock.on("error", (err) => done(err));
      const len = Buffer.alloc(2);
      len.writeUInt16BE(msg.length, 0);
      sock.write(Buffer.concat([len, msg]));
      sock.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(undefined, buf.subarray(2, 2 + buf.readUInt16BE(0)));
      });
      sock.on("end", () => done(new Error(`${orig.ip}:${orig.port} closed the TCP connection without an answer`)));
    });
  }

  private timeout(): number {
    return this.opts.upstreamTimeoutMs ?? 2000;
  }

  /** Whether anybody reads flows (an observer, the debug log): when nobody does, none is built. */
  private flowsRead(): boolean {
    return this.opts.onFlow !== undefined || log.isLevelEnabled("debug");
  }

  private emit(protocol: RedirectProto, ip: string, port: number, orig: OriginalDestination, started: number, outcome: Outcome): void {
    if (!this.flowsRead()) return;
    const flow: DnsFlow = {
      time: new Date(),
      protocol,
      source: { ip, port, identity: orig.subject },
      server: { ip: orig.ip, port: orig.port },
      ruleId: orig.ruleId,
      latencyMs: performance.now() - started,
      ...outcome.flow,
    };
    log.debug({ flow }, "dns");
    this.opts.onFlow?.(flow);
  }
}

/** An allowed query whose server did not answer: the pod's resolver retries; nothing is sent (as if the server had not answered). */
function upstreamFailed(q: Allowed, err: Error): Outcome {
  return { reply: undefined, flow: { query: q.name, qtype: q.qtype, verdict: "error", rule: q.rule, addresses: [], error: err.message } };
}

function closeListener(l: Listener): Promise<void> {
  l.udp.close();
  return new Promise<void>((resolve) => l.tcp.close(() => resolve()));
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(message)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
