// gRPC as HTTP rules see it: a call is an HTTP/2 POST whose path is /package.Service/Method, denied with PERMISSION_DENIED.
import { headerValue, type HttpRequest } from "./http-request.ts";

/** gRPC's status codes (google.rpc.Code) the proxy's own answers use. */
const GRPC_UNKNOWN = 2;
const GRPC_PERMISSION_DENIED = 7;
const GRPC_UNIMPLEMENTED = 12;
const GRPC_INTERNAL = 13;
const GRPC_UNAVAILABLE = 14;
const GRPC_UNAUTHENTICATED = 16;

/**
 * The gRPC status that answers a gRPC call in place of an HTTP status, as Envoy's local replies do
 * (Grpc::Utility::httpToGrpcStatus, after gRPC's http-grpc-status-mapping.md): a gRPC client cannot read a 403 or a
 * 400, so the proxy's refusals reach it as the status Cilium's Envoy would have sent for the same refusal.
 */
export function grpcStatusOfHttp(status: number): number {
  switch (status) {
    case 400:
      return GRPC_INTERNAL;
    case 401:
      return GRPC_UNAUTHENTICATED;
    case 403:
      return GRPC_PERMISSION_DENIED;
    case 404:
      return GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GRPC_UNAVAILABLE;
    default:
      return GRPC_UNKNOWN;
  }
}

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
  return grpcStatusHeaders(grpcStatusOfHttp(403), "Access denied");
}
