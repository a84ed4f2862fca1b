// A corpus of archival-style TIFFs generated with sharp at test time, so no binaries are
// committed. Each case says what it is and what a correct JPEG of it looks like.
import { mkdir, stat, writeFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import sharp, { type Sharp } from "sharp";
import { xzStored } from "./tiff-encoders.ts";

export type Rgb = readonly [number, number, number];

/** What a correct conversion of a corpus file looks like, page by page. */
export interface ExpectedPage {
  width: number;
  height: number;
  /** Points (fractions of width/height) and the colour expected there, ± tolerance. */
  samples: { x: number; y: number; rgb: Rgb }[];
  /** Bands of the JPEG: 1 for greyscale input (JPEG_COLOUR=auto), 3 (sRGB) otherwise. */
  channels?: 1 | 3;
}

export interface CorpusCase {
  name: string;
  path: string;
  /** Undefined when conversion must fail; then `error` is a pattern the reason must match. */
  pages?: ExpectedPage[];
  error?: RegExp;
}

export const RED: Rgb = [200, 30, 30];
export const GREEN: Rgb = [30, 160, 60];
export const BLUE: Rgb = [30, 60, 200];
export const YELLOW: Rgb = [230, 200, 40];
export const WHITE: Rgb = [255, 255, 255];

/** A w×h RGB image in four coloured quadrants: red | green over blue | yellow. */
export function quadrants(width: number, height: number, colours: readonly Rgb[] = [RED, GREEN, BLUE, YELLOW]): Sharp {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const q = (y < height / 2 ? 0 : 2) + (x < width / 2 ? 0 : 1);
      raw.set(colours[q], (y * width + x) * 3);
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } });
}

/** Sample points at the centre of each quadrant, for an upright image. */
export function quadrantSamples(colours: readonly Rgb[] = [RED, GREEN, BLUE, YELLOW]): ExpectedPage["samples"] {
  return [
    { x: 0.25, y: 0.25, rgb: colours[0] },
    { x: 0.75, y: 0.25, rgb: colours[1] },
    { x: 0.25, y: 0.75, rgb: colours[2] },
    { x: 0.75, y: 0.75, rgb: colours[3] },
  ];
}

const solid = (width: number, height: number, rgb: Rgb) =>
  sharp({ create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });

// ---------------------------------------------------------------------------------------
// Multi-page TIFF assembly: sharp writes one page per file (all pages the same size), so
// pages of different sizes — a thumbnail before the scan — are joined here at the IFD level.

const TYPE_SIZE: Record<number, number> = { 1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4 };
/** Tags whose values are file offsets and must move with the data they point to. */
const OFFSET_TAGS = new Set([273, 288, 324, 330, 513, 34665, 34853]);
const NEW_SUBFILE_TYPE = 254;

interface Entry {
  tag: number;
  type: number;
  count: number;
  /** The 4 raw value/offset bytes as stored. */
  raw: Buffer;
}

export interface PageSpec {
  /** A single-page, little-endian classic TIFF as sharp writes it. */
  tiff: Buffer;
  /** Sets NewSubfileType (254): 1 marks a reduced-resolution image such as a thumbnail. */
  newSubfileType?: number;
}

