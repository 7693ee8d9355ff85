// The `membrane` command: dispatches to one module per command group.

/**
 * Each group module exports `run(args: string[]): Promise<number>` (the exit code). The imports are
 * literal so that the bundler (`make build`, scripts/bundle.ts) sees every module; each still loads
 * only when its command runs.
 */
type Group = { load: () => Promise<{ run?: (args: string[]) => Promise<number> }>; summary: string };
const groups: Record<string, Group> = {
  dev: { load: () => import("./dev.ts"), summary: "the local cluster: up, down, env, status, exec, probe" },
  policy: { load: () => import("./policy.ts"), summary: "validate policy files, trace a verdict" },
  identity: { load: () => import("./identity.ts"), summary: "list identities" },
  observe: { load: () => import("./observe.ts"), summary: "filter and follow flows" },
  fqdn: { load: () => import("./fqdn.ts"), summary: "what the nodes' DNS proxies learned: fqdn cache list" },
  status: { load: () => import("./status.ts"), summary: "operator and agent health" },
  encryption: { load: () => import("./encryption.ts"), summary: "encryption keys and nodes: status, rotate" },
  version: { load: () => import("./version.ts"), summary: "print the version of this build" },
  agent: { load: () => import("../node-agent/main.ts"), summary: "run the node agent" },
  "cni-install": { load: () => import("../node-agent/cni-installer/main.ts"), summary: "put the CNI plugin into a node's CNI bin dir and exit (the chart's init container)" },
  l7proxy: { load: () => import("../node-agent/l7proxy/main.ts"), summary: "run the node's L7 (HTTP) proxy, configured by the agent's file" },
  runtime: { load: () => import("../node-agent/runtime/main.ts"), summary: "run process visibility and TracingPolicy enforcement on a node (Tetragon's JSON events)" },
  node: { load: () => import("../node-agent/cleanup/main.ts"), summary: "on a node: cleanup removes what Membrane left there after helm uninstall" },
  operator: { load: () => import("../controllers/main.ts"), summary: "run the operator" },
  webhook: { load: () => import("../webhooks/main.ts"), summary: "run the admission webhook server" },
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
  const mod = await group.load();
  if (typeof mod.run !== "function") throw new Error(`the module of "${command}" does not export run()`);
  return mod.run(rest);
}

/**
 * Exits once stdout and stderr have handed everything written to the kernel. process.exit() at once drops what a pipe
 * had no room for yet: behind a reader slower than this process (`kubectl exec`, a shell pipe) the output ended after
 * its first 64 KiB, and `membrane observe --type process`, which prints oldest first, lost its newest events.
 */
function exitAfterOutput(code: number): void {
  let waiting = 2;
  const done = (): void => {
    if (--waiting === 0) process.exit(code);
  };
  for (const out of [process.stdout, process.stderr]) {
    out.on("error", () => undefined); // a reader that went away (EPIPE): nothing more to wait for (the write's callback says so)
    out.write("", done); // called once what was written before it is written
  }
}

main(process.argv.slice(2)).then(exitAfterOutput, (err: unknown) => {
  process.stderr.write(`membrane: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  exitAfterOutput(1);
});
