// The ClusterIP translation maps' layout (bpf/lib/service.h) and their encoding; translation.test.ts compares the key and value
// sizes with the maps the object declares.
import { formatAddress, parseAddress } from "../bpf/layout.ts";

export const SVC_LAYOUT = {
  frontendKey: { size: 8, addr: 0, port: 4, protocol: 6 },
  frontend: { size: 8, id: 0, count: 4 },
  backendKey: { size: 8, id: 0, slot: 4 },
  backend: { size: 8, addr: 0, port: 4 },
  revnatKey: { size: 16, cookie: 0, addr: 8, port: 12 },
  revnat: { size: 8, addr: 0, port: 4 },
} as const;

/** The IPv6 twins (membrane_svc6_*): frontend values and backend keys are the IPv4 ones. */
export const SVC6_LAYOUT = {
  frontendKey: { size: 20, addr: 0, port: 16, protocol: 18 },
  backend: { size: 20, addr: 0, port: 16 },
  revnatKey: { size: 32, cookie: 0, addr: 8, port: 24 },
  revnat: { size: 20, addr: 0, port: 16 },
} as const;

export const SVC_FRONTENDS_MAX = 16384;
/** membrane_svc_nodes and membrane_svc6_nodes: the node addresses NodePorts are dialled at. */
export const SVC_NODES_MAX = 16384;
export const SVC_BACKENDS_MAX = 262144;
export const IPPROTO = { TCP: 6, UDP: 17 } as const;

/** A frontend key of the family's map (membrane_svc_frontends or membrane_svc6_frontends). */
export function frontendKey(address: string, port: number, protocol: number): Buffer {
  const { family, bytes } = parseAddress(address);
  const L = family === 4 ? SVC_LAYOUT.frontendKey : SVC6_LAYOUT.frontendKey;
  const b = Buffer.alloc(L.size);
  bytes.copy(b, L.addr, 0, family === 4 ? 4 : 16);
  b.writeUInt16BE(port, L.port);
  b.writeUInt8(protocol, L.protocol);
  return b;
}

export function decodeFrontendKey(b: Buffer): { address: string; port: number; protocol: number } {
  const family = b.length === SVC6_LAYOUT.frontendKey.size ? 6 : 4;
  const L = family === 4 ? SVC_LAYOUT.frontendKey : SVC6_LAYOUT.frontendKey;
  return { address: formatAddress(family, b, L.addr), port: b.readUInt16BE(L.port), protocol: b.readUInt8(L.protocol) };
}

export function frontendValue(id: number, count: number): Buffer {
  const b = Buffer.alloc(SVC_LAYOUT.frontend.size);
  b.writeUInt32LE(id, SVC_LAYOUT.frontend.id);
  b.writeUInt32LE(count, SVC_LAYOUT.frontend.count);
  return b;
}

export function decodeFrontendValue(b: Buffer): { id: number; count: number } {
  return { id: b.readUInt32LE(SVC_LAYOUT.frontend.id), count: b.readUInt32LE(SVC_LAYOUT.frontend.count) };
}

export function backendKey(id: number, slot: number): Buffer {
  const b = Buffer.alloc(SVC_LAYOUT.backendKey.size);
  b.writeUInt32LE(id, SVC_LAYOUT.backendKey.id);
  b.writeUInt32LE(slot, SVC_LAYOUT.backendKey.slot);
  return b;
}

/** A backend value of the family's map (membrane_svc_backends or membrane_svc6_backends). */
export function backendValue(address: string, port: number): Buffer {
  const { family, bytes } = parseAddress(address);
  const L = family === 4 ? SVC_LAYOUT.backend : SVC6_LAYOUT.backend;
  const b = Buffer.alloc(L.size);
  bytes.copy(b, L.addr, 0, family === 4 ? 4 : 16);
  b.writeUInt16BE(port, L.port);
  return b;
}

export function decodeBackendValue(b: Buffer): { address: string; port: number } {
  const family = b.length === SVC6_LAYOUT.backend.size ? 6 : 4;
  const L = family === 4 ? SVC_LAYOUT.backend : SVC6_LAYOUT.backend;
  return { address: formatAddress(family, b, L.addr), port: b.readUInt16BE(L.port) };
}

/** A key of the family's node-address map (membrane_svc_nodes: 4 bytes, membrane_svc6_nodes: 16), the address in network order. */
export function nodeKey(address: string): { family: 4 | 6; key: Buffer } {
  const { family, bytes } = parseAddress(address);
  return { family, key: Buffer.from(bytes.subarray(0, family === 4 ? 4 : 16)) };
}

export function scopeKey(netnsInode: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(netnsInode >>> 0);
  return b;
}
