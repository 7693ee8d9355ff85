// The ClusterIP translation maps' layout (bpf/lib/service.h) and their encoding; translator.test.ts compares it with the object's BTF sizes.
export const SVC_LAYOUT = {
  frontendKey: { size: 8, addr: 0, port: 4, protocol: 6 },
  frontend: { size: 8, id: 0, count: 4 },
  backendKey: { size: 8, id: 0, slot: 4 },
  backend: { size: 8, addr: 0, port: 4 },
  revnatKey: { size: 16, cookie: 0, addr: 8, port: 12 },
  revnat: { size: 8, addr: 0, port: 4 },
} as const;

export const SVC_FRONTENDS_MAX = 16384;
export const SVC_BACKENDS_MAX = 262144;
export const IPPROTO = { TCP: 6, UDP: 17 } as const;

/** Dotted IPv4 as the 4 bytes a socket address carries (network order). */
function ip4(addr: string): Buffer {
  return Buffer.from(addr.split(".").map(Number));
}

export function frontendKey(address: string, port: number, protocol: number): Buffer {
  const L = SVC_LAYOUT.frontendKey;
  const b = Buffer.alloc(L.size);
  ip4(address).copy(b, L.addr);
  b.writeUInt16BE(port, L.port);
  b.writeUInt8(protocol, L.protocol);
  return b;
}

export function decodeFrontendKey(b: Buffer): { address: string; port: number; protocol: number } {
  const L = SVC_LAYOUT.frontendKey;
  return { address: [...b.subarray(L.addr, L.addr + 4)].join("."), port: b.readUInt16BE(L.port), protocol: b.readUInt8(L.protocol) };
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

export function backendValue(address: string, port: number): Buffer {
  const b = Buffer.alloc(SVC_LAYOUT.backend.size);
  ip4(address).copy(b, SVC_LAYOUT.backend.addr);
  b.writeUInt16BE(port, SVC_LAYOUT.backend.port);
  return b;
}

export function decodeBackendValue(b: Buffer): { address: string; port: number } {
  return { address: [...b.subarray(0, 4)].join("."), port: b.readUInt16BE(SVC_LAYOUT.backend.port) };
}

export function scopeKey(netnsInode: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(netnsInode >>> 0);
  return b;
}