/** Joins single-page TIFFs into one multi-page TIFF, in order. */
export function joinTiffPages(pages: PageSpec[]): Buffer {
  const chunks: Buffer[] = [];
  let length = 8;
  const ifdOffsets: number[] = [];
  const rebuilt: { delta: number; entries: Entry[] }[] = [];
  for (const page of pages) {
    const buf = page.tiff;
    if (buf.toString("latin1", 0, 2) !== "II" || buf.readUInt16LE(2) !== 42) {
      throw new Error("joinTiffPages expects little-endian classic TIFFs");
    }
    const delta = length;
    chunks.push(buf);
    length += buf.length + (buf.length % 2);
    if (buf.length % 2) chunks.push(Buffer.alloc(1));
    const ifd = buf.readUInt32LE(4);
    const n = buf.readUInt16LE(ifd);
    const entries: Entry[] = [];
    for (let i = 0; i < n; i++) {
      const at = ifd + 2 + i * 12;
      entries.push({
        tag: buf.readUInt16LE(at),
        type: buf.readUInt16LE(at + 2),
        count: buf.readUInt32LE(at + 4),
        raw: Buffer.from(buf.subarray(at + 8, at + 12)),
      });
    }
    if (page.newSubfileType !== undefined) {
      const raw = Buffer.alloc(4);
      raw.writeUInt32LE(page.newSubfileType);
      const without = entries.filter((e) => e.tag !== NEW_SUBFILE_TYPE);
      without.push({ tag: NEW_SUBFILE_TYPE, type: 4, count: 1, raw });
      without.sort((a, b) => a.tag - b.tag);
      entries.splice(0, entries.length, ...without);
    }
    rebuilt.push({ delta, entries });
  }
  // Relocate every offset by where its page's bytes now start (the original 8-byte header
  // of each page is kept in place as harmless padding, so the arithmetic is one addition).
  const body = Buffer.concat(chunks);
  const out = Buffer.alloc(8 + body.length);
  out.write("II", 0, "latin1");
  out.writeUInt16LE(42, 2);
  body.copy(out, 8);
  const ifdBlocks: Buffer[] = [];
  let ifdAt = out.length;
  for (const { delta, entries } of rebuilt) {
    for (const e of entries) {
      const size = (TYPE_SIZE[e.type] ?? 1) * e.count;
      const outOfLine = size > 4;
      if (outOfLine) e.raw.writeUInt32LE(e.raw.readUInt32LE(0) + delta);
      if (OFFSET_TAGS.has(e.tag)) {
        const width = TYPE_SIZE[e.type];
        const base = outOfLine ? e.raw.readUInt32LE(0) : -1;
        for (let i = 0; i < e.count; i++) {
          if (outOfLine) {
            const at = base + i * width;
            if (width === 2) out.writeUInt16LE(out.readUInt16LE(at) + delta, at);
            else out.writeUInt32LE(out.readUInt32LE(at) + delta, at);
          } else if (width === 2) e.raw.writeUInt16LE(e.raw.readUInt16LE(i * 2) + delta, i * 2);
          else e.raw.writeUInt32LE(e.raw.readUInt32LE(0) + delta);
        }
      }
    }
    ifdOffsets.push(ifdAt);
    const block = Buffer.alloc(2 + entries.length * 12 + 4);
    block.writeUInt16LE(entries.length, 0);
    entries.forEach((e, i) => {
      const at = 2 + i * 12;
      block.writeUInt16LE(e.tag, at);
      block.writeUInt16LE(e.type, at + 2);
      block.writeUInt32LE(e.count, at + 4);
      e.raw.copy(block, at + 8);
    });
    ifdBlocks.push(block);
    ifdAt += block.length;
  }
  ifdBlocks.forEach((block, i) => block.writeUInt32LE(ifdOffsets[i + 1] ?? 0, block.length - 4));
  out.writeUInt32LE(ifdOffsets[0], 4);
  return Buffer.concat([out, ...ifdBlocks]);
}

// ---------------------------------------------------------------------------------------

export interface CorpusOptions {
  /** Also generate the 50+ megapixel scan (a few seconds, ~30 MB on disk). */
  large?: boolean;
}

export const LARGE_SCAN = { width: 8700, height: 5800 } as const; // 50.46 MP
/** Red grows left→right, green top→bottom, blue ≈ 130 with noise. */
export const LARGE_SCAN_SAMPLES: ExpectedPage["samples"] = [
  { x: 0.75, y: 0.25, rgb: [191, 64, 130] },
  { x: 0.25, y: 0.75, rgb: [64, 191, 130] },
  { x: 0.5, y: 0.5, rgb: [128, 128, 130] },
];

/**
 * Writes the corpus into `dir` and returns its cases by name. Small images (≤ 800 px) keep
 * the suite fast on shared CPUs; only `large-scan` is big.
 */
