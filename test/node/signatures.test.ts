// shared/signatures.ts: what an output's first bytes say, read without decoding it. Hand-built
// marker sequences (ITU-T T.81 §B.1–B.2) give the expected dimensions by construction; real JPEGs
// from sharp (mozjpeg, baseline, progressive, with an EXIF block) are read as the orchestrator
// reads them, through ranged reads.
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { isPdfHeader, isUtf8Text, jpegFrame, signatureProblem, type RangeReader } from "../../shared/signatures.ts";

/** A reader over `bytes` that counts its reads, as a ranged GET would serve them. */
function reader(bytes: Uint8Array) {
  const reads: [number, number][] = [];
  const read: RangeReader = async (offset, length) => {
    reads.push([offset, length]);
    return bytes.subarray(offset, offset + length);
  };
  return { read, reads };
}

const segment = (marker: number, payload: number[]) => [0xff, marker, (payload.length + 2) >> 8, (payload.length + 2) & 0xff, ...payload];
const sof = (marker: number, width: number, height: number) => segment(marker, [8, height >> 8, height & 0xff, width >> 8, width & 0xff, 1, 1, 0x11, 0]);
const jpeg = (...parts: number[][]) => Uint8Array.from([0xff, 0xd8, ...parts.flat(), 0xff, 0xd9]);

describe("jpegFrame", () => {
  it("reads width and height from the first frame header, past APPn, DQT, DHT and fill bytes", async () => {
    const bytes = jpeg(segment(0xe0, Array(14).fill(0)), segment(0xdb, Array(65).fill(1)), segment(0xc4, Array(20).fill(2)), [0xff, 0xff], sof(0xc2, 4000, 3000));
    expect(await jpegFrame(reader(bytes).read, bytes.length)).toEqual({ ok: true, width: 4000, height: 3000 });
  });

  it("a frame header 5,000 bytes in takes a second ranged read, starting where the walk stopped", async () => {
    const bytes = jpeg(segment(0xe1, Array(5000).fill(7)), sof(0xc0, 640, 480));
    const r = reader(bytes);
    expect(await jpegFrame(r.read, bytes.length)).toEqual({ ok: true, width: 640, height: 480 });
    expect(r.reads).toEqual([
      [0, 1024],
      // SOI (2) + the APP1 marker and length (4) + its 5,000 bytes: the frame header's marker.
      [2 + 4 + 5000, bytes.length - 5006],
    ]);
  });

  it("refuses what is not a JPEG picture, saying why", async () => {
    const cases: [string, Uint8Array, string][] = [
      ["junk", new TextEncoder().encode("junk!"), "does not start with a JPEG signature (FF D8 FF)"],
      ["image data first", jpeg(segment(0xda, [1, 2, 3])), "reaches image data (SOS) at byte 2 without a frame header"],
      ["a bad length", jpeg([0xff, 0xe0, 0, 1]), "has a segment of impossible length 1 at byte 2"],
      ["zero lines", jpeg(sof(0xc0, 100, 0)), "has a frame header of 100×0 pixels"],
      ["cut short", Uint8Array.from([0xff, 0xd8, ...segment(0xe0, Array(40).fill(0))]).subarray(0, 30), "ends (30 bytes) without a frame header"],
    ];
    for (const [what, bytes, problem] of cases) expect(await jpegFrame(reader(bytes).read, bytes.length), what).toEqual({ ok: false, problem });
  });

  it("stops after 8 reads: segments walked one by one are no picture", async () => {
    const bytes = jpeg(...Array.from({ length: 20 }, () => segment(0xe2, Array(2000).fill(0))), sof(0xc0, 10, 10));
    const r = reader(bytes);
    const frame = await jpegFrame(r.read, bytes.length);
    expect(frame.ok).toBe(false);
    expect(r.reads).toHaveLength(8);
  });

  it("real JPEGs from sharp: baseline, progressive, mozjpeg, with EXIF and an ICC profile", async () => {
    const base = sharp({ create: { width: 731, height: 419, channels: 3, background: "#336699" } });
    const outputs = [
      await base.clone().jpeg({ quality: 80 }).toBuffer(),
      await base.clone().jpeg({ progressive: true }).toBuffer(),
      await base.clone().jpeg({ mozjpeg: true }).toBuffer(),
      await base.clone().withMetadata({ orientation: 1 }).withIccProfile("srgb").jpeg().toBuffer(),
    ];
    for (const out of outputs) {
      const bytes = new Uint8Array(out);
      expect(await signatureProblem("image/jpeg", bytes.subarray(0, 1024), reader(bytes).read, bytes.length, { width: 731, height: 419 })).toEqual({ ok: true, width: 731, height: 419 });
      expect(await signatureProblem("image/jpeg", bytes.subarray(0, 1024), reader(bytes).read, bytes.length, { width: 732 })).toEqual({ ok: false, problem: "is 731×419 pixels, not the 732×? reported" });
    }
  });
});

describe("other content types", () => {
  it("PDF by %PDF- at the start, text by UTF-8 without NUL (a character cut by the range is fine), anything else by size", async () => {
    const enc = new TextEncoder();
    expect(isPdfHeader(enc.encode("%PDF-1.7\n"))).toBe(true);
    expect(isPdfHeader(enc.encode(" %PDF-1.7"))).toBe(false);
    expect(isUtf8Text(enc.encode("3f2a  scan.jpg\n"))).toBe(true);
    expect(isUtf8Text(enc.encode("é").subarray(0, 1))).toBe(true);
    expect(isUtf8Text(Uint8Array.from([0x61, 0, 0x62]))).toBe(false);
    expect(isUtf8Text(Uint8Array.from([0xff, 0xfe, 0x41]))).toBe(false);
    const none = reader(new Uint8Array(0)).read;
    expect(await signatureProblem("application/pdf; charset=binary", enc.encode("PK\u0003\u0004"), none, 4, {})).toEqual({ ok: false, problem: "does not start with %PDF-" });
    expect(await signatureProblem("text/plain; charset=utf-8", Uint8Array.from([0, 1]), none, 2, {})).toEqual({ ok: false, problem: "is not UTF-8 text" });
    expect(await signatureProblem("application/octet-stream", Uint8Array.from([0, 1]), none, 2, {})).toEqual({ ok: true });
  });
});
