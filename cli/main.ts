// The `membrane` command: dispatches to one module per command group.
import { fileURLToPath } from "node:url";

/** Each group module exports `run(args: string[]): Promise<number>` (the exit code). */
const groups: Record<string, { module: string; summary: string }> = {
  dev: { module: "./dev.ts", summary: "the local cluster: up, down, env, status, exec, probe" },
  policy: { module: "./policy.ts", summary: "validate policy files, trace a verdict" },
  identity: { module: "./identity.ts", summary: "list identities" },
  observe: { module: "./observe.ts", summary: "filter and follow flows" },
  fqdn: { module: "./fqdn.ts", summary: "what the nodes' DNS proxies learned: fqdn cache list" },
  status: { module: "./status.ts", summary: "operator and agent health" },
  encryption: { module: "./encryption.ts", summary: "encryption keys and nodes: status, rotate" },
  agent: { module: "../node-agent/main.ts", summary: "run the node agent" },
  l7proxy: { module: "../node-agent/l7proxy/main.ts", summary: "run the node's L7 (HTTP) proxy, configured by the agent's file" },
  runtime: { module: "../node-agent/runtime/main.ts", summary: "run process visibility and TracingPolicy enforcement on a node (Tetragon's JSON events)" },
  operator: { module: "../controllers/main.ts", summary: "run the operator" },
  webhook: { module: "../webhooks/main.ts", summary: "run the admission webhook server" },
};

function usage(): string {
  const lines = Object.entries(groups).map(([name, g]) => `  ${name.padEnd(10)} ${g.summary}`);
  return `usage: membrane <command> [args]\n\ncommands:\n${lines.join("\n")}\n`;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "help" || command === "--help" || command === "-h") {
    process.stdout.write(usage());
    return command === undefined ? 2 : 0;
  }
  const group = groups[command];
  if (!group) {
    process.stderr.write(`membrane: unknown command "${command}"\n\n${usage()}`);
    return 2;
  }
  const url = new URL(group.module, import.meta.url);
  let mod: { run?: (args: string[]) => Promise<number> };
  try {
    mod = (await import(fileURLToPath(url))) as typeof mod;
  } catch (err) {
    // Only the group's own module missing means "not in this build"; a missing import inside it is a bug.
    const missing = (err as NodeJS.ErrnoException).code === "ERR_MODULE_NOT_FOUND";
    if (missing && String((err as Error).message).includes(fileURLToPath(url))) {
      process.stderr.write(`membrane: "${command}" is not available in this build yet\n`);
      return 2;
    }
    throw err;
  }
  if (typeof mod.run !== "function") throw new Error(`${group.module} does not export run()`);
  return mod.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`membrane: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
