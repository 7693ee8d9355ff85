// Test helper: a simulated node agent on the distribution stream (gRPC, mutual TLS) that applies what it receives.
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { type Downstream, type NodeState, type TracingPolicyNodeStatus, type Upstream, DISTRIBUTION_SERVICE } from "../../core/wire.ts";
import { EMPTY_STATE, applyDelta, canonicalState } from "../../core/nodestate.ts";
import { sslChannelOptions, sslCredentials } from "../../kube/grpc-tls.ts";

export const DistributionClient = grpc.makeGenericClientConstructor(DISTRIBUTION_SERVICE, "Distribution");

/** A simulated agent: connects with its certificate, records what it receives and holds the applied state. */
export class AgentClient {
  readonly received: Downstream[] = [];
  state: NodeState = EMPTY_STATE;
  version: number | undefined;
  status: grpc.StatusObject | undefined;
  private readonly client: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<Upstream, Downstream>;

  constructor(
    address: string,
    tls: { ca: Buffer; cert: Buffer; key: Buffer },
    readonly node: string,
    opts: { lastAppliedVersion?: number; autoAck?: boolean; state?: NodeState; credentials?: grpc.ChannelCredentials; l7Proxy?: boolean; runtime?: boolean; clusterClass?: boolean; everyPodClass?: boolean; worldClass?: boolean; worldFamilyClass?: boolean } = {},
  ) {
    if (opts.state) this.state = opts.state;
    this.version = opts.lastAppliedVersion;
    this.client = new DistributionClient(address, opts.credentials ?? sslCredentials(address, tls.ca, tls.key, tls.cert), sslChannelOptions(address));
    this.call = (this.client as unknown as { Stream: () => grpc.ClientDuplexStream<Upstream, Downstream> }).Stream();
    this.call.on("data", (m: Downstream) => {
      this.received.push(m);
      if (opts.autoAck !== false) this.ack(m);
    });
    this.call.on("status", (s: grpc.StatusObject) => (this.status = s));
    this.call.on("error", () => undefined);
    this.call.write({ type: "hello", node, ...(opts.lastAppliedVersion !== undefined ? { lastAppliedVersion: opts.lastAppliedVersion } : {}), ...(opts.l7Proxy ? { l7Proxy: true } : {}), ...(opts.runtime ? { runtime: true } : {}), clusterClass: opts.clusterClass ?? true, everyPodClass: opts.everyPodClass ?? true, worldClass: opts.worldClass ?? true, worldFamilyClass: opts.worldFamilyClass ?? true });
  }

  apply(m: Downstream): void {
    if (m.type === "snapshot") this.state = canonicalState(m.state);
    else {
      assert.equal(m.baseVersion, this.version, "a delta applies on the version the agent holds");
      this.state = applyDelta(this.state, m);
    }
    this.version = m.version;
  }

  ack(m: Downstream): void {
    this.apply(m);
    this.call.write({ type: "ack", version: m.version, nonce: m.nonce });
  }

  nack(m: Downstream, error: string): void {
    this.call.write({ type: "nack", version: m.version, nonce: m.nonce, error });
  }

  /** As an agent running the runtime enforcer (`runtime: true`): the status of each TracingPolicy on this node, the whole list. */
  reportRuntime(policies: readonly TracingPolicyNodeStatus[]): void {
    this.call.write({ type: "runtime", policies });
  }

  close(): void {
    this.call.end();
    this.client.close();
  }
}

