// Manifests of every shape the contract allows (header keys before or after the files, no
// processing_config, empty directories, unknown fields, non-ASCII and escaped text), the
// whole-text reading they must match, and a store that hands streams out in tiny chunks.
// No workerd imports: the node tests use it too.
import { expect } from "vitest";
import { Manifest } from "../../../shared/contracts.ts";
import type { ManifestEntry } from "../../../orchestrator/engine/manifest.ts";
import type { ObjectStore, ObjectStream } from "../../../orchestrator/storage.ts";

/**
 * A manifest of `perDir` files in each of five differently shaped directories (and an empty one),
 * pretty-printed. Some keys carry JSON escapes (`\"`, and `\\` unless `canonical`: a key with a
 * backslash is read, then refused when the batch plans it — shared/keys.ts keyProblem).
 */
export function shapedManifest(batchId: string, perDir: number, prefix = `${batchId}/in`, options: { canonical?: boolean } = {}): { text: string; files: number } {
  const escaped = options.canonical ? ' "q"' : ' "q"\\';
  const file = (d: number, i: number): Record<string, unknown> => {
    const key = `${prefix}/d${d}/scan-${i}${i % 11 === 0 ? "-日本é" : ""}${i % 13 === 0 ? escaped : ""}.tif`;
    if (i % 5 === 0) return { r2_key: key }; // every optional field defaulted
    return {
      r2_key: key,
      logical_path: `/d${d}/scan-${i}.tif`,
      file_name: `scan-${i}.tif`,
      file_size: i * 1000 + 1,
      content_type: "image/tiff",
      cid: `cid-${d}-${i}`,
      ...(i % 3 === 0 ? { checksum: { sha256: "ab".repeat(32), parts: [1, 2.5, -3e2, true, null] } } : {}),
    };
  };
  const files = (d: number) => Array.from({ length: perDir }, (_, i) => file(d, i));
  const manifest = {
    batch_id: batchId,
    source: "ingest-v1",
    directories: [
      { directory_path: "/d0/", processing_config: { ocr: true, langs: ["de", "fr"] }, files: files(0) },
      // Header keys after the files: the reader must come back for them.
      { files: files(1), note: "header last", directory_path: "/d1", processing_config: { ocr: false } },
      // processing_config only after the files.
      { directory_path: "/d2", files: files(2), processing_config: { late: true } },
      { directory_path: "/empty", processing_config: null, files: [] },
      { processing_config: "fast", directory_path: "/d4", files: files(4) },
      // No processing_config at all.
      { directory_path: "/d5", files: files(5) },
    ],
  };
  return { text: JSON.stringify(manifest, null, 2), files: perDir * 5 };
}

/** What the old whole-text path (JSON.parse + the Manifest schema) made of a manifest. */
export function wholeTextEntries(text: string): ManifestEntry[] {
  const manifest = Manifest.parse(JSON.parse(text));
  return manifest.directories.flatMap((dir, d) =>
    dir.files.map((file, index) => ({ file, directory_path: dir.directory_path, processing_config: dir.processing_config, directory: d, index })),
  );
}

/** Wraps a store: streams come in `chunkBytes` pieces, and every read is recorded. */
export class ChunkedStore implements ObjectStore {
  readonly reads: { offset: number; length: number | undefined; bytes: number }[] = [];
  private readonly inner: ObjectStore;
  private readonly chunkBytes: number;

  constructor(inner: ObjectStore, chunkBytes: number) {
    this.inner = inner;
    this.chunkBytes = chunkBytes;
  }

  head(key: string): ReturnType<ObjectStore["head"]> {
    return this.inner.head(key);
  }

  getText(key: string): Promise<string | null> {
    return this.inner.getText(key);
  }

  list(prefix: string, cursor: string | null, limit: number) {
    return this.inner.list(prefix, cursor, limit);
  }

  async getStream(key: string, offset: number, length?: number): Promise<ObjectStream | null> {
    const stream = await this.inner.getStream(key, offset, length);
    if (!stream) return null;
    const read = { offset, length, bytes: 0 };
    this.reads.push(read);
    const source = stream.body.getReader();
    const size = this.chunkBytes;
    let pending: Uint8Array = new Uint8Array(0);
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (pending.byteLength === 0) {
          const next = await source.read();
          if (next.done) {
            controller.close();
            return;
          }
          pending = next.value;
        }
        const piece = pending.subarray(0, size);
        pending = pending.subarray(piece.byteLength);
        read.bytes += piece.byteLength;
        controller.enqueue(piece);
      },
      cancel(reason) {
        return source.cancel(reason);
      },
    });
    return { ...stream, body };
  }
}

/** `inner` with its getStream replaced (the other calls pass through). */
export function withGetStream(inner: ObjectStore, getStream: ObjectStore["getStream"]): ObjectStore {
  return {
    getText: (key) => inner.getText(key),
    head: (key) => inner.head(key),
    list: (prefix, cursor, limit) => inner.list(prefix, cursor, limit),
    getStream,
  };
}

/**
 * The ranged-read contract every ObjectStore keeps, for `key` holding "0123456789é" (12 bytes,
 * ETag `etag`): at most `length` bytes from the offset, the whole object's size and ETag, null for
 * `missing`, a zero length refused.
 */
export async function expectLengthHonoured(store: ObjectStore, key: string, etag: string, missing: string): Promise<void> {
  const head = await store.getStream(key, 0, 4);
  expect(head).toMatchObject({ size: 12, etag });
  expect(await new Response(head!.body).text()).toBe("0123");
  const middle = await store.getStream(key, 2, 3);
  expect(middle).toMatchObject({ size: 12, etag });
  expect(await new Response(middle!.body).text()).toBe("234");
  const over = await store.getStream(key, 7, 1000);
  expect(over).toMatchObject({ size: 12 });
  expect(await new Response(over!.body).text()).toBe("789é");
  expect(await store.getStream(missing, 3, 5)).toBeNull();
  await expect(store.getStream(key, 0, 0)).rejects.toThrow(/length must be a positive integer/);
}
