// Verified programs kept across restarts, against the kernel: the same object and sizes reuse the pinned programs; any change loads anew.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BPFFS_ROOT, BpfObject, pinNewMap, programId } from "./loader.ts";
import { mapShapeOfFd } from "./libbpf.ts";
import { PROGRAMS_DIR } from "./program-pins.ts";

// A small object (the socket translation's cgroup programs; its IPv4 four are checked): the kernel verifies it in milliseconds.
const OBJECT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bpf/build/service.o");
const PROGRAM_NAMES = ["membrane_svc_connect4", "membrane_svc_sendmsg4", "membrane_svc_recvmsg4", "membrane_svc_getpeername4"];
const MAP = "membrane_svc_frontends";
const SCOPE = `test-progpins-${process.pid}`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-progpins-"));
after(() => {
  fs.rmSync(path.join(BPFFS_ROOT, SCOPE), { recursive: true, force: true });
  fs.rmSync(tmp, { recursive: true, force: true });
});

function load(objectPath = OBJECT, maxEntries?: Record<string, number>): BpfObject {
  return BpfObject.load(objectPath, { scope: SCOPE, reusePrograms: true, ...(maxEntries ? { maxEntries } : {}) });
}

/** Each program's kernel id, by name. */
function ids(o: BpfObject): Record<string, number> {
  return Object.fromEntries(PROGRAM_NAMES.map((n) => [n, programId(o.programFd(n))]));
}

const pinnedDigests = (): string[] => fs.readdirSync(path.join(BPFFS_ROOT, SCOPE, PROGRAMS_DIR));

/** A copy of the object with a byte appended past its sections: the same programs, another file. */
function changedObject(): string {
  const copy = path.join(tmp, "service-changed.o");
  fs.writeFileSync(copy, Buffer.concat([fs.readFileSync(OBJECT), Buffer.from([0])]));
  return copy;
}

test("a second load of the same object and sizes opens the pinned programs instead of loading them; a changed object loads anew and replaces them", () => {
  const first = load();
  const firstIds = ids(first);
  assert.equal(first.reused, false, "nothing pinned yet: loaded and verified");
  const pinned = fs.readdirSync(path.join(BPFFS_ROOT, SCOPE, PROGRAMS_DIR, pinnedDigests()[0]!));
  for (const n of PROGRAM_NAMES) assert.ok(pinned.includes(n), `${n} pinned (have ${pinned.join(", ")})`);
  const key = Buffer.alloc(first.map(MAP).keySize, 7);
  const value = Buffer.alloc(first.map(MAP).valueSize, 9);
  first.map(MAP).update(key, value);
  first.close(); // the agent stops

  const again = load();
  try {
    assert.equal(again.reused, true, "the same object and sizes: reused");
    assert.deepEqual(ids(again), firstIds, "the very programs the first load verified");
    assert.deepEqual(again.map(MAP).lookup(key), value, "and the pinned maps they use");
  } finally {
    again.close();
  }

  const changed = load(changedObject());
  try {
    assert.equal(changed.reused, false, "another object: loaded anew");
    assert.match(changed.reuseRefusal ?? "", /no programs pinned for this object/);
    for (const n of PROGRAM_NAMES) assert.notEqual(programId(changed.programFd(n)), firstIds[n], `${n} is a new program`);
    assert.deepEqual(changed.map(MAP).lookup(key), value, "the maps stay the same");
    assert.equal(pinnedDigests().length, 1, "the earlier object's programs are unpinned");
  } finally {
    changed.close();
  }
  // Back to the first object: its programs were unpinned, so it is loaded and verified again.
  const back = load();
  back.close();
  assert.equal(back.reused, false);
});

test("other map sizes, a missing program pin or a map re-created since: loaded anew, never reused", () => {
  load().close(); // pins for the plain object
  const sized = load(OBJECT, { membrane_svc_scope: 64 });
  sized.close();
  assert.equal(sized.reused, false, "other sizes are another load");
  assert.match(sized.reuseRefusal ?? "", /no programs pinned for this object and these settings/);

  const base = load();
  base.close();
  assert.equal(base.reused, false, "its pins went with the sized load: loaded anew");
  const digest = pinnedDigests()[0]!;
  fs.rmSync(path.join(BPFFS_ROOT, SCOPE, PROGRAMS_DIR, digest, PROGRAM_NAMES[0]!));
  const missing = load();
  missing.close();
  assert.equal(missing.reused, false);
  assert.match(missing.reuseRefusal ?? "", new RegExp(`program ${PROGRAM_NAMES[0]} is not pinned`));

  // A map pin replaced by a new map of the same shape (bpffs wiped in part, another tool): the pinned programs still
  // use the old one, so reusing them would enforce what the agent no longer writes.
  const shape = (() => {
    const o = load();
    try {
      assert.equal(o.reused, true);
      return mapShapeOfFd(o.map(MAP).fd, MAP);
    } finally {
      o.close();
    }
  })();
  fs.rmSync(path.join(BPFFS_ROOT, SCOPE, MAP));
  pinNewMap(shape, MAP, path.join(BPFFS_ROOT, SCOPE, MAP));
  const recreated = load();
  try {
    assert.equal(recreated.reused, false);
    assert.match(recreated.reuseRefusal ?? "", /uses map id \d+, which is not pinned/);
  } finally {
    recreated.close();
  }
  const settled = load();
  settled.close();
  assert.equal(settled.reused, true, "the programs loaded against the new map are reused from then on");
});
