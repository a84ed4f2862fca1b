// Hand-written encoders for the TIFF kinds no library here writes (SGILog, LZMA's .xz container,
// CCITT Group 3, the floating-point predictor, old-style JPEG), each from its specification,
// and the colour formulas the expected pixels are worked out with.
import { crc32 } from "node:zlib";
import type { Rgb } from "./tiff-corpus.ts";

// ---------------------------------------------------------------------------------------
// Expected colours, by the published formulas (not by the code under test).

/** sRGB's transfer function (IEC 61966-2-1) of a linear value 0–1, as an 8-bit level. */
export function srgbEncode(linear: number): number {
  const v = Math.min(1, Math.max(0, linear));
  return Math.round((v <= 0.0031308 ? 12.92 * v : 1.055 * v ** (1 / 2.4) - 0.055) * 255);
}

/** CIE XYZ (Y = 1 white) → 8-bit sRGB, with the D65 matrix of IEC 61966-2-1. */
export function xyzToSrgb(x: number, y: number, z: number): Rgb {
  return [
    srgbEncode(3.2406 * x - 1.5372 * y - 0.4986 * z),
    srgbEncode(-0.9689 * x + 1.8758 * y + 0.0415 * z),
    srgbEncode(0.0557 * x - 0.204 * y + 1.057 * z),
  ];
}

/** CIE L*a*b* (D65 white, as libvips' Lab) → 8-bit sRGB. */
export function labToSrgb(l: number, a: number, b: number): Rgb {
  const fy = (l + 16) / 116;
  const fx = fy + a / 500;
  const fz = fy - b / 200;
  const inv = (t: number) => (t ** 3 > 216 / 24389 ? t ** 3 : (116 * t - 16) / (24389 / 27));
  return xyzToSrgb(0.95047 * inv(fx), inv(fy), 1.08883 * inv(fz));
}

// ---------------------------------------------------------------------------------------
// SGILog (libtiff tif_luv.c; Greg Ward Larson, "The LogLuv Encoding for Full Gamut, High
// Dynamic Range Images"): 16-bit log luminance Le = floor(256·(log2 Y + 64)), chroma
// ue/ve = floor(410·u'/v'); each row run-length coded by byte plane, most significant first.

export const logL16 = (y: number) => (y <= 0 ? 0 : Math.floor(256 * (Math.log2(y) + 64)));
export const decodedY = (le: number) => 2 ** ((le + 0.5) / 256 - 64);

/** LogLuv32 of luminance Y and chromaticity (u', v'). */
export function logLuv32(y: number, u: number, v: number): number {
  return ((logL16(y) << 16) | (Math.floor(410 * u) << 8) | Math.floor(410 * v)) >>> 0;
}

/**
 * A LogLuv32 pixel as libvips shows it: XYZ from Y and the quantised u', v' (libtiff's
 * LogLuv32toXYZ), LogLuv's equal-energy white taken to D65 by scaling X and Z by D65's white
 * point (0.95047, 1.08883), then sRGB. (libvips 8.14's CLI shows the same within a level.)
 */
export function logLuvToSrgb(pixel: number): Rgb {
  const y = decodedY(pixel >>> 16);
  const u = (((pixel >>> 8) & 0xff) + 0.5) / 410;
  const v = ((pixel & 0xff) + 0.5) / 410;
  const d = 6 * u - 16 * v + 12;
  const cx = (9 * u) / d;
  const cy = (4 * v) / d;
  return xyzToSrgb((cx / cy) * y * 0.95047, y, ((1 - cx - cy) / cy) * y * 1.08883);
}

/** Illuminant E, LogLuv's neutral (libtiff's U_NEU, V_NEU). */
export const E_WHITE = { u: 4 / 19, v: 9 / 19 } as const;

/** One row of `bytes`-byte values, SGILog run-length coded with literal runs only (≤ 127 bytes each). */
export function sgiLogRow(values: number[], bytes: number): Buffer {
  const out: number[] = [];
  for (let shift = (bytes - 1) * 8; shift >= 0; shift -= 8) {
    const plane = values.map((v) => (v >>> shift) & 0xff);
    for (let i = 0; i < plane.length; i += 127) {
      const n = Math.min(127, plane.length - i);
      out.push(n, ...plane.slice(i, i + n));
    }
  }
  return Buffer.from(out);
}

// ---------------------------------------------------------------------------------------
// LZMA in TIFF is an .xz stream (libtiff tif_lzma.c: a Delta filter, then LZMA2). This one is
// built by hand from the .xz file format 1.2.1 spec: one block of LZMA2 *uncompressed* chunks
// (control byte 1, then 2), after a Delta filter of `delta` bytes when asked (as libtiff writes).

