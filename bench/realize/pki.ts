// Benchmark helper: a throwaway CA, the operator's serving certificate and one client certificate per node (CN = node name) from kube/pki.ts; every client shares one key, so a thousand certificates take one signature each.
import { issueCA, issueCert } from "../../kube/pki.ts";

export interface BenchPki {
  readonly ca: Buffer;
  readonly serverCert: Buffer;
  readonly serverKey: Buffer;
  /** One private key shared by every client certificate (only the CN differs per node). */
  readonly clientKey: Buffer;
  clientCert(node: string): Promise<Buffer>;
}

export async function makeBenchPki(): Promise<BenchPki> {
  const ca = await issueCA({ commonName: "membrane-bench-ca", days: 1 });
  const server = await issueCert(ca, { commonName: "membrane-operator", usage: "server", ipAddresses: ["127.0.0.1"], days: 1 });
  const client = await issueCert(ca, { commonName: "membrane-bench-client", usage: "client", days: 1 });
  return {
    ca: Buffer.from(ca.cert),
    serverCert: Buffer.from(server.cert),
    serverKey: Buffer.from(server.key),
    clientKey: Buffer.from(client.key),
    clientCert: async (node) => Buffer.from((await issueCert(ca, { commonName: node, usage: "client", days: 1, key: client.key })).cert),
  };
}
