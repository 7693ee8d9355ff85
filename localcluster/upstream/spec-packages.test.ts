// The suite's binary links every package of the pinned module's test/e2e whose specs can name NetworkPolicy (the focus of `make test-upstream`), so a dry run of it lists them all; and the source scan that says so.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { goSourceNames, importedKubernetesPackages, kubernetesModuleDir, packagesNaming, pinnedKubernetesVersion } from "./spec-packages.ts";

const here = new URL(".", import.meta.url).pathname;
const NETPOL = "k8s.io/kubernetes/test/e2e/network/netpol";

test("every package of the pinned e2e suite whose spec text can name NetworkPolicy is linked into the suite's binary", async () => {
  const version = pinnedKubernetesVersion(await readFile(join(here, "go.mod"), "utf8"));
  const moduleDir = await kubernetesModuleDir(version);
  const naming = await packagesNaming(moduleDir, "test/e2e", "NetworkPolicy");
  // The scan sees the real spec package (a scan that found nothing would pass the check below vacuously).
  assert.ok(naming.includes(NETPOL), `${moduleDir}: ${naming.join(", ")}`);
  const linked = importedKubernetesPackages(await readFile(join(here, "netpol_test.go"), "utf8"));
  assert.ok(linked.includes(NETPOL), linked.join(", "));
  assert.deepEqual(
    naming.filter((p) => !linked.includes(p)),
    [],
    `k8s.io/kubernetes@${version} has specs naming NetworkPolicy in packages netpol_test.go does not import: make test-upstream's focus would never see them`,
  );
});

test("a spec's text or the feature label names the word; a comment, an identifier or another string does not", () => {
  assert.equal(goSourceNames(`var _ = SIGDescribe("Other", func() { ginkgo.It("allows a NetworkPolicy", nil) })`, "NetworkPolicy"), true);
  assert.equal(goSourceNames("var _ = f.It(`raw NetworkPolicy text`, nil)", "NetworkPolicy"), true);
  assert.equal(goSourceNames(`var _ = SIGDescribe("Other", feature.NetworkPolicy, func() {})`, "NetworkPolicy"), true);
  assert.equal(goSourceNames(`// creating a NetworkPolicy must not load sctp\n/* NetworkPolicy */ var x = "http://a/b"`, "NetworkPolicy"), false);
  assert.equal(goSourceNames(`p := networkingv1.NetworkPolicy{}; s := "networkpolicies"; r := '"'; t := "a\\"NetworkPolic"`, "NetworkPolicy"), false);
  assert.equal(goSourceNames(`var _ = feature.NetworkPolicyEndPort`, "NetworkPolicy"), false);
});

test("the packages are found by directory, and imports are read from import declarations only", async () => {
  const dir = await mkdtemp(join(tmpdir(), "membrane-spec-packages-"));
  try {
    await mkdir(join(dir, "test/e2e/network/policy"), { recursive: true });
    await mkdir(join(dir, "test/e2e/apps"), { recursive: true });
    await writeFile(join(dir, "test/e2e/network/policy/spec.go"), `package policy\nvar _ = ginkgo.It("enforces a NetworkPolicy", nil)\n`);
    await writeFile(join(dir, "test/e2e/network/util.go"), `package network\n// a NetworkPolicy in a comment\n`);
    await writeFile(join(dir, "test/e2e/apps/spec.go"), `package apps\nvar _ = ginkgo.It("rolls a Deployment", nil)\n`);
    assert.deepEqual(await packagesNaming(dir, "test/e2e", "NetworkPolicy"), ["k8s.io/kubernetes/test/e2e/network/policy"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const source = `package upstream
import "k8s.io/kubernetes/test/e2e"
import (
\t"flag" // "k8s.io/kubernetes/test/e2e/commented"
\te2eapps "k8s.io/kubernetes/test/e2e/apps"
\t_ "k8s.io/kubernetes/test/e2e/network/netpol"
)
var s = "k8s.io/kubernetes/test/e2e/storage"
`;
  assert.deepEqual(importedKubernetesPackages(source), ["k8s.io/kubernetes/test/e2e", "k8s.io/kubernetes/test/e2e/apps", NETPOL]);
});

test("the pin is read from a require line or a require block", () => {
  assert.equal(pinnedKubernetesVersion("module m\n\nrequire k8s.io/kubernetes v1.36.3\n"), "v1.36.3");
  assert.equal(pinnedKubernetesVersion("module m\n\nrequire (\n\tk8s.io/kubernetes v1.35.0 // indirect\n)\n"), "v1.35.0");
  assert.throws(() => pinnedKubernetesVersion("module m\n\nrequire k8s.io/api v0.36.3\n"), /k8s\.io\/kubernetes/);
});
