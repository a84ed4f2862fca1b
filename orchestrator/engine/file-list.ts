// The final file list, written to R2 as one NDJSON object (a line per file: each original and
// every output with its source_r2_key) so that what goes downstream is its key, counts and
// checksum, bounded whatever the batch. It is streamed from SQLite a part at a time and sent as
// a multipart upload across alarms: never more than one part in memory, never more than
// FILE_LIST_PARTS_PER_ALARM parts (or the alarm's ALARM_WORK_MS) per alarm, resumable after a crash
// from what is stored (store/file-list.ts). A redrive writes a new object.
//
// R2's multipart rules (developers.cloudflare.com/r2/objects/multipart-objects/): parts of at
// least 5 MiB, all but the last the same size, at most 10,000. Parts are exactly
// FILE_LIST_PART_BYTES, a line running on into the next part where it must.
//
// Checksum: SHA-256 of each part, then SHA-256 of those digests concatenated, base64, "-" and the
// number of parts: S3's composite ("checksum of checksums") form for multipart objects. A receiver
// checks it by reading the object in part_bytes pieces. (A SHA-256 of the whole object cannot be
// carried from one alarm to the next with WebCrypto.)
import { describeZodError, type FileEntry, ObjectKey } from "../../shared/contracts.ts";
import { log } from "../log.ts";
import type { BatchMeta, FileListRow, FileRow } from "../store/index.ts";
import type { Engine } from "./context.ts";

export const FILE_LIST_PART_BYTES = 5 * 1024 * 1024;
export const FILE_LIST_PARTS_PER_ALARM = 4;
/** R2's most parts per upload: 10,000 × 5 MiB = ~50 GB of file list (~200 million files). */
export const MAX_FILE_LIST_PARTS = 10_000;
export const FILE_LIST_CONTENT_TYPE = "application/x-ndjson";
const ROWS_PER_READ = 500;

/** The written list, as the downstream POST and the batch index describe it. */
export interface WrittenFileList {
  key: string;
  entries: number;
  bytes: number;
  parts: number;
  etag: string;
  /** `<base64 SHA-256 of the parts' SHA-256s>-<parts>` */
  checksum: string;
  part_bytes: number;
}

export function writtenList(row: FileListRow): WrittenFileList | null {
  if (row.written_at === null || row.etag === null || row.checksum === null) return null;
  return { key: row.key, entries: row.entries, bytes: row.bytes, parts: row.parts, etag: row.etag, checksum: row.checksum, part_bytes: FILE_LIST_PART_BYTES };
}

/**
 * Where the list goes: beside the batch's manifest, or under its prefix; `.redrive-N` after the
 * Nth redrive; never over an object the batch did not write (a taken key gets `-2`, `-3`, …).
 */
export async function fileListKey(e: Engine, meta: BatchMeta): Promise<string> {
  const root = meta.manifest_key !== null ? meta.manifest_key.slice(0, meta.manifest_key.lastIndexOf("/") + 1) : (meta.prefix ?? "");
  const dir = root === "" || root.endsWith("/") ? root : `${root}/`;
  const base = `${dir}_fanout/file-list${meta.redrives > 0 ? `.redrive-${meta.redrives}` : ""}`;
  for (let n = 1; n <= 100; n++) {
    const key = n === 1 ? `${base}.ndjson` : `${base}-${n}.ndjson`;
    const valid = ObjectKey.safeParse(key);
    if (!valid.success) throw new Error(`the file list's key ${key} is not a valid key: ${describeZodError(valid.error)}`);
    if (e.store.keyTaken(key) || (await e.objects().head(key))) continue;
    return key;
  }
  throw new Error(`no free key for the file list under ${base} (100 taken)`);
}

/**
 * Writes (or goes on writing) the batch's final file list. Returns it once complete, or null when
 * the next alarm must go on (FILE_LIST_PARTS_PER_ALARM parts sent, or the alarm's time is up).
 */
export async function writeFileList(e: Engine, meta: BatchMeta): Promise<WrittenFileList | null> {
  const redrive = meta.redrives;
  let row = e.store.fileList(redrive);
  if (!row) {
    e.store.startFileList(redrive, await fileListKey(e, meta));
    row = e.store.fileList(redrive)!;
  }
  const done = writtenList(row);
  if (done) return done;
  const objects = e.objects();
  // One part's buffer for the alarm: each part is sent (and done with) before the next is built.
  const buffer = new Uint8Array(FILE_LIST_PART_BYTES);
  for (let sent = 0; sent < FILE_LIST_PARTS_PER_ALARM && !e.outbound.overdue; sent++) {
    const part = buildPart(e, row, buffer);
    const partNumber = row.parts + 1;
    if (partNumber === 1 && part.last) {
      // The whole list fits one part: one PUT.
      const digest = await sha256(part.bytes);
      const { etag } = await objects.put(row.key, part.bytes, FILE_LIST_CONTENT_TYPE);
      return finish(e, meta, row, { etag, parts: 1, digests: [digest], entries: part.entries, bytes: part.bytes.byteLength });
    }
    if (part.bytes.byteLength === 0 && part.last) return complete(e, meta, row);
    if (partNumber > MAX_FILE_LIST_PARTS) throw new Error(`the file list needs more than ${MAX_FILE_LIST_PARTS} parts of ${FILE_LIST_PART_BYTES} bytes (R2's limit)`);
    let uploadId = row.upload_id;
    if (uploadId === null) {
      uploadId = await objects.createMultipart(row.key, FILE_LIST_CONTENT_TYPE);
      e.store.setUploadId(redrive, uploadId);
    }
    const etag = await objects.uploadPart(row.key, uploadId, partNumber, part.bytes);
    const digest = await sha256(part.bytes);
    const at = { after_id: part.afterId, carry: part.carry, entries: part.entries, bytes: row.bytes + part.bytes.byteLength };
    e.store.transaction(() => e.store.partWritten(redrive, { part: partNumber, etag, sha256: digest }, at));
    row = e.store.fileList(redrive)!;
    if (part.last) return complete(e, meta, row);
  }
  log("DO", "file_list_progress", { batch_id: meta.batch_id, key: row.key, parts: row.parts, entries: row.entries, bytes: row.bytes });
  return null;
}

