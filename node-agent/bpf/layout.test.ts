// Checks that layout.ts mirrors bpf/lib/layout.h: compiles a C program that prints sizeof/offsetof/#defines.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PROTO_NUMBER, type PolicyEntry } from "../../core/model.ts";
import { CONST, DROP_REASON_CODES, DROP_REASONS, LAYOUT, encodePolicyKey, parseAddress, formatAddress } from "./layout.ts";
import { formatIP, parseIP } from "../../core/cidr.ts";

const header = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bpf/lib/layout.h");

function cProgram(): string {
  const lines = ["#include <stdio.h>", "#include <stddef.h>", `#include "${header}"`, "int main(void) {", 'printf("{");'];
  const items: string[] = [];
  for (const [name, s] of Object.entries(LAYOUT)) {
    items.push(`printf("\\"${name}\\": %zu", sizeof(struct ${name}));`);
    for (const field of Object.keys(s.fields)) {
      items.push(`printf("\\"${name}.${field}\\": %zu", offsetof(struct ${name}, ${field}));`);
      items.push(`printf("\\"${name}.${field}#size\\": %zu", sizeof(((struct ${name} *)0)->${field}));`);
    }
  }
  for (const name of [...Object.keys(CONST), ...Object.keys(DROP_REASON_CODES)]) {
    items.push(`printf("\\"${name}\\": %llu", (unsigned long long)(${name}));`);
  }
  lines.push(items.join('\nprintf(", ");\n'), 'printf("}\\n");', "return 0; }");
  return lines.join("\n");
}

function cValues(): Record<string, number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "membrane-layout-"));
  try {
    fs.writeFileSync(path.join(dir, "layout.c"), cProgram());
    execFileSync("clang", [`-I/usr/include/${os.machine()}-linux-gnu`, "-o", path.join(dir, "layout"), path.join(dir, "layout.c")]);
    return JSON.parse(execFileSync(path.join(dir, "layout")).toString()) as Record<string, number>;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("every struct size, field offset and field size in layout.ts equals the C header's", () => {
  const c = cValues();
  for (const [name, s] of Object.entries(LAYOUT)) {
    assert.equal(s.size, c[name], `sizeof(struct ${name})`);
    for (const [field, fl] of Object.entries(s.fields)) {
      assert.equal(fl.offset, c[`${name}.${field}`], `offsetof(struct ${name}, ${field})`);
      assert.equal(fl.size, c[`${name}.${field}#size`], `sizeof ${name}.${field}`);
    }
  }
  for (const [name, v] of Object.entries({ ...CONST, ...DROP_REASON_CODES })) assert.equal(v, c[name], name);
});

test("every drop reason code has a name", () => {
  for (const code of Object.values(DROP_REASON_CODES)) assert.ok(code in DROP_REASONS, `reason ${code}`);
});

test("policy keys carry the port in network order and the port prefix in the key's prefix length", () => {
  const e: PolicyEntry = {
    subject: 1000, direction: "egress", peer: 3000, proto: PROTO_NUMBER.TCP, port: 8192, portPrefixLen: 3,
    verdict: "allow", proxyPort: 0, ruleId: 7,
  };
  const k = encodePolicyKey(e);
  assert.equal(k.readUInt32LE(0), CONST.POLICY_FIXED_PREFIX_BITS + 3);
  assert.deepEqual([k[14], k[15]], [0x20, 0x00]);
  assert.throws(() => encodePolicyKey({ ...e, port: 8193 }), /not aligned/);
  assert.throws(() => encodePolicyKey({ ...e, proto: 0 }), /proto ANY must have port 0\/0/);
});

test("addresses round-trip through the map encoding", () => {
  for (const ip of ["10.1.2.3", "fd00:0:0:0:0:0:0:1", "::1"]) {
    const { family, bytes } = parseAddress(ip);
    assert.equal(parseAddress(formatAddress(family, bytes)).bytes.toString("hex"), bytes.toString("hex"));
  }
  assert.throws(() => parseAddress("10.1.2.300"), /invalid IPv4/);
});

test("IPv6 addresses are printed as Hubble and kubectl print them (RFC 5952), the same text core/cidr.ts gives", () => {
  const cases: [string, string][] = [
    ["fd00:10:244:a1:0:0:0:6", "fd00:10:244:a1::6"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["fe80:0:0:0:1:0:0:2", "fe80::1:0:0:2"], // the first of two equal runs
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"], // the longest run
    ["1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"], // a single zero group stays
    ["fd00:203:0:0:0:0:0:0", "fd00:203::"],
    ["2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6"],
  ];
  for (const [input, want] of cases) {
    const { bytes } = parseAddress(input);
    const padded = Buffer.concat([Buffer.alloc(3), bytes]);
    assert.equal(formatAddress(6, padded, 3), want, input);
    assert.equal(formatAddress(6, bytes), formatIP(6, parseIP(input)!.addr), input);
  }
});
