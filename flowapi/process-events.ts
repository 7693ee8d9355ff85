// Process events from every node: each agent serves its runtime's live event stream (Tetragon's JSON lines) on its
// Hubble gRPC server beside the Observer API, so they are found (the CiliumNode's hubble-address annotation) and
// protected (mutual TLS on TCP) exactly as flows are, and the runtime itself listens on loopback only.
import * as grpc from "@grpc/grpc-js";

export const PROCESS_EVENTS_PATH = "/membrane.runtime.v1.ProcessEvents/GetEvents";

const passthrough = (b: Buffer): Buffer => b;

/**
 * One server-streaming method: the request is the runtime's own query (`follow=true&last=N&pod=&namespace=&binary=`,
 * as GET /v1/events reads it, checked by the runtime), each response a run of the stream's bytes (whole JSON lines
 * or parts of them: the client joins them).
 */
export function processEventsService(): grpc.ServiceDefinition {
  return {
    GetEvents: {
      path: PROCESS_EVENTS_PATH,
      requestStream: false,
      responseStream: true,
      requestSerialize: (q: string) => Buffer.from(q, "utf8"),
      requestDeserialize: (b: Buffer) => b.toString("utf8"),
      responseSerialize: passthrough,
      responseDeserialize: passthrough,
    },
  };
}

/** Where an agent's server writes a stream's bytes: false from `write` means wait for `drain` (the client reads slowly). */
export interface ProcessEventSink {
  write(chunk: Buffer): boolean;
  once(event: "drain", listener: () => void): unknown;
}

/** Why a node's stream could not be read: the query was refused (the client's mistake) or the runtime is not there. */
export class ProcessEventsError extends Error {
  constructor(
    readonly kind: "invalid" | "unavailable",
    message: string,
  ) {
    super(message);
  }
}

/**
 * A node's process events: the runtime's stream for `query` written to `sink` until it ends (resolves) or `signal`
 * aborts; rejects with a ProcessEventsError.
 */
export type ProcessEventSource = (query: string, sink: ProcessEventSink, signal: AbortSignal) => Promise<void>;

/** The gRPC status a source's failure is told with. */
export function processEventsStatus(err: unknown): { code: grpc.status; message: string } {
  if (err instanceof ProcessEventsError) return { code: err.kind === "invalid" ? grpc.status.INVALID_ARGUMENT : grpc.status.UNAVAILABLE, message: err.message };
  return { code: grpc.status.INTERNAL, message: err instanceof Error ? err.message : String(err) };
}
