// Where Cilium's .proto files are read from: the override, the Go module cache, and a shell whose $HOME is not the account's.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CILIUM_VERSION, PROTO_DIR_ENV, hubbleProtoDir } from "./proto.ts";

const SUB = path.join("github.com", "cilium", `cilium@${CILIUM_VERSION}`, "api", "v1");

test("$MEMBRANE_HUBBLE_PROTO_DIR wins; $GOMODCACHE and $GOPATH name the module cache", () => {
  assert.equal(hubbleProtoDir({ [PROTO_DIR_ENV]: "/p", GOMODCACHE: "/m" }), "/p");
  assert.equal(hubbleProtoDir({ GOMODCACHE: "/m" }), path.join("/m", SUB));
  assert.equal(hubbleProtoDir({ GOPATH: "/g:/h" }), path.join("/g", "pkg", "mod", SUB));
});

test("a shell with another $HOME finds the cache under the account's own home, where the install step put it", (t) => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-home-"));
  t.after(() => fs.rmSync(home, { recursive: true, force: true }));
  const account = path.join(os.userInfo().homedir, "go", "pkg", "mod", SUB);
  const found = hubbleProtoDir({ HOME: home });
  if (fs.existsSync(path.join(account, "observer", "observer.proto"))) assert.equal(found, account);
  else assert.equal(found, path.join(home, "go", "pkg", "mod", SUB), "nothing anywhere: the first candidate, for the error message");
  // A cache under $HOME is preferred when it holds the files.
  const mine = path.join(home, "go", "pkg", "mod", SUB, "observer");
  fs.mkdirSync(mine, { recursive: true });
  fs.writeFileSync(path.join(mine, "observer.proto"), "");
  assert.equal(hubbleProtoDir({ HOME: home }), path.join(home, "go", "pkg", "mod", SUB));
});
