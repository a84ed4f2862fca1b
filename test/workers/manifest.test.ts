// The streamed manifest reader against the real R2 binding in workerd: page by page from a
// cursor that goes through JSON as it does through the batch's meta, and discovery in the DO.
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  MANIFEST_PAGE_SIZE,
  MANIFEST_PAGES_PER_ALARM,
  MANIFEST_READ_BUFFER_BYTES,
  MANIFEST_READ_WINDOW_BYTES,
  type ManifestCursor,
  type ManifestEntry,
  ManifestReader,
  parseManifestCursor,
  readManifestPage,
} from "../../orchestrator/engine/manifest.ts";
import { type ObjectStore, R2ObjectStore } from "../../orchestrator/storage.ts";
import { installWorld, stub, waitForStatus, withStore, type World } from "./support/engine.ts";
import { ChunkedStore, expectLengthHonoured, shapedManifest, wholeTextEntries, withGetStream } from "./support/manifest-fixture.ts";

const r2 = () => new R2ObjectStore(env.BUCKET);

/**
 * Reads the whole manifest a page at a time from a JSON-stored cursor: each page from a fresh
 * reader, or `pagesPerReader` pages from one ManifestReader (as one alarm reads its pages).
 */
async function readAll(store: ObjectStore, key: string, batchId: string, limit: number, windowBytes?: number, pagesPerReader = 1) {
  const pages: ManifestEntry[][] = [];
  const cursors: ManifestCursor[] = [];
  let stored: string | null = null;
  let reader: ManifestReader | null = null;
  try {
    for (;;) {
      const cursor = parseManifestCursor(stored);
      if (typeof cursor === "string") throw new Error(cursor);
      if (pagesPerReader > 1 && pages.length % pagesPerReader === 0) {
        await reader?.close();
        reader = new ManifestReader(store, key, batchId, windowBytes);
      }
      const page = reader ? await reader.page(cursor, limit) : await readManifestPage(store, key, batchId, cursor, limit, windowBytes);
      if (page.error !== undefined) return { error: page.error, pages, cursors };
      pages.push(page.entries);
      if (page.cursor === null) return { pages, cursors };
      cursors.push(page.cursor);
      stored = JSON.stringify(page.cursor);
      if (pages.length > 10_000) throw new Error(`no end after ${pages.length} pages; last cursor ${stored}`);
    }
  } finally {
    await reader?.close();
  }
}

