// Reads a TIFF's directory chain from disk with positional reads (never the whole file):
// enough to tell a thumbnail from a scan, size the memory plan and reject non-TIFFs clearly.
import { open, type FileHandle } from "node:fs/promises";
import { TaskError } from "./errors.ts";

export interface TiffDirectory {
  /** 0-based position in the IFD chain; sharp's `page` option counts the same way. */
  index: number;
  /** 1-based page number of the original TIFF, when this directory is of a rewritten copy of that page. */
  number?: number;
  width: number;
  height: number;
  /** Tag 254: bit 0 reduced-resolution, bit 1 page of a multi-page image, bit 2 mask. */
  newSubfileType: number;
  /** Tag 255 (old style): 2 = reduced-resolution. */
  subfileType?: number;
  samplesPerPixel: number;
  bitsPerSample: number;
  /** Tag 339: 1 unsigned int, 2 signed int, 3 float. */
  sampleFormat: number;
  compression: number;
  photometric?: number;
  orientation: number;
  /** Tag 338, one per extra sample: 0 unspecified (not alpha), 1 associated alpha, 2 unassociated alpha. */
  extraSamples: number[];
  /** Rows per strip (strip-based files): libtiff decodes a whole strip at once. */
  rowsPerStrip?: number;
  tileWidth?: number;
  tileHeight?: number;
  /** Tag 284: 1 contiguous (chunky), 2 separate planes. */
  planar: number;
  /** Tag 317: 1 none, 2 horizontal differencing, 3 floating point. */
  predictor: number;
  /** Where the directory starts, and how the file is laid out: enough to read every tag again (tiff-ifd.ts). */
  layout: { ifdOffset: number; littleEndian: boolean; bigTiff: boolean };
  /** Tag 34675, when present: whether it holds an ICC profile at all, and if not, why. */
  icc?: { valid: true } | { valid: false; reason: string };
}

const TYPE_SIZE: Record<number, number> = { 1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8 };
const MAX_DIRECTORIES = 10_000;
const EXTRA_SAMPLES = 338;
const ICC_PROFILE = 34675;
/** More values than any real ExtraSamples list holds. */
const MAX_LIST = 64;

const SIGNATURES: [string, (b: Buffer) => boolean][] = [
  ["a PNG image", (b) => b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))],
  ["a JPEG image", (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff],
  ["a PDF document", (b) => b.toString("latin1", 0, 5) === "%PDF-"],
  ["a GIF image", (b) => b.toString("latin1", 0, 4) === "GIF8"],
  ["a WebP image", (b) => b.toString("latin1", 0, 4) === "RIFF" && b.toString("latin1", 8, 12) === "WEBP"],
  ["a JPEG 2000 image", (b) => b.subarray(0, 12).equals(Buffer.from("0000000c6a5020200d0a870a", "hex"))],
  ["an ISO media file (HEIF/AVIF/MP4)", (b) => b.toString("latin1", 4, 8) === "ftyp"],
  ["a ZIP archive", (b) => b.toString("latin1", 0, 4) === "PK\x03\x04"],
  ["a BMP image", (b) => b.toString("latin1", 0, 2) === "BM"],
  ["an HTML or XML document (an error page saved as the object?)", (b) => /^\s*</.test(b.toString("latin1", 0, 16))],
];

