// Rewrites a page libvips cannot read as stored into a single-page TIFF it can, strip by strip
// (one strip or tile row in memory at a time, never the page). The samples keep their values
// except where a documented recoding says otherwise (README, "Supported TIFF kinds"):
//   transcode  Zstandard / LZMA chunks decompressed, layout and every other tag kept;
//   rebuild    tiled separate planes interleaved, extra samples after the alpha dropped,
//              8-bit CIELab/ICCLab widened to 16-bit CIELab (libvips converts that to sRGB),
//              LogL log luminance to 8-bit sRGB-encoded grey.
import { open, type FileHandle } from "node:fs/promises";
import { decodeChunk, type ChunkFormat } from "./chunks.ts";
import { readTags, TiffPageWriter, type Tag, type Tags } from "./tiff-ifd.ts";
import type { FloatRange } from "./levels.ts";
import type { TiffDirectory } from "./tiff.ts";

export interface RebuildPlan {
  /** Samples per pixel to keep (the colour samples and the alpha); the rest are dropped. */
  keepSamples: number;
  /** ExtraSamples of the kept samples (e.g. [2] for the unassociated alpha kept). */
  extraSamples: number[];
  recode?: "cielab8" | "icclab8" | "logl" | "float8" | "float-unit";
  /** float8: value × scale + offset, rounded and clipped to 0–255; float-unit: the same, kept as 32-bit float (levels.ts). */
  mapping?: { scale: number; offset: number };
}

/** Tags whose values point elsewhere in the file, or describe the stored chunks: never copied as they are. */
const POINTER_TAGS = new Set([273, 279, 324, 325, 330, 347, 513, 514, 34665, 34853, 40965]);
/** Tags a rebuilt page keeps: orientation, resolution, white point, primaries, palette, ICC profile. */
const KEPT_BY_REBUILD = [274, 282, 283, 296, 318, 319, 320, 34675];
/** Rows per strip when the source is uncompressed and can be read row by row. */
const BAND_ROWS = 64;

const short = (...values: number[]): Tag => ({ type: 3, values });
const long = (...values: number[]): Tag => ({ type: 4, values });

interface Chunks {
  offsets: number[];
  counts: number[];
  tiled: boolean;
}

function chunksOf(tags: Tags, page: TiffDirectory): Chunks {
  const tiled = page.tileWidth !== undefined;
  const offsets = tags.get(tiled ? 324 : 273)?.values ?? [];
  const counts = tags.get(tiled ? 325 : 279)?.values ?? [];
  if (offsets.length === 0 || counts.length !== offsets.length) throw new Error(`the page's ${tiled ? "tile" : "strip"} offsets and byte counts are missing or do not match`);
  return { offsets, counts, tiled };
}

async function readChunk(file: FileHandle, at: number, length: number, size: number): Promise<Buffer> {
  if (at + length > size) throw new Error(`a strip or tile (${length} bytes at ${at}) lies past the end of the file (${size} bytes)`);
  const buffer = Buffer.alloc(length);
  await file.read(buffer, 0, length, at);
  return buffer;
}

/** Zstandard / LZMA → uncompressed, same strips or tiles, same tags otherwise. */
export async function transcodePage(input: string, page: TiffDirectory, output: string): Promise<void> {
  const file = await open(input, "r");
  const writer = await TiffPageWriter.create(output);
  try {
    const { size } = await file.stat();
    const tags = await readTags(file, page);
    const { offsets, counts, tiled } = chunksOf(tags, page);
    const samples = page.planar === 2 ? 1 : page.samplesPerPixel;
    const perPlane = page.planar === 2 ? Math.ceil(offsets.length / page.samplesPerPixel) : offsets.length;
    const rowsPerStrip = page.rowsPerStrip ?? page.height;
    for (let i = 0; i < offsets.length; i++) {
      const format: ChunkFormat = {
        compression: page.compression,
        predictor: page.predictor,
        samples,
        bitsPerSample: page.bitsPerSample,
        width: tiled ? (page.tileWidth ?? 0) : page.width,
        rows: tiled ? (page.tileHeight ?? 0) : Math.min(rowsPerStrip, page.height - (i % perPlane) * rowsPerStrip),
        littleEndian: page.layout.littleEndian,
      };
      await writer.chunk(await decodeChunk(await readChunk(file, offsets[i], counts[i], size), format));
    }
    const kept: Tags = new Map([...tags].filter(([tag]) => !POINTER_TAGS.has(tag) && tag !== 317));
    kept.set(259, short(1));
    await writer.finish(kept, tiled ? 324 : 273, tiled ? 325 : 279);
  } catch (error) {
    await writer.abandon();
    throw error;
  } finally {
    await file.close();
  }
}