describe("readManifestPage (R2 binding)", () => {
  it("pages through a manifest in 7-byte chunks and gives exactly what the whole-text read gave", async () => {
    const { text, files } = shapedManifest("m-shapes", 500);
    await env.BUCKET.put("m-shapes/manifest.json", text);
    const store = new ChunkedStore(r2(), 7);
    const limit = 97;
    const result = await readAll(store, "m-shapes/manifest.json", "m-shapes", limit);
    expect(result.error).toBeUndefined();
    const entries = result.pages.flat();
    expect(entries).toHaveLength(files);
    expect(entries).toEqual(wholeTextEntries(text));
    // Unknown fields and the directory context come through.
    expect(entries[3].file).toMatchObject({ checksum: { parts: [1, 2.5, -300, true, null] } });
    expect(entries.find((e) => e.directory === 1)).toMatchObject({ directory_path: "/d1", processing_config: { ocr: false } });
    expect(entries.find((e) => e.directory === 2)).toMatchObject({ directory_path: "/d2", processing_config: { late: true } });
    expect(entries.find((e) => e.directory === 4)).toMatchObject({ processing_config: "fast" });
    // Never more than a page held; each page resumed where the last stopped, never from the start.
    expect(Math.max(...result.pages.map((p) => p.length))).toBeLessThanOrEqual(limit);
    expect(result.pages.length).toBeGreaterThanOrEqual(Math.ceil(files / limit));
    const size = new TextEncoder().encode(text).byteLength;
    expect(store.reads[0].offset).toBe(0);
    for (const read of store.reads.slice(1)) expect(read.offset).toBeGreaterThan(0);
    // Each read stops soon after its page: together they pull the manifest once, plus directories 1,
    // 2 and 5 (a fifth each) a second time: their header is not all known when their files start.
    const pulled = store.reads.reduce((sum, r) => sum + r.bytes, 0);
    expect(pulled).toBeLessThan(size * 1.65 + store.reads.length * 2 * 7);
    expect(Math.max(...result.cursors.map((c) => JSON.stringify(c).length))).toBeLessThan(400);
  });

  it("a page of one entry still makes progress, and whitespace-free JSON reads the same", async () => {
    const { text } = shapedManifest("m-tiny", 9);
    const compact = JSON.stringify(JSON.parse(text));
    await env.BUCKET.put("m-tiny/manifest.json", compact);
    const result = await readAll(new ChunkedStore(r2(), 1), "m-tiny/manifest.json", "m-tiny", 1);
    expect(result.pages.flat()).toEqual(wholeTextEntries(compact));
    expect(Math.max(...result.pages.map((p) => p.length))).toBe(1);
  });

  it("a manifest that starts with a UTF-8 byte order mark resumes at the right bytes", async () => {
    const { text } = shapedManifest("m-bom", 40);
    await env.BUCKET.put("m-bom/manifest.json", `\uFEFF${text}`);
    const result = await readAll(new ChunkedStore(r2(), 1), "m-bom/manifest.json", "m-bom", 17);
    expect(result.error).toBeUndefined();
    expect(result.pages.flat()).toEqual(wholeTextEntries(text));
  });

  it("gives the reason for a manifest that cannot run, naming where", async () => {
    const put = async (key: string, body: string) => env.BUCKET.put(key, body);
    const read = async (key: string, batchId = "m-err") => (await readAll(new ChunkedStore(r2(), 64), key, batchId, 50)).error;
    const good = JSON.parse(shapedManifest("m-err", 120).text) as { batch_id: string; directories: { files: Record<string, unknown>[] }[] };

    expect(await read("m-err/none.json")).toBe("manifest m-err/none.json not found");
    await put("m-err/notjson.json", "{oops");
    expect(await read("m-err/notjson.json")).toMatch(/^manifest m-err\/notjson.json is not valid JSON: /);

    // Broken well after the first page: the pages before it were read, then the reason.
    const text = JSON.stringify(good);
    await put("m-err/truncated.json", text.slice(0, Math.floor(text.length * 0.8)));
    expect(await read("m-err/truncated.json")).toMatch(/^manifest m-err\/truncated.json is not valid JSON: /);
    await put("m-err/garbage.json", text.replace('"scan-101.tif"', '"scan-101.tif" oops'));
    expect(await read("m-err/garbage.json")).toMatch(/is not valid JSON: .*near byte \d+/);

    const bad = structuredClone(good);
    bad.directories[2].files[117] = { r2_key: "", file_size: -1 };
    await put("m-err/bad-entry.json", JSON.stringify(bad));
    expect(await read("m-err/bad-entry.json")).toBe(
      "manifest m-err/bad-entry.json is invalid: directories.2.files.117.r2_key: an object key must not be empty; directories.2.files.117.file_size: Too small: expected number to be >=0",
    );

    await put("m-err/other.json", JSON.stringify({ ...good, batch_id: "someone-else" }));
    expect(await read("m-err/other.json")).toBe("manifest m-err/other.json is for batch someone-else, not m-err");
    // batch_id after the directories: still checked, when it comes.
    const { batch_id: _ignored, ...rest } = { ...good, batch_id: "late-one" };
    await put("m-err/late-id.json", JSON.stringify({ ...rest, batch_id: "late-one" }));
    expect(await read("m-err/late-id.json")).toBe("manifest m-err/late-id.json is for batch late-one, not m-err");
    await put("m-err/no-id.json", JSON.stringify(rest));
    expect(await read("m-err/no-id.json")).toMatch(/^manifest m-err\/no-id.json is invalid: batch_id: /);

    await put("m-err/no-path.json", JSON.stringify({ batch_id: "m-err", directories: [{ files: [{ r2_key: "a.tif" }] }] }));
    expect(await read("m-err/no-path.json")).toMatch(/is invalid: directories.0.directory_path: /);
    await put("m-err/dirs-object.json", JSON.stringify({ batch_id: "m-err", directories: { a: 1 } }));
    expect(await read("m-err/dirs-object.json")).toMatch(/is invalid: directories: .*expected array/);
    await put("m-err/files-string.json", JSON.stringify({ batch_id: "m-err", directories: [{ directory_path: "/", files: "x" }] }));
    expect(await read("m-err/files-string.json")).toMatch(/is invalid: directories.0.files: .*expected array/);
    await put("m-err/no-dirs.json", JSON.stringify({ batch_id: "m-err" }));
    expect(await read("m-err/no-dirs.json")).toMatch(/is invalid: directories: /);
  });

  it("a manifest replaced while it is being read is refused, not mixed", async () => {
    await env.BUCKET.put("m-swap/manifest.json", shapedManifest("m-swap", 100).text);
    const store = r2();
    const first = await readManifestPage(store, "m-swap/manifest.json", "m-swap", null, 50);
    if (first.error !== undefined || first.cursor === null) throw new Error(`first page: ${JSON.stringify(first)}`);
    await env.BUCKET.put("m-swap/manifest.json", shapedManifest("m-swap", 101).text);
    const second = await readManifestPage(store, "m-swap/manifest.json", "m-swap", first.cursor, 50);
    expect(second.error).toMatch(/^manifest m-swap\/manifest.json changed while it was being read/);
  });
});

