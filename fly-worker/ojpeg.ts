// Old-style JPEG (Compression 6, TIFF 6.0 §22, replaced by Technote 2): sharp's libtiff is
// built without it. Each strip or tile becomes a baseline JPEG — its own bytes when they are one,
// else the tables of JPEGInterchangeFormat or of the JPEGQTables/DCTables/ACTables tags with a
// frame and scan header sized for the chunk — decoded by sharp's libjpeg, and the page is
// rebuilt as 8-bit RGB (or grey) strips. A JPEGInterchangeFormat stream that is the whole
// picture is decoded as it is, streamed by libvips.
import { open, type FileHandle } from "node:fs/promises";
import sharp from "sharp";
import { readTags, TiffPageWriter, type Tag, type Tags } from "./tiff-ifd.ts";
import type { TiffDirectory } from "./tiff.ts";

interface Component {
  id: number;
  sampling: number;
  quantTable: number;
  huffman: number;
}

interface Header {
  /** DQT, DHT, DRI and APP14 segments, as stored or made from the tags. */
  tables: Buffer[];
  components: Component[];
}

const segment = (marker: number, body: Buffer) => {
  const head = Buffer.alloc(4);
  head.writeUInt16BE(marker, 0);
  head.writeUInt16BE(body.length + 2, 2);
  return Buffer.concat([head, body]);
};

/** The segments of a JPEG stream up to its first scan; `scanAt` is where the entropy-coded data starts. */
function parseJpegHeader(b: Buffer): { tables: Buffer[]; frame?: { width: number; height: number; components: Component[] }; scanAt?: number } {
  const tables: Buffer[] = [];
  let frame: { width: number; height: number; components: Component[] } | undefined;
  let i = b[0] === 0xff && b[1] === 0xd8 ? 2 : 0;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) return { tables, frame };
    const marker = b.readUInt16BE(i);
    if (marker === 0xffd8 || (marker >= 0xffd0 && marker <= 0xffd7) || marker === 0xff01 || marker === 0xffff) {
      i += marker === 0xffff ? 1 : 2;
      continue;
    }
    const length = b.readUInt16BE(i + 2);
    const body = b.subarray(i + 4, i + 2 + length);
    if (marker === 0xffdb || marker === 0xffc4 || marker === 0xffdd || marker === 0xffee) tables.push(b.subarray(i, i + 2 + length));
    if (marker === 0xffc0 || marker === 0xffc1) {
      const components = Array.from({ length: body[5] }, (_, k) => ({ id: body[6 + k * 3], sampling: body[7 + k * 3], quantTable: body[8 + k * 3], huffman: k === 0 ? 0 : 0x11 }));
      frame = { height: body.readUInt16BE(1), width: body.readUInt16BE(3), components };
    }
    if (marker === 0xffda) {
      for (let k = 0; k < body[0] && frame; k++) {
        const c = frame.components.find((x) => x.id === body[1 + k * 2]);
        if (c) c.huffman = body[2 + k * 2];
      }
      return { tables, frame, scanAt: i + 2 + length };
    }
    i += 2 + length;
  }
  return { tables, frame };
}

async function readAt(file: FileHandle, at: number, length: number, size: number): Promise<Buffer> {
  if (at + length > size) throw new Error(`old-style JPEG data (${length} bytes at ${at}) lies past the end of the file (${size} bytes)`);
  const b = Buffer.alloc(length);
  await file.read(b, 0, length, at);
  return b;
}

/** Tables from JPEGQTables (519), JPEGDCTables (520), JPEGACTables (521), JPEGRestartInterval (515). */
async function headerFromTags(file: FileHandle, tags: Tags, page: TiffDirectory, size: number): Promise<Header> {
  const q = tags.get(519)?.values ?? [];
  const dc = tags.get(520)?.values ?? [];
  const ac = tags.get(521)?.values ?? [];
  if (q.length === 0 || dc.length === 0 || ac.length === 0) throw new Error("it has neither a JPEGInterchangeFormat stream nor the JPEGQTables/DCTables/ACTables tags its strips need");
  const tables: Buffer[] = [];
  for (const [k, at] of q.entries()) tables.push(segment(0xffdb, Buffer.concat([Buffer.from([k]), await readAt(file, at, 64, size)])));
  for (const [cls, offsets] of [[0, dc], [1, ac]] as const) {
    for (const [k, at] of offsets.entries()) {
      const counts = await readAt(file, at, 16, size);
      const values = await readAt(file, at + 16, counts.reduce((a, b) => a + b, 0), size);
      tables.push(segment(0xffc4, Buffer.concat([Buffer.from([(cls << 4) | k]), counts, values])));
    }
  }
  const restart = tags.get(515)?.values[0];
  if (restart) tables.push(segment(0xffdd, Buffer.from([restart >> 8, restart & 0xff])));
  const [h, v] = tags.get(530)?.values ?? [2, 2];
  const components = Array.from({ length: page.samplesPerPixel }, (_, k) => ({
    id: k + 1,
    sampling: k === 0 && page.photometric === 6 ? (h << 4) | v : 0x11,
    quantTable: Math.min(k, q.length - 1),
    huffman: (Math.min(k, dc.length - 1) << 4) | Math.min(k, ac.length - 1),
  }));
  return { tables, components };
}

