// Real packets across two simulated nodes (netns, collect-metadata VXLAN, the datapath on each): HTTP rules whose client and destination live on different nodes, each node's L7 proxy as its own process.
import { crossNodeL7Suite } from "./testing/cross-node.ts";

crossNodeL7Suite();
