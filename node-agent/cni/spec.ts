// The CNI contract as membrane-cni speaks it: versions, error codes, environment and network config parsing.
import path from "node:path";
import { podRange, type PodRange } from "./ipam.ts";

export const PLUGIN_TYPE = "membrane-cni";
export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] as const;
export const CURRENT_VERSION = "1.0.0";

/** CNI error codes: 1–99 are the spec's well-known codes, 100+ are this plugin's. */
export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IOFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  Internal: 100,
  AddressesExhausted: 101,
  AgentRefused: 102,
  CheckFailed: 103,
} as const;

/** A failure reported to the runtime as CNI error JSON (and a non-zero exit). */
export class CniError extends Error {
  constructor(
    readonly code: number,
    msg: string,
    readonly details = "",
  ) {
    super(msg);
  }

  toJSON(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    return {
      cniVersion,
      code: this.code,
      msg: this.message,
      ...(this.details ? { details: this.details } : {}),
    };
  }
}

export type Command = "ADD" | "DEL" | "CHECK" | "VERSION";

/** The CNI_* environment, validated for the command at hand. */
export interface CniEnv {
  command: Command;
  containerId: string;
  netns: string;
  ifname: string;
  /** K8S_POD_NAMESPACE / K8S_POD_NAME from CNI_ARGS, when the runtime is Kubernetes. */
  podNamespace?: string;
  podName?: string;
}

const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function validIfname(s: string): boolean {
  return s.length > 0 && s.length <= 15 && s !== "." && s !== ".." && !/[/:\s]/.test(s);
}

/** Parses CNI_ARGS (`K=V;K=V`); an entry without `=` is invalid. */
export function parseCniArgs(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of s.split(";")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new CniError(ErrorCode.InvalidEnvironment, `CNI_ARGS: "${pair}" is not KEY=VALUE`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

export function commandOf(env: NodeJS.ProcessEnv): Command {
  const c = env.CNI_COMMAND;
  if (c === undefined || c === "") throw new CniError(ErrorCode.InvalidEnvironment, "CNI_COMMAND is not set");
  if (c !== "ADD" && c !== "DEL" && c !== "CHECK" && c !== "VERSION") {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `CNI_COMMAND: unknown command "${c}" (want ADD, DEL, CHECK or VERSION)`,
    );
  }
  return c;
}

/** Reads the CNI_* variables a command needs; DEL does not need CNI_NETNS (the sandbox may be gone). */
export function parseEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = commandOf(env);
  const need = (name: string): string => {
    const v = env[name];
    if (v === undefined || v === "")
      throw new CniError(ErrorCode.InvalidEnvironment, `${name} is not set (required for ${command})`);
    return v;
  };
  const containerId = need("CNI_CONTAINERID");
  if (!CONTAINER_ID.test(containerId)) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `CNI_CONTAINERID: "${containerId}" must start with a letter or digit and contain only letters, digits, "_", "." and "-"`,
    );
  }
  const ifname = need("CNI_IFNAME");
  if (!validIfname(ifname)) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `CNI_IFNAME: "${ifname}" is not a valid interface name (1–15 characters, no "/", ":" or spaces)`,
    );
  }
  const netns = command === "DEL" ? (env.CNI_NETNS ?? "") : need("CNI_NETNS");
  const args = parseCniArgs(env.CNI_ARGS ?? "");
  return {
    command,
    containerId,
    netns,
    ifname,
    ...(args.K8S_POD_NAMESPACE ? { podNamespace: args.K8S_POD_NAMESPACE } : {}),
    ...(args.K8S_POD_NAME ? { podName: args.K8S_POD_NAME } : {}),
  };
}

/** The network configuration from stdin, validated. */
export interface NetConf {
  cniVersion: string;
  name: string;
  range: PodRange;
  podCIDR: string;
  /** A dual-stack network's IPv6 range: each pod gets one address of each (IPv4 first). */
  range6?: PodRange;
  podCIDRv6?: string;
  agentSocket?: string;
  mtu: number;
  stateDir: string;
  logLevel: string;
  /** The result of the ADD this CHECK or DEL refers to, when the runtime passed one. */
  prevResult?: unknown;
}

export const DEFAULT_STATE_ROOT = "/var/lib/membrane/cni";
const NETWORK_NAME = /^[a-zA-Z0-9_.-]+$/;
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

function invalid(field: string, reason: string): CniError {
  return new CniError(ErrorCode.InvalidConfig, `network config: ${field}: ${reason}`);
}

/** The cniVersion of a config, for error replies, even when the rest does not parse. */
export function versionOf(raw: unknown): string {
  const v = (raw as { cniVersion?: unknown } | null)?.cniVersion;
  return typeof v === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(v) ? v : CURRENT_VERSION;
}

export function decodeJSON(stdin: string): unknown {
  try {
    return JSON.parse(stdin);
  } catch (err) {
    throw new CniError(
      ErrorCode.DecodeFailure,
      "network config on stdin is not valid JSON",
      (err as Error).message,
    );
  }
}

