// Every tag of one TIFF directory, and a writer of single-page TIFFs: what rewrite.ts needs to
// hand libvips a page it can read (decompressed, planes interleaved, samples recoded) without
// ever holding more than one strip or tile row of it.
import { open, type FileHandle } from "node:fs/promises";
import type { TiffDirectory } from "./tiff.ts";

/** One tag: its TIFF type and its values (a RATIONAL is two values, numerator then denominator). */
export interface Tag {
  type: number;
  values: number[];
}

export type Tags = Map<number, Tag>;

const SIZE: Record<number, number> = { 1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8 };
/** No real directory has more values in one tag (a 1-row-per-strip 1,000,000-row scan has 10⁶ offsets). */
const MAX_VALUES = 4_000_000;

/** Reads every tag of `page`'s directory; values past the end of the file are an error. */
export async function readTags(file: FileHandle, page: TiffDirectory): Promise<Tags> {
  const { ifdOffset, littleEndian: le, bigTiff: big } = page.layout;
  const { size } = await file.stat();
  const read = async (at: number, length: number) => {
    if (at + length > size) throw new Error(`a tag's values (${length} bytes at ${at}) lie past the end of the file (${size} bytes)`);
    const buffer = Buffer.alloc(length);
    await file.read(buffer, 0, length, at);
    return buffer;
  };
  const countBytes = await read(ifdOffset, big ? 8 : 2);
  const n = Number(big ? (le ? countBytes.readBigUInt64LE(0) : countBytes.readBigUInt64BE(0)) : le ? countBytes.readUInt16LE(0) : countBytes.readUInt16BE(0));
  const entrySize = big ? 20 : 12;
  const table = await read(ifdOffset + countBytes.length, n * entrySize);
  const tags: Tags = new Map();
  for (let i = 0; i < n; i++) {
    const e = table.subarray(i * entrySize, (i + 1) * entrySize);
    const tag = le ? e.readUInt16LE(0) : e.readUInt16BE(0);
    const type = le ? e.readUInt16LE(2) : e.readUInt16BE(2);
    const count = Number(big ? (le ? e.readBigUInt64LE(4) : e.readBigUInt64BE(4)) : le ? e.readUInt32LE(4) : e.readUInt32BE(4));
    const width = SIZE[type];
    if (!width || count === 0 || count > MAX_VALUES) continue;
    const length = width * count;
    const slot = e.subarray(big ? 12 : 8);
    const bytes = length <= slot.length ? slot.subarray(0, length) : await read(Number(big ? (le ? slot.readBigUInt64LE(0) : slot.readBigUInt64BE(0)) : le ? slot.readUInt32LE(0) : slot.readUInt32BE(0)), length);
    tags.set(tag, { type, values: decodeValues(bytes, type, count, le) });
  }
  return tags;
}

function decodeValues(b: Buffer, type: number, count: number, le: boolean): number[] {
  const out: number[] = [];
  const n = type === 5 || type === 10 ? count * 2 : count;
  for (let i = 0; i < n; i++) {
    switch (type) {
      case 3:
        out.push(le ? b.readUInt16LE(i * 2) : b.readUInt16BE(i * 2));
        break;
      case 8:
        out.push(le ? b.readInt16LE(i * 2) : b.readInt16BE(i * 2));
        break;
      case 4:
      case 5:
      case 13:
        out.push(le ? b.readUInt32LE(i * 4) : b.readUInt32BE(i * 4));
        break;
      case 9:
      case 10:
        out.push(le ? b.readInt32LE(i * 4) : b.readInt32BE(i * 4));
        break;
      case 11:
        out.push(le ? b.readFloatLE(i * 4) : b.readFloatBE(i * 4));
        break;
      case 12:
        out.push(le ? b.readDoubleLE(i * 8) : b.readDoubleBE(i * 8));
        break;
      case 16:
      case 18:
        out.push(Number(le ? b.readBigUInt64LE(i * 8) : b.readBigUInt64BE(i * 8)));
        break;
      case 17:
        out.push(Number(le ? b.readBigInt64LE(i * 8) : b.readBigInt64BE(i * 8)));
        break;
      case 6:
        out.push(b.readInt8(i));
        break;
      default:
        out.push(b[i]);
    }
  }
  return out;
}

