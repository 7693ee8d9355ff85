// The HTTP/1.1 side of the L7 proxy: one listener per proxy port, each request decided by the port's rules, allowed ones streamed to the original destination (WebSocket upgrades: upgrade.ts); a plain connection opening with HTTP/2's preface, or a terminated TLS one whose ALPN chose h2, goes to the HTTP/2 side (h2-proxy.ts).
import http from "node:http";
import https from "node:https";
import net from "node:net";
import type tls from "node:tls";
import pino from "pino";
import { applyHeaderActions, compileHttpRules, HTTP_DENIED, type CompiledHttpRuleRef } from "../../core/l7/http-decision.ts";
import { requestFromRaw, type HttpHeader, type HttpRequest } from "../../core/l7/http-request.ts";
import type { OriginalDestination, RedirectProto } from "../bpf/redirect.ts";
import { decideSides, sideFlows, sidesOf, type SidesDecision } from "./both-ends.ts";
import type { ProxyConfig, ProxyLimits } from "./config.ts";
import { H2Proxy, sniffPreface, type UpstreamProtocol } from "./h2-proxy.ts";
import { connectMarked, identityMark } from "./marked-socket.ts";
import { DENIED_HEADERS, pairs, requestFlow, withoutHeaders, type ArrivedRequest } from "./request-flow.ts";
import { filterBySni } from "./sni-filter.ts";
import { connectOriginating, loadPortTls, sniCallback, sniOnly, terminatesTls, type LoadedPortTls } from "./tls.ts";
import { serverNameAllowed } from "../../core/l7/server-names.ts";
import { answerAndClose, HeldSockets, isWebSocketUpgrade, proxyUpgrade } from "./upgrade.ts";
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
  /** Why the proxy refused a connection without an HTTP request (a serverNames-only port: protocol "TLS"). */
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

// RFC 9110 §7.6.1: connection-specific fields end at this hop; transfer-encoding stays (Node frames the body as it says).
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "upgrade"]);

/** Headers without hop-by-hop fields (and those the Connection header names), flat as Node's rawHeaders. */
function forwardable(headers: readonly HttpHeader[]): string[] {
  const named = new Set<string>();
  for (const h of headers) if (h.name === "connection") for (const n of h.value.split(",")) named.add(n.trim().toLowerCase());
  const out: string[] = [];
  for (const h of headers) if (!HOP_BY_HOP.has(h.name) && !named.has(h.name)) out.push(h.name, h.value);
  return out;
}