interface Part {
  bytes: Uint8Array;
  afterId: number;
  carry: ArrayBuffer | null;
  /** Entries whose line has been started, counting this part's. */
  entries: number;
  /** Nothing follows this part. */
  last: boolean;
}

/** The next part, in `buffer`: the carried bytes, then a line per file, cut at exactly FILE_LIST_PART_BYTES. */
function buildPart(e: Engine, row: FileListRow, buffer: Uint8Array): Part {
  const encoder = new TextEncoder();
  let length = 0;
  let afterId = row.after_id;
  let entries = row.entries;
  let carry: Uint8Array | null = row.carry ? new Uint8Array(row.carry) : null;
  const put = (bytes: Uint8Array): Uint8Array | null => {
    const n = Math.min(bytes.byteLength, buffer.byteLength - length);
    buffer.set(bytes.subarray(0, n), length);
    length += n;
    return n < bytes.byteLength ? bytes.slice(n) : null;
  };
  if (carry) carry = put(carry);
  let exhausted = false;
  while (carry === null && length < buffer.byteLength && !exhausted) {
    const rows = e.store.filesAfter(afterId, ROWS_PER_READ);
    let i = 0;
    while (i < rows.length && carry === null && length < buffer.byteLength) {
      afterId = rows[i++].id;
      entries++;
      carry = put(encoder.encode(`${JSON.stringify(toFileEntry(rows[i - 1]))}\n`));
    }
    exhausted = i === rows.length && rows.length < ROWS_PER_READ;
  }
  // A full part: whether anything follows is known only from one more read.
  const last = carry === null && (exhausted || e.store.filesAfter(afterId, 1).length === 0);
  return { bytes: buffer.subarray(0, length), afterId, carry: carry ? (carry.slice().buffer as ArrayBuffer) : null, entries, last };
}

/** Completes the multipart upload from the stored parts (read a page at a time). */
async function complete(e: Engine, meta: BatchMeta, row: FileListRow): Promise<WrittenFileList> {
  const parts: { part: number; etag: string }[] = [];
  const digests: ArrayBuffer[] = [];
  for (let after = 0; ; ) {
    const page = e.store.fileListParts(row.redrive, after, 1000);
    for (const p of page) {
      parts.push({ part: p.part, etag: p.etag });
      digests.push(p.sha256);
    }
    if (page.length < 1000) break;
    after = page[page.length - 1].part;
  }
  const { etag } = await e.objects().completeMultipart(row.key, row.upload_id!, parts);
  return finish(e, meta, row, { etag, parts: parts.length, digests, entries: row.entries, bytes: row.bytes });
}

async function finish(
  e: Engine,
  meta: BatchMeta,
  row: FileListRow,
  w: { etag: string; parts: number; digests: ArrayBuffer[]; entries: number; bytes: number },
): Promise<WrittenFileList> {
  const joined = new Uint8Array(w.digests.length * 32);
  w.digests.forEach((d, i) => joined.set(new Uint8Array(d), i * 32));
  const checksum = `${base64(await sha256(joined))}-${w.parts}`;
  e.store.fileListWritten(row.redrive, { etag: w.etag, checksum, entries: w.entries, bytes: w.bytes, parts: w.parts }, Date.now());
  log("DO", "file_list_written", { batch_id: meta.batch_id, key: row.key, entries: w.entries, bytes: w.bytes, parts: w.parts, checksum });
  return writtenList(e.store.fileList(row.redrive)!)!;
}

const sha256 = (bytes: Uint8Array) => crypto.subtle.digest("SHA-256", bytes);

function base64(buffer: ArrayBuffer): string {
  let s = "";
  for (const b of new Uint8Array(buffer)) s += String.fromCharCode(b);
  return btoa(s);
}

/** A file as it goes downstream: its entry, with source_r2_key on outputs (never its directory's processing_config). */
export function toFileEntry(f: FileRow): FileEntry {
  // Files discovered before migration 9 carry processing_config in extra_json: it stays home.
  const { processing_config: _config, ...extra } = f.extra_json ? (JSON.parse(f.extra_json) as Record<string, unknown>) : {};
  return {
    ...extra,
    r2_key: f.r2_key,
    logical_path: f.logical_path,
    file_name: f.file_name,
    file_size: f.file_size,
    content_type: f.content_type,
    ...(f.cid ? { cid: f.cid } : {}),
    ...(f.source_key ? { source_r2_key: f.source_key } : {}),
  };
}
