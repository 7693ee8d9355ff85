// The cross-node L7 cases with WireGuard routed between the two simulated nodes (real wireguard-go, strict mode, pod packets routed into the device without VXLAN): ingress, egress and both-ends HTTP rules work, and no request or answer crosses the underlay in clear (captured on it).
import { wireguardGoBinary } from "../../localcluster/wireguard/binary.ts";
import { Capture } from "../../e2e/capture.ts";
import { crossNodeL7Suite } from "./testing/cross-node.ts";

crossNodeL7Suite({ wireguard: { binary: wireguardGoBinary(), capture: (netns, ifname, markers) => Capture.start(netns, ifname, markers) } });
