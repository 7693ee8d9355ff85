// Test fixture: Cloud City's door manager over gRPC (@grpc/grpc-js, cloudcity.proto): a real gRPC server and client.
//   doorman.ts serve <address> <port> [quiet] prints "listening", then "call <METHOD> <peer>" per call (not when quiet: for benches)
//   doorman.ts call <host:port> <METHOD>...  the calls in order on one channel (one HTTP/2 connection); a JSON line each: {method, code, details, reply}
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO = path.join(path.dirname(fileURLToPath(import.meta.url)), "cloudcity.proto");
/** The gRPC path of each method: what an HTTP rule's `path` matches. */
export const DOOR_MANAGER = "/cloudcity.DoorManager";

type Handler = (call: grpc.ServerUnaryCall<Record<string, number>, unknown>, cb: grpc.sendUnaryData<unknown>) => void;

function doorManager(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { cloudcity: { DoorManager: grpc.ServiceClientConstructor } };
  return pkg.cloudcity.DoorManager;
}

/** The door manager on address:port; `onCall` sees each call's method and peer (the connection it came on). */
export async function serveDoorman(address: string, port: number, onCall: (method: string, peer: string) => void = () => {}): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  const unary = (method: string, reply: (req: Record<string, number>) => unknown): Handler => (call, cb) => {
    onCall(method, call.getPeer());
    cb(null, reply(call.request));
  };
  server.addService(doorManager().service, {
    GetName: unary("GetName", (r) => ({ message: `Door ${r.doorId ?? 0}: Bespin Door` })),
    GetLocation: unary("GetLocation", () => ({ message: "Cloud City, Bespin" })),
    SetAccessCode: unary("SetAccessCode", () => ({ success: true })),
    WatchStatus: (call: grpc.ServerWritableStream<Record<string, number>, unknown>) => {
      onCall("WatchStatus", call.getPeer());
      const count = call.request.count || 1;
      let i = 0;
      const next = (): void => {
        if (call.cancelled) return;
        if (i >= count) return void call.end();
        call.write({ message: `status ${i++}: closed` });
        setTimeout(next, 20);
      };
      next();
    },
  });
  const bound = await new Promise<number>((resolve, reject) => server.bindAsync(`${address}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { server, port: bound };
}

export interface CallResult {
  readonly method: string;
  /** gRPC status code: 0 OK, 7 PERMISSION_DENIED, 14 UNAVAILABLE, … */
  readonly code: number;
  readonly details: string;
  readonly reply?: unknown;
}

/** A client of the door manager at host:port: one channel, so every call of it rides one HTTP/2 connection (plaintext unless `credentials` say TLS). */
export function doormanClient(
  target: string,
  options: grpc.ChannelOptions = {},
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
): { call(method: string, request?: Record<string, number>, deadlineMs?: number): Promise<CallResult>; close(): void } {
  const Client = doorManager();
  const client = new Client(target, credentials, options) as unknown as grpc.Client & Record<string, (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: unknown) => void) => void>;
  return {
    call: (method, request = { doorId: 1 }, deadlineMs = 5000) =>
      new Promise((resolve) => {
        client[method]!(request, { deadline: Date.now() + deadlineMs }, (err, reply) =>
          resolve(err ? { method, code: err.code, details: err.details } : { method, code: 0, details: "", reply }),
        );
      }),
    close: () => client.close(),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === "serve") {
    const quiet = args[2] === "quiet";
    await serveDoorman(args[0] ?? "0.0.0.0", Number(args[1] ?? 50051), quiet ? undefined : (method, peer) => console.log(`call ${method} ${peer}`));
    console.log("listening");
  } else if (mode === "call") {
    const [target = "127.0.0.1:50051", ...methods] = args;
    const c = doormanClient(target);
    for (const m of methods) console.log(JSON.stringify(await c.call(m)));
    c.close();
  } else throw new Error(`usage: doorman.ts serve ADDRESS PORT | call HOST:PORT METHOD...`);
}
