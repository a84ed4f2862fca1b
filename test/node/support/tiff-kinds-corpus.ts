// The kinds of issue 26 (what a reference decoder reads and the worker used to refuse) and of
// the README's "Supported TIFF kinds" table, each in a small file made for it. Expected pixels
// are worked out by hand from the documented rule (README), never by the code under test.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { deflateSync, zstdCompressSync } from "node:zlib";
import sharp from "sharp";
import { buildTiff, quadrants, quadrantSamples, BLUE, RED, WHITE, type IfdSpec, type KindCase, type Rgb } from "./tiff-corpus.ts";
import { E_WHITE, g3HalfWhiteHalfBlack, labToSrgb, logL16, logLuv32, logLuvToSrgb, predict8, predictFloat32, sgiLogRow, splitJpeg, srgbEncode, xzStored } from "./tiff-encoders.ts";

export interface DecoderCase extends KindCase {
  /** Notes the callback must carry for converted pages (page_notes). */
  notes?: { page: number; note: RegExp }[];
  /** Per-channel tolerance of the sampled colours (default 4 levels: flat patches at q95). */
  tolerance?: number;
}

const W = 64;
const H = 48;
const grey = (v: number): Rgb => [v, v, v];
/** Sample points at the centre of each of 8 vertical bands. */
const bands8 = (levels: number[]) => levels.map((v, k) => ({ x: (k + 0.5) / 8, y: 0.5, rgb: grey(v) }));
const halves = (left: Rgb, right: Rgb) => [
  { x: 0.25, y: 0.5, rgb: left },
  { x: 0.75, y: 0.5, rgb: right },
];

/** A w×h page of 8 vertical bands, band k holding `value(k)` in every sample (written by `put`). */
function bandsPixels(width: number, height: number, samples: number, bytes: number, put: (b: Buffer, at: number, k: number, s: number) => void): Buffer {
  const out = Buffer.alloc(width * height * samples * bytes);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) for (let s = 0; s < samples; s++) put(out, ((y * width + x) * samples + s) * bytes, Math.floor((x * 8) / width), s);
  return out;
}

/** Two halves, left `left[s]` and right `right[s]` per sample, `bytes` per sample written by `put`. */
function halvesPixels(width: number, height: number, left: number[], right: number[], bytes: number, put: (b: Buffer, v: number, at: number) => void): Buffer {
  const samples = left.length;
  const out = Buffer.alloc(width * height * samples * bytes);
  for (let i = 0; i < width * height; i++) for (let s = 0; s < samples; s++) put(out, (i % width < width / 2 ? left : right)[s], (i * samples + s) * bytes);
  return out;
}

/** The tiles of one plane of a w×h page, `tile`² each, padded with zeros; `sample(x, y)` is 1 byte per value × bytes. */
function planeTiles(width: number, height: number, tile: number, bytes: number, value: (x: number, y: number) => Buffer): Buffer[] {
  const tiles: Buffer[] = [];
  for (let ty = 0; ty < height; ty += tile) {
    for (let tx = 0; tx < width; tx += tile) {
      const b = Buffer.alloc(tile * tile * bytes);
      for (let y = 0; y < tile && ty + y < height; y++) for (let x = 0; x < tile && tx + x < width; x++) value(tx + x, ty + y).copy(b, (y * tile + x) * bytes);
      tiles.push(b);
    }
  }
  return tiles;
}

