// Where `membrane dev up` keeps its real nodes and the Hubble client credentials in the dev dir: a module of its own so `membrane observe` finds them without loading the cluster code.
import { join } from "node:path";

/** The agents' Hubble server certificate names this, whatever node serves it (the chart's membrane.hubbleAgentServerName). */
export const HUBBLE_AGENT_SERVER_NAME = "hubble-grpc.membrane.io";

export function devRealNodePaths(devDir: string) {
  return {
    nodesDir: join(devDir, "realnodes"),
    nodeDir: (name: string) => join(devDir, "realnodes", name),
    /** The chart's Secret membrane-hubble-client as files: ca.crt, tls.crt, tls.key. */
    hubbleTlsDir: join(devDir, "hubble-client"),
  };
}
