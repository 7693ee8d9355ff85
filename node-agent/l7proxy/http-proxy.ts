// The L7 proxy's listeners: one per proxy port, each connection admitted by the datapath's redirect record, then served as HTTP/1.1 on its raw socket (http1-connection.ts: each request decided by the port's rules, allowed ones streamed to the original destination; WebSocket upgrades: upgrade.ts); a plain connection opening with HTTP/2's preface, or a terminated TLS one whose ALPN chose h2, goes to the HTTP/2 side (h2-proxy.ts).
import net from "node:net";
import tls from "node:tls";
import pino from "pino";
import { applyHeaderActions, compileHttpRules, type CompiledHttpRuleRef, type HttpDecision } from "../../core/l7/http-decision.ts";
import type { HttpHeader, HttpRequest } from "../../core/l7/http-request.ts";
import { HOP_BY_HOP_FIELDS } from "../../core/l7/http1-message.ts";
import type { OriginalDestination, RedirectProto } from "../bpf/redirect.ts";
import { decideSides, sideFlows, sidesOf, type SidesDecision } from "./both-ends.ts";
import type { ProxyConfig, ProxyLimits } from "./config.ts";
import { H2Proxy, sniffPreface, type H2Client, type UpstreamProtocol } from "./h2-proxy.ts";
import { H2Relay } from "./h2-relay.ts";
import { connectMarked, identityMark } from "./marked-socket.ts";
import { Http1Connection, type FlowReport, type Http1Port } from "./http1-connection.ts";
import { requestFlow, withoutHeaders, type ArrivedRequest } from "./request-flow.ts";
import { filterBySni } from "./sni-filter.ts";
import { connectOriginating, loadPortTls, sniCallback, sniOnly, terminatesTls, type LoadedPortTls } from "./tls.ts";
import { serverNameAllowed } from "../../core/l7/server-names.ts";
import { answerAndClose, HeldSockets, proxyUpgrade } from "./upgrade.ts";
import { upstreamFailure, withConnectTimeout } from "./upstream.ts";

const log = pino({ name: "l7-proxy", level: process.env.LOG_LEVEL ?? "info" });

/** Where a redirected connection was going (the datapath's record, bpf/lib/redirect.h). */
export interface RedirectRecords {
  originalDestination(ip: string, port: number, proto: RedirectProto): OriginalDestination | undefined;
}

/** One request as the proxy saw it: what Hubble's L7 flow carries. */
export interface HttpFlow {
  readonly time: string;
  readonly source: { readonly ip: string; readonly port: number; readonly identity: number };
  readonly destination: { readonly ip: string; readonly port: number };
  readonly proxyPort: number;
  /** The policy entry's rule that sent the connection here (the datapath's redirect record). */
  readonly ruleId: number;
  /** The proxy port's rules are the destination's ingress rules (else the client's egress rules). */
  readonly ingress: boolean;
  /** As the request line said it, e.g. "HTTP/1.1"; "HTTP/2" for an HTTP/2 stream. */
  readonly protocol: string;
  readonly method: string;
  readonly path: string;
  readonly host: string;
  /** forwarded: allowed and answered by the destination; denied: 403 from the proxy; error: allowed but the destination failed. */
  readonly verdict: "forwarded" | "denied" | "error";
  /** The deciding rule (allowed requests): the compiled rule and its index in toPorts[].rules.http. */
  readonly rule?: { readonly ruleId: number; readonly index: number };
  /** headerMatches that did not match but let the rule match (their mismatch action). */
  readonly mismatches?: readonly { readonly name: string; readonly action: string }[];
  readonly status: number;
  readonly latencyMs: number;
  /** The client's TLS was terminated by the proxy (terminatingTLS): the request was read decrypted. */
  readonly tls?: { readonly serverName?: string };
  /** The W3C trace id of the request's traceparent header, when it has a valid one. */
  readonly traceId?: string;
  /**
   * The request's headers as the client sent them (names lowercased), before any headerMatches action: the agent
   * redacts them (core/l7/redaction.ts) before they leave the node; the proxy never logs them.
   */
  readonly headers?: readonly HttpHeader[];
  /**
   * The response's headers as the client got them (the destination's, or the proxy's own 403; names lowercased):
   * redacted by the agent as the request's are, never logged by the proxy.
   */
  readonly responseHeaders?: readonly HttpHeader[];
  /**
   * Why the proxy refused a connection without an HTTP request (a serverNames-only port: protocol "TLS"), or refused or
   * ended a request without a rule's say: malformed (reset), an escaped slash (redirected), a rapid reset (http-flows.ts).
   */
  readonly reason?: string;
}

