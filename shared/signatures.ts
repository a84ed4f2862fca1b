// What an object's first bytes say it is, read without decoding it: a JPEG's frame header (its
// width and height, ITU-T T.81 §B.2.2), a PDF's `%PDF-` header (ISO 32000-1 §7.5.2). The
// orchestrator checks every output a machine reports with these before a success counts; a reader
// function lets it fetch only the byte ranges the walk needs (ranged reads, never the whole object).

/** Reads `length` bytes of the object from `offset` (fewer at its end). */
export type RangeReader = (offset: number, length: number) => Promise<Uint8Array>;

/** Bytes fetched per read: a JPEG's frame header sits in its first few hundred bytes unless large APPn segments (EXIF, ICC) come first. */
export const SIGNATURE_CHUNK = 1024;
/** Reads one JPEG walk may make: past that many segments without a frame header, the object is not taken for a picture. */
export const MAX_SIGNATURE_READS = 8;

export type Frame = { ok: true; width: number; height: number } | { ok: false; problem: string };

// Markers with no length field (T.81 Table B.1): TEM, RSTn, SOI.
const STANDALONE = (m: number) => m === 0x01 || (m >= 0xd0 && m <= 0xd8);
// SOFn: every frame header but DHT (C4), JPG (C8) and DAC (CC), which share the range.
const FRAME = (m: number) => m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;

/**
 * The width and height of the JPEG of `size` bytes that `read` reads: SOI (FF D8 FF), then
 * marker segments walked by their lengths to the first frame header, whose Y and X fields are
 * the picture's height and width. Anything else — no signature, a segment that runs past the
 * object, image data or EOI before a frame, a frame of zero lines — is not a JPEG picture.
 */
export async function jpegFrame(read: RangeReader, size: number): Promise<Frame> {
  let reads = 0;
  let base = 0;
  let bytes: Uint8Array = new Uint8Array(0);
  /** Makes bytes [at, at + n) available, reading from `at` when they are not; false when the object or the reads run out. */
  const have = async (at: number, n: number): Promise<boolean> => {
    if (at >= base && at + n <= base + bytes.length) return true;
    if (at + n > size || reads >= MAX_SIGNATURE_READS) return false;
    reads++;
    bytes = await read(at, Math.min(size - at, Math.max(n, SIGNATURE_CHUNK)));
    base = at;
    return bytes.length >= n;
  };
  const at = (i: number) => bytes[i - base];
  if (!(await have(0, 3)) || at(0) !== 0xff || at(1) !== 0xd8 || at(2) !== 0xff) {
    return { ok: false, problem: "does not start with a JPEG signature (FF D8 FF)" };
  }
  let pos = 2;
  for (;;) {
    if (!(await have(pos, 2))) return { ok: false, problem: noFrame(pos, size, reads) };
    if (at(pos) !== 0xff) return { ok: false, problem: `has no JPEG marker at byte ${pos}` };
    const marker = at(pos + 1);
    if (marker === 0xff) {
      pos += 1; // a fill byte before a marker (T.81 §B.1.1.2)
      continue;
    }
    if (STANDALONE(marker)) {
      pos += 2;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) return { ok: false, problem: `reaches ${marker === 0xda ? "image data (SOS)" : "its end (EOI)"} at byte ${pos} without a frame header` };
    if (!(await have(pos, 4))) return { ok: false, problem: noFrame(pos, size, reads) };
    const length = (at(pos + 2) << 8) | at(pos + 3);
    if (length < 2) return { ok: false, problem: `has a segment of impossible length ${length} at byte ${pos}` };
    if (FRAME(marker)) {
      if (length < 8 || !(await have(pos, 9))) return { ok: false, problem: `has a frame header cut short at byte ${pos}` };
      const height = (at(pos + 5) << 8) | at(pos + 6);
      const width = (at(pos + 7) << 8) | at(pos + 8);
      if (height === 0 || width === 0) return { ok: false, problem: `has a frame header of ${width}×${height} pixels` };
      return { ok: true, width, height };
    }
    pos += 2 + length;
  }
}

function noFrame(pos: number, size: number, reads: number): string {
  return pos >= size ? `ends (${size} bytes) without a frame header` : `has no frame header within its first ${reads} segment reads (byte ${pos})`;
}

/** `%PDF-` at the very start: what the fly-worker writes (a reader may accept it later in the first 1,024 bytes; a written output has no reason to). */
export function isPdfHeader(head: Uint8Array): boolean {
  return head.length >= 5 && head[0] === 0x25 && head[1] === 0x50 && head[2] === 0x44 && head[3] === 0x46 && head[4] === 0x2d;
}

/** True when `head` (the first bytes of a text object) is UTF-8 without NUL; a character cut at the end of the range is allowed. */
export function isUtf8Text(head: Uint8Array): boolean {
  if (head.includes(0)) return false;
  try {
    new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(head, { stream: true });
    return true;
  } catch {
    return false;
  }
}

/** What the first bytes of an output say: its JPEG dimensions when it is one, or why it is not what its content type says. */
export type Evidence = { ok: true; width?: number; height?: number } | { ok: false; problem: string };

/**
 * Whether the object of `size` bytes whose first bytes are `head` (more through `read`) is of
 * `contentType`: a JPEG frame header with the `reported` dimensions (when given), `%PDF-`, or
 * UTF-8 text for `text/*`. A type with no signature known here is taken on its size alone.
 */
export async function signatureProblem(
  contentType: string,
  head: Uint8Array,
  read: RangeReader,
  size: number,
  reported: { width?: number; height?: number },
): Promise<Evidence> {
  const kind = contentType.split(";")[0].trim().toLowerCase();
  if (kind === "image/jpeg") {
    const frame = await jpegFrame(read, size);
    if (!frame.ok) return frame;
    if ((reported.width !== undefined && reported.width !== frame.width) || (reported.height !== undefined && reported.height !== frame.height)) {
      return { ok: false, problem: `is ${frame.width}×${frame.height} pixels, not the ${reported.width ?? "?"}×${reported.height ?? "?"} reported` };
    }
    return { ok: true, width: frame.width, height: frame.height };
  }
  if (kind === "application/pdf") return isPdfHeader(head) ? { ok: true } : { ok: false, problem: "does not start with %PDF-" };
  if (kind.startsWith("text/")) return isUtf8Text(head) ? { ok: true } : { ok: false, problem: "is not UTF-8 text" };
  return { ok: true };
}
