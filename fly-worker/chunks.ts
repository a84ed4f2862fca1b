// Decoders for one strip or tile, for the pages libvips cannot read as they are stored: the
// compressions sharp's libtiff is built without (Zstandard, LZMA) and the layouts it refuses
// (tiled separate planes). Each returns the chunk's samples in little-endian order, predictor undone.
import { crc32, inflateSync, zstdDecompressSync } from "node:zlib";
import xz from "xz-decompress";

/** How a chunk's bytes become samples. */
export interface ChunkFormat {
  compression: number;
  predictor: number;
  /** Samples per pixel in this chunk (1 for a plane of a planar page). */
  samples: number;
  bitsPerSample: number;
  /** Pixels per row of the chunk (tile width, or image width for a strip). */
  width: number;
  rows: number;
  littleEndian: boolean;
}

/** Compressions this module decodes (besides what libvips reads itself). */
export const CHUNK_COMPRESSIONS = new Set([1, 5, 8, 32946, 32773, 34925, 50000]);
/** SGILog (libtiff's tif_luv.c): decoded here for LogL pages only, whose values libvips does not convert. */
export const SGILOG = 34676;
const PREDICTED = new Set([5, 8, 32946, 34925, 50000]);

export class ChunkError extends Error {}

/** Decodes one chunk into exactly rows × width × samples samples (little-endian). */
export async function decodeChunk(data: Buffer, f: ChunkFormat): Promise<Buffer> {
  const bytesPerRow = Math.ceil((f.width * f.samples * f.bitsPerSample) / 8);
  const expected = bytesPerRow * f.rows;
  if (f.compression === SGILOG) return sgiLogL16Decode(data, f.width, f.rows);
  const raw = await decompress(data, f.compression, expected);
  if (raw.length < expected) throw new ChunkError(`a strip or tile decodes to ${raw.length} bytes, ${expected} expected: the data is cut short`);
  const out = raw.length === expected ? raw : raw.subarray(0, expected);
  // libtiff applies the Predictor tag only in the codecs that define one, never to uncompressed or PackBits data.
  const predictor = PREDICTED.has(f.compression) ? f.predictor : 1;
  if (predictor === 3) return undoFloatPredictor(out, f, bytesPerRow);
  if (!f.littleEndian) swapToLittleEndian(out, f.bitsPerSample);
  if (predictor === 2) undoHorizontalPredictor(out, f, bytesPerRow);
  return out;
}

async function decompress(data: Buffer, compression: number, expected: number): Promise<Buffer> {
  // Inflated output is capped at what the chunk should hold (plus slack): a zip bomb fails, it does not fill memory.
  const maxOutputLength = expected + 1024;
  switch (compression) {
    case 1:
      return data;
    case 5:
      return lzwDecode(data, expected);
    case 8:
    case 32946:
      return inflateSync(data, { maxOutputLength });
    case 32773:
      return packBitsDecode(data, expected);
    case 50000:
      return zstdDecompressSync(data, { maxOutputLength });
    case 34925:
      return xzDecode(data, maxOutputLength);
    default:
      throw new ChunkError(`Compression ${compression} is not decoded here`);
  }
}

/**
 * LZMA in TIFF is an .xz stream (libtiff's tif_lzma.c) whose block runs a Delta filter before
 * LZMA2. xz-decompress (xz-embedded compiled to WebAssembly) reads LZMA2 only, so the Delta filter
 * is taken out of the block header (same header size, CRC32 recomputed: the index still matches)
 * and undone here (.xz format 1.2.1 §5.3.3: each byte is the sum of itself and the byte `distance` back).
 */
async function xzDecode(data: Buffer, maxOutputLength: number): Promise<Buffer> {
  const { stream, distance } = withoutDeltaFilter(data);
  const parts: Buffer[] = [];
  let length = 0;
  for await (const part of new xz.XzReadableStream(new Blob([new Uint8Array(stream)]).stream()) as unknown as AsyncIterable<Uint8Array>) {
    length += part.length;
    if (length > maxOutputLength) throw new ChunkError("an LZMA strip or tile decodes to more bytes than it can hold");
    parts.push(Buffer.from(part));
  }
  const out = Buffer.concat(parts);
  if (distance) for (let i = distance; i < out.length; i++) out[i] = (out[i] + out[i - distance]) & 0xff;
  return out;
}