/** A store whose every ranged read arrives as one chunk. */
function wholeWindows(inner: ObjectStore): ObjectStore {
  return withGetStream(inner, async (key, offset, length) => {
    const stream = await inner.getStream(key, offset, length);
    if (!stream) return null;
    const bytes = new Uint8Array(await new Response(stream.body).arrayBuffer());
    return { ...stream, body: new ReadableStream({ start: (c) => (c.enqueue(bytes), c.close()) }) };
  });
}

describe("manifest pages read as bounded ranges", () => {
  it("no page ever asks for an open-ended range: every read has a length of at most MANIFEST_READ_WINDOW_BYTES", async () => {
    // An open-ended read cancelled once the page is full left the runtime buffering the rest of the file.
    const { text } = shapedManifest("m-bounded", 400);
    await env.BUCKET.put("m-bounded/manifest.json", text);
    const store = new ChunkedStore(r2(), 4096);
    const result = await readAll(store, "m-bounded/manifest.json", "m-bounded", 1000);
    expect(result.error).toBeUndefined();
    expect(result.pages.flat()).toEqual(wholeTextEntries(text));
    const unbounded = store.reads.filter((r) => r.length === undefined || r.length > MANIFEST_READ_WINDOW_BYTES);
    expect(unbounded, `reads asking for more than a window: ${JSON.stringify(unbounded.slice(0, 3))}`).toEqual([]);
    for (const read of store.reads) expect(read.bytes).toBeLessThanOrEqual(read.length!);
  });

  it("a page longer than its window goes on window after window, contiguously, and reads the same", async () => {
    const { text } = shapedManifest("m-windows", 200);
    await env.BUCKET.put("m-windows/manifest.json", text);
    const window = 997; // odd, so windows end inside tokens, multi-byte characters and escapes
    const store = new ChunkedStore(r2(), 4096);
    const result = await readAll(store, "m-windows/manifest.json", "m-windows", 150, window);
    expect(result.error).toBeUndefined();
    expect(result.pages.flat()).toEqual(wholeTextEntries(text));
    expect(store.reads.every((r) => r.length === window)).toBe(true);
    const size = new TextEncoder().encode(text).byteLength;
    // Every window but a page's last (or the manifest's end) is full, and the next starts where it ended.
    const pageStarts = new Set([0, ...result.cursors.map((c) => c.offset)]);
    for (let i = 1; i < store.reads.length; i++) {
      const [prev, read] = [store.reads[i - 1], store.reads[i]];
      if (pageStarts.has(read.offset) && read.offset !== prev.offset + prev.bytes) continue;
      expect(read.offset, `read ${i} of ${store.reads.length}`).toBe(prev.offset + prev.bytes);
      expect(prev.bytes).toBe(window);
    }
    expect(store.reads.length).toBeGreaterThan(Math.ceil(size / window));
  });

  it("one alarm's pages share their ranged reads: a page starts in the window the last one stopped in, and reads the same", async () => {
    // Every ranged read costs the runtime memory it gives back slowly: a read per page grew
    // workerd by 74 MB over 300,000 entries (bench/manifest-memory.ts), a read per quarter-page 145 MB.
    const { text } = shapedManifest("m-shared", 400);
    await env.BUCKET.put("m-shared/manifest.json", text);
    const size = new TextEncoder().encode(text).byteLength;
    const window = 4099; // odd, so pages stop anywhere in a window and windows end inside tokens
    const perPage = new ChunkedStore(r2(), 7);
    const alone = await readAll(perPage, "m-shared/manifest.json", "m-shared", 23, window);
    // Chunks of 7 bytes, or each window as one chunk (every page then stops in a window's last chunk).
    for (const [perReader, chunk] of [[2, 7], [5, 7], [1000, 7], [5, 0], [1000, 0]]) {
      const shared = chunk > 0 ? new ChunkedStore(r2(), chunk) : new ChunkedStore(wholeWindows(r2()), window);
      const result = await readAll(shared, "m-shared/manifest.json", "m-shared", 23, window, perReader);
      expect(result.error).toBeUndefined();
      expect(result.pages.flat()).toEqual(wholeTextEntries(text));
      // The same pages and cursors as page-by-page readers give: what is stored does not change.
      expect(result.cursors).toEqual(alone.cursors);
      // Pages are smaller than a window: page-by-page, a read per page; shared, far fewer.
      expect(shared.reads.length, `${perReader} pages per reader`).toBeLessThan(perPage.reads.length);
      if (perReader === 1000) {
        // One reader for the whole manifest: it is pulled once, plus the files of the three
        // directories whose header comes after them, read a second time (a fifth each).
        expect(perPage.reads.length).toBeGreaterThanOrEqual(result.pages.length);
        const pulled = shared.reads.reduce((sum, r) => sum + r.bytes, 0);
        expect(pulled).toBeLessThan(size * 1.65);
        expect(shared.reads.length).toBeLessThan(Math.ceil((size * 1.65) / window) + 2 * 3 + 1);
      }
    }
  });

  it("a manifest replaced between two windows of one page is refused, not mixed", async () => {
    await env.BUCKET.put("m-swap2/manifest.json", shapedManifest("m-swap2", 100).text);
    const inner = r2();
    let calls = 0;
    const store = withGetStream(inner, async (key, offset, length) => {
      if (++calls === 2) await env.BUCKET.put("m-swap2/manifest.json", shapedManifest("m-swap2", 101).text);
      return inner.getStream(key, offset, length);
    });
    const page = await readManifestPage(store, "m-swap2/manifest.json", "m-swap2", null, 50, 1000);
    expect(calls).toBe(2);
    expect(page.error).toMatch(/^manifest m-swap2\/manifest.json changed while it was being read/);
  });
});