/** A request without a body (RFC 9112 §6.3: neither Transfer-Encoding nor a non-zero Content-Length). */
function hasNoBody(headers: readonly HttpHeader[]): boolean {
  // The request's own header list (names lowercased already): Node's req.headers object would be built just for this.
  for (const h of headers) if (h.name === "transfer-encoding" || (h.name === "content-length" && h.value.trim() !== "0")) return false;
  return true;
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

/** Per client connection: where it was going and its own keep-alive upstream (one connection, marked with the client's identity). */
interface ClientConnection {
  readonly orig: OriginalDestination;
  readonly agent: http.Agent;
  /** The SNI of the client's handshake, when the proxy terminated its TLS. */
  readonly tls?: { readonly serverName?: string };
}

export class HttpProxy {
  private readonly servers = new Map<number, http.Server | https.Server>();
  /** Each TLS port's material (tls.ts); a port's server is HTTPS while its configuration terminates TLS. */
  private readonly tls = new Map<number, LoadedPortTls>();
  private readonly rules = new Map<number, readonly CompiledHttpRuleRef[]>();
  /** The ports whose rules are their destinations' ingress rules. */
  private readonly ingressPorts = new Set<number>();
  private readonly clients = new WeakMap<net.Socket, ClientConnection>();
  /** The node addresses of the first configuration (IPv4, IPv6, or both); undefined until one is applied. */
  private addresses: { readonly address?: string; readonly address6?: string } | undefined;
  /** Per port, the listener on the node's IPv6 address: it hands each connection to the port's server (one set of rules, limits and connections). */
  private readonly servers6 = new Map<number, net.Server>();
  private limits: ProxyLimits | undefined;
  private h2: H2Proxy | undefined;
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
      this.h2 = new H2Proxy({ rules: (port) => this.rules.get(port) ?? [], limits: config.limits, ...(this.opts.onFlow ? { onFlow: this.opts.onFlow } : {}) });
    }
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
      if (server && server instanceof https.Server !== terminatesTls(p.tls)) await this.close(p.port);
      else if (server instanceof https.Server) {
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
    this.held.closePort(port);
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }

  ports(): number[] {
    return [...this.servers.keys()].sort((a, b) => a - b);
  }

  async stop(): Promise<void> {
    this.h2?.stop();
    this.held.closeAll();
    for (const six of this.servers6.values()) six.close();
    this.servers6.clear();
    for (const server of this.servers.values()) {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
    this.servers.clear();
  }

  private async listen(port: number, terminatingTls: boolean): Promise<void> {
    const limits = this.limits!;
    const options: http.ServerOptions = {
        maxHeaderSize: limits.maxHeaderBytes,
        headersTimeout: limits.headersTimeoutMs,
        requestTimeout: 0,
        keepAliveTimeout: limits.idleTimeoutMs,
        // Node checks the head timeout on this period: a fraction of it, so slowloris is cut near the limit.
        connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
        requireHostHeader: false,
        // Only a WebSocket upgrade is an upgrade; any other Upgrade (h2c's) is answered as the HTTP/1.1 request it also is.
        shouldUpgradeCallback: isWebSocketUpgrade,
      };
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => this.handle(port, req, res);
    let server: http.Server | https.Server;
    if (terminatingTls) {
      const t = this.tls.get(port)?.terminating;
      server = https.createServer({ ...options, ...DEFAULT_CONTEXT, ...(t ? secureContextOptions(t) : {}), SNICallback: sniCallback(() => this.tls.get(port)) }, handler);
      // Refused before the handshake when there is no redirect record or no material; decided after it with the SNI.
      server.on("connection", (socket: net.Socket) => {
        if (!this.admit(port, socket)) socket.destroy();
      });
      // Its own handling (the HTTP/1.1 parser) gets a handshaken connection only when ALPN did not choose h2.
      const http1 = server.listeners("secureConnection");
      if (http1.length !== 1) throw new Error(`expected the HTTPS server's one secureConnection listener, found ${http1.length}`);
      server.removeAllListeners("secureConnection");
      server.on("secureConnection", (socket: tls.TLSSocket) => this.acceptTerminated(port, socket, (s) => (http1[0] as (socket: net.Socket) => void).call(server, s)));
      server.on("tlsClientError", (err: Error, socket: tls.TLSSocket) => {
        log.info({ port, reason: err.message }, "TLS handshake refused");
        socket.destroy();
      });
    } else {
      const plain = http.createServer(options, handler);
      // Its own connection handling (the HTTP/1.1 parser) gets a connection only once the first bytes are not HTTP/2's preface.
      const http1 = plain.listeners("connection");
      if (http1.length !== 1) throw new Error(`expected the HTTP server's one connection listener, found ${http1.length}`);
      plain.removeAllListeners("connection");
      plain.on("connection", (socket: net.Socket) => void this.acceptPlain(port, socket, (s) => (http1[0] as (socket: net.Socket) => void).call(plain, s)));
      server = plain;
    }
    server.setTimeout(limits.idleTimeoutMs);
    // A client that half-closes after its request (`printf … | nc`) still gets its answer, then the connection ends:
    // Node's server otherwise ends the socket at the client's FIN and aborts the request it was about to forward.
    (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => this.upgrade(port, req, socket, head));
    server.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => {
      // Node answers 431 (head too large) and 408 (head timeout) itself when it can; anything else: 400.
      if (socket.writable && !socket.writableEnded) {
        const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
        socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      }
      socket.destroy();
      log.info({ port, code: err.code }, "client error: connection closed");
    });
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
      const six = net.createServer((socket) => server.emit("connection", socket));
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
   * (h2c, as gRPC clients connect), else handed to the HTTP/1.1 parser (`http1`).
   */
  private async acceptPlain(port: number, socket: net.Socket, http1: (socket: net.Socket) => void): Promise<void> {
    const orig = this.admit(port, socket);
    if (!orig) return void socket.destroy();
    const t = this.tls.get(port);
    if (sniOnly(t)) return this.passBySni(port, socket, orig, t.serverNames);
    // Until its first bytes come, the head timeout applies (slowloris before the first request).
    this.held.add(port, socket);
    const kind = await sniffPreface(socket, this.limits!.headersTimeoutMs);
    if (kind === "none") return;
    if (kind === "http1") {
      this.accept(port, socket, undefined, orig);
      http1(socket);
      return void socket.resume();
    }
    // With originatingTLS the destination is spoken to over TLS (h2 or HTTP/1.1 by its ALPN), verified for the request's host.
    this.serveH2(port, socket, orig, undefined);
  }

  /**
   * A client connection whose TLS the proxy terminated: closed unless admitted with a listed SNI; its
   * streams go to the HTTP/2 side when ALPN chose h2, else it is handed to the HTTP/1.1 parser (`http1`).
   */
  private acceptTerminated(port: number, socket: tls.TLSSocket, http1: (socket: net.Socket) => void): void {
    const terminated = { serverName: socket.servername || undefined };
    if (socket.alpnProtocol !== "h2") {
      if (this.accept(port, socket, terminated)) http1(socket);
      return;
    }
    const orig = this.admitTerminated(port, socket, terminated);
    if (!orig) return void socket.destroy();
    this.serveH2(port, socket, orig, terminated);
  }

  private serveH2(port: number, socket: net.Socket, orig: OriginalDestination, terminated: { readonly serverName: string | undefined } | undefined): void {
    const source = { ip: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    const tlsInfo = terminated ? { tls: terminated.serverName !== undefined ? { serverName: terminated.serverName } : {} } : {};
    const connect = (host: string | undefined, protocols: readonly UpstreamProtocol[]): net.Socket => this.connectAs(port, orig, terminated?.serverName ?? host, protocols);
    const originating = this.tls.get(port)?.trustedCA !== undefined;
    this.h2!.serve(socket, { port, orig, source, ingress: this.ingressPorts.has(port), connect, originating, ...tlsInfo });
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

  /** The upstream connection of a client connection: opened the way connectUpstream says (marked with the client's identity), the connect timeout applied. */
  private openUpstream(port: number, orig: OriginalDestination): net.Socket {
    const connect = this.opts.connectUpstream ?? ((dip, dport, identity, ingressApplied) => connectMarked(dip, dport, identityMark(identity, ingressApplied)));
    return withConnectTimeout(connect(orig.ip, orig.port, orig.subject, this.ingressPorts.has(port) || orig.ingress !== undefined), this.limits!.connectTimeoutMs);
  }

  /** The upstream connection, with originatingTLS inside it: TLS verified against the Secret's CA for `serverName`. */
  private connectAs(port: number, orig: OriginalDestination, serverName: string | undefined, protocols: readonly UpstreamProtocol[] = ["http/1.1"]): net.Socket {
    const raw = this.openUpstream(port, orig);
    const ca = this.tls.get(port)?.trustedCA;
    return ca === undefined ? raw : connectOriginating(raw, ca, serverName, protocols);
  }

  /**
   * A new HTTP/1.1 client connection (after its TLS handshake on a terminating port): closed unless
   * admitted (`admitted`: already) and, with serverNames, its SNI is listed.
   */
  private accept(port: number, socket: net.Socket, terminated?: { readonly serverName: string | undefined }, admitted?: OriginalDestination): boolean {
    const orig = admitted ?? (terminated ? this.admitTerminated(port, socket, terminated) : this.admit(port, socket));
    if (!orig) {
      socket.destroy();
      return false;
    }
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    // One upstream per client connection (marked with the client's identity);
    // with originatingTLS, TLS to the destination over it, verified against the Secret's CA for the client's SNI.
    (agent as unknown as { createConnection: (o: { servername?: string }) => net.Socket }).createConnection = (o) =>
      this.connectAs(port, orig, terminated?.serverName ?? o.servername);
    this.clients.set(socket, { orig, agent, ...(terminated ? { tls: terminated.serverName !== undefined ? { serverName: terminated.serverName } : {} } : {}) });
    socket.once("close", () => agent.destroy());
    return true;
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

  /** The request's flow reporter: `flow(verdict, status)` records what the client got. */
  private flowFor(port: number, req: http.IncomingMessage, client: ClientConnection, request: HttpRequest, started: bigint, judged: SidesDecision["judged"]): (verdict: HttpFlow["verdict"], status: number, extra?: Partial<HttpFlow>) => void {
    const arrived: ArrivedRequest = {
      source: { ip: req.socket.remoteAddress ?? "", port: req.socket.remotePort ?? 0 },
      orig: client.orig,
      proxyPort: port,
      ingress: this.ingressPorts.has(port),
      protocol: `HTTP/${req.httpVersion}`,
      request,
      started,
      ...(client.tls ? { tls: client.tls } : {}),
    };
    return sideFlows(judged, (verdict, status, extra = {}) => {
      const f = requestFlow(arrived, verdict, status, extra);
      // Built only when logged: a debug line per request is not paid for at info.
      if (log.isLevelEnabled("debug")) log.debug(withoutHeaders(f), "http request");
      this.opts.onFlow?.(f);
    });
  }

  private handle(port: number, req: http.IncomingMessage, res: http.ServerResponse): void {
    const started = process.hrtime.bigint();
    const client = this.clients.get(req.socket);
    if (!client) {
      req.socket.destroy();
      return;
    }
    const { orig } = client;
    const request = requestFromRaw(req.method ?? "", req.url ?? "", req.rawHeaders);
    const { decision, judged } = this.decide(port, orig, request);
    const flow = this.flowFor(port, req, client, request, started, judged);

    if (decision.verdict === "deny") {
      // The request's body, if any, is read and dropped by Node before the next request: the connection stays usable.
      res.writeHead(HTTP_DENIED.status, { "content-type": "text/plain", "content-length": Buffer.byteLength(HTTP_DENIED.body) });
      res.end(HTTP_DENIED.body);
      flow("denied", HTTP_DENIED.status, { responseHeaders: DENIED_HEADERS });
      return;
    }
    const rule = { ruleId: decision.ruleId, index: decision.index };
    const mismatches = decision.mismatches.length ? { mismatches: decision.mismatches } : {};
    const upstream = http.request({
      agent: client.agent,
      host: orig.ip,
      port: orig.port,
      method: request.method,
      path: request.path,
      headers: forwardable(applyHeaderActions(request.headers, decision.actions)),
      setHost: false,
      // The name originatingTLS verifies when the client sent no SNI (plain HTTP to the proxy): the request's host.
      ...(request.host !== "" ? { servername: request.host.replace(/:\d+$/, "") } : {}),
    });
    const fail = (err: Error): void => {
      log.info({ destination: `${orig.ip}:${orig.port}`, err: err.message }, "upstream failed");
      if (!res.headersSent) {
        const { status, body } = upstreamFailure(err);
        res.writeHead(status, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) }).end(body);
        flow("error", status, { rule, ...mismatches });
      } else {
        res.destroy();
      }
    };
    upstream.on("error", fail);
    upstream.on("response", (up) => {
      const answered = forwardable(pairs(up.rawHeaders));
      res.writeHead(up.statusCode ?? 502, up.statusMessage, answered);
      // The body streams as it comes, held back while the client is slower (what pipe does, without its per-request setup).
      up.on("data", (chunk: Buffer) => {
        if (!res.write(chunk)) up.pause();
      });
      res.on("drain", () => up.resume());
      up.on("end", () => {
        if (up.rawTrailers.length) res.addTrailers(up.rawTrailers.reduce<[string, string][]>((acc, v, i, a) => (i % 2 ? acc : [...acc, [v, a[i + 1]!]]), []));
        res.end();
        flow("forwarded", up.statusCode ?? 0, { rule, ...mismatches, responseHeaders: pairs(answered) });
      });
      up.on("error", () => res.destroy());
    });
    // The client going away mid-request ends the upstream request too.
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    if (hasNoBody(request.headers)) {
      // Most requests (GET, HEAD, …) have no body: the upstream request ends with its head, no pipe between them.
      upstream.end();
      req.resume();
    } else req.pipe(upstream);
  }

  /**
   * A WebSocket upgrade request: judged like any request; denied, it gets 403 and the connection
   * closes; allowed, it goes to the destination, whose answer the client gets (101: the connections
   * are joined, upgrade.ts).
   */
  private upgrade(port: number, req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const started = process.hrtime.bigint();
    const client = this.clients.get(socket);
    if (!client) return void socket.destroy();
    const { orig } = client;
    const request = requestFromRaw(req.method ?? "", req.url ?? "", req.rawHeaders);
    const { decision, judged } = this.decide(port, orig, request);
    const flow = this.flowFor(port, req, client, request, started, judged);
    if (decision.verdict === "deny") {
      answerAndClose(socket, HTTP_DENIED.status, HTTP_DENIED.body);
      return flow("denied", HTTP_DENIED.status);
    }
    const decided = { rule: { ruleId: decision.ruleId, index: decision.index }, ...(decision.mismatches.length ? { mismatches: decision.mismatches } : {}) };
    // The handshake's own hop-by-hop fields go on: they are what asks the destination to switch.
    const headers = [...forwardable(applyHeaderActions(request.headers, decision.actions)), "connection", "Upgrade", "upgrade", req.headers.upgrade ?? "websocket"];
    const serverName = client.tls?.serverName ?? (request.host !== "" ? request.host.replace(/:\d+$/, "") : undefined);
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
          if ("status" in r) return flow("forwarded", r.status, decided);
          log.info({ destination: `${orig.ip}:${orig.port}`, err: r.error.message }, "upstream failed");
          const { status, body } = upstreamFailure(r.error);
          answerAndClose(socket, status, body);
          flow("error", status, decided);
        },
      },
      this.held,
      port,
    );
  }
}