export interface HttpProxyOptions {
  readonly redirects: RedirectRecords;
  readonly onFlow?: (flow: HttpFlow) => void;
  /**
   * Opens the upstream connection for a client of `identity` (default: a socket marked with the
   * identity, so the receiving endpoint's policy sees the client, not the node).
   */
  readonly connectUpstream?: (ip: string, port: number, identity: number, ingressApplied: boolean) => net.Socket;
}

/** Headers without hop-by-hop fields (and those the Connection header names), flat as Node's rawHeaders (an upgrade request's own are added back). */
function forwardable(headers: readonly HttpHeader[]): string[] {
  const named = new Set<string>();
  for (const h of headers) if (h.name === "connection") for (const n of h.value.split(",")) named.add(n.trim().toLowerCase());
  const out: string[] = [];
  for (const h of headers) if (!HOP_BY_HOP_FIELDS.has(h.name) && !named.has(h.name)) out.push(h.name, h.value);
  return out;
}

/** What every TLS port speaks to clients: TLS 1.2 and up, HTTP/2 (ALPN h2, preferred as Envoy does) or HTTP/1.1. */
const DEFAULT_CONTEXT = { minVersion: "TLSv1.2", ALPNProtocols: ["h2", "http/1.1"] } as const;

/** A port's certificate as server options: the default one, for handshakes without SNI. */
function secureContextOptions(t: NonNullable<LoadedPortTls["terminating"]>): tls.SecureContextOptions {
  return { cert: t.cert, key: t.key };
}

function sameLimits(a: ProxyLimits, b: ProxyLimits): boolean {
  return a.maxHeaderBytes === b.maxHeaderBytes && a.headersTimeoutMs === b.headersTimeoutMs && a.idleTimeoutMs === b.idleTimeoutMs && a.connectTimeoutMs === b.connectTimeoutMs;
}

/** A socket that fails with `err` as soon as it is used: the upstream connection the relay could not open, for the HTTP/2 side's answers. */
function failedSocket(err: Error): net.Socket {
  const s = new net.Socket();
  process.nextTick(() => s.destroy(err));
  return s;
}

export class HttpProxy {
  private readonly servers = new Map<number, net.Server | tls.Server>();
  /** Each TLS port's material (tls.ts); a port's server is a TLS one while its configuration terminates TLS. */
  private readonly tls = new Map<number, LoadedPortTls>();
  private readonly rules = new Map<number, readonly CompiledHttpRuleRef[]>();
  /** The ports whose rules are their destinations' ingress rules. */
  private readonly ingressPorts = new Set<number>();
  /** The HTTP/1.1 connections being served, for the head and idle timeouts' sweep. */
  private readonly http1 = new Set<Http1Connection>();
  private sweep: NodeJS.Timeout | undefined;
  /** The node addresses of the first configuration (IPv4, IPv6, or both); undefined until one is applied. */
  private addresses: { readonly address?: string; readonly address6?: string } | undefined;
  /** Per port, the listener on the node's IPv6 address: it hands each connection to the port's server (one set of rules, limits and connections). */
  private readonly servers6 = new Map<number, net.Server>();
  private limits: ProxyLimits | undefined;
  /** Request paths are normalized before they are judged and forwarded (the configuration's httpNormalizePath). */
  private normalizePath = true;
  private h2: H2Proxy | undefined;
  private relay: H2Relay | undefined;
  private readonly held = new HeldSockets();

  constructor(private readonly opts: HttpProxyOptions) {}