export async function generateTiffCorpus(dir: string, options: CorpusOptions = {}): Promise<Record<string, CorpusCase>> {
  await mkdir(dir, { recursive: true });
  const cases: CorpusCase[] = [];
  const file = (name: string, ext = "tif") => join(dir, `${name}.${ext}`);
  const W = 640;
  const H = 480;
  const upright = (width = W, height = H): ExpectedPage => ({ width, height, samples: quadrantSamples() });

  await quadrants(W, H).tiff({ compression: "none" }).toFile(file("rgb8"));
  cases.push({ name: "rgb8", path: file("rgb8"), pages: [upright()] });

  await quadrants(W, H).tiff({ compression: "lzw", predictor: "horizontal" }).toFile(file("rgb8-lzw"));
  cases.push({ name: "rgb8-lzw", path: file("rgb8-lzw"), pages: [upright()] });

  await quadrants(W, H).tiff({ compression: "deflate", predictor: "horizontal" }).toFile(file("rgb8-deflate"));
  cases.push({ name: "rgb8-deflate", path: file("rgb8-deflate"), pages: [upright()] });

  await quadrants(W, H).toColourspace("rgb16").tiff({ compression: "lzw" }).toFile(file("rgb16"));
  cases.push({ name: "rgb16", path: file("rgb16"), pages: [upright()] });

  // 16-bit greyscale is where naive casts go all black: a mid-grey must stay mid-grey.
  await solid(W, H, [128, 128, 128]).toColourspace("grey16").tiff({ compression: "deflate" }).toFile(file("grey16"));
  cases.push({ name: "grey16", path: file("grey16"), pages: [{ width: W, height: H, channels: 1, samples: [{ x: 0.5, y: 0.5, rgb: [128, 128, 128] }] }] });

  await quadrants(W, H).toColourspace("cmyk").tiff({ compression: "lzw" }).toFile(file("cmyk"));
  cases.push({ name: "cmyk", path: file("cmyk"), pages: [upright()] });

  await quadrants(W, H).toColourspace("cmyk").withIccProfile("cmyk").tiff({ compression: "lzw" }).toFile(file("cmyk-icc"));
  cases.push({ name: "cmyk-icc", path: file("cmyk-icc"), pages: [upright()] });

  // An RGB scan tagged with a wide-gamut profile: the output must be converted to sRGB.
  await solid(W, H, [200, 30, 30]).withIccProfile("p3").tiff({ compression: "lzw" }).toFile(file("rgb-p3-icc"));
  cases.push({ name: "rgb-p3-icc", path: file("rgb-p3-icc"), pages: [{ width: W, height: H, samples: [{ x: 0.5, y: 0.5, rgb: [200, 30, 30] }] }] });

  // Alpha: left half opaque red, right half fully transparent → white, never black.
  {
    const raw = Buffer.alloc(W * H * 4);
    for (let i = 0; i < W * H; i++) if (i % W < W / 2) raw.set([200, 30, 30, 255], i * 4);
    await sharp(raw, { raw: { width: W, height: H, channels: 4 } }).tiff({ compression: "lzw" }).toFile(file("rgba"));
    cases.push({
      name: "rgba",
      path: file("rgba"),
      pages: [{ width: W, height: H, samples: [{ x: 0.25, y: 0.5, rgb: RED }, { x: 0.75, y: 0.5, rgb: WHITE }] }],
    });
  }

  // Orientation 6 (rotate 90° clockwise to display): stored W×H, shown H×W, red top-right.
  await quadrants(W, H).withMetadata({ orientation: 6 }).tiff({ compression: "lzw" }).toFile(file("orientation-6"));
  cases.push({
    name: "orientation-6",
    path: file("orientation-6"),
    pages: [
      {
        width: H,
        height: W,
        // Stored red|green over blue|yellow, turned clockwise: blue|red over yellow|green.
        samples: [
          { x: 0.25, y: 0.25, rgb: BLUE },
          { x: 0.75, y: 0.25, rgb: RED },
          { x: 0.25, y: 0.75, rgb: YELLOW },
          { x: 0.75, y: 0.75, rgb: GREEN },
        ],
      },
    ],
  });

  // Multi-page: a flagged 160×120 thumbnail first, then two full-resolution pages.
  {
    const thumb = await quadrants(160, 120, [WHITE, WHITE, WHITE, WHITE]).tiff().toBuffer();
    const page1 = await quadrants(W, H).tiff({ compression: "lzw" }).toBuffer();
    const page2Colours = [BLUE, YELLOW, RED, GREEN] as const;
    const page2 = await quadrants(W, H, page2Colours).tiff({ compression: "deflate" }).toBuffer();
    await writeFile(
      file("multipage-thumb-first"),
      joinTiffPages([{ tiff: thumb, newSubfileType: 1 }, { tiff: page1 }, { tiff: page2, newSubfileType: 2 }]),
    );
    cases.push({
      name: "multipage-thumb-first",
      path: file("multipage-thumb-first"),
      pages: [upright(), { width: W, height: H, samples: quadrantSamples(page2Colours) }],
    });
    // The same without the flag, as some scanners write it: found by size instead.
    await writeFile(file("multipage-thumb-unflagged"), joinTiffPages([{ tiff: thumb }, { tiff: page1 }]));
    cases.push({ name: "multipage-thumb-unflagged", path: file("multipage-thumb-unflagged"), pages: [upright()] });
  }

  // Failures.
  {
    const whole = await readFile(file("rgb8-lzw"));
    await writeFile(file("truncated"), whole.subarray(0, Math.floor(whole.length * 0.5)));
    cases.push({ name: "truncated", path: file("truncated"), error: /truncated|corrupt|beyond the end|unreadable/i });
    // Image data cut short with the directory intact: the decoder, not the parser, must notice.
    const uncompressed = await readFile(file("rgb8"));
    await writeFile(file("truncated-data"), truncateImageData(uncompressed));
    cases.push({ name: "truncated-data", path: file("truncated-data"), error: /truncated|corrupt|unreadable|read error/i });
  }
  await writeFile(file("zero-byte"), Buffer.alloc(0));
  cases.push({ name: "zero-byte", path: file("zero-byte"), error: /empty \(0 bytes\)/ });

  await quadrants(64, 48).png().toFile(file("png-named-tif"));
  cases.push({ name: "png-named-tif", path: file("png-named-tif"), error: /not a TIFF.*PNG/ });

  await writeFile(file("garbage"), Buffer.from("II*\0" + "\xff".repeat(400), "latin1"));
  cases.push({ name: "garbage", path: file("garbage"), error: /corrupt|directory|unreadable/i });

  if (options.large) {
    const path = file("large-scan");
    await generateLargeScan(path);
    cases.push({
      name: "large-scan",
      path,
      pages: [{ width: LARGE_SCAN.width, height: LARGE_SCAN.height, samples: LARGE_SCAN_SAMPLES }],
    });
  }
  return Object.fromEntries(cases.map((c) => [c.name, c]));
}

