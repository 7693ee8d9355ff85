import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseTracepointFormats, tracepointArgRead } from "./tracepoint-format.ts";

// As this kernel's tracefs prints them (`tail -n +1 syscalls/sys_enter_openat/format raw_syscalls/sys_enter/format`).
const TEXT = `==> syscalls/sys_enter_openat/format <==
name: sys_enter_openat
ID: 782
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;

print fmt: "dfd: 0x%08lx, filename: 0x%08lx", ((unsigned long)(REC->dfd)), ((unsigned long)(REC->filename))

==> raw_syscalls/sys_enter/format <==
name: sys_enter
ID: 443
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:long id;\toffset:8;\tsize:8;\tsigned:1;
\tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;

print fmt: "NR %ld (%lx, %lx, %lx, %lx, %lx, %lx)", REC->id, REC->args[0]
`;

describe("tracepoint formats (tracefs) and Tetragon's tracepoint arguments", () => {
  const [openat, sysEnter] = parseTracepointFormats(TEXT);

  it("reads each format's subsystem, event, id and fields (common fields included, as Tetragon's index counts them)", () => {
    assert.deepEqual([openat?.subsystem, openat?.event, openat?.id, openat?.fields.length], ["syscalls", "sys_enter_openat", 782, 9]);
    assert.deepEqual(openat?.fields[6], { declaration: "const char * filename", name: "filename", offset: 24, size: 8, signed: false });
    assert.deepEqual([sysEnter?.subsystem, sysEnter?.event, sysEnter?.id, sysEnter?.fields[5]?.name], ["raw_syscalls", "sys_enter", 443, "args"]);
  });

  it("reads a char pointer as a string (auto or string), an integer by its declared type or the field's size", () => {
    assert.deepEqual(tracepointArgRead(openat!, 6, "auto"), { kind: "string", offset: 24, field: "filename" });
    assert.deepEqual(tracepointArgRead(openat!, 6, "string"), { kind: "string", offset: 24, field: "filename" });
    assert.deepEqual(tracepointArgRead(openat!, 5, "int"), { kind: "int", offset: 16, size: 4, signed: true, field: "dfd" });
    assert.deepEqual(tracepointArgRead(openat!, 7, "auto"), { kind: "int", offset: 32, size: 8, signed: false, field: "flags" });
    assert.deepEqual(tracepointArgRead(sysEnter!, 4, "auto"), { kind: "int", offset: 8, size: 8, signed: true, field: "id" });
  });

  it("says why a field cannot be read: past the format, an array, a type the program does not read", () => {
    assert.equal(tracepointArgRead(openat!, 9, "auto"), "syscalls/sys_enter_openat has 9 fields (0-8, common fields included); field 9 does not exist");
    assert.match(String(tracepointArgRead(sysEnter!, 5, "auto")), /^field 5 \(unsigned long args\[6\]\) is an array/);
    assert.match(String(tracepointArgRead(openat!, 7, "sock")), /^type sock of field 7 \(int flags\) is not read/);
  });
});