  /**
   * Takes a configuration: each port's rules are swapped in at once (a request is decided by the
   * rules in force when its head arrived), new ports are listened on, dropped ports closed.
   * The address and limits are fixed by the first configuration (a change needs a restart).
   */
  async apply(config: ProxyConfig): Promise<void> {
    if (this.addresses && (config.address !== this.addresses.address || config.address6 !== this.addresses.address6 || !sameLimits(config.limits, this.limits!)))
      log.warn({ address: config.address, address6: config.address6, limits: config.limits }, "address or limits changed: they take effect at the next restart");
    if (!this.addresses) {
      this.addresses = { ...(config.address !== undefined ? { address: config.address } : {}), ...(config.address6 !== undefined ? { address6: config.address6 } : {}) };
      this.limits = config.limits;
      const h2opts = { rules: (port: number) => this.rules.get(port) ?? [], limits: config.limits, normalizePath: () => this.normalizePath, ...(this.opts.onFlow ? { onFlow: this.opts.onFlow } : {}) };
      this.h2 = new H2Proxy(h2opts);
      this.relay = new H2Relay(h2opts);
      // One timer for every connection's head and idle timeouts, at a fraction of the head timeout (slowloris is cut near the limit), not one per request.
      const every = Math.max(50, Math.min(1000, Math.floor(config.limits.headersTimeoutMs / 4)));
      this.sweep = setInterval(() => {
        const now = performance.now();
        for (const c of this.http1) c.check(now);
      }, every);
      this.sweep.unref();
    }
    // Every request from now on (Envoy's listener change reaches new streams the same way).
    this.normalizePath = config.httpNormalizePath !== false;
    const want = new Set(config.ports.map((p) => p.port));
    for (const p of config.ports) {
      this.rules.set(p.port, compileHttpRules(p.http));
      if (p.direction === "ingress") this.ingressPorts.add(p.port);
      else this.ingressPorts.delete(p.port);
      if (p.tls) {
        const loaded = loadPortTls(p.tls);
        if (loaded.unavailable !== undefined) log.error({ port: p.port, reason: loaded.unavailable }, "TLS material unavailable: the port's connections are refused");
        this.tls.set(p.port, loaded);
      } else this.tls.delete(p.port);
      // A port that starts or stops terminating TLS needs the other kind of server.
      const server = this.servers.get(p.port);
      if (server && server instanceof tls.Server !== terminatesTls(p.tls)) await this.close(p.port);
      else if (server instanceof tls.Server) {
        const t = this.tls.get(p.port)?.terminating;
        if (t) server.setSecureContext({ ...DEFAULT_CONTEXT, ...secureContextOptions(t) });
      }
    }
    const terminating = new Set(config.ports.filter((p) => terminatesTls(p.tls)).map((p) => p.port));
    for (const p of config.ports) if (!this.servers.has(p.port)) await this.listen(p.port, terminating.has(p.port));
    for (const port of [...this.servers.keys()]) {
      if (want.has(port)) continue;
      this.rules.delete(port);
      this.ingressPorts.delete(port);
      this.tls.delete(port);
      await this.close(port);
    }
  }

  private async close(port: number): Promise<void> {
    const server = this.servers.get(port);
    if (!server) return;
    this.servers.delete(port);
    const six = this.servers6.get(port);
    this.servers6.delete(port);
    six?.close();
    this.h2?.closePort(port);
    this.relay?.closePort(port);
    this.held.closePort(port);
    await new Promise<void>((r) => server.close(() => r()));
  }

  ports(): number[] {
    return [...this.servers.keys()].sort((a, b) => a - b);
  }

  async stop(): Promise<void> {
    clearInterval(this.sweep);
    this.h2?.stop();
    this.relay?.stop();
    this.held.closeAll();
    for (const six of this.servers6.values()) six.close();
    this.servers6.clear();
    for (const server of this.servers.values()) await new Promise<void>((r) => server.close(() => r()));
    this.servers.clear();
  }

