// gRPC as HTTP rules see it: a call is an HTTP/2 POST whose path is /package.Service/Method, denied with PERMISSION_DENIED.
import { headerValue, type HttpRequest } from "./http-request.ts";

/** gRPC's status code for a call the policy denies (google.rpc.Code PERMISSION_DENIED). */
export const GRPC_PERMISSION_DENIED = 7;

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

/** The response headers (trailers-only) that deny a gRPC call; the HTTP status stays 200 as gRPC requires. */
export function grpcDeniedHeaders(): Record<string, string> {
  return { ":status": "200", "content-type": "application/grpc", "grpc-status": String(GRPC_PERMISSION_DENIED), "grpc-message": "Access denied" };
}
