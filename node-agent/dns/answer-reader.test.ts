// The proxy's reading of a server's answer: rcode, and the answer section's A, AAAA and CNAME records only; malformed answers throw.
import { test } from "node:test";
import assert from "node:assert/strict";
import dnsPacket from "dns-packet";
import { readAnswer } from "./answer-reader.ts";

const answer = (p: Partial<dnsPacket.Packet>): Buffer => dnsPacket.encode({ type: "response", id: 7, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: [{ type: "A", name: "www.example.test" }], ...p });

test("A, AAAA and a CNAME chain in order, with their TTLs; other record types and sections are skipped", () => {
  const buf = answer({
    answers: [
      { type: "CNAME", name: "www.example.test", ttl: 60, data: "edge.cdn.test" },
      { type: "TXT", name: "edge.cdn.test", ttl: 5, data: "v=spf1 -all" },
      { type: "A", name: "edge.cdn.test", ttl: 30, data: "192.0.2.10" },
      { type: "AAAA", name: "edge.cdn.test", ttl: 20, data: "2001:db8::a" },
      { type: "MX", name: "edge.cdn.test", ttl: 5, data: { preference: 10, exchange: "mx.cdn.test" } },
    ],
    authorities: [{ type: "NS", name: "cdn.test", ttl: 300, data: "ns1.cdn.test" }],
    additionals: [{ type: "OPT", name: ".", udpPayloadSize: 1232 } as dnsPacket.Answer],
  });
  assert.deepEqual(readAnswer(buf), {
    rcode: "NOERROR",
    records: [
      { name: "www.example.test", type: "CNAME", ttl: 60, data: "edge.cdn.test" },
      { name: "edge.cdn.test", type: "A", ttl: 30, data: "192.0.2.10" },
      { name: "edge.cdn.test", type: "AAAA", ttl: 20, data: "2001:db8::a" },
    ],
  });
});

test("the rcode by name: NXDOMAIN, SERVFAIL, and a number past the named ones", () => {
  for (const [code, name] of [[3, "NXDOMAIN"], [2, "SERVFAIL"], [5, "REFUSED"], [12, "RCODE_12"]] as const) {
    const buf = answer({ flags: dnsPacket.RECURSION_DESIRED | code });
    assert.deepEqual(readAnswer(buf), { rcode: name, records: [] });
  }
});

test("compressed names (pointers back to the question) are followed", () => {
  // Header, question www.example.test A IN, then one A record whose name is a pointer to offset 12.
  const question = dnsPacket.encode({ type: "query", id: 1, questions: [{ type: "A", name: "www.example.test" }] });
  const header = Buffer.from(question.subarray(0, 12));
  header.writeUInt16BE(0x8180, 2);
  header.writeUInt16BE(1, 6); // ANCOUNT
  const rr = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 42, 0, 4, 198, 51, 100, 7]);
  const buf = Buffer.concat([header, question.subarray(12), rr]);
  assert.deepEqual(readAnswer(buf).records, [{ name: "www.example.test", type: "A", ttl: 42, data: "198.51.100.7" }]);
});

test("a malformed answer throws: shorter than a header, a record past the end, an A record whose data is not 4 bytes", () => {
  assert.throws(() => readAnswer(Buffer.alloc(5)), /shorter than a DNS header/);
  const full = answer({ answers: [{ type: "A", name: "www.example.test", ttl: 30, data: "192.0.2.10" }] });
  assert.throws(() => readAnswer(full.subarray(0, full.length - 2)), /runs past the end/);
  const bad = Buffer.from(full);
  bad.writeUInt16BE(5, full.length - 6); // RDLENGTH 5 where 4 bytes of data follow
  assert.throws(() => readAnswer(Buffer.concat([bad, Buffer.alloc(1)])), /A data of 5 bytes, not 4/);
  const loop = Buffer.from(full);
  loop.writeUInt16BE(1, 4);
  loop.writeUInt16BE(0xc00c, 12); // the question's name points at itself
  assert.throws(() => readAnswer(loop));
});
