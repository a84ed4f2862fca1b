// Reads a batch manifest as a stream, a page of at most N file entries per call, resumable from a
// small JSON cursor with bounded ranged reads that consecutive pages share; never holds the whole text.
import { type ObjectStore, type ObjectStream, StorageError } from "../storage.ts";
import type { ManifestCursor } from "./manifest-cursor.ts";
import { type ManifestPage, PAGE_FULL, PageReader, pageError } from "./manifest-page.ts";

export { type ManifestCursor, parseManifestCursor } from "./manifest-cursor.ts";
export { type ManifestEntry, type ManifestPage, MAX_MANIFEST_ENTRY_BYTES, MAX_PROCESSING_CONFIG_BYTES } from "./manifest-page.ts";

/**
 * File entries per page and pages per alarm: discovery holds one page at a time, and a page's
 * entries live until they are inserted, long enough for V8 to move them to its old generation.
 * At 300,000 entries (bench/manifest-memory.ts, 1 MiB shared windows) pages of 1,000 peaked the
 * isolate's heap at +18.6 MB in most runs and +53 to +71 MB in others; pages of 250 at +9.0 to
 * +9.3 MB in every run, workerd 53.9–55.1 MB, discovery no slower (21–24 s).
 */
export const MANIFEST_PAGE_SIZE = 250;
export const MANIFEST_PAGES_PER_ALARM = 80;

/**
 * A page also ends once its entries reach this many bytes of manifest text: its files are one
 * SQLite value when stored (store/files.ts), and a value may not pass 2 MB
 * (developers.cloudflare.com/durable-objects/platform/limits/). Entries of the usual ~200 bytes
 * fill 250 entries long before this.
 */
export const MANIFEST_PAGE_BYTES = 256 * 1024;

/**
 * Bytes asked for per ranged read: never `bytes=offset-` (an open-ended read cancelled once the
 * page is full left the runtime buffering the rest of the manifest, page after page), and large
 * enough that an alarm's pages take a few reads (bench/manifest-memory.ts, 300,000 entries, pages
 * of 1,000: 1 MiB windows shared by the pages ~60 MB of workerd growth, 256 KiB ~72 MB, a 256 KiB
 * read per page 74.4 MB).
 */
export const MANIFEST_READ_WINDOW_BYTES = 1024 * 1024;

/**
 * Reads the next page of at most `limit` file entries (directories count as one unit of work
 * too, so a page is bounded whatever the manifest's shape). Storage failures throw (a
 * StorageError, retryable unless said otherwise); a manifest that cannot run gives `{ error }`.
 * The page is read as ranges of at most `windowBytes` (a parameter for the tests).
 */
export async function readManifestPage(
  store: ObjectStore,
  key: string,
  batchId: string,
  cursor: ManifestCursor | null,
  limit: number,
  windowBytes = MANIFEST_READ_WINDOW_BYTES,
  maxBytes = Number.POSITIVE_INFINITY,
): Promise<ManifestPage> {
  const reader = new ManifestReader(store, key, batchId, windowBytes);
  try {
    return await reader.page(cursor, limit, maxBytes);
  } finally {
    await reader.close();
  }
}

/**
 * Consecutive pages of one manifest (one alarm's worth): the ranged read a page stops in stays
 * open for the next page, which starts with the bytes already read past the stop. Every ranged
 * read costs the runtime memory it gives back slowly (300,000 entries: a 256 KiB read per page
 * grew workerd by 74.4 MB, four 64 KiB reads per page by 144.5 MB), so reads follow the bytes,
 * not the pages. A page that starts elsewhere (a directory's files read again) opens a new read.
 */
export class ManifestReader {
  readonly #store: ObjectStore;
  readonly #key: string;
  readonly #batchId: string;
  readonly #windowBytes: number;
  #stream: ObjectStream | null = null;
  #body: ChunkReader | null = null;
  /** Absolute offset of the next byte #body gives, and how many the open window has given. */
  #at = 0;
  #windowRead = 0;
  /** Bytes read past the last page's stop (a copy), starting at absolute offset #spareAt. */
  #spare: Uint8Array | null = null;
  #spareAt = 0;

  constructor(store: ObjectStore, key: string, batchId: string, windowBytes = MANIFEST_READ_WINDOW_BYTES) {
    this.#store = store;
    this.#key = key;
    this.#batchId = batchId;
    this.#windowBytes = windowBytes;
  }

