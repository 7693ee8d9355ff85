// The derived types in crds/generated/types.ts describe real objects (checked by tsc) and cover every kind.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { GENERATED_DIR } from "./generate.ts";
import { CRDS } from "./schema/index.ts";
import type {
  CiliumClusterwideNetworkPolicy,
  CiliumNetworkPolicy,
  TracingPolicy,
} from "./generated/types.ts";
import { seedExamples } from "./fixtures.ts";

// The seed examples written as typed literals: `tsc --noEmit` fails if the types stop accepting them.
const seedCNP = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumNetworkPolicy",
  metadata: { name: "l7-visibility-tls" },
  spec: {
    description: "L7 policy with TLS visibility",
    endpointSelector: { matchLabels: { org: "empire", class: "mediabot" } },
    egress: [
      {
        toFQDNs: [{ matchName: "httpbin.org" }],
        toPorts: [
          {
            ports: [{ port: "443", protocol: "TCP" }],
            terminatingTLS: { secret: { namespace: "kube-system", name: "httpbin-tls-data" } },
            originatingTLS: { secret: { namespace: "kube-system", name: "tls-orig-data" } },
            rules: { http: [{}] },
          },
        ],
      },
      { toPorts: [{ ports: [{ port: "53", protocol: "ANY" }], rules: { dns: [{ matchPattern: "*" }] } }] },
    ],
  },
} satisfies CiliumNetworkPolicy;

const seedCCNP = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumClusterwideNetworkPolicy",
  metadata: { name: "default-deny-all" },
  spec: {
    endpointSelector: {},
    ingressDeny: [{ fromEntities: ["all"] }],
    egressDeny: [{ toEntities: ["all"] }],
  },
} satisfies CiliumClusterwideNetworkPolicy;

const seedTracing = {
  apiVersion: "cilium.io/v1alpha1",
  kind: "TracingPolicy",
  metadata: { name: "monitor-sensitive-files" },
  spec: {
    kprobes: [
      {
        call: "fd_install",
        syscall: false,
        args: [{ index: 1, type: "file" }],
        selectors: [{ matchNames: [{ namespace: "default" }], matchActions: [{ action: "Sigkill" }] }],
      },
    ],
  },
} satisfies TracingPolicy;

describe("derived TypeScript types", () => {
  it("type the seed examples exactly as the YAML has them", () => {
    assert.deepEqual(
      seedExamples().map((e) => e.object),
      [seedCNP, seedCCNP, seedTracing],
    );
  });

  it("export one interface per CRD kind", () => {
    const types = readFileSync(join(GENERATED_DIR, "types.ts"), "utf8");
    for (const crd of CRDS)
      assert.match(types, new RegExp(`^export interface ${crd.spec.names.kind} \\{$`, "m"));
  });
});
