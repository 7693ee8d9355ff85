// `dev up`'s prerequisite check with the real make and clang: a missing datapath object is built from bpf/, a folder that cannot build one is an error naming the command to run.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BPF_DIR, ensureDatapathObject } from "./prerequisites.ts";

describe("ensureDatapathObject", () => {
  let parent: string;
  before(async () => {
    parent = await mkdtemp(join(tmpdir(), "membrane-prereq-"));
  });
  after(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  test("builds a missing object from the bpf sources, then finds it current", async () => {
    const bpf = join(parent, "bpf");
    await cp(BPF_DIR, bpf, { recursive: true, filter: (src) => !src.startsWith(join(BPF_DIR, "build")) });
    assert.equal(existsSync(join(bpf, "build", "datapath.o")), false);
    const first = await ensureDatapathObject(bpf);
    assert.deepEqual(first, { object: join(bpf, "build", "datapath.o"), action: "built" });
    assert.ok(existsSync(first.object));
    assert.equal((await ensureDatapathObject(bpf)).action, "current");
  });

  test("a folder that cannot build it is an error naming the object and `make deps`", async () => {
    const empty = join(parent, "empty");
    await cp(join(BPF_DIR, "Makefile"), join(empty, "Makefile"));
    await assert.rejects(ensureDatapathObject(empty), (err: Error) => {
      assert.match(err.message, new RegExp(`^${join(empty, "build", "datapath.o")}: missing and could not be built \\(.*\\): run \`make deps\` first`));
      return true;
    });
  });
});
