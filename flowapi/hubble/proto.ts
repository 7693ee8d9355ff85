// Hubble's Observer API from Cilium's own .proto files (api/v1/observer, api/v1/flow of the pinned Go module), loaded at start.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** The Cilium version whose Hubble API is spoken (one pin for the install step, the agent and the tests). */
export const CILIUM_VERSION = fs.readFileSync(new URL("./CILIUM_VERSION", import.meta.url), "utf8").trim();

/** Set to a directory holding `observer/observer.proto` and `flow/flow.proto` (Cilium's `api/v1`) to read them from there. */
export const PROTO_DIR_ENV = "MEMBRANE_HUBBLE_PROTO_DIR";

/**
 * Where the .proto files are: $MEMBRANE_HUBBLE_PROTO_DIR, else `api/v1` of the pinned module in the Go
 * module cache ($GOMODCACHE, else $GOPATH/pkg/mod, else ~/go/pkg/mod), where the install step
 * (localcluster/hubble/build.sh) puts it. The home directory is $HOME's, and then the account's own (from
 * the password database): a shell with another $HOME (`membrane observe` in a fresh environment) still finds
 * the cache the install step filled. The first candidate that holds the files wins; none: the first (for the error).
 */
export function hubbleProtoDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env[PROTO_DIR_ENV]) return env[PROTO_DIR_ENV];
  const sub = path.join("github.com", "cilium", `cilium@${CILIUM_VERSION}`, "api", "v1");
  const caches = env.GOMODCACHE
    ? [env.GOMODCACHE]
    : env.GOPATH
      ? [path.join(env.GOPATH.split(":")[0]!, "pkg", "mod")]
      : [...new Set([env.HOME || os.homedir(), accountHome()].filter((h): h is string => h !== undefined))].map((h) => path.join(h, "go", "pkg", "mod"));
  const candidates = caches.map((c) => path.join(c, sub));
  return candidates.find((d) => fs.existsSync(path.join(d, "observer", "observer.proto"))) ?? candidates[0]!;
}

/** The account's home directory from the password database (not $HOME), when there is one. */
function accountHome(): string | undefined {
  try {
    return os.userInfo().homedir || undefined;
  } catch {
    return undefined;
  }
}

export interface HubbleApi {
  /** The `observer.Observer` service, for a grpc-js Server. */
  readonly service: grpc.ServiceDefinition;
  /** The client constructor of `observer.Observer`. */
  readonly Client: grpc.ServiceClientConstructor;
  /** Where the .proto files were read from. */
  readonly protoDir: string;
  /** Every message and enum of the loaded files, by full name (`flow.Flow`): their descriptors, for flowapi/hubble/encode.ts. */
  readonly definition: protoLoader.PackageDefinition;
}

let loaded: HubbleApi | undefined;

/** Loads (once) the Observer service; throws naming the directory when the .proto files are not there. */
export function hubbleApi(dir: string = hubbleProtoDir()): HubbleApi {
  if (loaded !== undefined && loaded.protoDir === dir) return loaded;
  const file = path.join(dir, "observer", "observer.proto");
  if (!fs.existsSync(file)) {
    throw new Error(`Hubble's observer.proto not found at ${file}: run scripts/install-deps.sh (it fetches github.com/cilium/cilium@${CILIUM_VERSION}) or set ${PROTO_DIR_ENV}`);
  }
  // keepCase: the field names of the .proto (drop_reason_desc, IP, Type), as Hubble's JSON output spells them.
  const def = protoLoader.loadSync(file, { includeDirs: [dir], keepCase: true, longs: Number, enums: String, defaults: false, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { observer: { Observer: grpc.ServiceClientConstructor } };
  loaded = { service: pkg.observer.Observer.service, Client: pkg.observer.Observer, protoDir: dir, definition: def };
  return loaded;
}