/**
 * A 50.5 MP LZW scan: a colour ramp with noise, upscaled from a small seed, so it
 * compresses like a real scan (tens of MB) and generates in a couple of seconds.
 */
export async function generateLargeScan(path: string, size: { width: number; height: number } = LARGE_SCAN): Promise<void> {
  const sw = Math.ceil(size.width / 10);
  const sh = Math.ceil(size.height / 10);
  const raw = Buffer.alloc(sw * sh * 3);
  let seed = 42;
  const noise = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 40);
  for (let y = 0; y < sh; y++) {
    for (let x = 0; x < sw; x++) {
      raw.set([Math.floor((x * 255) / sw), Math.floor((y * 255) / sh), 110 + noise()], (y * sw + x) * 3);
    }
  }
  await sharp(raw, { raw: { width: sw, height: sh, channels: 3 } })
    .resize(size.width, size.height, { kernel: "cubic" })
    .tiff({ compression: "lzw", predictor: "horizontal" })
    .toFile(path);
}

export async function fileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}

/**
 * Cuts the image data of a single-page, uncompressed, little-endian TIFF in half while
 * keeping its directory readable (moved to the front), like an upload that stopped early.
 */
export function truncateImageData(tiff: Buffer): Buffer {
  const ifd = tiff.readUInt32LE(4);
  const n = tiff.readUInt16LE(ifd);
  const entry = (tag: number) => {
    for (let i = 0; i < n; i++) if (tiff.readUInt16LE(ifd + 2 + i * 12) === tag) return ifd + 2 + i * 12;
    throw new Error(`truncateImageData: tag ${tag} not found`);
  };
  const values = (at: number): number[] => {
    const type = tiff.readUInt16LE(at + 2);
    const count = tiff.readUInt32LE(at + 4);
    const width = type === 3 ? 2 : 4;
    const base = count * width > 4 ? tiff.readUInt32LE(at + 8) : at + 8;
    return Array.from({ length: count }, (_, i) => (width === 2 ? tiff.readUInt16LE(base + i * 2) : tiff.readUInt32LE(base + i * 4)));
  };
  const offsets = values(entry(273));
  const counts = values(entry(279));
  const dataEnd = Math.max(...offsets.map((o, i) => o + counts[i]));
  const tail = tiff.subarray(dataEnd); // the directory and its out-of-line values
  const data = tiff.subarray(8, 8 + Math.floor((dataEnd - 8) / 2));
  const out = Buffer.concat([tiff.subarray(0, 8), tail, data]);
  const toFront = 8 - dataEnd; // where the tail moved by
  const dataShift = tail.length; // where the data moved by
  const newIfd = ifd + toFront;
  out.writeUInt32LE(newIfd, 4);
  for (let i = 0; i < n; i++) {
    const at = newIfd + 2 + i * 12;
    const type = out.readUInt16LE(at + 2);
    const count = out.readUInt32LE(at + 4);
    const width = TYPE_SIZE[type] ?? 1;
    const outOfLine = width * count > 4;
    if (outOfLine) out.writeUInt32LE(out.readUInt32LE(at + 8) + toFront, at + 8);
    if (out.readUInt16LE(at) !== 273) continue;
    const base = outOfLine ? out.readUInt32LE(at + 8) : at + 8;
    for (let k = 0; k < count; k++) {
      if (width === 2) out.writeUInt16LE(out.readUInt16LE(base + k * 2) + dataShift, base + k * 2);
      else out.writeUInt32LE(out.readUInt32LE(base + k * 4) + dataShift, base + k * 4);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Hand-written TIFFs: the kinds sharp cannot write (32-bit unsigned, unspecified extra
// samples, CIELab, LogLuv, odd bit depths, old-style JPEG, directory loops), byte by byte.

/** One tag value: TIFF type (3 SHORT, 4 LONG, 16 LONG8…) and its values. */
export interface TagValue {
  type: number;
  values: (number | bigint)[];
}

export interface IfdSpec {
  width: number;
  height: number;
  samplesPerPixel: number;
  bitsPerSample: number;
  photometric: number;
  /** 1 unsigned (default), 2 signed, 3 float. */
  sampleFormat?: number;
  compression?: number;
  /** 1 contiguous (default), 2 planar: then `chunks` holds one strip per sample. */
  planar?: 1 | 2;
  extraSamples?: number[];
  /** Strip (or tile) data, written as given: one uncompressed strip of the whole image by default. */
  chunks: Buffer[];
  /** Write `chunks` as tiles of this size instead of strips. */
  tile?: { width: number; height: number };
  /** Point JPEGInterchangeFormat (513/514) at the first chunk (old-style JPEG). */
  interchangeFormat?: boolean;
  /** Tags added or overriding the ones above. */
  tags?: Record<number, TagValue>;
}

/**
 * A classic little-endian TIFF of the given directories, each followed by its data. With
 * `loopTo`, the last directory's next-IFD pointer goes back to directory `loopTo` (0-based).
 */
export function buildTiff(ifds: IfdSpec[], options: { loopTo?: number } = {}): Buffer {
  const parts: Buffer[] = [];
  let length = 8;
  const push = (b: Buffer) => {
    const at = length;
    parts.push(b);
    length += b.length;
    if (length % 2) {
      parts.push(Buffer.alloc(1));
      length++;
    }
    return at;
  };
  const ifdAt: number[] = [];
  const nextSlot: number[] = [];
  for (const spec of ifds) {
    const chunkAt = spec.chunks.map(push);
    const tags = new Map<number, TagValue>();
    const short = (v: number | number[]) => ({ type: 3, values: Array.isArray(v) ? v : [v] });
    const long = (v: number[]) => ({ type: 4, values: v });
    tags.set(256, long([spec.width]));
    tags.set(257, long([spec.height]));
    tags.set(258, short(Array(spec.samplesPerPixel).fill(spec.bitsPerSample) as number[]));
    tags.set(259, short(spec.compression ?? 1));
    tags.set(262, short(spec.photometric));
    tags.set(277, short(spec.samplesPerPixel));
    tags.set(284, short(spec.planar ?? 1));
    tags.set(339, short(Array(spec.samplesPerPixel).fill(spec.sampleFormat ?? 1) as number[]));
    if (spec.extraSamples) tags.set(338, short(spec.extraSamples));
    if (spec.tile) {
      tags.set(322, long([spec.tile.width]));
      tags.set(323, long([spec.tile.height]));
      tags.set(324, long(chunkAt));
      tags.set(325, long(spec.chunks.map((c) => c.length)));
    } else {
      tags.set(273, long(chunkAt));
      tags.set(278, long([spec.planar === 2 ? spec.height : Math.ceil(spec.height / Math.max(1, spec.chunks.length))]));
      tags.set(279, long(spec.chunks.map((c) => c.length)));
    }
    if (spec.interchangeFormat) {
      tags.set(513, long([chunkAt[0]]));
      tags.set(514, long([spec.chunks[0].length]));
    }
    for (const [tag, value] of Object.entries(spec.tags ?? {})) tags.set(Number(tag), value);
    const entries = [...tags.entries()].sort((a, b) => a[0] - b[0]);
    // Out-of-line values first, then the directory that points at them.
    const raw = entries.map(([tag, { type, values }]) => {
      const width = TYPE_SIZE[type] ?? (type === 16 ? 8 : 1);
      const bytes = Buffer.alloc(Math.max(4, width * values.length));
      values.forEach((v, i) => {
        if (width === 1) bytes.writeUInt8(Number(v), i);
        else if (width === 2) bytes.writeUInt16LE(Number(v), i * 2);
        else if (width === 4) bytes.writeUInt32LE(Number(v), i * 4);
        else bytes.writeBigUInt64LE(BigInt(v), i * 8);
      });
      const inline = width * values.length <= 4;
      return { tag, type, count: values.length, inline, bytes, at: inline ? 0 : push(bytes) };
    });
    const block = Buffer.alloc(2 + raw.length * 12 + 4);
    block.writeUInt16LE(raw.length, 0);
    raw.forEach((e, i) => {
      const at = 2 + i * 12;
      block.writeUInt16LE(e.tag, at);
      block.writeUInt16LE(e.type, at + 2);
      block.writeUInt32LE(e.count, at + 4);
      if (e.inline) e.bytes.copy(block, at + 8, 0, 4);
      else block.writeUInt32LE(e.at, at + 8);
    });
    const at = push(block);
    ifdAt.push(at);
    nextSlot.push(at + block.length - 4);
  }
  const out = Buffer.concat([Buffer.alloc(8), ...parts]);
  out.write("II", 0, "latin1");
  out.writeUInt16LE(42, 2);
  out.writeUInt32LE(ifdAt[0], 4);
  ifdAt.forEach((_, i) => {
    const next = i + 1 < ifdAt.length ? ifdAt[i + 1] : options.loopTo !== undefined ? ifdAt[options.loopTo] : 0;
    out.writeUInt32LE(next, nextSlot[i]);
  });
  return out;
}

/** A w×h 8-bit greyscale (or `channels`-band) ramp, left → right from 0 to 255·(w-1)/w. */
export function rampPixels(width: number, height: number, bytesPerSample: 1 | 2 | 4, channels = 1, scale = 1): Buffer {
  const out = Buffer.alloc(width * height * channels * bytesPerSample);
  let at = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v8 = Math.floor((x * 256) / width);
      for (let c = 0; c < channels; c++) {
        const v = v8 * scale;
        if (bytesPerSample === 1) out.writeUInt8(v, at);
        else if (bytesPerSample === 2) out.writeUInt16LE(v, at);
        else out.writeUInt32LE(v, at);
        at += bytesPerSample;
      }
    }
  }
  return out;
}

/** A case of the real-world kinds corpus (issue 15): what must happen to it, page by page. */
export interface KindCase {
  name: string;
  path: string;
  /** Extra machine env for this case (JPEG_COLOUR, JPEG_CHROMA…). */
  env?: Record<string, string>;
  /** Converted pages, each with its expected JPEG band count. */
  pages?: (ExpectedPage & { channels: 1 | 3 })[];
  /** Pages that must be listed in pages_skipped, with their reason. */
  skipped?: { page: number; reason: RegExp }[];
  /** When the task must fail: what the error says, and what it must not say. */
  error?: RegExp;
  notError?: RegExp;
}

async function rawPixels(image: Sharp): Promise<Buffer> {
  return image.raw().toBuffer();
}

/** A page as 8-bit contiguous RGB built by `buildTiff`, from a sharp image. */
async function rgbPage(image: Sharp, width: number, height: number): Promise<IfdSpec> {
  return { width, height, samplesPerPixel: 3, bitsPerSample: 8, photometric: 2, chunks: [await rawPixels(image)] };
}

/** Left half `left`, right half `right`, as 32-bit unsigned samples (the 8-bit value in the top byte). */
function halves32(width: number, height: number, channels: number, left: Rgb, right: Rgb, planar: boolean): Buffer[] {
  const planes = Array.from({ length: planar ? channels : 1 }, () => Buffer.alloc(width * height * 4 * (planar ? 1 : channels)));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const rgb = x < width / 2 ? left : right;
      for (let c = 0; c < channels; c++) {
        const v = rgb[c] * 2 ** 24 + 0xabcdef; // low bits set: they must not matter
        if (planar) planes[c].writeUInt32LE(v, (y * width + x) * 4);
        else planes[0].writeUInt32LE(v, ((y * width + x) * channels + c) * 4);
      }
    }
  }
  return planes;
}

