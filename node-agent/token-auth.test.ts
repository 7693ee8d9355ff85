// Unit tests of the agent's token credentials: read fresh on every call, never an empty token, errors name the file.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { readAgentToken, tokenCallCredentials, tokenMetadata } from "./token-auth.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-token-auth-"));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test("the metadata carries the file's token as a bearer token, trailing newline trimmed", () => {
  const file = path.join(dir, "token");
  fs.writeFileSync(file, "abc.def.ghi\n");
  assert.deepEqual(tokenMetadata(file).get("authorization"), ["Bearer abc.def.ghi"]);
});

test("call credentials read the token again on every call, so a rotated token is used at the next connect", async () => {
  const file = path.join(dir, "rotating");
  fs.writeFileSync(file, "first");
  const creds = tokenCallCredentials(file);
  assert.deepEqual((await creds.generateMetadata({ method_name: "Stream", service_url: "https://op" })).get("authorization"), ["Bearer first"]);
  fs.writeFileSync(file, "second");
  assert.deepEqual((await creds.generateMetadata({ method_name: "Stream", service_url: "https://op" })).get("authorization"), ["Bearer second"]);
});

test("a missing, empty or multi-token file is an error naming the file; the call fails instead of sending no token", async () => {
  const missing = path.join(dir, "missing");
  assert.throws(() => readAgentToken(missing), new RegExp(`--token-file ${missing}: ENOENT`));
  const empty = path.join(dir, "empty");
  fs.writeFileSync(empty, "\n");
  assert.throws(() => readAgentToken(empty), /the file is empty/);
  const two = path.join(dir, "two");
  fs.writeFileSync(two, "a b");
  assert.throws(() => readAgentToken(two), /not a single token/);
  await assert.rejects(tokenCallCredentials(empty).generateMetadata({ method_name: "Stream", service_url: "https://op" }), /the file is empty/);
});