/** Rows of the page, `rows` at a time, as contiguous little-endian samples (all planes interleaved). */
async function* rowBands(file: FileHandle, page: TiffDirectory, tags: Tags): AsyncGenerator<{ rows: number; data: Buffer }> {
  const { size } = await file.stat();
  const { offsets, counts, tiled } = chunksOf(tags, page);
  const spp = page.samplesPerPixel;
  const bytes = page.bitsPerSample / 8;
  if (!Number.isInteger(bytes)) throw new Error(`${page.bitsPerSample}-bit samples cannot be rearranged`);
  const planes = page.planar === 2 ? spp : 1;
  const chunkSamples = spp / planes;
  const W = page.width;
  const pixel = spp * bytes;
  const format = (width: number, rows: number): ChunkFormat => ({
    compression: page.compression,
    predictor: page.predictor,
    samples: chunkSamples,
    bitsPerSample: page.bitsPerSample,
    width,
    rows,
    littleEndian: page.layout.littleEndian,
  });
  // Copies `rows` rows of a decoded chunk (chunkWidth wide) of plane `p` into the band at column x0.
  const place = (band: Buffer, chunk: Buffer, p: number, chunkWidth: number, x0: number, rows: number) => {
    const columns = Math.min(chunkWidth, W - x0);
    for (let y = 0; y < rows; y++) {
      if (planes === 1) {
        chunk.copy(band, (y * W + x0) * pixel, y * chunkWidth * pixel, (y * chunkWidth + columns) * pixel);
        continue;
      }
      // Byte by byte: a Buffer.copy per sample costs more than the copy itself.
      for (let x = 0; x < columns; x++) {
        const to = ((y * W + x0 + x) * spp + p) * bytes;
        const from = (y * chunkWidth + x) * bytes;
        for (let b = 0; b < bytes; b++) band[to + b] = chunk[from + b];
      }
    }
  };
  if (tiled) {
    const tw = page.tileWidth ?? 0;
    const th = page.tileHeight ?? 0;
    const across = Math.ceil(W / tw);
    const down = Math.ceil(page.height / th);
    for (let r = 0; r < down; r++) {
      const rows = Math.min(th, page.height - r * th);
      const band = Buffer.alloc(rows * W * pixel);
      for (let p = 0; p < planes; p++) {
        for (let c = 0; c < across; c++) {
          const i = (p * down + r) * across + c;
          if (i >= offsets.length) throw new Error(`the page has ${offsets.length} tiles, fewer than its size needs`);
          place(band, await decodeChunk(await readChunk(file, offsets[i], counts[i], size), format(tw, th)), p, tw, c * tw, rows);
        }
      }
      yield { rows, data: band };
    }
    return;
  }
  const rowsPerStrip = page.rowsPerStrip ?? page.height;
  const perPlane = Math.ceil(page.height / rowsPerStrip);
  if (page.compression === 1) {
    // Uncompressed: read rows where they lie, so a single-strip page is never read whole.
    const rowBytes = W * chunkSamples * bytes;
    for (let y0 = 0; y0 < page.height; y0 += BAND_ROWS) {
      const rows = Math.min(BAND_ROWS, page.height - y0);
      const band = Buffer.alloc(rows * W * pixel);
      for (let p = 0; p < planes; p++) {
        for (let y = 0; y < rows; y++) {
          const strip = p * perPlane + Math.floor((y0 + y) / rowsPerStrip);
          const at = offsets[strip] + ((y0 + y) % rowsPerStrip) * rowBytes;
          place(band.subarray(y * W * pixel), await decodeChunk(await readChunk(file, at, rowBytes, size), format(W, 1)), p, W, 0, 1);
        }
      }
      yield { rows, data: band };
    }
    return;
  }
  for (let s = 0; s < perPlane; s++) {
    const rows = Math.min(rowsPerStrip, page.height - s * rowsPerStrip);
    const band = Buffer.alloc(rows * W * pixel);
    for (let p = 0; p < planes; p++) {
      const i = p * perPlane + s;
      place(band, await decodeChunk(await readChunk(file, offsets[i], counts[i], size), format(W, rows)), p, W, 0, rows);
    }
    yield { rows, data: band };
  }
}

/** The range of the first `samples` samples of each pixel of a 32-bit float page, NaN and infinities counted apart. */
export async function floatRange(input: string, page: TiffDirectory, samples: number): Promise<FloatRange> {
  const file = await open(input, "r");
  try {
    const tags = await readTags(file, page);
    let min = Infinity;
    let max = -Infinity;
    let nonFinite = 0;
    const spp = page.samplesPerPixel;
    for await (const { rows, data } of rowBands(file, page, tags)) {
      const values = new Float32Array(data.byteOffset % 4 === 0 ? data.buffer : data.buffer.slice(data.byteOffset), data.byteOffset % 4 === 0 ? data.byteOffset : 0, data.length / 4);
      for (let i = 0; i < rows * page.width; i++) {
        for (let k = 0; k < samples; k++) {
          const v = values[i * spp + k];
          if (!Number.isFinite(v)) {
            nonFinite++;
            continue;
          }
          if (v < min) min = v;
          if (v > max) max = v;
        }
      }
    }
    return { min, max, nonFinite };
  } finally {
    await file.close();
  }
}

