// The PNG decoder used on screenshots: every row filter, RGB and RGBA, and refusals of what it does not read.
import assert from "node:assert/strict";
import { test } from "node:test";
import { deflateSync } from "node:zlib";
import { countPixels, decodePng, pixelAt } from "./png.ts";

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  return Buffer.concat([len, Buffer.from(type, "latin1"), data, Buffer.alloc(4)]); // the decoder does not check CRCs
}

function png(width: number, height: number, colorType: number, rows: Buffer, depth = 8): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = depth;
  ihdr[9] = colorType;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(rows)), chunk("IEND", Buffer.alloc(0))]);
}

test("RGB rows under filters None, Sub, Up, Average and Paeth decode to the same pixels", () => {
  // 2×5 RGB: every row is red then green; each row stored with a different filter.
  const red = [224, 27, 27];
  const green = [31, 157, 71];
  const rows = Buffer.from([
    0, ...red, ...green, // None
    1, ...red, ...green.map((v, i) => (v - red[i]! + 256) & 0xff), // Sub: minus the pixel to the left
    2, 0, 0, 0, 0, 0, 0, // Up: equal to the row above
    3, ...red.map((v) => (v - (v >> 1) + 256) & 0xff), ...green.map((v, i) => (v - ((red[i]! + v) >> 1) + 256) & 0xff), // Average
    4, 0, 0, 0, 0, 0, 0, // Paeth: the row above is the best predictor
  ]);
  const img = decodePng(png(2, 5, 2, rows));
  assert.equal(img.width, 2);
  assert.equal(img.height, 5);
  for (let y = 0; y < 5; y++) {
    assert.deepEqual(pixelAt(img, 0, y), [...red, 255], `row ${y} left`);
    assert.deepEqual(pixelAt(img, 1, y), [...green, 255], `row ${y} right`);
  }
  assert.equal(countPixels(img, 0, 2, 1, ([r, g, b]) => r > 180 && g < 90 && b < 90), 3);
});

test("RGBA keeps alpha; bad signatures and 16-bit images are refused with a reason", () => {
  const img = decodePng(png(1, 1, 6, Buffer.from([0, 1, 2, 3, 4])));
  assert.deepEqual(pixelAt(img, 0, 0), [1, 2, 3, 4]);
  assert.throws(() => decodePng(Buffer.from("GIF89a....")), /bad signature/);
  assert.throws(() => decodePng(png(1, 1, 2, Buffer.alloc(7), 16)), /unsupported format \(bit depth 16/);
});
