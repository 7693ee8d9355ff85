// The datapath's proxy redirect as the agent's proxies see it: the proxies' address, the proxy ports they serve, and each redirected flow's original destination.
import path from "node:path";
import { BPFFS_ROOT, BpfObject, closePinnedMap, openPinnedMap, type BpfMap } from "./loader.ts";
import { CONST, LAYOUT, formatAddress, parseAddress } from "./layout.ts";

export const REDIRECT_MAPS = {
  redirects: "membrane_redirects",
  proxyPorts: "membrane_proxy_ports",
  config: "membrane_redirect_config",
} as const;

export type RedirectProto = "tcp" | "udp";
const PROTO: Readonly<Record<RedirectProto, number>> = { tcp: 6, udp: 17 };

/** Where a redirected flow was going, and whose policy sent it to the proxy. */
export interface OriginalDestination {
  readonly ip: string;
  readonly port: number;
  readonly proxyPort: number;
  /** The endpoint's identity. */
  readonly subject: number;
  /** The policy entry's rule (the compiled rule table's index). */
  readonly ruleId: number;
  /**
   * Both ends with HTTP rules on this node: the destination's ingress proxy port and its entry's rule,
   * whose rules the same proxy applies after the client's egress rules (proxyPort's).
   */
  readonly ingress?: { readonly proxyPort: number; readonly ruleId: number };
}

export function encodeRedirectKey(ip: string, port: number, proto: RedirectProto, into?: Buffer): Buffer {
  const L = LAYOUT.redirect_key.fields;
  const b = into ?? Buffer.alloc(LAYOUT.redirect_key.size);
  // Every proxied query and connection asks: a dotted quad is written as is, anything else parsed.
  if (writeDottedQuad(ip, b, L.addr.offset)) {
    for (let i = 4; i < L.addr.size; i++) b[L.addr.offset + i] = 0;
    b[L.family.offset] = 4;
  } else {
    b.fill(0);
    const { family, bytes } = parseAddress(ip);
    bytes.copy(b, L.addr.offset);
    b.writeUInt8(family, L.family.offset);
  }
  b.writeUInt16BE(port, L.port.offset);
  b.writeUInt8(PROTO[proto], L.proto.offset);
  return b;
}

/** Writes a dotted quad's four bytes at `at` (1 to 3 digits per octet, each at most 255); false when `ip` is not one. */
function writeDottedQuad(ip: string, b: Buffer, at: number): boolean {
  let octet = 0;
  let digits = 0;
  let part = 0;
  for (let i = 0; i < ip.length; i++) {
    const ch = ip.charCodeAt(i);
    if (ch === 46 /* . */) {
      if (digits === 0 || part === 3 || octet > 255) return false;
      b[at + part++] = octet;
      octet = 0;
      digits = 0;
    } else if (ch >= 48 && ch <= 57 && digits < 3) {
      octet = octet * 10 + ch - 48;
      digits++;
    } else return false;
  }
  if (digits === 0 || part !== 3 || octet > 255) return false;
  b[at + 3] = octet;
  return true;
}

export function decodeRedirectValue(family: number, b: Buffer): OriginalDestination {
  const L = LAYOUT.redirect_value.fields;
  return {
    // Compressed as sockets report addresses (fd00::1): a proxy compares it with the peer an answer comes from.
    ip: family === 4 ? formatAddress(family, b, L.orig_daddr.offset) : new URL(`http://[${formatAddress(family, b, L.orig_daddr.offset)}]/`).hostname.slice(1, -1),
    port: b.readUInt16BE(L.orig_dport.offset),
    proxyPort: b.readUInt16LE(L.proxy_port.offset),
    subject: b.readUInt32LE(L.subject.offset),
    ruleId: b.readUInt32LE(L.rule_id.offset),
    ...(b.readUInt16LE(L.ingress_proxy_port.offset) !== 0 ? { ingress: { proxyPort: b.readUInt16LE(L.ingress_proxy_port.offset), ruleId: b.readUInt32LE(L.ingress_rule_id.offset) } } : {}),
  };
}

function portKey(port: number): Buffer {
  if (!Number.isInteger(port) || port < 1 || port > 0xffff) throw new RangeError(`proxy port ${port} is not a port number`);
  const b = Buffer.alloc(2);
  b.writeUInt16LE(port, 0);
  return b;
}

/**
 * One object of the loaded datapath's redirect maps. Generic: a proxy (DNS here, L7 later) serves
 * ports; the datapath steers an endpoint's egress whose policy entry names a served port to
 * `address:port`, and the proxy asks here where each flow was going.
 */
