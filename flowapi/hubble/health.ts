// gRPC's standard health service (grpc.health.v1.Health/Check), which `hubble status` asks first. Its two messages
// are one field each, so they are encoded here by hand rather than loading a .proto nobody ships with us.
import type * as grpc from "@grpc/grpc-js";

/** The service name Hubble asks the health of (Cilium's pkg/hubble/api/v1 ObserverServiceName). */
export const HUBBLE_HEALTH_SERVICE = "hubble.server.Observer";

/** HealthCheckResponse.status = SERVING (field 1, varint 1). */
const SERVING = Buffer.from([0x08, 0x01]);
/** HealthCheckResponse.status = SERVICE_UNKNOWN (field 1, varint 3). */
const SERVICE_UNKNOWN = Buffer.from([0x08, 0x03]);

/** HealthCheckRequest.service (field 1, length-delimited); "" when absent. */
function serviceOf(b: Buffer): string {
  let i = 0;
  while (i < b.length) {
    const tag = b[i++]!;
    if (tag !== 0x0a) return ""; // nothing else is defined in the message
    let len = 0;
    for (let shift = 0; i < b.length; shift += 7) {
      const byte = b[i++]!;
      len |= (byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) break;
    }
    return b.subarray(i, i + len).toString("utf8");
  }
  return "";
}

export const healthService: grpc.ServiceDefinition = {
  Check: {
    path: "/grpc.health.v1.Health/Check",
    requestStream: false,
    responseStream: false,
    requestSerialize: (s: string) => Buffer.concat([Buffer.from([0x0a, Buffer.byteLength(s)]), Buffer.from(s)]),
    requestDeserialize: serviceOf,
    responseSerialize: (serving: boolean) => (serving ? SERVING : SERVICE_UNKNOWN),
    responseDeserialize: (b: Buffer) => b.equals(SERVING),
  },
};

/** The handler: serving for the whole server ("") and for Hubble's observer. */
export const healthHandlers: grpc.UntypedServiceImplementation = {
  Check: (call: grpc.ServerUnaryCall<string, boolean>, cb: grpc.sendUnaryData<boolean>) => cb(null, call.request === "" || call.request === HUBBLE_HEALTH_SERVICE),
};