const varint = (n: number) => {
  const out: number[] = [];
  do {
    out.push((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n > 0);
  return out;
};
const crc = (b: Buffer) => {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(crc32(b) >>> 0);
  return out;
};
const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);

export function xzStored(plain: Buffer, options: { delta?: number } = {}): Buffer {
  const distance = options.delta;
  const data = distance ? Buffer.from(plain.map((v, i) => (v - (i >= distance ? plain[i - distance] : 0)) & 0xff)) : plain;
  const flags = Buffer.from([0, 0]); // check type None
  const streamHeader = Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]), flags, crc(flags)]);
  // Header size (12/4 − 1), filter count − 1, [Delta (ID 3), 1 property byte: distance − 1], LZMA2 (ID 0x21), dict 4 KiB; padded to 8.
  const headerBody = distance ? Buffer.from([2, 1, 3, 1, distance - 1, 0x21, 1, 0]) : Buffer.from([2, 0, 0x21, 1, 0, 0, 0, 0]);
  const blockHeader = Buffer.concat([headerBody, crc(headerBody)]);
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += 65536) {
    const part = data.subarray(i, i + 65536);
    chunks.push(Buffer.from([i === 0 ? 1 : 2, (part.length - 1) >> 8, (part.length - 1) & 0xff]), part);
  }
  chunks.push(Buffer.from([0]));
  const compressed = Buffer.concat(chunks);
  const block = Buffer.concat([blockHeader, compressed, pad4(compressed.length)]);
  const indexBody = Buffer.from([0, ...varint(1), ...varint(blockHeader.length + compressed.length), ...varint(data.length)]);
  const index = Buffer.concat([indexBody, pad4(indexBody.length)]);
  const indexWithCrc = Buffer.concat([index, crc(index)]);
  const footerBody = Buffer.alloc(6);
  footerBody.writeUInt32LE(indexWithCrc.length / 4 - 1, 0);
  flags.copy(footerBody, 4);
  const footer = Buffer.concat([crc(footerBody), footerBody, Buffer.from([0x59, 0x5a])]);
  return Buffer.concat([streamHeader, block, indexWithCrc, footer]);
}

// ---------------------------------------------------------------------------------------
// Predictors (TIFF 6.0 §14; Adobe Photoshop TIFF Technical Note 3 for floating point).

/** Horizontal differencing of 8-bit contiguous rows, in place. */
export function predict8(data: Buffer, width: number, samples: number): Buffer {
  const row = width * samples;
  for (let r = 0; r < data.length / row; r++) for (let i = row - 1; i >= samples; i--) data[r * row + i] = (data[r * row + i] - data[r * row + i - samples]) & 0xff;
  return data;
}

/** Floating-point predictor of little-endian 32-bit floats: bytes split into planes (most significant first), then differenced. */
export function predictFloat32(data: Buffer, width: number, samples: number): Buffer {
  const n = width * samples;
  const rowBytes = n * 4;
  const out = Buffer.alloc(data.length);
  for (let r = 0; r < data.length / rowBytes; r++) {
    const row = out.subarray(r * rowBytes, (r + 1) * rowBytes);
    for (let j = 0; j < n; j++) for (let k = 0; k < 4; k++) row[k * n + j] = data[r * rowBytes + j * 4 + (3 - k)];
    for (let i = rowBytes - 1; i >= samples; i--) row[i] = (row[i] - row[i - samples]) & 0xff;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// CCITT Group 3, one-dimensional (ITU-T T.4 §4.1): each row is an EOL then alternating white
// and black run codes, starting with white. Only the codes these rows need (T.4 tables 2 and 3).

const G3 = { eol: "000000000001", white0: "00110101", white64: "11011", black0: "0000110111", black64: "0000001111" };

/** `rows` rows of 64 white then 64 black pixels (128 wide), T.4 1-D coded, ending in RTC. */
export function g3HalfWhiteHalfBlack(rows: number): Buffer {
  const row = G3.white64 + G3.white0 + G3.black64 + G3.black0;
  const bits = (G3.eol + row).repeat(rows) + G3.eol.repeat(6);
  const out = Buffer.alloc(Math.ceil(bits.length / 8));
  for (let i = 0; i < bits.length; i++) if (bits[i] === "1") out[i >> 3] |= 0x80 >> (i & 7);
  return out;
}

// ---------------------------------------------------------------------------------------
// JPEG streams, for old-style JPEG (TIFF 6.0 §22): where the tables end and the scan starts.

export interface JpegParts {
  /** Quantisation tables (64 bytes each, in table-id order). */
  quant: Buffer[];
  /** Huffman tables as stored in JPEGDCTables/JPEGACTables: 16 counts, then the values. */
  dc: Buffer[];
  ac: Buffer[];
  /** The entropy-coded data after the SOS header, EOI excluded. */
  scan: Buffer;
  /** Byte offset of `scan` in the stream. */
  scanAt: number;
}

export function splitJpeg(jpeg: Buffer): JpegParts {
  const parts: JpegParts = { quant: [], dc: [], ac: [], scan: Buffer.alloc(0), scanAt: 0 };
  for (let i = 2; i < jpeg.length; ) {
    const marker = jpeg.readUInt16BE(i);
    const length = jpeg.readUInt16BE(i + 2);
    const body = jpeg.subarray(i + 4, i + 2 + length);
    if (marker === 0xffdb) for (let k = 0; k < body.length; k += 65) parts.quant[body[k] & 0x0f] = Buffer.from(body.subarray(k + 1, k + 65));
    if (marker === 0xffc4) {
      for (let k = 0; k < body.length; ) {
        const counts = body.subarray(k + 1, k + 17);
        const n = counts.reduce((a, b) => a + b, 0);
        (body[k] >> 4 ? parts.ac : parts.dc)[body[k] & 0x0f] = Buffer.from(body.subarray(k + 1, k + 17 + n));
        k += 17 + n;
      }
    }
    if (marker === 0xffda) {
      parts.scanAt = i + 2 + length;
      parts.scan = jpeg.subarray(parts.scanAt, jpeg.length - 2);
      return parts;
    }
    i += 2 + length;
  }
  throw new Error("splitJpeg: no scan");
}