export class ProxyRedirect {
  /** The lookup's key and value, reused (off the V8 heap, so the FFI does not move them per call). */
  private readonly key = Buffer.allocUnsafeSlow(LAYOUT.redirect_key.size);
  private readonly value = Buffer.allocUnsafeSlow(LAYOUT.redirect_value.size);
  /** The last record decoded, its key's family and what it said. */
  private readonly lastValue = Buffer.alloc(LAYOUT.redirect_value.size);
  private lastFamily = 0;
  private last: OriginalDestination | undefined;

  constructor(private readonly object: BpfObject) {}

  /**
   * The node addresses the proxies listen on: IPv4 and IPv6, each optional (an IPv6-only node has no
   * IPv4 one); a family without one has its flows to a proxy dropped, never passed.
   */
  setProxyAddress(ipv4: string | undefined, ipv6?: string): void {
    const v = Buffer.alloc(LAYOUT.redirect_config.size);
    if (ipv4 !== undefined) {
      const four = parseAddress(ipv4);
      if (four.family !== 4) throw new RangeError(`proxy address ${ipv4}: not an IPv4 address`);
      four.bytes.copy(v, LAYOUT.redirect_config.fields.addr4.offset, 0, 4);
    }
    if (ipv6 !== undefined) {
      const six = parseAddress(ipv6);
      if (six.family !== 6) throw new RangeError(`proxy IPv6 address ${ipv6}: not an IPv6 address`);
      six.bytes.copy(v, LAYOUT.redirect_config.fields.addr6.offset, 0, 16);
    }
    this.object.map(REDIRECT_MAPS.config).update(Buffer.alloc(4), v);
  }

  /** From now on, policy entries naming `port` steer their flows to the proxy. */
  serve(port: number): void {
    const v = Buffer.alloc(LAYOUT.redirect_port_value.size);
    v.writeUInt32LE(CONST.REDIRECT_PORT_F_SERVED, LAYOUT.redirect_port_value.fields.flags.offset);
    this.object.map(REDIRECT_MAPS.proxyPorts).update(portKey(port), v);
  }

  /** Entries naming `port` become plain allows again (the proxy's rules are gone, not the proxy down). */
  unserve(port: number): void {
    this.object.map(REDIRECT_MAPS.proxyPorts).delete(portKey(port));
  }

  /** The ports served now. */
  servedPorts(): number[] {
    return this.object.map(REDIRECT_MAPS.proxyPorts).keys().map((k) => k.readUInt16LE(0)).sort((a, b) => a - b);
  }

  /** Where the endpoint at ip:port sent its flow before the datapath steered it to a proxy. */
  originalDestination(ip: string, port: number, proto: RedirectProto): OriginalDestination | undefined {
    const key = encodeRedirectKey(ip, port, proto, this.key);
    if (!this.object.map(REDIRECT_MAPS.redirects).lookupInto(key, this.value)) return undefined;
    const family = key[LAYOUT.redirect_key.fields.family.offset]!;
    // The record read is the one read last (a pod's queries to its server, one after the other): the same answer, not decoded again.
    if (this.last && family === this.lastFamily && this.value.equals(this.lastValue)) return this.last;
    this.last = decodeRedirectValue(family, this.value);
    this.lastFamily = family;
    this.value.copy(this.lastValue);
    return this.last;
  }
}

/**
 * The redirect records alone, from the datapath's pins under /sys/fs/bpf/membrane/<scope>/: what a
 * proxy running as its own process (the L7 proxy) needs, without loading the programs.
 */
export class PinnedRedirects {
  private readonly map: BpfMap;

  constructor(scope: string, pinRoot: string = BPFFS_ROOT) {
    if (!/^[A-Za-z0-9_.-]+$/.test(scope)) throw new RangeError(`invalid pin scope ${JSON.stringify(scope)}`);
    this.map = openPinnedMap(path.join(pinRoot, scope, REDIRECT_MAPS.redirects), REDIRECT_MAPS.redirects);
    if (this.map.keySize !== LAYOUT.redirect_key.size || this.map.valueSize !== LAYOUT.redirect_value.size) {
      closePinnedMap(this.map);
      throw new Error(`${REDIRECT_MAPS.redirects} under scope ${scope} has another layout than this build's (key ${this.map.keySize}, value ${this.map.valueSize} bytes)`);
    }
  }

  /** Where the endpoint at ip:port sent its flow before the datapath steered it to a proxy. */
  originalDestination(ip: string, port: number, proto: RedirectProto): OriginalDestination | undefined {
    const key = encodeRedirectKey(ip, port, proto);
    const v = this.map.lookup(key);
    return v ? decodeRedirectValue(key.readUInt8(LAYOUT.redirect_key.fields.family.offset), v) : undefined;
  }

  close(): void {
    closePinnedMap(this.map);
  }
}
