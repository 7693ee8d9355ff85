// HPACK against RFC 7541's Appendix C examples (requests and responses, with and without Huffman coding, a dynamic table that evicts), and the encoder's blocks read back without changing a table.
import { test } from "node:test";
import assert from "node:assert/strict";
import { encodeBlock, HpackDecoder, HpackError, huffmanDecode } from "./hpack.ts";

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");
const pairs = (raw: readonly string[]): [string, string][] =>
  raw.flatMap((_, i) => (i % 2 === 0 ? [[raw[i]!, raw[i + 1]!] as [string, string]] : []));

const REQUESTS: [string, string][][] = [
  [
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
  ],
  [
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
    ["cache-control", "no-cache"],
  ],
  [
    [":method", "GET"],
    [":scheme", "https"],
    [":path", "/index.html"],
    [":authority", "www.example.com"],
    ["custom-key", "custom-value"],
  ],
];
const RESPONSES: [string, string][][] = [
  [
    [":status", "302"],
    ["cache-control", "private"],
    ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
    ["location", "https://www.example.com"],
  ],
  [
    [":status", "307"],
    ["cache-control", "private"],
    ["date", "Mon, 21 Oct 2013 20:13:21 GMT"],
    ["location", "https://www.example.com"],
  ],
  [
    [":status", "200"],
    ["cache-control", "private"],
    ["date", "Mon, 21 Oct 2013 20:13:22 GMT"],
    ["location", "https://www.example.com"],
    ["content-encoding", "gzip"],
    ["set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"],
  ],
];

function decodesAll(decoder: HpackDecoder, blocks: string[], want: [string, string][][]): void {
  blocks.forEach((b, i) => assert.deepEqual(pairs(decoder.decode(hex(b)).raw), want[i], `block ${i + 1}`));
}

test("C.3: requests without Huffman coding, one decoder across the three (its dynamic table in use)", () => {
  decodesAll(
    new HpackDecoder(),
    [
      "828684410f7777772e6578616d706c652e636f6d",
      "828684be58086e6f2d6361636865",
      "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
    ],
    REQUESTS,
  );
});

test("C.4: requests with Huffman coding", () => {
  decodesAll(
    new HpackDecoder(),
    [
      "828684418cf1e3c2e5f23a6ba0ab90f4ff",
      "828684be5886a8eb10649cbf",
      "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
    ],
    REQUESTS,
  );
});

test("C.5: responses without Huffman coding in a 256-octet table, entries evicted as new ones come", () => {
  decodesAll(
    new HpackDecoder(256),
    [
      "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
      "4803333037c1c0bf",
      "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
    ],
    RESPONSES,
  );
});

test("C.6: responses with Huffman coding in a 256-octet table, and the size given by an update at a block's start", () => {
  // The first block starts with a size update to 256 (3fe101), so the decoder starts at the default 4096.
  decodesAll(
    new HpackDecoder(),
    [
      "3fe101488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
      "4883640effc1c0bf",
      "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
    ],
    RESPONSES,
  );
});

test("Huffman: padding longer than 7 bits or not all ones, and an index beyond the table, are errors", () => {
  assert.equal(huffmanDecode(hex("f1e3c2e5f23a6ba0ab90f4ff"), 0, 12), "www.example.com");
  assert.throws(() => huffmanDecode(hex("f1e3c2e5f23a6ba0ab90f4ffff"), 0, 13), HpackError);
  assert.throws(() => huffmanDecode(hex("00"), 0, 1), HpackError); // "0" then 3 zero bits
  assert.throws(() => new HpackDecoder().decode(hex("be")), HpackError);
  assert.throws(() => new HpackDecoder().decode(hex("8240")), HpackError); // a literal cut short
  assert.throws(() => new HpackDecoder(4096, 1024).decode(hex("3fe11f")), HpackError); // an update over the limit
});

test("encodeBlock: static fields by index, others as literals without indexing; a decoder reads them back and its table stays empty", () => {
  const raw = [
    ":method",
    "POST",
    ":scheme",
    "http",
    ":path",
    "/doorman.DoorManager/GetName",
    "content-type",
    "application/grpc",
    "te",
    "trailers",
    "x-long",
    "v".repeat(300),
  ];
  const block = encodeBlock(raw);
  assert.deepEqual(block.subarray(0, 2), hex("8386"));
  const d = new HpackDecoder();
  assert.deepEqual(d.decode(block).raw, raw);
  // Index 62 would be the dynamic table's first entry: there is none.
  assert.throws(() => d.decode(hex("be")), HpackError);
});

test("a size update above the receiver's SETTINGS_HEADER_TABLE_SIZE, after a field, or an integer past 2^28 and a string past the block are errors, never a throw of another kind", () => {
  const limited = (): HpackDecoder => new HpackDecoder(4096, 4096);
  // 8,192: 0x3f then 8,192 - 31 in 7-bit groups.
  assert.throws(() => limited().decode(hex("3fe13f")), HpackError);
  assert.deepEqual(limited().decode(hex("3fe11f 82")).raw, [":method", "GET"]);
  assert.throws(() => limited().decode(hex("82 20")), HpackError);
  assert.throws(() => limited().decode(hex("ffffffffffff01")), HpackError);
  assert.throws(() => limited().decode(hex("000561")), HpackError);
  assert.throws(() => limited().decode(hex("80")), HpackError);
  // Every truncation and one-byte change of a valid block: an HpackError or a list, nothing else.
  const block = encodeBlock([":method", "GET", ":path", "/a", "x-long", "v".repeat(200)], 100);
  for (let i = 0; i < block.length; i++)
    for (const b of [0x00, 0x3f, 0x7f, 0x80, 0xff]) {
      const m = Buffer.from(block);
      m[i] = b;
      for (const input of [m, m.subarray(0, i)])
        try {
          limited().decode(input);
        } catch (err) {
          assert.ok(err instanceof HpackError, `byte ${i} = ${b}: ${String(err)}`);
        }
    }
});
