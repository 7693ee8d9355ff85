// Every component and test runs on the one pinned Node.js: the version in .node-version, which package.json's engines admits.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const root = new URL("..", import.meta.url);

test("tests run on the Node.js version pinned in .node-version (installed by make deps)", () => {
  const pinned = readFileSync(new URL(".node-version", root), "utf8").trim();
  assert.equal(process.version, `v${pinned}`);
});

test("package.json engines admit the pinned version and nothing older than Node 26", () => {
  const pkg = JSON.parse(readFileSync(new URL("package.json", root), "utf8")) as { engines: { node: string } };
  const pinned = readFileSync(new URL(".node-version", root), "utf8").trim();
  const [lo, hi] = pkg.engines.node.split(" ").map((s) => s.replace(/^[<>=]+/, ""));
  assert.ok(Number(lo!.split(".")[0]) >= 26, `engines floor ${lo}`);
  assert.ok(pinned.localeCompare(lo!, undefined, { numeric: true }) >= 0 && Number(pinned.split(".")[0]) < Number(hi), `${pinned} within ${pkg.engines.node}`);
});
