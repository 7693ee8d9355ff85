// membrane-cni entry point: CNI_* environment + network config on stdin → result or error JSON on stdout.
import fs from "node:fs";
import { pino } from "pino";
import { cmdAdd, cmdCheck, cmdDel } from "./plugin.ts";
import {
  CniError,
  commandOf,
  CURRENT_VERSION,
  decodeJSON,
  encodeResult,
  ErrorCode,
  parseEnv,
  parseNetConf,
  SUPPORTED_VERSIONS,
  versionOf,
} from "./spec.ts";

function readStdin(): string {
  if (process.stdin.isTTY) return ""; // run by hand: no config piped in
  try {
    return fs.readFileSync(0, "utf8");
  } catch (err) {
    // VERSION may come with no stdin at all
    if ((err as NodeJS.ErrnoException).code === "EAGAIN" || (err as NodeJS.ErrnoException).code === "EOF")
      return "";
    throw err;
  }
}

/** Runs one CNI invocation; returns the exit code and what to print on stdout. */
async function invoke(
  processEnv: NodeJS.ProcessEnv,
  stdin: string,
): Promise<{ code: number; stdout: string }> {
  let cniVersion = CURRENT_VERSION;
  try {
    const command = commandOf(processEnv);
    if (command === "VERSION") {
      // stdin carries {"cniVersion": ...} naming the format the runtime wants the answer in
      const asked = stdin.trim() === "" ? undefined : decodeJSON(stdin);
      cniVersion = versionOf(asked);
      return { code: 0, stdout: JSON.stringify({ cniVersion, supportedVersions: SUPPORTED_VERSIONS }) };
    }
    const raw = decodeJSON(stdin);
    cniVersion = versionOf(raw);
    const conf = parseNetConf(raw);
    const env = parseEnv(processEnv);
    const log = pino(
      { level: conf.logLevel, base: { component: "membrane-cni", network: conf.name, command } },
      pino.destination({ fd: 2, sync: true }),
    );
    const inv = { env, conf, log };
    switch (command) {
      case "ADD":
        return { code: 0, stdout: JSON.stringify(encodeResult(conf.cniVersion, await cmdAdd(inv))) };
      case "DEL":
        await cmdDel(inv);
        return { code: 0, stdout: "" };
      case "CHECK":
        if (conf.cniVersion === "0.3.0" || conf.cniVersion === "0.3.1") {
          throw new CniError(
            ErrorCode.IncompatibleVersion,
            `CHECK is not defined for cniVersion ${conf.cniVersion} (needs 0.4.0 or later)`,
          );
        }
        await cmdCheck(inv);
        return { code: 0, stdout: "" };
    }
  } catch (err) {
    const e =
      err instanceof CniError
        ? err
        : new CniError(
            ErrorCode.Internal,
            `internal error: ${(err as Error).message}`,
            (err as Error).stack ?? "",
          );
    return { code: 1, stdout: JSON.stringify(e.toJSON(cniVersion)) };
  }
}

const { code, stdout } = await invoke(process.env, readStdin());
if (stdout !== "") process.stdout.write(`${stdout}\n`);
process.exitCode = code;