function readVarint(b: Buffer, at: number): [number, number] {
  let value = 0;
  for (let i = 0; i < 9 && at + i < b.length; i++) {
    value += (b[at + i] & 0x7f) * 2 ** (7 * i);
    if (!(b[at + i] & 0x80)) return [value, at + i + 1];
  }
  throw new ChunkError("the LZMA stream's block header is corrupt");
}

/** The .xz stream with its first block's Delta filter (ID 3) removed, and the Delta distance; the stream as it is otherwise. */
export function withoutDeltaFilter(data: Buffer): { stream: Buffer; distance?: number } {
  const at = 12; // stream header: magic (6), flags (2), CRC32 (4)
  if (data.length < at + 8 || data.readUInt32BE(0) !== 0xfd377a58) return { stream: data };
  const size = (data[at] + 1) * 4;
  const flags = data[at + 1];
  let i = at + 2;
  if (flags & 0x40) i = readVarint(data, i)[1];
  if (flags & 0x80) i = readVarint(data, i)[1];
  const fieldsStart = i;
  const filters: { id: number; props: Buffer; raw: Buffer }[] = [];
  for (let f = 0; f <= (flags & 3); f++) {
    const start = i;
    const [id, afterId] = readVarint(data, i);
    const [propsSize, afterSize] = readVarint(data, afterId);
    i = afterSize + propsSize;
    filters.push({ id, props: data.subarray(afterSize, i), raw: data.subarray(start, i) });
  }
  if (filters.length !== 2 || filters[0].id !== 3 || filters[0].props.length !== 1) return { stream: data };
  const header = Buffer.alloc(size - 4);
  data.copy(header, 0, at, fieldsStart);
  header[1] = flags & ~3; // one filter
  filters[1].raw.copy(header, fieldsStart - at);
  const crc = Buffer.alloc(4);
  crc.writeUInt32LE(crc32(header) >>> 0);
  return { stream: Buffer.concat([data.subarray(0, at), header, crc, data.subarray(at + size)]), distance: filters[0].props[0] + 1 };
}

/**
 * SGILog-compressed LogL rows (16-bit log luminance, libtiff's LogL16Decode): each row is two byte
 * planes, high then low, each run-length coded — a byte ≥ 128 repeats the next byte (n − 126)
 * times, a byte n < 128 is followed by n literal bytes.
 */
export function sgiLogL16Decode(data: Buffer, width: number, rows: number): Buffer {
  const out = Buffer.alloc(width * rows * 2);
  let i = 0;
  for (let row = 0; row < rows; row++) {
    for (const shift of [8, 0]) {
      for (let x = 0; x < width; ) {
        if (i >= data.length) throw new ChunkError(`SGILog data ends at row ${row} of ${rows}: the data is cut short`);
        const n = data[i++];
        if (n >= 128) {
          const value = data[i++] << shift;
          for (let k = 0; k < n - 126 && x < width; k++, x++) out.writeUInt16LE(out.readUInt16LE((row * width + x) * 2) | value, (row * width + x) * 2);
        } else {
          for (let k = 0; k < n && x < width; k++, x++) out.writeUInt16LE(out.readUInt16LE((row * width + x) * 2) | (data[i++] << shift), (row * width + x) * 2);
        }
      }
    }
  }
  return out;
}

/** PackBits (TIFF 6.0 §9): a header byte n, then n+1 literal bytes, or one byte repeated 1-n times. */
export function packBitsDecode(data: Buffer, expected: number): Buffer {
  const out = Buffer.alloc(expected);
  let o = 0;
  for (let i = 0; i < data.length && o < expected; ) {
    const n = data.readInt8(i++);
    if (n >= 0) {
      const end = Math.min(i + n + 1, data.length);
      o += data.copy(out, o, i, Math.min(end, i + expected - o));
      i = end;
    } else if (n !== -128) {
      out.fill(data[i++] ?? 0, o, Math.min(expected, o + 1 - n));
      o = Math.min(expected, o + 1 - n);
    }
  }
  return out.subarray(0, o);
}