/** What the first bytes say the file is, for the error message of a non-TIFF. */
export function describeSignature(head: Buffer): string {
  for (const [name, test] of SIGNATURES) if (head.length >= 12 && test(head)) return name;
  const hex = [...head.subarray(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  return `an unknown format (first bytes ${hex})`;
}

/** A directory that cannot be read, and why; the chain may end there. */
export interface BrokenDirectory {
  /** 1-based page number, counting every directory of the chain. */
  page: number;
  reason: string;
}

export interface TiffChain {
  directories: TiffDirectory[];
  /** Directories after the first that could not be read: their pages are skipped, with the reason. */
  broken: BrokenDirectory[];
}

/** Reads every directory of the TIFF at `path`; throws a TaskError when not even the first is readable. */
export async function readTiffDirectories(path: string): Promise<TiffDirectory[]> {
  const { directories, broken } = await readTiff(path);
  if (broken.length > 0) throw new TaskError("input", `input is corrupt: ${broken[0].reason}`);
  return directories;
}

/**
 * Reads the directory chain of the TIFF at `path`. A fault in the first directory (or the
 * header) is a TaskError; a fault further on ends or skips there, reported in `broken`, so the
 * good pages before it still convert.
 */
export async function readTiff(path: string): Promise<TiffChain> {
  const file = await open(path, "r");
  try {
    const { size } = await file.stat();
    if (size === 0) throw new TaskError("input", "input object is empty (0 bytes): nothing to convert");
    const head = await readAt(file, 0, Math.min(16, size));
    const order = head.toString("latin1", 0, 2);
    const le = order === "II";
    if (head.length < 8 || (order !== "II" && order !== "MM")) {
      throw new TaskError("input", `input is not a TIFF: it looks like ${describeSignature(head)}`);
    }
    const r = new Reader(le);
    const magic = r.u16(head, 2);
    if (magic !== 42 && magic !== 43) {
      throw new TaskError("input", `input is not a TIFF: byte-order mark ${order} is followed by ${magic}, not 42 (TIFF) or 43 (BigTIFF)`);
    }
    const big = magic === 43;
    if (big && head.length < 16) throw new TaskError("input", `input is truncated: a BigTIFF header needs 16 bytes, the file has ${size}`);
    const fileSize = BigInt(size);
    // Offsets stay BigInt until checked against the file size: a corrupt 64-bit offset is shown exactly.
    let offset: bigint = big ? r.u64(head, 8) : BigInt(r.u32(head, 4));
    const directories: TiffDirectory[] = [];
    const broken: BrokenDirectory[] = [];
    const seen = new Map<bigint, number>();
    let index = 0;
    for (; offset !== 0n; index++) {
      const where = index === 0 ? "the first TIFF directory" : `TIFF directory ${index + 1}`;
      const fail = (reason: string): TaskError | undefined => {
        if (index === 0) return new TaskError("input", `input is ${reason.startsWith("truncated") ? "" : "corrupt: "}${reason}`);
        broken.push({ page: index + 1, reason });
        return undefined;
      };
      if (offset + (big ? 8n : 2n) > fileSize) {
        const error = fail(`truncated or corrupt: ${where} is at byte ${offset}, beyond the end of the file (${size} bytes)`);
        if (error) throw error;
        break;
      }
      const earlier = seen.get(offset);
      if (earlier !== undefined) {
        fail(`${where} points back to directory ${earlier + 1} (a loop in the directory chain); no page after it can be read`);
        break;
      }
      if (index >= MAX_DIRECTORIES) {
        fail(`the TIFF has more than ${MAX_DIRECTORIES} directories; the rest are not read`);
        break;
      }
      seen.set(offset, index);
      const at = Number(offset);
      const countBytes = await readAt(file, at, big ? 8 : 2);
      const count = big ? r.u64(countBytes, 0) : BigInt(r.u16(countBytes, 0));
      const entrySize = big ? 20 : 12;
      const tableSize = count * BigInt(entrySize) + (big ? 8n : 4n);
      const tableStart = at + countBytes.length;
      if (BigInt(tableStart) + tableSize > fileSize) {
        const error = fail(`truncated or corrupt: ${where} (${count} entries at byte ${offset}) runs past the end of the file (${size} bytes)`);
        if (error) throw error;
        break;
      }
      const n = Number(count);
      const table = await readAt(file, tableStart, Number(tableSize));
      const tags = new Map<number, number>();
      const lists = new Map<number, number[]>();
      let icc: { at: bigint; length: bigint } | undefined;
      for (let i = 0; i < n; i++) {
        const e = i * entrySize;
        const tag = r.u16(table, e);
        const type = r.u16(table, e + 2);
        const valueCount = big ? r.u64(table, e + 4) : BigInt(r.u32(table, e + 4));
        const width = TYPE_SIZE[type];
        if (!width || valueCount === 0n) continue;
        const inline = BigInt(width) * valueCount <= (big ? 8n : 4n);
        const valueAt = e + (big ? 12 : 8);
        if (tag === ICC_PROFILE) {
          icc = { at: inline ? BigInt(tableStart + valueAt) : big ? r.u64(table, valueAt) : BigInt(r.u32(table, valueAt)), length: BigInt(width) * valueCount };
          continue;
        }
        // Only the first value of most tags matters (BitsPerSample 8,8,8 → 8); ExtraSamples is read whole.
        const wanted = tag === EXTRA_SAMPLES ? Math.min(Number(valueCount), MAX_LIST) : 1;
        const bytes = inline
          ? table.subarray(valueAt, valueAt + width * wanted)
          : await readValues(file, big ? r.u64(table, valueAt) : BigInt(r.u32(table, valueAt)), width * wanted, fileSize);
        if (!bytes) continue;
        tags.set(tag, r.scalar(bytes, type));
        if (tag === EXTRA_SAMPLES) lists.set(tag, Array.from({ length: wanted }, (_, k) => r.scalar(bytes.subarray(k * width), type)));
      }
      const next = table.subarray(n * entrySize);
      const nextOffset = big ? r.u64(next, 0) : BigInt(r.u32(next, 0));
      const width = tags.get(256);
      const height = tags.get(257);
      if (!width || !height) {
        const error = fail(`${where} has no ImageWidth/ImageLength (width ${width ?? "missing"}, height ${height ?? "missing"})`);
        if (error) throw error;
      } else {
        directories.push({
          index,
          width,
          height,
          newSubfileType: tags.get(254) ?? 0,
          subfileType: tags.get(255),
          samplesPerPixel: tags.get(277) ?? 1,
          bitsPerSample: tags.get(258) ?? 1,
          sampleFormat: tags.get(339) ?? 1,
          compression: tags.get(259) ?? 1,
          photometric: tags.get(262),
          orientation: tags.get(274) ?? 1,
          extraSamples: lists.get(EXTRA_SAMPLES) ?? [],
          rowsPerStrip: tags.has(322) ? undefined : Math.min(tags.get(278) ?? height, height),
          tileWidth: tags.get(322),
          tileHeight: tags.get(323),
          planar: tags.get(284) ?? 1,
          predictor: tags.get(317) ?? 1,
          layout: { ifdOffset: at, littleEndian: le, bigTiff: big },
          icc: icc && (await checkIccProfile(file, icc, fileSize)),
        });
      }
      offset = nextOffset;
    }
    if (directories.length === 0) throw new TaskError("input", "input is corrupt: the TIFF has no readable image directory");
    return { directories, broken };
  } finally {
    await file.close();
  }
}

/**
 * An ICC profile starts with its size (big-endian) and has "acsp" at byte 36 (ICC.1:2022 §7.2);
 * libvips refuses anything else with "VipsIcc: not an ICC profile, invalid signature".
 */
async function checkIccProfile(file: FileHandle, icc: { at: bigint; length: bigint }, fileSize: bigint): Promise<NonNullable<TiffDirectory["icc"]>> {
  if (icc.length < 132n) return { valid: false, reason: `it is ${icc.length} bytes, shorter than an ICC header` };
  const head = await readValues(file, icc.at, 40, fileSize);
  if (!head) return { valid: false, reason: "it lies past the end of the file" };
  if (head.toString("latin1", 36, 40) !== "acsp") return { valid: false, reason: "it has no ICC signature" };
  const declared = head.readUInt32BE(0);
  if (BigInt(declared) > icc.length) return { valid: false, reason: `it declares ${declared} bytes but the tag holds ${icc.length}` };
  return { valid: true };
}

async function readAt(file: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  const { bytesRead } = await file.read(buffer, 0, length, position);
  return buffer.subarray(0, bytesRead);
}

async function readValues(file: FileHandle, at: bigint, length: number, size: bigint): Promise<Buffer | undefined> {
  if (at + BigInt(length) > size) return undefined;
  return readAt(file, Number(at), length);
}

class Reader {
  readonly le: boolean;
  constructor(le: boolean) {
    this.le = le;
  }
  u16 = (b: Buffer, at: number) => (this.le ? b.readUInt16LE(at) : b.readUInt16BE(at));
  u32 = (b: Buffer, at: number) => (this.le ? b.readUInt32LE(at) : b.readUInt32BE(at));
  u64 = (b: Buffer, at: number): bigint => (this.le ? b.readBigUInt64LE(at) : b.readBigUInt64BE(at));
  scalar(b: Buffer, type: number): number {
    switch (type) {
      case 1:
      case 2:
      case 6:
      case 7:
        return b[0];
      case 3:
      case 8:
        return this.u16(b, 0);
      case 16:
      case 17:
      case 18:
        return Number(this.u64(b, 0));
      default:
        return this.u32(b, 0);
    }
  }
}

/** The page's number as the operator counts them (1-based, in the original file). */
export function pageNumber(page: TiffDirectory): number {
  return page.number ?? page.index + 1;
}

export interface PageSelection {
  convert: TiffDirectory[];
  skipped: { page: number; width: number; height: number; reason: string }[];
}

/**
 * The full-resolution pages of a TIFF. Reduced-resolution images (thumbnails, previews) and
 * masks are skipped — by their NewSubfileType flag, or, unflagged, by being a small fraction
 * of the largest page — and every skip is reported, never silent.
 */
export function selectPages(directories: TiffDirectory[]): PageSelection {
  const area = (d: TiffDirectory) => d.width * d.height;
  const largest = Math.max(...directories.map(area));
  const convert: TiffDirectory[] = [];
  const skipped: PageSelection["skipped"] = [];
  for (const d of directories) {
    let reason: string | undefined;
    if (d.newSubfileType & 1) reason = "reduced-resolution image (NewSubfileType bit 0), e.g. a thumbnail";
    else if (d.newSubfileType & 4) reason = "transparency mask (NewSubfileType bit 2)";
    else if (d.subfileType === 2) reason = "reduced-resolution image (SubfileType=2)";
    else if (area(d) * 16 <= largest && Math.max(d.width, d.height) <= 1024) {
      reason = `unflagged thumbnail: ${d.width}×${d.height} is at most 1/16 of the largest page and ≤ 1024 px`;
    }
    if (reason) skipped.push({ page: d.index + 1, width: d.width, height: d.height, reason });
    else convert.push(d);
  }
  if (convert.length === 0) {
    // Every image is flagged reduced: the largest one is the best rendition there is.
    const best = directories.reduce((a, b) => (area(b) > area(a) ? b : a));
    convert.push(best);
    skipped.splice(skipped.findIndex((s) => s.page === best.index + 1), 1);
  }
  return { convert, skipped };
}
