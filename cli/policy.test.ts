// `membrane policy validate`: the webhook's messages offline, exit codes, warnings, and the real binary.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { formatErrors } from "../core/validate.ts";
import { BAD_POLICIES } from "../core/parser/testdata/bad-policies.ts";
import { SEED_FILE } from "../crds/fixtures.ts";
import { run } from "./policy.ts";

const membrane = fileURLToPath(new URL("../bin/membrane", import.meta.url));

async function capture(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(args, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

describe("membrane policy validate", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "membrane-policy-validate-"));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it("accepts the seed examples (three documents in one file) and exits 0", async () => {
    const r = await capture(["validate", SEED_FILE]);
    assert.equal(r.code, 0, r.err.join("\n"));
    assert.deepEqual(r.out, [
      `${SEED_FILE}#0: CiliumNetworkPolicy l7-visibility-tls is valid`,
      `${SEED_FILE}#1: CiliumClusterwideNetworkPolicy default-deny-all is valid`,
      `${SEED_FILE}#2: TracingPolicy monitor-sensitive-files is valid`,
    ]);
  });

  it("refuses a port-less VRRP rule naming --enable-extended-ip-protocols, and accepts it with that flag", async () => {
    const file = join(dir, "vrrp.yaml");
    await writeFile(
      file,
      "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: keepalived}\nspec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{protocol: VRRP}]}]}]\n",
    );
    const off = await capture(["validate", file]);
    assert.equal(off.code, 1);
    assert.match(off.err.join("\n"), /spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.protocol: "VRRP" .*--enable-extended-ip-protocols/);
    const on = await capture(["validate", "--enable-extended-ip-protocols", file]);
    assert.equal(on.code, 0, on.err.join("\n"));
    assert.deepEqual(on.out, [`${file}: CiliumNetworkPolicy keepalived is valid`]);
  });

  it("with --policy-secrets-namespace, warns as the webhook does about a TLS rule's Secret outside it, and refuses a bad namespace name", async () => {
    const file = join(dir, "tls.yaml");
    await writeFile(
      file,
      "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: front, namespace: shop}\nspec:\n  endpointSelector: {matchLabels: {app: front}}\n" +
        "  egress: [{toEntities: [world], toPorts: [{ports: [{port: '443', protocol: TCP}], terminatingTLS: {secret: {name: front-tls}}, rules: {http: [{method: GET}]}}]}]\n",
    );
    const warned = await capture(["validate", "--policy-secrets-namespace", "membrane-secrets", file]);
    assert.equal(warned.code, 0, warned.err.join("\n"));
    assert.deepEqual(warned.err, [
      `Warning: ${file}: CiliumNetworkPolicy shop/front: spec.egress[0].toPorts[0].terminatingTLS: Secret shop/front-tls is not read: TLS rules' Secrets must live in the policy secrets namespace membrane-secrets (name it with secret.namespace: membrane-secrets): connections to the port are refused`,
    ]);
    assert.deepEqual((await capture(["validate", "--policy-secrets-namespace=shop", file])).err, [], "a Secret inside the namespace is not warned about");
    const bad = await capture(["validate", "--policy-secrets-namespace=Shop", file]);
    assert.equal(bad.code, 2);
    assert.match(bad.err.join("\n"), /^membrane policy validate: --policy-secrets-namespace: "Shop" is not a namespace name/);
  });

  it("prints the webhook's message for every bad policy of the corpus and exits 1", async () => {
    for (const bad of BAD_POLICIES.slice(0, 60)) {
      const file = join(dir, "bad.yaml");
      await writeFile(file, bad.yaml);
      const r = await capture(["validate", file]);
      assert.equal(r.code, 1, bad.name);
      const line = r.err.find((l) => l.includes(" is invalid: "));
      assert.ok(line?.endsWith(` is invalid: ${formatErrors(bad.errors)}`), `${bad.name}: ${r.err.join("\n")}`);
    }
  });

  it("prints warnings as Warning: lines and still exits 0", async () => {
    const file = join(dir, "risky.yaml");
    await writeFile(
      file,
      `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: risky
spec:
  endpointSelector: {}
  egress:
  - toEntities: [world]
`,
    );
    const r = await capture(["validate", file]);
    assert.equal(r.code, 0);
    assert.deepEqual(r.err, [
      `Warning: ${file}: CiliumNetworkPolicy risky: spec.egress[0]: allows every port and protocol to entity "world"; restrict it with toPorts if that is not intended`,
    ]);
  });

  it("reports YAML syntax errors and unreadable files, and checks every file given", async () => {
    const broken = join(dir, "broken.yaml");
    await writeFile(broken, "kind: [unclosed\n");
    const r = await capture(["validate", broken, join(dir, "missing.yaml"), SEED_FILE]);
    assert.equal(r.code, 1);
    assert.ok(r.err.some((l) => l.startsWith(`${broken}: not valid YAML: `)));
    assert.ok(r.err.some((l) => l === `${join(dir, "missing.yaml")}: cannot read: ENOENT`));
    assert.equal(r.out.length, 3, "the good file is still checked");
  });

  it("exits 2 with usage when no file is named", async () => {
    assert.equal((await capture(["validate"])).code, 2);
    assert.equal((await capture(["frobnicate"])).code, 2);
  });

  it("works through bin/membrane", async () => {
    const file = join(dir, "port.yaml");
    const bad = BAD_POLICIES[0];
    assert.ok(bad);
    await writeFile(file, bad.yaml);
    const r = await promisify(execFile)(membrane, ["policy", "validate", file]).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(formatErrors(bad.errors)), r.stderr);
  });
});
