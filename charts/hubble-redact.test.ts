// The chart's hubble.redact values: the agents' --hubble-redact-* flags, read back by the agent's own flag parser.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseManifest, renderText, type K8sObject, kubeletArgs } from "../localcluster/chart.ts";
import { parseAgentFlags } from "../node-agent/flags.ts";

const BASE = ["--node-name", "n", "--operator", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];

function agentArgs(objects: K8sObject[]): string[] {
  const ds = objects.find((o) => o.kind === "DaemonSet") as unknown as { spec: { template: { spec: { containers: { name: string; args: string[] }[] } } } };
  const args = ds.spec.template.spec.containers.find((c) => c.name === "agent")!.args;
  return kubeletArgs(args);
}

function redactionOf(args: readonly string[]) {
  const parsed = parseAgentFlags(args);
  assert.ok(parsed.ok, parsed.ok ? "" : parsed.error);
  return parsed.flags.httpRedaction;
}

describe("chart hubble.redact", () => {
  it("on by default with Hubble's other defaults (no query redaction, user-info passwords redacted, no lists)", async () => {
    assert.deepEqual(redactionOf(agentArgs(parseManifest(await renderText()))), { enabled: true, urlQuery: false, userInfo: true, headers: { allow: [], deny: [] } });
  });

  it("every value reaches the agent's flags; allow and deny together are refused by the chart", async () => {
    const set = { "hubble.redact.enabled": false, "hubble.redact.http.urlQuery": true, "hubble.redact.http.userInfo": false, "hubble.redact.http.headers.allow[0]": "X-Has-Force", "hubble.redact.http.headers.allow[1]": "authorization" };
    assert.deepEqual(redactionOf(agentArgs(parseManifest(await renderText(set)))), { enabled: false, urlQuery: true, userInfo: false, headers: { allow: ["x-has-force", "authorization"], deny: [] } });
    assert.deepEqual(redactionOf(agentArgs(parseManifest(await renderText({ "hubble.redact.http.headers.deny[0]": "user-agent" })))).headers, { allow: [], deny: ["user-agent"] });
    await assert.rejects(renderText({ "hubble.redact.http.headers.allow[0]": "a", "hubble.redact.http.headers.deny[0]": "b" }), /hubble\.redact\.http\.headers: give allow or deny, not both/);
    await assert.rejects(renderText({ "hubble.redact.http.headers.deny[0]": "bad name" }), /hubble\/redact\/http\/headers\/deny\/0/);
  });
});

describe("agent --hubble-redact-* flags", () => {
  it("as Cilium's: booleans bare or =true|false, header lists comma-separated; a bad value names its flag", () => {
    assert.deepEqual(redactionOf([...BASE, "--hubble-redact-http-urlquery", "--hubble-redact-http-userinfo=false", "--hubble-redact-http-headers-deny", "User-Agent,x-secret"]), { enabled: true, urlQuery: true, userInfo: false, headers: { allow: [], deny: ["user-agent", "x-secret"] } });
    const error = (args: string[]): string => {
      const r = parseAgentFlags([...BASE, ...args]);
      return r.ok ? "" : r.error;
    };
    assert.equal(error(["--hubble-redact-enabled=yes"]), '--hubble-redact-enabled: must be true or false, got "yes"');
    assert.equal(error(["--hubble-redact-http-headers-allow", "a b"]), '--hubble-redact-http-headers-allow: "a b" is not a header name');
    assert.match(error(["--hubble-redact-http-headers-allow", "a", "--hubble-redact-http-headers-deny", "b"]), /^--hubble-redact-http-headers-deny: not together with --hubble-redact-http-headers-allow/);
  });
});
