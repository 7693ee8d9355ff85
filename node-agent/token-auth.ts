// The agent's side of token authentication: its pod's projected ServiceAccount token, read fresh on every connect (kubelet rotates it), sent as gRPC call metadata.
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { sslCredentials } from "../kube/grpc-tls.ts";

/** Reads the token file now; an empty or unreadable file is an error that names the file. */
export function readAgentToken(file: string): string {
  let token: string;
  try {
    token = readFileSync(file, "utf8").trim();
  } catch (e) {
    throw new Error(`--token-file ${file}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  if (token === "") throw new Error(`--token-file ${file}: the file is empty`);
  if (/\s/.test(token)) throw new Error(`--token-file ${file}: not a single token (contains whitespace)`);
  return token;
}

/** The call metadata carrying the token: `authorization: Bearer TOKEN`. */
export function tokenMetadata(file: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${readAgentToken(file)}`);
  return md;
}

/**
 * Call credentials that read the token file at each call (each stream = each connect), so a rotated
 * token is picked up without a restart. A read failure fails that call (UNAVAILABLE), never sends an empty token.
 */
export function tokenCallCredentials(file: string): grpc.CallCredentials {
  return grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    try {
      callback(null, tokenMetadata(file));
    } catch (e) {
      callback(e instanceof Error ? e : new Error(String(e)));
    }
  });
}

/** mTLS channel credentials (the shared client certificate) plus the token on every call. */
export function agentCredentials(target: string, tls: { ca: Buffer; cert: Buffer; key: Buffer; serverName?: string }, tokenFile: string | undefined): grpc.ChannelCredentials {
  const ssl = sslCredentials(target, tls.ca, tls.key, tls.cert, tls.serverName);
  return tokenFile === undefined ? ssl : grpc.credentials.combineChannelCredentials(ssl, tokenCallCredentials(tokenFile));
}