/** 8-bit sRGB-encoded grey for each 16-bit LogL code: Y = 2^((Le + 0.5)/256 − 64) (libtiff's LogL16toY), Y ≥ 1 white. */
function logLTable(): Uint8Array {
  const table = new Uint8Array(65536);
  for (let code = 1; code < 0x8000; code++) {
    const y = 2 ** ((code + 0.5) / 256 - 64);
    const encoded = y >= 1 ? 1 : y <= 0.0031308 ? 12.92 * y : 1.055 * y ** (1 / 2.4) - 0.055;
    table[code] = Math.round(encoded * 255);
  }
  return table; // codes with the sign bit set (negative luminance) stay 0, black
}

function recodeBand(data: Buffer, pixels: number, spp: number, bytes: number, plan: RebuildPlan): Buffer {
  const keep = plan.keepSamples;
  if (plan.recode === "float8" || plan.recode === "float-unit") {
    const { scale, offset } = plan.mapping ?? { scale: 255, offset: 0 };
    const unit = plan.recode === "float-unit";
    const out = Buffer.alloc(pixels * keep * (unit ? 4 : 1));
    for (let i = 0; i < pixels; i++) {
      for (let k = 0; k < keep; k++) {
        const v = data.readFloatLE((i * spp + k) * bytes) * scale + offset;
        if (unit) out.writeFloatLE(v, (i * keep + k) * 4);
        else out[i * keep + k] = v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
      }
    }
    return out;
  }
  if (plan.recode === "logl") {
    const table = logLTable();
    const out = Buffer.alloc(pixels);
    for (let i = 0; i < pixels; i++) out[i] = table[data.readUInt16LE(i * 2 * spp)];
    return out;
  }
  if (plan.recode === "cielab8" || plan.recode === "icclab8") {
    // CIELab: L* = L·100/255, a*/b* signed bytes; ICCLab: a*/b* offset by 128 (TIFF Technote 2).
    // 16-bit CIELab holds L·257 (0–65535 ↔ 0–100) and a*/b* × 256, which libvips reads as LabS.
    const offset = plan.recode === "icclab8" ? 128 : 0;
    const out = Buffer.alloc(pixels * 6);
    for (let i = 0; i < pixels; i++) {
      const at = i * spp;
      out.writeUInt16LE(data[at] * 257, i * 6);
      out.writeInt16LE((plan.recode === "icclab8" ? data[at + 1] - offset : data.readInt8(at + 1)) * 256, i * 6 + 2);
      out.writeInt16LE((plan.recode === "icclab8" ? data[at + 2] - offset : data.readInt8(at + 2)) * 256, i * 6 + 4);
    }
    return out;
  }
  if (keep === spp) return data;
  const out = Buffer.alloc(pixels * keep * bytes);
  for (let i = 0; i < pixels; i++) data.copy(out, i * keep * bytes, i * spp * bytes, (i * spp + keep) * bytes);
  return out;
}

/** Interleaves planes, drops extra samples after `keepSamples` and recodes as `plan` says; writes contiguous strips. */
export async function rebuildPage(input: string, page: TiffDirectory, output: string, plan: RebuildPlan): Promise<void> {
  const file = await open(input, "r");
  const writer = await TiffPageWriter.create(output);
  try {
    const tags = await readTags(file, page);
    // LogL decodes to 16-bit codes whatever BitsPerSample says (libtiff's SGILOGDATAFMT_16BIT).
    const source = plan.recode === "logl" ? { ...page, bitsPerSample: 16, samplesPerPixel: 1 } : page;
    const bytes = source.bitsPerSample / 8;
    let rowsPerStrip = 0;
    for await (const { rows, data } of rowBands(file, source, tags)) {
      rowsPerStrip ||= rows;
      await writer.chunk(recodeBand(data, rows * page.width, page.samplesPerPixel, bytes, plan));
    }
    const out: Tags = new Map(KEPT_BY_REBUILD.filter((tag) => tags.has(tag)).map((tag) => [tag, tags.get(tag) as Tag]));
    const lab = plan.recode === "cielab8" || plan.recode === "icclab8";
    const samples = plan.recode === "logl" ? 1 : lab ? 3 : plan.keepSamples;
    const bits = lab ? 16 : plan.recode === "float-unit" ? 32 : plan.recode ? 8 : page.bitsPerSample;
    const photometric = plan.recode === "logl" ? 1 : lab ? 8 : (page.photometric ?? (samples >= 3 ? 2 : 1));
    if (lab || plan.recode === "logl") out.delete(34675); // a profile for the stored encoding does not describe the recoded one
    out.set(256, long(page.width));
    out.set(257, long(page.height));
    out.set(258, short(...Array<number>(samples).fill(bits)));
    out.set(259, short(1));
    out.set(262, short(photometric));
    out.set(277, short(samples));
    out.set(278, long(rowsPerStrip || page.height));
    out.set(284, short(1));
    out.set(339, short(...Array<number>(samples).fill(plan.recode === "float-unit" ? 3 : plan.recode ? 1 : page.sampleFormat)));
    if (!plan.recode && plan.extraSamples.length > 0) out.set(338, short(...plan.extraSamples));
    await writer.finish(out, 273, 279);
  } catch (error) {
    await writer.abandon();
    throw error;
  } finally {
    await file.close();
  }
}