  private async listen(port: number, terminatingTls: boolean): Promise<void> {
    const limits = this.limits!;
    // A client that half-closes after its request (`printf … | nc`) still gets its answer, then the connection ends.
    const socketOptions = { allowHalfOpen: true, noDelay: true };
    let server: net.Server | tls.Server;
    if (terminatingTls) {
      const t = this.tls.get(port)?.terminating;
      server = tls.createServer({ ...socketOptions, ...DEFAULT_CONTEXT, ...(t ? secureContextOptions(t) : {}), SNICallback: sniCallback(() => this.tls.get(port)), handshakeTimeout: limits.headersTimeoutMs });
      // Refused before the handshake when there is no redirect record or no material; decided after it with the SNI.
      server.on("connection", (socket: net.Socket) => {
        if (!this.admit(port, socket)) return void socket.destroy();
        this.held.add(port, socket);
      });
      server.on("secureConnection", (socket: tls.TLSSocket) => this.acceptTerminated(port, socket));
      server.on("tlsClientError", (err: Error, socket: tls.TLSSocket) => {
        log.info({ port, reason: err.message }, "TLS handshake refused");
        socket.destroy();
      });
    } else server = net.createServer(socketOptions, (socket) => void this.acceptPlain(port, socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      // The IPv4 address, or on an IPv6-only node the IPv6 one (the configuration's parser insists on one of them).
      server.listen(port, this.addresses?.address ?? this.addresses?.address6, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.servers.set(port, server);
    const address6 = this.addresses?.address !== undefined ? this.addresses.address6 : undefined;
    if (address6) {
      const six = net.createServer(socketOptions, (socket) => server.emit("connection", socket));
      await new Promise<void>((resolve, reject) => {
        six.once("error", reject);
        six.listen(port, address6, () => {
          six.off("error", reject);
          resolve();
        });
      });
      this.servers6.set(port, six);
    }
  }

  /**
   * Whether a new connection may be served: it needs the datapath's record of where it was going
   * (else it was not redirected here), and a TLS port needs its material (fail closed).
   */
  private admit(port: number, socket: net.Socket): OriginalDestination | undefined {
    const ip = socket.remoteAddress ?? "";
    const sport = socket.remotePort ?? 0;
    const orig = this.opts.redirects.originalDestination(ip, sport, "tcp");
    if (!orig || orig.proxyPort !== port) {
      log.warn({ port, client: `${ip}:${sport}`, record: orig }, "connection without a redirect record for this port: closed");
      return undefined;
    }
    if (orig.ingress && !this.ingressPorts.has(orig.ingress.proxyPort)) {
      // Both ends have HTTP rules: without the destination's ingress rules here the request cannot be judged by them.
      log.warn({ port, client: `${ip}:${sport}`, ingressPort: orig.ingress.proxyPort }, "connection whose destination's ingress proxy port is not configured here: closed");
      return undefined;
    }
    const unavailable = this.tls.get(port)?.unavailable;
    if (unavailable !== undefined) {
      log.warn({ port, client: `${ip}:${sport}`, reason: unavailable }, "connection refused: the port's TLS material is unavailable");
      return undefined;
    }
    return orig;
  }

  /**
   * A new plain connection: closed unless admitted; served as HTTP/2 when it opens with the preface
   * (h2c, as gRPC clients connect), else as HTTP/1.1.
   */
  private async acceptPlain(port: number, socket: net.Socket): Promise<void> {
    const orig = this.admit(port, socket);
    if (!orig) return void socket.destroy();
    const t = this.tls.get(port);
    if (sniOnly(t)) return this.passBySni(port, socket, orig, t.serverNames);
    // Until its first bytes come, the head timeout applies (slowloris before the first request).
    this.held.add(port, socket);
    const acceptedAt = performance.now();
    const kind = await sniffPreface(socket, this.limits!.headersTimeoutMs);
    if (kind === "none") return;
    if (kind === "http1") return this.serveHttp1(port, socket, orig, undefined, acceptedAt);
    // With originatingTLS the destination is spoken to over TLS (h2 or HTTP/1.1 by its ALPN), verified for the request's host.
    this.serveH2(port, socket, orig, undefined);
  }

  /**
   * A client connection whose TLS the proxy terminated: closed unless admitted with a listed SNI; its
   * streams go to the HTTP/2 side when ALPN chose h2, else it is served as HTTP/1.1.
   */
  private acceptTerminated(port: number, socket: tls.TLSSocket): void {
    const terminated = { serverName: socket.servername || undefined };
    const orig = this.admitTerminated(port, socket, terminated);
    if (!orig) return void socket.destroy();
    if (socket.alpnProtocol === "h2") return this.serveH2(port, socket, orig, terminated);
    this.serveHttp1(port, socket, orig, terminated, performance.now());
  }

  private serveH2(port: number, socket: net.Socket, orig: OriginalDestination, terminated: { readonly serverName: string | undefined } | undefined): void {
    const source = { ip: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    const tlsInfo = terminated ? { tls: terminated.serverName !== undefined ? { serverName: terminated.serverName } : {} } : {};
    const connect = (host: string | undefined, protocols: readonly UpstreamProtocol[]): net.Socket => this.connectAs(port, orig, terminated?.serverName ?? host, protocols);
    const originating = this.tls.get(port)?.trustedCA !== undefined;
    const client: H2Client = { port, orig, source, ingress: this.ingressPorts.has(port), connect, originating, ...tlsInfo };
    if (terminated || originating) return this.h2!.serve(socket, client);
    // Plaintext both ways (h2c, as gRPC connects): the frame relay when the destination speaks h2c. If it cannot be
    // reached, the HTTP/2 side answers each stream with that failure (503/504, gRPC UNAVAILABLE) as it would have met
    // it; if it speaks something else, the HTTP/2 side serves the connection as before.
    this.relay!.serve(socket, client, (err) => this.h2!.serve(socket, err ? { ...client, connect: () => failedSocket(err) } : client));
  }

  /**
   * A serverNames-only port: the connection is joined to its destination untouched when its ClientHello names a
   * listed server, else closed; either way one flow (protocol TLS, the SNI as its host) says so.
   */
  private async passBySni(port: number, socket: net.Socket, orig: OriginalDestination, serverNames: readonly string[]): Promise<void> {
    const started = process.hrtime.bigint();
    const source = { ip: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    this.held.add(port, socket);
    const d = await filterBySni(socket, serverNames, this.limits!.headersTimeoutMs, () => this.openUpstream(port, orig));
    const request = { method: "", path: "", host: d.serverName ?? "", headers: [] };
    const arrived: ArrivedRequest = { source, orig, proxyPort: port, ingress: this.ingressPorts.has(port), protocol: "TLS", request, started, tls: d.serverName !== undefined ? { serverName: d.serverName } : {} };
    const f = requestFlow(arrived, d.allowed ? "forwarded" : "denied", 0, d.allowed ? {} : { reason: d.reason });
    const { headers: _h, ...logged } = f;
    if (d.allowed) log.debug(logged, "TLS connection passed by server name");
    else log.info({ port, client: `${source.ip}:${source.port}`, serverName: d.serverName ?? null, reason: d.reason }, "TLS connection refused by server name");
    this.opts.onFlow?.(f);
  }

  /**
   * The upstream connection of a client connection: opened the way connectUpstream says (marked with the client's
   * identity), the connect timeout applied. An IPv6 one leaves from the proxy's IPv6 address: the datapath sends a
   * marked upstream to another node's pod into the tunnel only from the proxy's address (proxy_upstream_tunnel),
   * and the kernel's IPv6 source choice looks across every device and takes the longest common prefix, which on a
   * node is the pods' gateway address (fd00:10:244:f7::1 for fd00:10:244:f6::5, not the node's fd00:10:254::f7:2):
   * the upstream left on the underlay without the client's identity and was never answered. IPv4 takes the
   * outgoing device's address, the node's.
   */
  private openUpstream(port: number, orig: OriginalDestination): net.Socket {
    const from6 = net.isIPv6(orig.ip) ? this.addresses?.address6 : undefined;
    const connect = this.opts.connectUpstream ?? ((dip, dport, identity, ingressApplied) => connectMarked(dip, dport, identityMark(identity, ingressApplied), from6));
    return withConnectTimeout(connect(orig.ip, orig.port, orig.subject, this.ingressPorts.has(port) || orig.ingress !== undefined), this.limits!.connectTimeoutMs);
  }

  /** The upstream connection, with originatingTLS inside it: TLS verified against the Secret's CA for `serverName`. */
  private connectAs(port: number, orig: OriginalDestination, serverName: string | undefined, protocols: readonly UpstreamProtocol[] = ["http/1.1"]): net.Socket {
    const raw = this.openUpstream(port, orig);
    const ca = this.tls.get(port)?.trustedCA;
    return ca === undefined ? raw : connectOriginating(raw, ca, serverName, protocols);
  }

  /** An admitted connection served as HTTP/1.1 (after its TLS handshake on a terminating port): its requests judged and relayed by http1-connection.ts. */
  private serveHttp1(port: number, socket: net.Socket, orig: OriginalDestination, terminated: { readonly serverName: string | undefined } | undefined, acceptedAt: number): void {
    const source = { ip: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    const tlsInfo = terminated ? { tls: terminated.serverName !== undefined ? { serverName: terminated.serverName } : {} } : undefined;
    // The name originatingTLS verifies: the client's SNI, else (plain HTTP to the proxy) the request's host.
    const serverName = (host: string): string | undefined => terminated?.serverName ?? (host !== "" ? host.replace(/:\d+$/, "") : undefined);
    const arrived = (request: HttpRequest, protocol: string, started: bigint): ArrivedRequest => ({ source, orig, proxyPort: port, ingress: this.ingressPorts.has(port), protocol, request, started, ...tlsInfo });
    const served: Http1Port = {
      port,
      limits: this.limits!,
      log,
      normalizePath: () => this.normalizePath,
      judge: (request, protocol, started) => {
        const { decision, judged } = this.decide(port, orig, request);
        return { decision, report: this.flowFor(arrived(request, protocol, started), judged) };
      },
      refused: (request, protocol, started, status, reason, responseHeaders) =>
        this.opts.onFlow?.(requestFlow(arrived(request, protocol, started), "denied", status, { reason, ...(responseHeaders ? { responseHeaders } : {}) })),
      connect: (host) => this.connectAs(port, orig, serverName(host)),
      sameUpstream: (previous, host) => this.tls.get(port)?.trustedCA === undefined || serverName(previous) === serverName(host),
      upgrade: (client, head, request, upgrade, decision, report) => this.upgrade(port, orig, client, head, request, upgrade, decision, report, serverName(request.host)),
    };
    // A plain connection is held since it was accepted; a TLS one is held here (its raw socket since its handshake).
    if (terminated) this.held.add(port, socket);
    this.http1.add(new Http1Connection(socket, served, (c) => this.http1.delete(c), acceptedAt));
  }

  /** A connection after the proxy's TLS handshake: admitted, and with serverNames its SNI listed (the SNI callback refused a wrong name already; a handshake without SNI is refused here). */
  private admitTerminated(port: number, socket: net.Socket, terminated: { readonly serverName: string | undefined }): OriginalDestination | undefined {
    const orig = this.admit(port, socket);
    if (!orig) return undefined;
    if (!serverNameAllowed(terminated.serverName, this.tls.get(port)?.serverNames ?? [])) {
      log.info({ port, client: `${socket.remoteAddress ?? ""}:${socket.remotePort ?? 0}`, serverName: terminated.serverName ?? null }, "TLS server name not in serverNames: closed");
      return undefined;
    }
    return orig;
  }

  /** The request judged by its connection's rule sets (both-ends.ts): the port's, then the destination's ingress port's when the record names one. */
  private decide(port: number, orig: OriginalDestination, request: HttpRequest): SidesDecision {
    return decideSides(request, sidesOf(port, this.ingressPorts.has(port), orig, (p) => this.rules.get(p) ?? []), (headers, d) => applyHeaderActions(headers, d.actions));
  }

  /** The request's flow reporter: `report(verdict, status)` records what the client got, one flow per rule set that judged it. */
  private flowFor(arrived: ArrivedRequest, judged: SidesDecision["judged"]): FlowReport {
    return sideFlows(judged, (verdict, status, extra = {}) => {
      const f = requestFlow(arrived, verdict, status, extra);
      // Built only when logged: a debug line per request is not paid for at info.
      if (log.isLevelEnabled("debug")) log.debug(withoutHeaders(f), "http request");
      this.opts.onFlow?.(f);
    });
  }

  /**
   * An allowed WebSocket upgrade request (judged like any request by http1-connection.ts; a denied one got 403 and
   * closed there): it goes to the destination, whose answer the client gets (101: the connections are joined, upgrade.ts).
   */
  private upgrade(port: number, orig: OriginalDestination, socket: net.Socket, head: Buffer, request: HttpRequest, upgrade: string, decision: HttpDecision & { verdict: "allow" }, report: FlowReport, serverName: string | undefined): void {
    const decided = { rule: { ruleId: decision.ruleId, index: decision.index }, ...(decision.mismatches.length ? { mismatches: decision.mismatches } : {}) };
    // The handshake's own hop-by-hop fields go on: they are what asks the destination to switch.
    const headers = [...forwardable(applyHeaderActions(request.headers, decision.actions)), "connection", "Upgrade", "upgrade", upgrade];
    proxyUpgrade(
      {
        client: socket,
        head,
        method: request.method,
        path: request.path,
        headers,
        connect: () => this.connectAs(port, orig, serverName),
        idleTimeoutMs: this.limits!.idleTimeoutMs,
        done: (r) => {
          if ("status" in r) return report("forwarded", r.status, decided);
          log.info({ destination: `${orig.ip}:${orig.port}`, err: r.error.message }, "upstream failed");
          const { status, body } = upstreamFailure(r.error);
          answerAndClose(socket, status, body);
          report("error", status, decided);
        },
      },
      this.held,
      port,
    );
  }
}