describe("manifest reads into one reused buffer", () => {
  /** The R2 binding's streams, recording the kind of reader each page asks for and what it read. */
  function recordingStore(inner: ObjectStore, readers: (string | undefined)[], views: number[]): ObjectStore {
    return withGetStream(inner, async (key, offset, length) => {
      const stream = await inner.getStream(key, offset, length);
      if (stream === null) return null;
      const getReader = stream.body.getReader.bind(stream.body) as (options?: { mode?: "byob" }) => ReadableStreamDefaultReader<Uint8Array> | ReadableStreamBYOBReader;
      Object.assign(stream.body, {
        getReader(options?: { mode?: "byob" }) {
          readers.push(options?.mode);
          const reader = getReader(options);
          if (reader instanceof ReadableStreamBYOBReader) {
            const read = reader.read.bind(reader);
            Object.assign(reader, {
              read(view: Uint8Array) {
                views.push(view.byteLength);
                return read(view);
              },
            });
          }
          return reader;
        },
      });
      return stream;
    });
  }

  it("R2's body is read with BYOB reads into a buffer of MANIFEST_READ_BUFFER_BYTES, the whole manifest the same", async () => {
    // A fresh ArrayBuffer per chunk is memory V8 frees only at a full GC: ~the manifest's size per discovery.
    const { text } = shapedManifest("m-byob", 300);
    await env.BUCKET.put("m-byob/manifest.json", text);
    const readers: (string | undefined)[] = [];
    const views: number[] = [];
    const result = await readAll(recordingStore(r2(), readers, views), "m-byob/manifest.json", "m-byob", 100);
    expect(result.error).toBeUndefined();
    expect(result.pages.flat()).toEqual(wholeTextEntries(text));
    expect(readers.length).toBe(result.pages.length);
    expect(readers.every((mode) => mode === "byob")).toBe(true);
    expect(views.length).toBeGreaterThan(readers.length);
    expect(new Set(views)).toEqual(new Set([MANIFEST_READ_BUFFER_BYTES]));
  });

  it("a stream that is not a byte stream is still read, chunk by chunk", async () => {
    const { text } = shapedManifest("m-plain", 50);
    await env.BUCKET.put("m-plain/manifest.json", text);
    const result = await readAll(new ChunkedStore(r2(), 1000), "m-plain/manifest.json", "m-plain", 64);
    expect(result.error).toBeUndefined();
    expect(result.pages.flat()).toEqual(wholeTextEntries(text));
  });
});

