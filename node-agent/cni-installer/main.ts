// `membrane cni-install --bin-dir DIR`: puts the CNI plugin on the node and exits, the chart's init container, so the node's
// runtime finds the plugin before the agent starts (the agent installs it again at start, copying nothing when unchanged).
import { pino } from "pino";
import { parseFlags } from "../../kube/flags.ts";
import { installCniPlugin } from "../cni-install.ts";

const USAGE = "usage: membrane cni-install --bin-dir DIR\n";

export function run(args: string[]): Promise<number> {
  const parsed = parseFlags({ args, options: { "bin-dir": { type: "string" }, help: { type: "boolean", short: "h" } } });
  if (!parsed.ok) {
    process.stderr.write(`membrane cni-install: ${parsed.error}\n${USAGE}`);
    return Promise.resolve(2);
  }
  if (parsed.parsed.values.help) {
    process.stdout.write(USAGE);
    return Promise.resolve(0);
  }
  const binDir = parsed.parsed.values["bin-dir"];
  if (!binDir?.startsWith("/")) {
    process.stderr.write(`membrane cni-install: --bin-dir: an absolute directory is required\n${USAGE}`);
    return Promise.resolve(2);
  }
  const log = pino({ base: { component: "cni-install" } });
  try {
    log.info({ file: installCniPlugin(binDir) }, "CNI plugin installed");
    return Promise.resolve(0);
  } catch (err) {
    log.error({ binDir, err: (err as Error).message }, "CNI plugin not installed");
    return Promise.resolve(1);
  }
}
