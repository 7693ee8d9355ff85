// The agent→relay hop in batches: GetFlows' answer as frames of already encoded GetFlowsResponse messages, so
// that neither side pays gRPC's per-message cost (and the relay no decode/re-encode) for every flow.
//
// Hubble's own API sends one message per flow; at tens of thousands of flows per second that per-message cost
// (framing, an HTTP/2 write, a stream 'data' event, protobuf decode and encode again in the relay) is what
// limited the relay path (bench/README.md, flows). This service is Membrane's own, spoken only between its
// agents and its relay; every client outside (the hubble CLI, `membrane observe`) still reads Hubble's GetFlows.
import * as grpc from "@grpc/grpc-js";
import { hubbleApi } from "./proto.ts";
import { encodeGetFlowsResponse } from "./encode.ts";
import type { GetFlowsResponse } from "./types.ts";

/** The full method name; the request is Hubble's GetFlowsRequest, the answer a stream of batches (below). */
export const FLOW_BATCHES_PATH = "/membrane.hubble.v1.FlowBatches/GetFlowBatches";

/** Bytes of one entry's header: u32 LE length of the message, f64 LE its time (ms since the epoch). */
const ENTRY_HEADER = 12;

/** One encoded GetFlowsResponse and its time (so the relay orders and resumes without decoding it). */
export interface EncodedFlow {
  readonly bytes: Buffer;
  readonly timeMs: number;
}

/** A batch: entries back to back, each `len u32 LE | timeMs f64 LE | len bytes of GetFlowsResponse`. */
export function encodeBatch(entries: readonly EncodedFlow[]): Buffer {
  let size = 0;
  for (const e of entries) size += ENTRY_HEADER + e.bytes.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const e of entries) {
    out.writeUInt32LE(e.bytes.length, at);
    out.writeDoubleLE(e.timeMs, at + 4);
    e.bytes.copy(out, at + ENTRY_HEADER);
    at += ENTRY_HEADER + e.bytes.length;
  }
  return out;
}

/** The entries of a batch (views into it, no copy); throws on a truncated frame. */
export function decodeBatch(batch: Buffer): EncodedFlow[] {
  const out: EncodedFlow[] = [];
  let at = 0;
  while (at < batch.length) {
    if (at + ENTRY_HEADER > batch.length) throw new Error(`flow batch: truncated entry header at byte ${at} of ${batch.length}`);
    const len = batch.readUInt32LE(at);
    const timeMs = batch.readDoubleLE(at + 4);
    const end = at + ENTRY_HEADER + len;
    if (end > batch.length) throw new Error(`flow batch: entry at byte ${at} claims ${len} bytes, ${batch.length - at - ENTRY_HEADER} left`);
    out.push({ bytes: batch.subarray(at + ENTRY_HEADER, end), timeMs });
    at = end;
  }
  return out;
}

const passthrough = (b: Buffer): Buffer => b;

/** The service (server side and client constructor): requests with Hubble's codec, answers as raw batch bytes. */
export function flowBatchesService(): grpc.ServiceDefinition {
  const getFlows = hubbleApi().service.GetFlows!;
  return {
    GetFlowBatches: {
      path: FLOW_BATCHES_PATH,
      requestStream: false,
      responseStream: true,
      requestSerialize: getFlows.requestSerialize,
      requestDeserialize: getFlows.requestDeserialize,
      responseSerialize: passthrough,
      responseDeserialize: passthrough,
    },
  };
}

/**
 * Hubble's observer service whose GetFlows also writes an already encoded GetFlowsResponse (a Buffer) as it is:
 * the agent encodes a flow once for every follower, and the relay passes an agent's bytes on untouched.
 */
export function observerServiceWithEncoded(): grpc.ServiceDefinition {
  const api = hubbleApi().service;
  const getFlows = api.GetFlows!;
  const serialize = getFlows.responseSerialize as (r: GetFlowsResponse) => Buffer;
  return { ...api, GetFlows: { ...getFlows, responseSerialize: (r: GetFlowsResponse | Buffer) => (Buffer.isBuffer(r) ? r : serialize(r)) } };
}

let decoder: ((b: Buffer) => GetFlowsResponse) | undefined;

/** Hubble's GetFlowsResponse encoding (the bytes a client of GetFlows receives; encode.ts, protobufjs' bytes at less cost). */
export function encodeFlowsResponse(r: GetFlowsResponse): Buffer {
  return encodeGetFlowsResponse(r);
}

/** Hubble's GetFlowsResponse decoding, for a relay client in the same process (the service map). */
export function decodeFlowsResponse(b: Buffer): GetFlowsResponse {
  // Looked up once: finding the .proto files costs more than decoding a flow.
  decoder ??= hubbleApi().service.GetFlows!.responseDeserialize as (b: Buffer) => GetFlowsResponse;
  return decoder(b);
}