function encodeValues(tag: Tag): Buffer {
  const { type, values } = tag;
  const width = type === 5 || type === 10 ? 4 : SIZE[type];
  const b = Buffer.alloc(Math.max(values.length * width, 0));
  values.forEach((v, i) => {
    const at = i * width;
    if (type === 3) b.writeUInt16LE(v, at);
    else if (type === 8) b.writeInt16LE(v, at);
    else if (type === 4 || type === 5 || type === 13) b.writeUInt32LE(v, at);
    else if (type === 9 || type === 10) b.writeInt32LE(v, at);
    else if (type === 11) b.writeFloatLE(v, at);
    else if (type === 12) b.writeDoubleLE(v, at);
    else if (type === 16 || type === 18) b.writeBigUInt64LE(BigInt(v), at);
    else if (type === 17) b.writeBigInt64LE(BigInt(v), at);
    else if (type === 6) b.writeInt8(v, at);
    else b.writeUInt8(v, at);
  });
  return b;
}

/**
 * Writes one page as a little-endian BigTIFF (no 4 GB limit): the header, then each chunk as it
 * comes, then the directory. Only the chunk being written is in memory.
 */
export class TiffPageWriter {
  private readonly file: FileHandle;
  private position = 16;
  readonly offsets: number[] = [];
  readonly byteCounts: number[] = [];

  private constructor(file: FileHandle) {
    this.file = file;
  }

  static async create(path: string): Promise<TiffPageWriter> {
    return new TiffPageWriter(await open(path, "w"));
  }

  async chunk(data: Buffer): Promise<void> {
    this.offsets.push(this.position);
    this.byteCounts.push(data.length);
    await this.file.write(data, 0, data.length, this.position);
    this.position += data.length + (data.length % 2);
  }

  /** Writes the directory (the chunk offsets and counts go under `offsetTag`/`countTag`) and closes the file. */
  async finish(tags: Tags, offsetTag: 273 | 324, countTag: 279 | 325): Promise<void> {
    try {
      const all = new Map(tags);
      all.set(offsetTag, { type: 16, values: this.offsets });
      all.set(countTag, { type: 16, values: this.byteCounts });
      const entries = [...all.entries()].filter(([, t]) => t.values.length > 0).sort((a, b) => a[0] - b[0]);
      const values: Buffer[] = [];
      let valuesAt = this.position;
      const table = Buffer.alloc(8 + entries.length * 20 + 8);
      table.writeBigUInt64LE(BigInt(entries.length), 0);
      entries.forEach(([tag, t], i) => {
        const e = 8 + i * 20;
        const bytes = encodeValues(t);
        table.writeUInt16LE(tag, e);
        table.writeUInt16LE(t.type, e + 2);
        table.writeBigUInt64LE(BigInt(t.type === 5 || t.type === 10 ? t.values.length / 2 : t.values.length), e + 4);
        if (bytes.length <= 8) bytes.copy(table, e + 12);
        else {
          table.writeBigUInt64LE(BigInt(valuesAt), e + 12);
          values.push(bytes.length % 2 ? Buffer.concat([bytes, Buffer.alloc(1)]) : bytes);
          valuesAt += bytes.length + (bytes.length % 2);
        }
      });
      const block = Buffer.concat([...values, table]);
      await this.file.write(block, 0, block.length, this.position);
      const header = Buffer.alloc(16);
      header.write("II", 0, "latin1");
      header.writeUInt16LE(43, 2);
      header.writeUInt16LE(8, 4);
      header.writeBigUInt64LE(BigInt(valuesAt), 8);
      await this.file.write(header, 0, 16, 0);
    } finally {
      await this.file.close();
    }
  }

  async abandon(): Promise<void> {
    await this.file.close();
  }
}