/** Validates the network config; each error names the field and the reason. */
export function parseNetConf(raw: unknown): NetConf {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new CniError(ErrorCode.DecodeFailure, "network config on stdin must be a JSON object");
  const c = raw as Record<string, unknown>;

  if (typeof c.cniVersion !== "string") throw invalid("cniVersion", "required, a string");
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(c.cniVersion)) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      `network config: cniVersion: "${c.cniVersion}" is not supported (supported: ${SUPPORTED_VERSIONS.join(", ")})`,
    );
  }
  if (typeof c.name !== "string" || !NETWORK_NAME.test(c.name))
    throw invalid("name", 'required, letters, digits, "_", "." and "-" only');
  if (c.type !== PLUGIN_TYPE)
    throw invalid("type", `must be "${PLUGIN_TYPE}", got ${JSON.stringify(c.type)}`);

  let podCIDR: string | undefined;
  let podCIDRField = "podCIDR";
  if (c.podCIDR !== undefined) {
    if (typeof c.podCIDR !== "string") throw invalid("podCIDR", 'must be a string such as "10.244.1.0/24"');
    podCIDR = c.podCIDR;
  }
  if (c.ipam !== undefined) {
    if (typeof c.ipam !== "object" || c.ipam === null || Array.isArray(c.ipam))
      throw invalid("ipam", "must be an object");
    const ipam = c.ipam as Record<string, unknown>;
    if (ipam.type !== undefined && ipam.type !== PLUGIN_TYPE) {
      throw new CniError(
        ErrorCode.UnsupportedField,
        `network config: ipam.type: ${JSON.stringify(ipam.type)} is not supported: membrane-cni does its own IPAM (omit ipam.type or set it to "${PLUGIN_TYPE}")`,
      );
    }
    if (ipam.podCIDR !== undefined) {
      if (typeof ipam.podCIDR !== "string")
        throw invalid("ipam.podCIDR", 'must be a string such as "10.244.1.0/24"');
      if (podCIDR !== undefined && podCIDR !== ipam.podCIDR)
        throw invalid("ipam.podCIDR", `"${ipam.podCIDR}" disagrees with podCIDR "${podCIDR}"`);
      podCIDR = ipam.podCIDR;
      podCIDRField = "ipam.podCIDR";
    }
  }
  if (podCIDR === undefined) throw invalid("podCIDR", "required (or ipam.podCIDR): the node's pod CIDR");
  const range = podRange(podCIDR);
  if (!range.ok) throw invalid(podCIDRField, range.reason);

  let range6: { podCIDRv6: string; range6: PodRange } | undefined;
  if (c.podCIDRv6 !== undefined) {
    if (typeof c.podCIDRv6 !== "string") throw invalid("podCIDRv6", 'must be a string such as "fd00:10:244:1::/64"');
    const r6 = podRange(c.podCIDRv6, 6);
    if (!r6.ok) throw invalid("podCIDRv6", r6.reason);
    range6 = { podCIDRv6: c.podCIDRv6, range6: r6.range };
  }

  let agentSocket: string | undefined;
  if (c.agentSocket !== undefined) {
    if (typeof c.agentSocket !== "string" || !path.isAbsolute(c.agentSocket))
      throw invalid("agentSocket", "must be an absolute path to the agent's unix socket");
    agentSocket = c.agentSocket;
  }

  let mtu = 1500;
  if (c.mtu !== undefined) {
    if (typeof c.mtu !== "number" || !Number.isInteger(c.mtu) || c.mtu < 576 || c.mtu > 65535)
      throw invalid("mtu", "must be an integer from 576 to 65535");
    mtu = c.mtu;
  }

  let stateDir = path.join(DEFAULT_STATE_ROOT, c.name);
  if (c.stateDir !== undefined) {
    if (typeof c.stateDir !== "string" || !path.isAbsolute(c.stateDir))
      throw invalid("stateDir", "must be an absolute path");
    stateDir = c.stateDir;
  }

  let logLevel = "info";
  if (c.logLevel !== undefined) {
    if (typeof c.logLevel !== "string" || !LOG_LEVELS.includes(c.logLevel))
      throw invalid("logLevel", `must be one of ${LOG_LEVELS.join(", ")}`);
    logLevel = c.logLevel;
  }

  return {
    cniVersion: c.cniVersion,
    name: c.name,
    podCIDR,
    range: range.range,
    ...(range6 ?? {}),
    ...(agentSocket !== undefined ? { agentSocket } : {}),
    mtu,
    stateDir,
    logLevel,
    ...(c.prevResult !== undefined ? { prevResult: c.prevResult } : {}),
  };
}

/** What ADD returns (CNI 1.0 result; older versions add `version` to each IP). */
export interface AddResult {
  interfaces: { name: string; mac: string; sandbox?: string }[];
  ips: { address: string; gateway: string; interface: number }[];
  routes: { dst: string; gw?: string }[];
}

/** The result as JSON for the config's cniVersion. */
export function encodeResult(cniVersion: string, r: AddResult): Record<string, unknown> {
  const v1 = cniVersion === "1.0.0";
  return {
    cniVersion,
    interfaces: r.interfaces,
    ips: r.ips.map((ip) => (v1 ? ip : { version: "4", ...ip })),
    routes: r.routes,
    dns: {},
  };
}