  /** Opens the window at `offset`; null when the object is gone, else its ETag. */
  async #open(offset: number): Promise<string | null> {
    await this.close();
    const stream = await this.#store.getStream(this.#key, offset, this.#windowBytes);
    if (stream === null) return null;
    this.#stream = stream;
    this.#body = chunkReader(stream.body);
    this.#at = offset;
    this.#windowRead = 0;
    return stream.etag;
  }

  async close(): Promise<void> {
    const body = this.#body;
    this.#stream = null;
    this.#body = null;
    this.#spare = null;
    await body?.cancel().catch(() => {});
  }

  async page(cursor: ManifestCursor | null, limit: number, maxBytes = Number.POSITIVE_INFINITY): Promise<ManifestPage> {
    const key = this.#key;
    const start = cursor?.offset ?? 0;
    const changed = (was: string, now: string): ManifestPage => ({
      error: `manifest ${key} changed while it was being read (ETag ${was}, now ${now}); submit the batch again`,
    });
    // The open window serves this page when the page starts within what it holds or has yet to give.
    const spareEnd = this.#spareAt + (this.#spare?.byteLength ?? 0);
    const reuse = this.#stream !== null && (this.#spare !== null ? start >= this.#spareAt && start <= spareEnd : start === this.#at);
    if (!reuse) {
      const etag = await this.#open(start);
      if (etag === null) return { error: cursor === null ? `manifest ${key} not found` : `manifest ${key} was deleted while it was being read; submit the batch again` };
      if (cursor !== null && etag !== cursor.etag) {
        await this.close();
        return changed(cursor.etag, etag);
      }
    }
    const stream = this.#stream!;
    const etag = cursor?.etag ?? stream.etag;
    if (reuse && etag !== stream.etag) return changed(etag, stream.etag);
    const reader = new PageReader(key, this.#batchId, cursor, limit, etag, maxBytes);
    const spare = reuse && this.#spare !== null ? this.#spare.subarray(start - this.#spareAt) : null;
    this.#spare = null;
    let fed = start; // absolute offset of the first byte of what is being fed
    let bytes: Uint8Array | null = null;
    try {
      reader.begin();
      if (spare !== null && spare.byteLength > 0) {
        bytes = spare;
        reader.write(spare);
        fed += spare.byteLength;
      }
      for (;;) {
        for (;;) {
          try {
            bytes = await this.#body!.read();
          } catch (error) {
            throw new StorageError(`reading manifest ${key} failed: ${error instanceof Error ? error.message : String(error)}`, true);
          }
          if (bytes === null) break;
          fed = this.#at;
          this.#at += bytes.byteLength;
          this.#windowRead += bytes.byteLength;
          reader.write(bytes);
        }
        if (this.#at >= this.#stream!.size) return reader.end();
        if (this.#windowRead === 0) {
          throw new StorageError(`reading manifest ${key} at byte ${this.#at} of ${this.#stream!.size} gave no bytes`, true);
        }
        // The window is read and the page not yet full: on with the next window of the same object.
        const next = await this.#open(this.#at);
        if (next === null) return { error: `manifest ${key} was deleted while it was being read; submit the batch again` };
        if (next !== etag) {
          await this.close();
          return changed(etag, next);
        }
      }
    } catch (error) {
      if (error === PAGE_FULL) {
        const page = reader.full();
        // Keep what was read past the stop (the chunk buffer is reused: copy it) for the next page.
        const stop = reader.stopOffset();
        if (bytes !== null && stop >= fed && stop <= fed + bytes.byteLength) {
          this.#spare = bytes.slice(stop - fed);
          this.#spareAt = stop;
        } else {
          await this.close(); // the next page starts elsewhere (a directory's files read again)
        }
        return page;
      }
      await this.close();
      const invalid = pageError(error, key, reader);
      if (invalid) return invalid;
      throw error;
    }
  }
}

/** Bytes read at a time into the one buffer a page reuses. */
export const MANIFEST_READ_BUFFER_BYTES = 64 * 1024;

/**
 * Chunks of `body`, read into one reused buffer when the stream is a byte stream (R2's and
 * fetch's are). A fresh ArrayBuffer per chunk is memory outside the JS heap that V8 frees
 * only at a full collection: over a discovery it added up to about the manifest's size.
 * Each chunk is valid until the next read (the tokenizer copies what it keeps).
 */
export interface ChunkReader {
  read(): Promise<Uint8Array | null>;
  cancel(): Promise<void>;
}
export function chunkReader(body: ReadableStream<Uint8Array>): ChunkReader {
  let byob: ReadableStreamBYOBReader | null = null;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    // not a byte stream: one chunk at a time as the stream gives them
  }
  if (byob !== null) {
    const reader = byob;
    let buffer = new ArrayBuffer(MANIFEST_READ_BUFFER_BYTES);
    return {
      async read() {
        const r = await reader.read(new Uint8Array(buffer));
        if (r.done) return null;
        buffer = r.value.buffer as ArrayBuffer; // the same memory, handed back
        return r.value;
      },
      cancel: () => reader.cancel(),
    };
  }
  const reader = body.getReader();
  return {
    async read() {
      const r = await reader.read();
      return r.done ? null : r.value;
    },
    cancel: () => reader.cancel(),
  };
}
