// gRPC client TLS for a target given as an IP address. Node 26 refuses an IP address as the TLS
// ServerName (RFC 6066; DEP0123 became an error) and grpc-js 1.14 sends the target's host as
// ServerName, so such a target sends a placeholder name and verifies the certificate against the IP.
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import * as grpc from "@grpc/grpc-js";

/** The name sent as SNI when the target is an IP address; never used to verify the server. */
const IP_TARGET_SERVER_NAME = "membrane-ip-target.invalid";

/** The host of a grpc-js target ("host:port", "[v6]:port", "dns:host:port"). */
export function targetHost(target: string): string {
  const t = target.replace(/^dns:(\/\/[^/]*\/)?/, "");
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(t);
  if (v6) return v6[1]!;
  const i = t.lastIndexOf(":");
  return i > 0 && t.indexOf(":") === i ? t.slice(0, i) : t;
}

/**
 * mTLS (or server-only TLS without key and cert) channel credentials for `target`; with `serverName` the
 * certificate is verified for that name whatever the target (a Service dialled at its ClusterIP).
 */
export function sslCredentials(target: string, ca: Buffer, key?: Buffer, cert?: Buffer, serverName?: string): grpc.ChannelCredentials {
  if (serverName !== undefined) return grpc.credentials.createSsl(ca, key ?? null, cert ?? null, { checkServerIdentity: (_name, peer) => checkServerIdentity(serverName, peer) });
  const host = targetHost(target);
  if (isIP(host) === 0) return grpc.credentials.createSsl(ca, key ?? null, cert ?? null);
  return grpc.credentials.createSsl(ca, key ?? null, cert ?? null, { checkServerIdentity: (_name, peer) => checkServerIdentity(host, peer) });
}

/** Channel options to pass with `sslCredentials` for `target` (and the same `serverName`, sent as SNI). */
export function sslChannelOptions(target: string, serverName?: string): grpc.ChannelOptions {
  if (serverName !== undefined) return { "grpc.ssl_target_name_override": serverName };
  return isIP(targetHost(target)) === 0 ? {} : { "grpc.ssl_target_name_override": IP_TARGET_SERVER_NAME };
}