/**
 * The kinds of issue 15, each made for it: hand-written IFDs for what sharp cannot write,
 * sharp for the rest. Small images (≤ 160 px) so the suite stays fast on shared CPUs.
 */
export async function generateKindsCorpus(dir: string): Promise<Record<string, KindCase>> {
  await mkdir(dir, { recursive: true });
  const cases: KindCase[] = [];
  const add = async (c: Omit<KindCase, "path">, bytes: Buffer) => {
    const path = join(dir, `${c.name}.tif`);
    await writeFile(path, bytes);
    cases.push({ ...c, path });
  };
  const W = 160;
  const H = 120;
  const grey = (v: number): Rgb => [v, v, v];
  const halvesSamples = (left: Rgb, right: Rgb) => [
    { x: 0.25, y: 0.5, rgb: left },
    { x: 0.75, y: 0.5, rgb: right },
  ];

  // 1. Tiled old-style JPEG (Compression 6), YCbCr: sharp decodes it as all zeros with alpha 0;
  // the worker rebuilds it from its JPEG streams (ojpeg.ts).
  {
    const jpeg = await quadrants(64, 64).jpeg({ quality: 90 }).toBuffer();
    await add(
      { name: "ojpeg-tiled", pages: [{ width: 64, height: 64, channels: 3, samples: quadrantSamples() }] },
      buildTiff([{ width: 64, height: 64, samplesPerPixel: 3, bitsPerSample: 8, photometric: 6, compression: 6, tile: { width: 64, height: 64 }, interchangeFormat: true, chunks: [jpeg] }]),
    );
    // A decode that is fully transparent is never flattened into a white page.
    const clear = await sharp(Buffer.alloc(W * H * 4), { raw: { width: W, height: H, channels: 4 } }).tiff({ compression: "lzw" }).toBuffer();
    await add({ name: "fully-transparent", error: /page 1 decodes as fully transparent/ }, clear);
  }

  // 2. 32-bit unsigned samples: grey and RGB, contiguous and planar → their top 8 bits.
  {
    const g = halves32(W, H, 1, grey(64), grey(192), false);
    await add(
      { name: "uint32-grey", pages: [{ width: W, height: H, channels: 1, samples: halvesSamples(grey(64), grey(192)) }] },
      buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 32, photometric: 1, chunks: g }]),
    );
    for (const planar of [false, true]) {
      const chunks = halves32(W, H, 3, RED, BLUE, planar);
      await add(
        { name: `uint32-rgb-${planar ? "planar" : "contig"}`, pages: [{ width: W, height: H, channels: 3, samples: halvesSamples(RED, BLUE) }] },
        buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 32, photometric: 2, planar: planar ? 2 : 1, chunks }]),
      );
    }
  }

  // 3. ExtraSamples = 0 is not alpha: black pixels whose extra sample is 0 stay black.
  {
    const rgbx = Buffer.alloc(W * H * 4);
    for (let i = 0; i < W * H; i++) if (i % W >= W / 2) rgbx.set([200, 30, 30, 0], i * 4);
    await add(
      { name: "extrasample-unspecified", pages: [{ width: W, height: H, channels: 3, samples: halvesSamples([0, 0, 0], RED) }] },
      buildTiff([{ width: W, height: H, samplesPerPixel: 4, bitsPerSample: 8, photometric: 2, extraSamples: [0], chunks: [rgbx] }]),
    );
    // Unassociated alpha (2) is alpha: the transparent left half → white, the opaque right half red.
    const rgba = Buffer.from(rgbx);
    for (let i = 0; i < W * H; i++) if (i % W >= W / 2) rgba[i * 4 + 3] = 255;
    await add(
      { name: "extrasample-alpha", pages: [{ width: W, height: H, channels: 3, samples: halvesSamples(WHITE, RED) }] },
      buildTiff([{ width: W, height: H, samplesPerPixel: 4, bitsPerSample: 8, photometric: 2, extraSamples: [2], chunks: [rgba] }]),
    );
  }

  // 4. Multi-page TIFFs with one bad page: the good pages convert, the bad one is listed.
  {
    const page1 = await rgbPage(quadrants(W, H), W, H);
    const page3Colours = [BLUE, YELLOW, RED, GREEN] as const;
    const page3 = await rgbPage(quadrants(W, H, page3Colours), W, H);
    // Kinds nothing reads: 12-bit samples, JPEG 2000 compression.
    const grey12Page: IfdSpec = { width: W, height: H, samplesPerPixel: 1, bitsPerSample: 12, photometric: 1, chunks: [Buffer.alloc((W * H * 12) / 8)] };
    const jp2kPage: IfdSpec = { width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 2, compression: 34712, chunks: [Buffer.alloc(64)] };
    const good = (colours?: readonly Rgb[]) => ({ width: W, height: H, channels: 3 as const, samples: quadrantSamples(colours) });
    await add(
      { name: "multipage-grey12-page-2", pages: [good(), good(page3Colours)], skipped: [{ page: 2, reason: /^has 12-bit samples/ }] },
      buildTiff([page1, grey12Page, page3]),
    );
    await add(
      { name: "multipage-loop-at-3", pages: [good(), good(page3Colours)], skipped: [{ page: 3, reason: /TIFF directory 3 points back to directory 1 \(a loop/ }] },
      buildTiff([page1, page3], { loopTo: 0 }),
    );
    // Page 1's data is unreadable (its strip lies past the end): found only when decoding it.
    const unreadable: IfdSpec = { ...page1, tags: { 273: { type: 4, values: [9_999_999] } } };
    await add(
      { name: "multipage-bad-data-page-1", pages: [good(page3Colours)], skipped: [{ page: 1, reason: /^could not decode page 1 \(160×120\): image data is truncated or corrupt \(bad seek to 9999999/ }] },
      buildTiff([unreadable, page3]),
    );
    await add(
      { name: "multipage-none-convertible", error: /^no page could be converted: page 1: has 12-bit samples.*; page 2: uses JPEG 2000 compression/ },
      buildTiff([grey12Page, jp2kPage]),
    );
  }

  // 5. CIELab, 8-bit (L 128 = 50.2, a = b = 0): libvips fails on it ("bad labq format"); the
  // worker widens it to 16-bit CIELab, which libvips converts: L* 50.2 is sRGB grey 119 (CIE/IEC formulas).
  {
    const lab = Buffer.alloc(W * H * 3);
    for (let i = 0; i < W * H; i++) lab.set([128, 0, 0], i * 3);
    await add(
      { name: "cielab8", pages: [{ width: W, height: H, channels: 3, samples: [{ x: 0.5, y: 0.5, rgb: grey(119) }] }] },
      buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 8, chunks: [lab] }]),
    );
  }

  // 6. LogLuv / LogL whose SGILog data is cut short (all zeros): said to be that, not "16-bit signed integer samples".
  await add(
    { name: "logluv", error: /^could not decode page 1 \(160×120\): image data is truncated or corrupt/, notError: /signed integer/ },
    buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 16, sampleFormat: 2, photometric: 32845, compression: 34676, chunks: [Buffer.alloc(W * H * 6)] }]),
  );
  await add(
    { name: "logl", error: /^could not decode page 1 \(160×120\): image data is truncated or corrupt/, notError: /signed integer/ },
    buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 16, sampleFormat: 2, photometric: 32844, compression: 34676, chunks: [Buffer.alloc(W * H * 2)] }]),
  );

  // 7. Valid files with unsupported bit depths: named, without a "corrupt header" prefix.
  for (const [name, spp, bits, photometric] of [["grey12", 1, 12, 1], ["rgb4", 3, 4, 2], ["rgb24", 3, 24, 2]] as const) {
    await add(
      { name, error: new RegExp(`^page 1 has ${bits}-bit samples, which neither libvips nor libtiff reads`), notError: /corrupt/i },
      buildTiff([{ width: W, height: H, samplesPerPixel: spp, bitsPerSample: bits, photometric, chunks: [Buffer.alloc(Math.ceil((W * H * spp * bits) / 8))] }]),
    );
  }

  // 8. Error texts: no temp path, no repeated libtiff line, exact 64-bit offsets, corrupt ≠ large.
  await add(
    { name: "strip-past-eof", error: /^could not decode page 1 \(160×120\): image data is truncated or corrupt \(bad seek to 999999/, notError: /\/tmp|fanout-|input\.tif/ },
    buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 8, photometric: 1, chunks: [Buffer.alloc(W * H)], tags: { 273: { type: 4, values: [999999] } } }]),
  );
  // LZMA (sharp's libtiff: "not configured"): decompressed by the worker (xz-decompress, WebAssembly) in its own process.
  await add(
    { name: "lzma", pages: [{ width: W, height: H, channels: 3, samples: quadrantSamples() }] },
    buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 2, compression: 34925, chunks: [xzStored(await rawPixels(quadrants(W, H)))] }]),
  );
  {
    const big = Buffer.alloc(16);
    big.write("II", 0, "latin1");
    big.writeUInt16LE(43, 2);
    big.writeUInt16LE(8, 4);
    big.writeBigUInt64LE(9295429630892703745n, 8);
    await add({ name: "bigtiff-offset-64bit", error: /the first TIFF directory is at byte 9295429630892703745, beyond the end of the file \(16 bytes\)/ }, big);
  }
  await add(
    { name: "samples-per-pixel-65535", error: /^page 1 is corrupt: SamplesPerPixel is 65535$/, notError: /larger machine|MB/ },
    buildTiff([{ width: W, height: H, samplesPerPixel: 3, bitsPerSample: 8, photometric: 2, chunks: [Buffer.alloc(W * H * 3)], tags: { 277: { type: 3, values: [65535] } } }]),
  );

  // 9. Greyscale and bilevel → 1-band JPEGs (unless JPEG_COLOUR=rgb).
  {
    const g8 = await sharp({ create: { width: W, height: H, channels: 3, background: { r: 90, g: 90, b: 90 } } }).toColourspace("b-w").tiff({ compression: "lzw" }).toBuffer();
    await add({ name: "grey8", pages: [{ width: W, height: H, channels: 1, samples: [{ x: 0.5, y: 0.5, rgb: grey(90) }] }] }, g8);
    await add({ name: "grey8-rgb", env: { JPEG_COLOUR: "rgb" }, pages: [{ width: W, height: H, channels: 3, samples: [{ x: 0.5, y: 0.5, rgb: grey(90) }] }] }, g8);
    // Bilevel, MinIsWhite: 0 bits are white; the left half is set (black).
    const rowBytes = W / 8;
    const bits = Buffer.alloc(rowBytes * H);
    for (let y = 0; y < H; y++) bits.fill(0xff, y * rowBytes, y * rowBytes + rowBytes / 2);
    await add(
      { name: "bilevel", pages: [{ width: W, height: H, channels: 1, samples: halvesSamples(grey(0), grey(255)) }] },
      buildTiff([{ width: W, height: H, samplesPerPixel: 1, bitsPerSample: 1, photometric: 0, compression: 1, chunks: [bits] }]),
    );
  }

  // 10. Chroma: 4:2:0 by default, 4:4:4 when the batch asks.
  {
    const rgb = await quadrants(W, H).tiff({ compression: "lzw" }).toBuffer();
    await add({ name: "chroma-default", pages: [{ width: W, height: H, channels: 3, samples: quadrantSamples() }] }, rgb);
    await add({ name: "chroma-444", env: { JPEG_CHROMA: "4:4:4", JPEG_QUALITY: "90" }, pages: [{ width: W, height: H, channels: 3, samples: quadrantSamples() }] }, rgb);
  }
  return Object.fromEntries(cases.map((c) => [c.name, c]));
}