export async function generateDecoderCorpus(dir: string): Promise<Record<string, DecoderCase>> {
  await mkdir(dir, { recursive: true });
  const cases: DecoderCase[] = [];
  const add = async (c: Omit<DecoderCase, "path">, bytes: Buffer) => {
    const path = join(dir, `${c.name}.tif`);
    await writeFile(path, bytes);
    cases.push({ ...c, path });
  };
  const page = (samples: { x: number; y: number; rgb: Rgb }[], channels: 1 | 3 = 1, width = W, height = H) => ({ width, height, channels, samples });
  const rgb8 = await quadrants(W, H).raw().toBuffer();
  const upright = { width: W, height: H, channels: 3 as const, samples: quadrantSamples() };

  // --- Signed integers: as unsigned when none is negative; offset by 2^(n−1) when some are.
  {
    const s16 = (k: number) => k * 4096; // 0 … 28672 → k·16
    await add({ name: "int16-grey", pages: [page(bands8([0, 16, 32, 48, 64, 80, 96, 112]))] }, buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 16, sampleFormat: 2, photometric: 1, chunks: [bandsPixels(W, H, 1, 2, (b, at, k) => b.writeInt16LE(s16(k), at))] }]));
    const offsetNote = (bits: number, min: string) => [{ page: 1, note: new RegExp(`^has negative ${bits}-bit samples \\(down to ${min}\\): shown offset by`) }];
    const ramp = bands8([0, 32, 64, 96, 128, 160, 192, 224]);
    await add(
      { name: "int16-grey-negative", pages: [page(ramp)], notes: offsetNote(16, "-32,768") },
      buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 16, sampleFormat: 2, photometric: 1, chunks: [bandsPixels(W, H, 1, 2, (b, at, k) => b.writeInt16LE(-32768 + k * 8192, at))] }]),
    );
    await add(
      { name: "int8-grey-negative", pages: [page(ramp)], notes: offsetNote(8, "-128") },
      buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 8, sampleFormat: 2, photometric: 1, chunks: [bandsPixels(W, H, 1, 1, (b, at, k) => b.writeInt8(-128 + k * 32, at))] }]),
    );
    await add(
      { name: "int32-grey-negative", pages: [page(ramp)], notes: offsetNote(32, "-2,147,483,648") },
      buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 32, sampleFormat: 2, photometric: 1, chunks: [bandsPixels(W, H, 1, 4, (b, at, k) => b.writeInt32LE(-(2 ** 31) + k * 2 ** 29, at))] }]),
    );
    const left: Rgb = [100, 20, 20];
    const right: Rgb = [20, 20, 100];
    await add(
      { name: "int16-rgb", pages: [page(halves(left, right), 3)] },
      buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 16, sampleFormat: 2, photometric: 2, chunks: [halvesPixels(W, H, left.map((v) => v * 256), right.map((v) => v * 256), 2, (b, v, at) => b.writeInt16LE(v, at))] }]),
    );
    // Tiled, 32×32 tiles over 64×48 (the bottom row of tiles half empty), with negative samples.
    const tiles = planeTiles(W, H, 32, 2, (x) => {
      const b = Buffer.alloc(2);
      b.writeInt16LE(-32768 + Math.floor((x * 8) / W) * 8192);
      return b;
    });
    await add({ name: "int16-grey-tiled", pages: [page(ramp)], notes: offsetNote(16, "-32,768") }, buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 16, sampleFormat: 2, photometric: 1, tile: { width: 32, height: 32 }, chunks: tiles }]));
    // Two signed pages (as OME-TIFF stacks are): both convert, each by its own range.
    const p1: IfdSpec = { width: W, height: H, samplesPerPixel: 1, bitsPerSample: 16, sampleFormat: 2, photometric: 1, chunks: [bandsPixels(W, H, 1, 2, (b, at, k) => b.writeInt16LE(s16(k), at))] };
    const p2: IfdSpec = { ...p1, chunks: [bandsPixels(W, H, 1, 2, (b, at, k) => b.writeInt16LE(-32768 + k * 8192, at))] };
    await add({ name: "int16-multipage", pages: [page(bands8([0, 16, 32, 48, 64, 80, 96, 112])), page(ramp)], notes: [{ page: 2, note: /^has negative 16-bit samples/ }] }, buildTiff([p1, p2]));
  }

  // --- Floating point: 0–1 nominal (grey linear, RGB linear light → sRGB); else stretched min → max.
  {
    const levels = [0, 1, 2, 3, 4, 5, 6, 7].map((k) => Math.round((k * 255) / 7));
    const f32 = (scale: number) => bandsPixels(W, H, 1, 4, (b, at, k) => b.writeFloatLE((k / 7) * scale, at));
    await add({ name: "float32-grey", pages: [page(bands8(levels))] }, buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 32, sampleFormat: 3, photometric: 1, chunks: [f32(1)] }]));
    await add(
      { name: "float32-grey-0-1000", pages: [page(bands8(levels))], notes: [{ page: 1, note: /^has floating-point samples from 0 to 1,000, outside the nominal 0–1: stretched so 0 is black and 1,000 white$/ }] },
      buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 32, sampleFormat: 3, photometric: 1, chunks: [f32(1000)] }]),
    );
    const f64 = bandsPixels(W, H, 1, 8, (b, at, k) => b.writeDoubleLE(k / 7, at));
    await add({ name: "float64-grey", error: /^page 1 has 64-bit floating-point samples, which libvips cannot read \(it reads 32-bit floats\) and libtiff's RGBA reader refuses; export/ }, buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 64, sampleFormat: 3, photometric: 1, chunks: [f64] }]));
    const left = [0.5, 0.2, 0.05];
    const right = [0.05, 0.2, 0.5];
    const rgbf = halvesPixels(W, H, left, right, 4, (b, v, at) => b.writeFloatLE(v, at));
    const encode = (v: number[]): Rgb => [srgbEncode(v[0]), srgbEncode(v[1]), srgbEncode(v[2])];
    const expected = halves(encode(left), encode(right));
    await add({ name: "float32-rgb", pages: [page(expected, 3)] }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 32, sampleFormat: 3, photometric: 2, chunks: [rgbf] }]));
    // The same picture × 200 − 10 (from −0 to 90): stretched back to 0–1 from its own range, then as above.
    const rgbWide = halvesPixels(W, H, left.map((v) => v * 200 - 10), right.map((v) => v * 200 - 10), 4, (b, v, at) => b.writeFloatLE(v, at));
    await add(
      { name: "float32-rgb-wide", pages: [page(halves(encode(left.map((v) => (v - 0.05) / 0.45)), encode(right.map((v) => (v - 0.05) / 0.45))), 3)], notes: [{ page: 1, note: /^has floating-point samples from 0 to 90, outside the nominal 0–1: stretched so 0 is black and 90 white$/ }] },
      buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 32, sampleFormat: 3, photometric: 2, chunks: [rgbWide] }]),
    );
    // Predictor 3 with Deflate (libtiff decodes it) and with Zstandard (the worker's own decoder).
    const predicted = predictFloat32(rgbf, W, 3);
    const fp = (compression: number, chunk: Buffer): IfdSpec => ({ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 32, sampleFormat: 3, photometric: 2, compression, chunks: [chunk], tags: { 317: { type: 3, values: [3] } } });
    await add({ name: "float32-rgb-predictor3-deflate", pages: [page(expected, 3)] }, buildTiff([fp(8, deflateSync(predicted))]));
    await add({ name: "float32-rgb-predictor3-zstd", pages: [page(expected, 3)] }, buildTiff([fp(50000, zstdCompressSync(predicted))]));
    // Float CMYK ink 0–1 is the same picture as 8-bit CMYK of ink × 255 (cyan 0.5, yellow 0.2 → 128, 51).
    const cmykf = halvesPixels(W, H, [0.5, 0, 0.2, 0], [0, 0, 0, 0], 4, (b, v, at) => b.writeFloatLE(v, at));
    await add({ name: "float32-cmyk", pages: [page([], 3)] }, buildTiff([{ width: W, height: H, samplesPerPixel: 4, bitsPerSample: 32, sampleFormat: 3, photometric: 5, chunks: [cmykf] }]));
    await add({ name: "cmyk8-twin", pages: [page([], 3)] }, buildTiff([{ width: W, height: H, samplesPerPixel: 4, bitsPerSample: 8, photometric: 5, chunks: [halvesPixels(W, H, [128, 0, 51, 0], [0, 0, 0, 0], 1, (b, v, at) => b.writeUInt8(v, at))] }]));
    // NaN and infinite samples are left out of the range (and said); a page of nothing else has no range.
    const nonFinite = f32(1);
    nonFinite.writeFloatLE(Number.NaN, 0);
    nonFinite.writeFloatLE(Number.POSITIVE_INFINITY, 4);
    const nonFiniteNote = [{ page: 1, note: /^has 2 floating-point samples that are not a number \(NaN\) or infinite: left out of its range, NaN shown black, infinities clipped$/ }];
    await add({ name: "float32-nan", pages: [page(bands8(levels))], notes: nonFiniteNote }, buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 32, sampleFormat: 3, photometric: 1, chunks: [nonFinite] }]));
    const allNan = Buffer.alloc(W * H * 4);
    for (let i = 0; i < W * H; i++) allNan.writeFloatLE(Number.NaN, i * 4);
    await add({ name: "float32-all-nan", error: /^page 1 has no floating-point sample that is a finite number, so it has no range to show/ }, buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 32, sampleFormat: 3, photometric: 1, chunks: [allNan] }]));
  }

  // --- LogLuv (libtiff's SGILog codec → XYZ → sRGB, Y = 1 white) and LogL (Y → sRGB-encoded grey).
  {
    const ys = [0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 1, 4];
    // Greys (LogLuv's white is illuminant E), and one colour: D65's chromaticity, bluish in LogLuv's terms.
    const pixels = [...ys.slice(0, 7).map((y) => logLuv32(y, E_WHITE.u, E_WHITE.v)), logLuv32(0.2, 0.1978, 0.4683)];
    const rows = Buffer.concat(Array.from({ length: H }, () => sgiLogRow(Array.from({ length: W }, (_, x) => pixels[Math.floor((x * 8) / W)]), 4)));
    const expected = pixels.map((p, k) => ({ x: (k + 0.5) / 8, y: 0.5, rgb: logLuvToSrgb(p) }));
    await add({ name: "logluv32", pages: [page(expected, 3)] }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 16, sampleFormat: 2, photometric: 32845, compression: 34676, chunks: [rows] }]));
    const lrows = Buffer.concat(Array.from({ length: H }, () => sgiLogRow(Array.from({ length: W }, (_, x) => logL16(ys[Math.floor((x * 8) / W)])), 2)));
    await add({ name: "logl16", pages: [page(bands8(ys.map(srgbEncode)))] }, buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 16, sampleFormat: 2, photometric: 32844, compression: 34676, chunks: [lrows] }]));
  }

  // --- CIELab (8-bit: L·255/100, a/b signed; ICCLab: a/b + 128; 16-bit: L·65535/100, a/b × 256) → sRGB.
  {
    const left = [50, 40, -30];
    const right = [80, -20, 60];
    // 8-bit L is quantised: L 50 is stored as 128 (50.2), L 80 as 204 (80.0).
    const expected = halves(labToSrgb((128 * 100) / 255, 40, -30), labToSrgb((204 * 100) / 255, -20, 60));
    const lab8 = (offset: number) => halvesPixels(W, H, [128, left[1] + offset, left[2] + offset], [204, right[1] + offset, right[2] + offset], 1, (b, v, at) => b.writeUInt8(v & 0xff, at));
    await add({ name: "cielab8", pages: [page(expected, 3)] }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 8, chunks: [lab8(0)] }]));
    await add({ name: "icclab8", pages: [page(expected, 3)] }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 9, chunks: [lab8(128)] }]));
    const lab16 = halvesPixels(W, H, [128 * 257, left[1] * 256, left[2] * 256], [204 * 257, right[1] * 256, right[2] * 256], 2, (b, v, at) => (v < 0 ? b.writeInt16LE(v, at) : b.writeUInt16LE(v, at)));
    await add({ name: "cielab16", pages: [page(expected, 3)] }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 16, photometric: 8, chunks: [lab16] }]));
    await add({ name: "itulab", error: /^page 1 is ITULab \(PhotometricInterpretation 10\), which neither libvips nor libtiff reads/ }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 10, chunks: [lab8(0)] }]));
  }

  // --- Old-style JPEG (Compression 6): tiles that are whole JPEGs; strips of bare scan data with
  // the tables in JPEGQTables/DCTables/ACTables; one interchange stream holding the whole picture.
  {
    const tileJpegs = await Promise.all(
      [0, 1, 2, 3].map((i) => quadrants(W, H).extract({ left: (i % 2) * 32, top: Math.floor(i / 2) * 32, width: 32, height: i < 2 ? 32 : 16 }).resize(32, 32, { position: "top", fit: "contain", background: "#000" }).jpeg({ quality: 92 }).toBuffer()),
    );
    await add({ name: "ojpeg-tiled", pages: [upright], tolerance: 16 }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 6, compression: 6, tile: { width: 32, height: 32 }, interchangeFormat: true, chunks: tileJpegs }]));
    // Same tables in every strip: baseline, standard Huffman tables (no optimisation), one quality.
    const strips = await Promise.all([0, 1].map((i) => quadrants(W, H).extract({ left: 0, top: i * 24, width: W, height: 24 }).jpeg({ quality: 92, optimiseCoding: false }).toBuffer()));
    const parts = strips.map(splitJpeg);
    const tables = Buffer.concat([...parts[0].quant, ...parts[0].dc, ...parts[0].ac]);
    // Layout as buildTiff lays chunks from byte 8: the tables first, then each strip's scan data.
    const scans = parts.map((p) => p.scan);
    const at = (i: number) => 8 + [tables, ...scans].slice(0, i).reduce((n, b) => n + b.length + (b.length % 2), 0);
    let t = 8;
    const quantAt = parts[0].quant.map((q) => ((t += q.length), t - q.length));
    const dcAt = parts[0].dc.map((q) => ((t += q.length), t - q.length));
    const acAt = parts[0].ac.map((q) => ((t += q.length), t - q.length));
    const long = (values: number[]) => ({ type: 4, values });
    await add(
      { name: "ojpeg-strips-tables", pages: [upright], tolerance: 16 },
      buildTiff([{
        width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 6, compression: 6, chunks: [tables, ...scans],
        tags: { 273: long([at(1), at(2)]), 278: long([24]), 279: long(scans.map((s) => s.length)), 512: { type: 3, values: [1] }, 519: long(quantAt.slice(0, 2).concat(quantAt.slice(1, 2))), 520: long(dcAt.concat(dcAt.slice(1, 2))), 521: long(acAt.concat(acAt.slice(1, 2))), 530: { type: 3, values: [2, 2] } },
      }]),
    );
    const whole = await quadrants(W, H).jpeg({ quality: 92 }).toBuffer();
    const scanAt = splitJpeg(whole).scanAt;
    await add(
      { name: "ojpeg-interchange-whole", pages: [upright], tolerance: 16 },
      buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 6, compression: 6, chunks: [whole], tags: { 273: long([8 + scanAt]), 279: long([whole.length - scanAt]), 513: long([8]), 514: long([whole.length]) } }]),
    );
  }

  // --- Tiled with separate planes (8-bit none; 16-bit LZW with predictor, via sharp's own LZW tiles; Zstandard).
  {
    const sample = (x: number, y: number, s: number) => rgb8[(y * W + x) * 3 + s];
    const planes8 = [0, 1, 2].flatMap((s) => planeTiles(W, H, 32, 1, (x, y) => Buffer.from([sample(x, y, s)])));
    const spec = (bits: number, compression: number, chunks: Buffer[], tags?: IfdSpec["tags"]): IfdSpec => ({ width: W, height: H, samplesPerPixel: 3, bitsPerSample: bits, photometric: 2, planar: 2, compression, tile: { width: 32, height: 32 }, chunks, tags });
    await add({ name: "tiled-planar-8", pages: [upright] }, buildTiff([spec(8, 1, planes8)]));
    const lzwPlanes: Buffer[] = [];
    for (const s of [0, 1, 2]) {
      // A Uint16Array is 16-bit raw input to sharp.
      const plane = Uint16Array.from({ length: W * H }, (_, i) => rgb8[i * 3 + s] * 257);
      const tiff = await sharp(plane, { raw: { width: W, height: H, channels: 1 } }).toColourspace("grey16").tiff({ compression: "lzw", predictor: "horizontal", tile: true, tileWidth: 32, tileHeight: 32 }).toBuffer();
      lzwPlanes.push(...tileData(tiff));
    }
    await add({ name: "tiled-planar-16-lzw", pages: [upright] }, buildTiff([spec(16, 5, lzwPlanes, { 317: { type: 3, values: [2] } })]));
    await add({ name: "tiled-planar-8-zstd", pages: [upright] }, buildTiff([spec(8, 50000, planes8.map((b) => zstdCompressSync(b)))]));
  }

  // --- Zstandard and LZMA strips (horizontal predictor with Zstandard; LZMA in a hand-made .xz).
  await add({ name: "zstd-rgb", pages: [upright] }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 2, compression: 50000, chunks: [zstdCompressSync(predict8(Buffer.from(rgb8), W, 3))], tags: { 317: { type: 3, values: [2] } } }]));
  // As libtiff writes LZMA: a Delta filter (distance 1) before LZMA2.
  await add({ name: "lzma-rgb", pages: [upright] }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 2, compression: 34925, chunks: [xzStored(rgb8, { delta: 1 })] }]));

  // --- Alpha and a further extra sample: the alpha is used, the other dropped.
  {
    const px = halvesPixels(W, H, [200, 30, 30, 0, 255], [200, 30, 30, 255, 0], 1, (b, v, at) => b.writeUInt8(v, at));
    await add({ name: "rgba-plus-extra", pages: [page(halves(WHITE, RED), 3)] }, buildTiff([{ width: W, height: H, samplesPerPixel: 5, bitsPerSample: 8, photometric: 2, extraSamples: [2, 0], chunks: [px] }]));
  }

  // --- 32-bit samples with an alpha: libvips reads them with no defined alpha scale; refused, saying so.
  await add(
    { name: "uint32-rgba", error: /^page 1 has 32-bit samples with 1 extra sample\(s\), which libvips reads without a defined alpha scale; export/ },
    buildTiff([{ width: W, height: H, samplesPerPixel: 4, bitsPerSample: 32, photometric: 2, extraSamples: [2], chunks: [Buffer.alloc(W * H * 16)] }]),
  );

  // --- JPEG's limit: a 1×65,537 bilevel page cannot be one JPEG.
  await add(
    { name: "tall-65537", error: /^page 1 is 1×65,537 pixels, and a JPEG can be at most 65,535 pixels wide and high; crop or split the scan/ },
    buildTiff([{ width: 1, height: 65537, samplesPerPixel: 1, bitsPerSample: 1, photometric: 0, chunks: [Buffer.alloc(65537)] }]),
  );

  // --- A colour profile tag that holds no ICC profile: converted as sRGB, and said.
  await add(
    { name: "icc-not-a-profile", pages: [upright], notes: [{ page: 1, note: /^its embedded colour profile is not an ICC profile \(it has no ICC signature\): ignored, colours read as sRGB$/ }] },
    buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 2, chunks: [rgb8], tags: { 34675: { type: 7, values: [...Buffer.alloc(200, 0x41)] } } }]),
  );

  // --- One reason for many pages is said once, with the pages.
  {
    const itu: IfdSpec = { width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 10, chunks: [Buffer.alloc(W * H * 3)] };
    await add({ name: "fifteen-itulab-pages", error: /^no page could be converted: pages 1–15 \(15\): is ITULab \(PhotometricInterpretation 10\), which neither libvips nor libtiff reads; export the scan as RGB or CIELab$/ }, buildTiff(Array<IfdSpec>(15).fill(itu)));
  }

  // --- README rows that had no file (issue 28): compressions, layouts, palette, low bit depths.
  {
    for (const compression of ["packbits", "jpeg"] as const) await add({ name: `rgb-${compression}`, pages: [upright], tolerance: compression === "jpeg" ? 16 : 4 }, await quadrants(W, H).tiff({ compression }).toBuffer());
    await add({ name: "rgb-tiled-lzw", pages: [upright] }, await quadrants(W, H).tiff({ compression: "lzw", tile: true, tileWidth: 32, tileHeight: 32 }).toBuffer());
    const bilevel = await sharp(Buffer.from(Array.from({ length: 128 * 16 }, (_, i) => (i % 128 < 64 ? 255 : 0))), { raw: { width: 128, height: 16, channels: 1 } }).toColourspace("b-w").tiff({ compression: "ccittfax4", bitdepth: 1 }).toBuffer();
    await add({ name: "bilevel-g4", pages: [page(halves(WHITE, grey(0)), 1, 128, 16)] }, bilevel);
    await add({ name: "bilevel-g3", pages: [page(halves(WHITE, grey(0)), 1, 128, 16)] }, buildTiff([{ width: 128, height: 16, samplesPerPixel: 1, bitsPerSample: 1, photometric: 0, compression: 3, chunks: [g3HalfWhiteHalfBlack(16)], tags: { 292: { type: 4, values: [0] } } }]));
    for (const bits of [2, 4] as const) {
      const max = 2 ** bits - 1;
      const perByte = 8 / bits;
      const row = Buffer.alloc((W * bits) / 8);
      // Band k holds floor(k·2^bits/8): 2-bit 0,0,1,1,…; 4-bit 0,2,4,…,14 — shown as value·255/max.
      const value = (k: number) => Math.floor((k * (max + 1)) / 8);
      for (let x = 0; x < W; x++) row[Math.floor(x / perByte)] |= value(Math.floor((x * 8) / W)) << ((perByte - 1 - (x % perByte)) * bits);
      const levels = Array.from({ length: 8 }, (_, k) => Math.round((value(k) * 255) / max));
      await add({ name: `grey${bits}`, pages: [page(bands8(levels))] }, buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: bits, photometric: 1, chunks: [Buffer.concat(Array<Buffer>(H).fill(row))] }]));
    }
    for (const bits of [8, 4] as const) {
      // Palette: index k of 4 is the k-th quadrant colour (ColorMap holds 16-bit R…, G…, B… tables).
      const colours = [RED, [30, 160, 60], BLUE, [230, 200, 40]] as const;
      const entries = 2 ** bits;
      const map = [0, 1, 2].flatMap((c) => Array.from({ length: entries }, (_, i) => (colours[i]?.[c] ?? 0) * 257));
      const index = (x: number, y: number) => (y < H / 2 ? 0 : 2) + (x < W / 2 ? 0 : 1);
      const data = Buffer.alloc((W * H * bits) / 8);
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          if (bits === 8) data[y * W + x] = index(x, y);
          else data[(y * W + x) >> 1] |= index(x, y) << (x % 2 ? 0 : 4);
        }
      }
      await add({ name: `palette${bits}`, pages: [upright] }, buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: bits, photometric: 3, chunks: [data], tags: { 320: { type: 3, values: map } } }]));
    }
    for (const [name, compression] of [["lerc", 34887], ["jpeg2000", 34712], ["jpegxl", 50002]] as const) {
      const label = { lerc: "LERC", jpeg2000: "JPEG 2000", jpegxl: "JPEG XL" }[name];
      await add({ name, error: new RegExp(`^page 1 uses ${label} compression \\(Compression ${compression}\\), which neither libvips nor libtiff as built here`) }, buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 2, compression, chunks: [Buffer.alloc(64)] }]));
    }
    const rgb = { width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 2, chunks: [rgb8] };
    await add({ name: "samples-per-pixel-0", error: /^page 1 is corrupt: SamplesPerPixel is 0$/ }, buildTiff([{ ...rgb, tags: { 277: { type: 3, values: [0] } } }]));
    await add({ name: "bits-per-sample-0", error: /^page 1 is corrupt: BitsPerSample is 0$/ }, buildTiff([{ ...rgb, tags: { 258: { type: 3, values: [0, 0, 0] } } }]));
    await add({ name: "bits-per-sample-65", error: /^page 1 is corrupt: BitsPerSample is 65$/ }, buildTiff([{ ...rgb, tags: { 258: { type: 3, values: [65, 65, 65] } } }]));
    await add({ name: "pdf-named-tif", error: /^input is not a TIFF: it looks like a PDF document$/ }, Buffer.from("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "latin1"));
  }
  return Object.fromEntries(cases.map((c) => [c.name, c]));
}

/** The tile data of a single-page little-endian TIFF as sharp writes it, in tile order. */
function tileData(tiff: Buffer): Buffer[] {
  const ifd = tiff.readUInt32LE(4);
  const n = tiff.readUInt16LE(ifd);
  const values = (tag: number) => {
    for (let i = 0; i < n; i++) {
      const at = ifd + 2 + i * 12;
      if (tiff.readUInt16LE(at) !== tag) continue;
      const width = tiff.readUInt16LE(at + 2) === 3 ? 2 : 4; // SHORT or LONG
      const count = tiff.readUInt32LE(at + 4);
      const base = count * width > 4 ? tiff.readUInt32LE(at + 8) : at + 8;
      return Array.from({ length: count }, (_, k) => (width === 2 ? tiff.readUInt16LE(base + k * 2) : tiff.readUInt32LE(base + k * 4)));
    }
    throw new Error(`tileData: tag ${tag} missing`);
  };
  const offsets = values(324);
  const counts = values(325);
  return offsets.map((o, i) => tiff.subarray(o, o + counts[i]));
}