/** A baseline JPEG of one chunk: SOI, [Adobe: no colour transform for RGB], tables, frame, scan, data, EOI. */
function chunkJpeg(header: Header, data: Buffer, width: number, rows: number, rgb: boolean): Buffer {
  if (data[0] === 0xff && data[1] === 0xd8) return data;
  const n = header.components.length;
  const frame = Buffer.alloc(6 + n * 3);
  frame.writeUInt8(8, 0);
  frame.writeUInt16BE(rows, 1);
  frame.writeUInt16BE(width, 3);
  frame.writeUInt8(n, 5);
  const scan = Buffer.alloc(4 + n * 2);
  scan.writeUInt8(n, 0);
  header.components.forEach((c, k) => {
    frame.set([c.id, c.sampling, c.quantTable], 6 + k * 3);
    scan.set([c.id, c.huffman], 1 + k * 2);
  });
  scan.set([0, 63, 0], 1 + n * 2);
  const adobe = rgb ? [segment(0xffee, Buffer.from([0x41, 0x64, 0x6f, 0x62, 0x65, 0, 100, 0, 0, 0, 0, 0]))] : [];
  const end = data.length >= 2 && data[data.length - 2] === 0xff && data[data.length - 1] === 0xd9 ? [] : [Buffer.from([0xff, 0xd9])];
  return Buffer.concat([Buffer.from([0xff, 0xd8]), ...adobe, ...header.tables, segment(0xffc0, frame), segment(0xffda, scan), data, ...end]);
}

/** Rebuilds an old-style JPEG page as uncompressed 8-bit RGB (grey for one component) at `output`. */
export async function rebuildOldJpeg(input: string, page: TiffDirectory, output: string): Promise<void> {
  const file = await open(input, "r");
  try {
    const { size } = await file.stat();
    const tags = await readTags(file, page);
    const grey = page.samplesPerPixel === 1;
    const kept: Tags = new Map([274, 282, 283, 296].filter((t) => tags.has(t)).map((t) => [t, tags.get(t) as Tag]));
    const jifAt = tags.get(513)?.values[0];
    const jif = jifAt === undefined ? undefined : await readAt(file, jifAt, Math.min(tags.get(514)?.values[0] ?? size - jifAt, size - jifAt), size);
    const parsed = jif ? parseJpegHeader(jif) : undefined;
    if (jif && parsed?.scanAt !== undefined && parsed.frame?.width === page.width && parsed.frame.height === page.height) {
      // The interchange stream is the whole picture: libvips streams it into the rebuilt page.
      const image = sharp(jif, { sequentialRead: true }).toColourspace(grey ? "b-w" : "srgb");
      await image.withMetadata({ orientation: page.orientation > 1 ? page.orientation : undefined }).tiff({ compression: "none" }).toFile(output);
      return;
    }
    const header: Header = parsed?.frame ? { tables: parsed.tables, components: parsed.frame.components } : await headerFromTags(file, tags, page, size);
    await writeChunks(file, page, tags, size, header, grey, kept, output);
  } finally {
    await file.close();
  }
}

async function writeChunks(file: FileHandle, page: TiffDirectory, tags: Tags, size: number, header: Header, grey: boolean, kept: Tags, output: string): Promise<void> {
  const tiled = page.tileWidth !== undefined;
  const offsets = tags.get(tiled ? 324 : 273)?.values ?? [];
  const counts = tags.get(tiled ? 325 : 279)?.values ?? [];
  const cw = tiled ? (page.tileWidth ?? 0) : page.width;
  const ch = tiled ? (page.tileHeight ?? 0) : (page.rowsPerStrip ?? page.height);
  const across = Math.ceil(page.width / cw);
  const down = Math.ceil(page.height / ch);
  if (offsets.length < across * down || counts.length < offsets.length) throw new Error(`it has ${offsets.length} strips or tiles, fewer than its size needs (${across * down})`);
  const channels = grey ? 1 : 3;
  const writer = await TiffPageWriter.create(output);
  try {
    for (let r = 0; r < down; r++) {
      const rows = Math.min(ch, page.height - r * ch);
      const band = Buffer.alloc(rows * page.width * channels);
      for (let c = 0; c < across; c++) {
        const i = r * across + c;
        const jpeg = chunkJpeg(header, await readAt(file, offsets[i], counts[i], size), cw, tiled ? ch : rows, page.photometric === 2);
        const { data, info } = await sharp(jpeg).toColourspace(grey ? "b-w" : "srgb").raw().toBuffer({ resolveWithObject: true });
        const columns = Math.min(cw, page.width - c * cw, info.width);
        for (let y = 0; y < Math.min(rows, info.height); y++) {
          data.copy(band, (y * page.width + c * cw) * channels, y * info.width * info.channels, (y * info.width + columns) * info.channels);
        }
      }
      await writer.chunk(band);
    }
    const out = new Map(kept);
    out.set(256, { type: 4, values: [page.width] });
    out.set(257, { type: 4, values: [page.height] });
    out.set(258, { type: 3, values: Array<number>(channels).fill(8) });
    out.set(259, { type: 3, values: [1] });
    out.set(262, { type: 3, values: [grey ? 1 : 2] });
    out.set(277, { type: 3, values: [channels] });
    out.set(278, { type: 4, values: [ch] });
    await writer.finish(out, 273, 279);
  } catch (error) {
    await writer.abandon();
    throw error;
  }
}
