// gRPC as HTTP rules see it: a call is an HTTP/2 POST whose path is /package.Service/Method, denied with PERMISSION_DENIED.
import { headerValue, type HttpRequest } from "./http-request.ts";

/** gRPC's status code for a call the policy denies (google.rpc.Code PERMISSION_DENIED). */
export const GRPC_PERMISSION_DENIED = 7;
/** gRPC's status code for a call whose path holds an escaped slash (no redirect in gRPC): INVALID_ARGUMENT. */
export const GRPC_INVALID_ARGUMENT = 3;
/** gRPC's status code for a call the proxy could not pass on (the destination refused or did not answer): UNAVAILABLE. */
export const GRPC_UNAVAILABLE = 14;

export interface GrpcMethod {
  /** Fully qualified service: "package.Service" (the package may be empty or dotted). */
  readonly service: string;
  readonly method: string;
}

/** The HTTP path of a gRPC method: `/package.Service/Method` — what an HTTP rule's `path` matches. */
export function grpcPath(m: GrpcMethod): string {
  return `/${m.service}/${m.method}`;
}

/** The method a gRPC request path names, or undefined when the path is not of that shape. */
export function parseGrpcPath(path: string): GrpcMethod | undefined {
  const m = /^\/([^/?#]+)\/([^/?#]+)$/.exec(path);
  return m ? { service: m[1]!, method: m[2]! } : undefined;
}

/** A gRPC call is recognised by its content type (application/grpc, optionally +proto, +json, …). */
export function isGrpc(req: HttpRequest): boolean {
  const ct = headerValue(req, "content-type");
  return ct !== undefined && /^application\/grpc(?:[+;]|$)/i.test(ct);
}

/** A trailers-only gRPC response ending a call with `code`; the HTTP status stays 200 as gRPC requires. */
export function grpcStatusHeaders(code: number, message: string): Record<string, string> {
  return { ":status": "200", "content-type": "application/grpc", "grpc-status": String(code), "grpc-message": grpcMessage(message) };
}

/** gRPC over HTTP/2's Status-Message: UTF-8, each byte outside printable ASCII (and "%") percent-encoded. */
function grpcMessage(message: string): string {
  let out = "";
  for (const b of Buffer.from(message, "utf8")) out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  return out;
}

/** The response headers (trailers-only) that deny a gRPC call. */
export function grpcDeniedHeaders(): Record<string, string> {
  return grpcStatusHeaders(GRPC_PERMISSION_DENIED, "Access denied");
}