/** TIFF LZW (TIFF 6.0 §13): MSB-first codes of 9–12 bits, the width growing one code early as libtiff writes it. */
export function lzwDecode(data: Buffer, expected: number): Buffer {
  if (data.length >= 2 && data[0] === 0 && data[1] & 1) throw new ChunkError("the strip uses the pre-1991 LZW variant, which this decoder does not read");
  const prefix = new Int32Array(4096);
  const suffix = new Uint8Array(4096);
  const first = new Uint8Array(4096);
  const length = new Int32Array(4096);
  for (let i = 0; i < 256; i++) {
    suffix[i] = i;
    first[i] = i;
    length[i] = 1;
  }
  const out = Buffer.alloc(expected);
  let o = 0;
  let bit = 0;
  let width = 9;
  let next = 258;
  let previous = -1;
  const totalBits = data.length * 8;
  const emit = (code: number) => {
    const n = length[code];
    let c = code;
    for (let at = o + n - 1; at >= o; at--) {
      if (at < expected) out[at] = suffix[c];
      c = prefix[c];
    }
    o += n;
  };
  while (bit + width <= totalBits && o < expected) {
    let code = 0;
    for (let k = 0; k < width; k++, bit++) code = (code << 1) | ((data[bit >> 3] >> (7 - (bit & 7))) & 1);
    if (code === 257) break;
    if (code === 256) {
      next = 258;
      width = 9;
      previous = -1;
      continue;
    }
    if (previous < 0) {
      if (code > 255) throw new ChunkError("LZW data is corrupt (a code before the first entry)");
      emit(code);
      previous = code;
      continue;
    }
    if (code > next) throw new ChunkError("LZW data is corrupt (a code past the table)");
    if (next < 4096) {
      prefix[next] = previous;
      first[next] = first[previous];
      suffix[next] = code === next ? first[previous] : first[code];
      length[next] = length[previous] + 1;
    }
    emit(code);
    previous = code;
    if (next < 4096) next++;
    if (next >= (1 << width) - 1 && width < 12) width++;
  }
  return out.subarray(0, Math.min(o, expected));
}

function swapToLittleEndian(b: Buffer, bits: number): void {
  if (bits === 16) b.swap16();
  else if (bits === 32) b.swap32();
  else if (bits === 64) b.swap64();
}

/** Predictor 2: each sample is stored as the difference from the same sample of the pixel to its left. */
function undoHorizontalPredictor(b: Buffer, f: ChunkFormat, bytesPerRow: number): void {
  const s = f.samples;
  for (let row = 0; row < f.rows; row++) {
    const start = row * bytesPerRow;
    const n = f.width * s;
    if (f.bitsPerSample === 8) for (let i = s; i < n; i++) b[start + i] = (b[start + i] + b[start + i - s]) & 0xff;
    else if (f.bitsPerSample === 16) for (let i = s; i < n; i++) b.writeUInt16LE((b.readUInt16LE(start + i * 2) + b.readUInt16LE(start + (i - s) * 2)) & 0xffff, start + i * 2);
    else if (f.bitsPerSample === 32) for (let i = s; i < n; i++) b.writeUInt32LE((b.readUInt32LE(start + i * 4) + b.readUInt32LE(start + (i - s) * 4)) >>> 0, start + i * 4);
    else throw new ChunkError(`horizontal differencing of ${f.bitsPerSample}-bit samples is not decoded here`);
  }
}

/**
 * Predictor 3 (Adobe TIFF Technote 3): each row's bytes are split into planes, most significant
 * first, and differenced byte by byte. Undone into little-endian samples.
 */
function undoFloatPredictor(b: Buffer, f: ChunkFormat, bytesPerRow: number): Buffer {
  const bytes = f.bitsPerSample / 8;
  const n = f.width * f.samples;
  const out = Buffer.alloc(b.length);
  for (let row = 0; row < f.rows; row++) {
    const start = row * bytesPerRow;
    for (let i = f.samples; i < bytesPerRow; i++) b[start + i] = (b[start + i] + b[start + i - f.samples]) & 0xff;
    for (let j = 0; j < n; j++) for (let k = 0; k < bytes; k++) out[start + j * bytes + k] = b[start + (bytes - k - 1) * n + j];
  }
  return out;
}