describe("R2ObjectStore.getStream", () => {
  it("streams from an offset, with the whole object's size and ETag; null when missing", async () => {
    const put = await env.BUCKET.put("m-range/obj.txt", "0123456789é");
    const store = r2();
    const whole = await store.getStream("m-range/obj.txt", 0);
    expect(await new Response(whole!.body).text()).toBe("0123456789é");
    const tail = await store.getStream("m-range/obj.txt", 7);
    expect(tail).toMatchObject({ size: 12, etag: put!.etag });
    expect(await new Response(tail!.body).text()).toBe("789é");
    expect(await store.getStream("m-range/none.txt", 3)).toBeNull();
  });

  it("honours a length: at most that many bytes from the offset, the whole object's size and ETag", async () => {
    const put = await env.BUCKET.put("m-range/len.txt", "0123456789é");
    await expectLengthHonoured(r2(), "m-range/len.txt", put!.etag, "m-range/none.txt");
  });
});

describe("discovery from a manifest in the DO", () => {
  let world: World;
  beforeEach(() => {
    world = installWorld();
    world.runner.behaviour = () => "hang";
  });
  afterEach(async () => {
    await world.restore();
  });

  it("stores the same file rows as the whole-text path, across several alarms", async () => {
    // More entries than one alarm's pages, so discovery resumes from the stored cursor.
    const perDir = Math.ceil((MANIFEST_PAGE_SIZE * MANIFEST_PAGES_PER_ALARM * 1.2) / 5);
    // Canonical keys: the rows are read after discovery, when planning may already have refused a backslash key.
    const { text, files } = shapedManifest("m-do", perDir, undefined, { canonical: true });
    await env.BUCKET.put("m-do/manifest.json", text);
    await stub("m-do").start({ batch_id: "m-do", manifest_r2_key: "m-do/manifest.json" });
    const s = await waitForStatus("m-do", (x) => x.stage !== "discover" || x.status === "ERROR", 120_000);
    expect(s.error).toBeNull();
    expect(s.files_total).toBe(files);
    const rows = await withStore("m-do", (_s, sql) =>
      sql
        .exec<{
          r2_key: string;
          logical_path: string;
          file_name: string;
          file_size: number;
          content_type: string;
          cid: string | null;
          extra_json: string | null;
          dir_idx: number | null;
        }>("SELECT r2_key, logical_path, file_name, file_size, content_type, cid, extra_json, dir_idx FROM files ORDER BY id")
        .toArray(),
    );
    // By hand, from shapedManifest's rules (manifest-fixture.ts), not from any mapping of the code
    // under test: directories d0, d1, d2, d4, d5 (index = d; /empty is 3), perDir files each; file i
    // of d has key <prefix>/d<d>/scan-<i>[-日本é if i % 11 = 0][ "q" if i % 13 = 0].tif; every fifth
    // file gives only its key, so its name is the key's last segment, its logical path the directory's
    // path (trailing slash dropped) + that name, size 0, content type image/tiff, no cid, nothing extra;
    // the others give /d<d>/scan-<i>.tif, scan-<i>.tif, i × 1000 + 1 bytes, cid-<d>-<i>, and every
    // third a checksum, kept as extra_json. The directory's processing_config is stored once with it.
    const dirPath: Record<number, string> = { 0: "/d0", 1: "/d1", 2: "/d2", 4: "/d4", 5: "/d5" };
    const expected = [0, 1, 2, 4, 5].flatMap((d) =>
      Array.from({ length: perDir }, (_, i) => {
        const name = `scan-${i}${i % 11 === 0 ? "-日本é" : ""}${i % 13 === 0 ? ' "q"' : ""}.tif`;
        const r2_key = `m-do/in/d${d}/${name}`;
        if (i % 5 === 0) return { r2_key, logical_path: `${dirPath[d]}/${name}`, file_name: name, file_size: 0, content_type: "image/tiff", cid: null, extra_json: null, dir_idx: d };
        const checksum = i % 3 === 0 ? JSON.stringify({ checksum: { sha256: "ab".repeat(32), parts: [1, 2.5, -300, true, null] } }) : null;
        return { r2_key, logical_path: `/d${d}/scan-${i}.tif`, file_name: `scan-${i}.tif`, file_size: i * 1000 + 1, content_type: "image/tiff", cid: `cid-${d}-${i}`, extra_json: checksum, dir_idx: d };
      }),
    );
    expect(rows.length).toBe(expected.length);
    expect(rows).toEqual(expected);
    const stored = await withStore("m-do", (store) => [0, 1, 2, 4, 5].map((d) => store.directoryConfig(d)));
    // d5 has none: undefined, as the manifest left it out.
    expect(stored).toEqual([{ ocr: true, langs: ["de", "fr"] }, { ocr: false }, { late: true }, "fast", undefined]);
    const meta = await withStore("m-do", (store) => store.getMeta());
    expect(meta?.discover_cursor).toBeNull();
  });

  it("puts the batch in ERROR with the reason when an entry after the first page is bad", async () => {
    const good = JSON.parse(shapedManifest("m-do-bad", MANIFEST_PAGE_SIZE).text) as { directories: { files: unknown[] }[] };
    good.directories[2].files[MANIFEST_PAGE_SIZE - 3] = { r2_key: 42 };
    await env.BUCKET.put("m-do-bad/manifest.json", JSON.stringify(good));
    await stub("m-do-bad").start({ batch_id: "m-do-bad", manifest_r2_key: "m-do-bad/manifest.json" });
    const s = await waitForStatus("m-do-bad", (x) => x.status === "ERROR", 60_000);
    expect(s.error).toBe(
      `manifest m-do-bad/manifest.json is invalid: directories.2.files.${MANIFEST_PAGE_SIZE - 3}.r2_key: Invalid input: expected string, received number`,
    );
  });
});
