// The orchestrator's S3 ObjectStore (aws4fetch) against a real S3 server on loopback: the
// path `npm start` and any S3-compatible deployment take instead of the R2 binding. The local S3
// checks every SigV4 signature as R2 does (local/s3-auth.ts), so the orchestrator's signing —
// its own requests and the URLs it presigns for machines — is checked here too.
import { request as httpRequest } from "node:http";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLocalS3, type LocalS3 } from "../../local/s3.ts";
import { MANIFEST_READ_WINDOW_BYTES, readManifestPage, type ManifestCursor, type ManifestEntry } from "../../orchestrator/engine/manifest.ts";
import type { Config } from "../../orchestrator/config.ts";
import { presign } from "../../orchestrator/engine/presign.ts";
import { S3ObjectStore, StorageError } from "../../orchestrator/storage.ts";
import { ChunkedStore, expectLengthHonoured, shapedManifest, wholeTextEntries } from "../workers/support/manifest-fixture.ts";
import { localS3Client } from "./support/s3.ts";

let s3: LocalS3;
let store: S3ObjectStore;
const keys = [
  ...Array.from({ length: 1203 }, (_, i) => `listing/scan-${String(i).padStart(4, "0")}.tif`),
  "listing/with space & ampersand <odd>.tif",
  "listing/ünïcödé/日本.TIFF",
];

beforeAll(async () => {
  s3 = await startLocalS3({ buckets: ["archive"] });
  store = new S3ObjectStore({ endpoint: s3.endpoint, bucket: "archive", ...s3.credentials });
  const client = localS3Client(s3);
  for (let i = 0; i < keys.length; i += 100) {
    await Promise.all(keys.slice(i, i + 100).map((Key) => client.send(new PutObjectCommand({ Bucket: "archive", Key, Body: "II*\0" }))));
  }
  await client.send(new PutObjectCommand({ Bucket: "archive", Key: "manifests/b1.json", Body: '{"batch_id":"b1"}' }));
  await client.send(new PutObjectCommand({ Bucket: "archive", Key: "ranged/obj.txt", Body: "0123456789é" }));
  await client.send(new PutObjectCommand({ Bucket: "archive", Key: "manifests/shaped.json", Body: shapedManifest("s3-shaped", 300).text }));
});
afterAll(async () => {
  await s3?.stop();
});

describe("S3ObjectStore", () => {
  it("lists every object under a prefix across pages, decoding XML-escaped keys", async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await store.list("listing/", cursor, 500);
      seen.push(...page.objects.map((o) => o.key));
      expect(page.objects.every((o) => o.size === 4)).toBe(true);
      cursor = page.cursor;
      pages++;
    } while (cursor !== null);
    expect(pages).toBe(3);
    expect(seen.sort()).toEqual([...keys].sort());
  });

  it("reads an object's text, and answers null for a missing one", async () => {
    expect(await store.getText("manifests/b1.json")).toBe('{"batch_id":"b1"}');
    expect(await store.getText("manifests/none.json")).toBeNull();
  });

  it("streams an object from a byte offset (Range: bytes=N-) with the whole size and ETag; null when missing", async () => {
    const whole = await store.getStream("ranged/obj.txt", 0);
    expect(whole).toMatchObject({ size: 12 });
    expect(await new Response(whole!.body).text()).toBe("0123456789é");
    const tail = await store.getStream("ranged/obj.txt", 7);
    expect(tail).toMatchObject({ size: 12, etag: whole!.etag });
    expect(whole!.etag).toMatch(/^[^"]+$/);
    expect(await new Response(tail!.body).text()).toBe("789é");
    const past = await store.getStream("ranged/obj.txt", 12);
    expect(past).toMatchObject({ size: 12 });
    expect(await new Response(past!.body).text()).toBe("");
    expect(await store.getStream("ranged/none.txt", 3)).toBeNull();
  });

  it("honours a length (Range: bytes=N-M): at most that many bytes, the whole size and ETag; empty past the end", async () => {
    const whole = await store.getStream("ranged/obj.txt", 0);
    await whole!.body.cancel();
    await expectLengthHonoured(store, "ranged/obj.txt", whole!.etag, "ranged/none.txt");
    const past = await store.getStream("ranged/obj.txt", 12, 5);
    expect(past).toMatchObject({ size: 12 });
    expect(await new Response(past!.body).text()).toBe("");
  });

  it("reads a manifest page by page through ranged reads, as the whole-text read does", async () => {
    const chunked = new ChunkedStore(store, 13);
    const entries: ManifestEntry[] = [];
    let cursor: ManifestCursor | null = null;
    let pages = 0;
    do {
      const page = await readManifestPage(chunked, "manifests/shaped.json", "s3-shaped", cursor, 211);
      if (page.error !== undefined) throw new Error(page.error);
      expect(page.entries.length).toBeLessThanOrEqual(211);
      entries.push(...page.entries);
      cursor = page.cursor === null ? null : (JSON.parse(JSON.stringify(page.cursor)) as ManifestCursor);
      pages++;
    } while (cursor !== null);
    const text = (await store.getText("manifests/shaped.json"))!;
    expect(entries).toEqual(wholeTextEntries(text));
    expect(pages).toBeGreaterThanOrEqual(Math.ceil(1500 / 211));
    expect(chunked.reads.slice(1).every((r) => r.offset > 0)).toBe(true);
    expect(chunked.reads.every((r) => r.length !== undefined && r.length <= MANIFEST_READ_WINDOW_BYTES)).toBe(true);
  });

  it("reads a manifest through bounded windows (bytes=N-M) when a page is longer than a window", async () => {
    const chunked = new ChunkedStore(store, 4096);
    const entries: ManifestEntry[] = [];
    let cursor: ManifestCursor | null = null;
    do {
      const page = await readManifestPage(chunked, "manifests/shaped.json", "s3-shaped", cursor, 211, 997);
      if (page.error !== undefined) throw new Error(page.error);
      entries.push(...page.entries);
      cursor = page.cursor;
    } while (cursor !== null);
    expect(entries).toEqual(wholeTextEntries((await store.getText("manifests/shaped.json"))!));
    expect(chunked.reads.every((r) => r.length === 997 && r.bytes <= 997)).toBe(true);
    expect(chunked.reads.filter((r) => r.bytes === 997).length).toBeGreaterThan(chunked.reads.length / 2);
  });

  it("writes an object whole, and as a multipart upload of parts sent one at a time (the final file list's path)", async () => {
    const small = new TextEncoder().encode('{"r2_key":"a"}\n');
    const put = await store.put("lists/small.ndjson", small, "application/x-ndjson");
    expect(put.etag).toMatch(/^[0-9a-f]{32}$/);
    expect(await store.getText("lists/small.ndjson")).toBe('{"r2_key":"a"}\n');
    // Two parts: the first at S3's and R2's 5 MiB minimum, the last shorter.
    const part1 = new Uint8Array(5 * 1024 * 1024).fill(0x61);
    const part2 = new TextEncoder().encode("tail\n");
    const id = await store.createMultipart("lists/big.ndjson", "application/x-ndjson");
    const etags = [await store.uploadPart("lists/big.ndjson", id, 1, part1), await store.uploadPart("lists/big.ndjson", id, 2, part2)];
    const done = await store.completeMultipart("lists/big.ndjson", id, etags.map((etag, i) => ({ part: i + 1, etag })));
    expect(done.etag).toMatch(/-2$/);
    expect(await store.head("lists/big.ndjson")).toMatchObject({ size: part1.byteLength + part2.byteLength });
    const text = await store.getText("lists/big.ndjson");
    expect(text!.endsWith("aatail\n")).toBe(true);
    // An aborted upload leaves no object.
    const aborted = await store.createMultipart("lists/aborted.ndjson", "application/x-ndjson");
    await store.uploadPart("lists/aborted.ndjson", aborted, 1, part2);
    await store.abortMultipart("lists/aborted.ndjson", aborted);
    expect(await store.head("lists/aborted.ndjson")).toBeNull();
  });

  it("a missing bucket is a final StorageError naming the status", async () => {
    const wrong = new S3ObjectStore({ endpoint: s3.endpoint, bucket: "no-such-bucket", ...s3.credentials });
    const error = await wrong.list("", null, 10).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).message).toMatch(/^S3 LIST \(whole bucket\) answered 404/);
    expect((error as StorageError).retryable).toBe(false);
  });

  it("an unreachable endpoint is a retryable StorageError", async () => {
    const down = new S3ObjectStore({ endpoint: "http://127.0.0.1:1", bucket: "archive", ...s3.credentials });
    const error = await down.getText("x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).retryable).toBe(true);
  });

  it("is refused with a wrong secret: the store checks the orchestrator's signature (403 SignatureDoesNotMatch)", async () => {
    const wrong = new S3ObjectStore({ endpoint: s3.endpoint, bucket: "archive", accessKeyId: s3.credentials.accessKeyId, secretAccessKey: "0".repeat(64) });
    for (const call of [() => wrong.getText("manifests/b1.json"), () => wrong.head("manifests/b1.json"), () => wrong.list("listing/", null, 10), () => wrong.getStream("ranged/obj.txt", 0, 4)]) {
      const error = await call().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StorageError);
      expect((error as StorageError).message).toMatch(/answered 403( SignatureDoesNotMatch)?$/);
      expect((error as StorageError).retryable).toBe(false);
    }
  });
});

describe("the orchestrator's presigned machine URLs, checked by the store", () => {
  const config = () => ({ R2_ENDPOINT: s3.endpoint, R2_BUCKET: "archive", R2_ACCOUNT_ID: "", R2_ACCESS_KEY_ID: s3.credentials.accessKeyId, R2_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey }) as unknown as Config;
  const raw = (url: string, method: string, path?: string, headers: Record<string, string> = {}, body?: string) => {
    const u = new URL(url);
    return rawRequest(u, method, path ?? `${u.pathname}${u.search}`, headers, body);
  };

  it("a GET URL reads its own key; a tampered path, method or expiry is refused", async () => {
    const url = await presign(config(), "GET", "manifests/b1.json", Date.now() + 60_000);
    expect(await raw(url, "GET")).toEqual({ status: 200, body: '{"batch_id":"b1"}' });
    const u = new URL(url);
    expect((await raw(url, "GET", `${u.pathname.replace("b1.json", "shaped.json")}${u.search}`)).status).toBe(403);
    expect((await raw(url, "GET", `/archive/manifests/x/../b1.json${u.search}`)).status).toBe(403);
    expect((await raw(url, "PUT", undefined, {}, "overwritten")).status).toBe(403);
    expect((await raw(url, "DELETE")).status).toBe(403);
    expect((await raw(url, "GET", `${u.pathname}${u.search.replace(/X-Amz-Expires=\d+/, "X-Amz-Expires=604800")}`)).status).toBe(403);
    expect((await raw(url, "GET")).status).toBe(200);
  });

  it("an expired URL is refused (403 ExpiredRequest)", async () => {
    const signedAt = Date.now() - 120_000;
    const url = await presign(config(), "GET", "manifests/b1.json", signedAt + 60_000, signedAt);
    const answer = await raw(url, "GET");
    expect(answer.status).toBe(403);
    expect(answer.body).toContain("<Code>ExpiredRequest</Code>");
  });
});

/** A request with this exact path (node:http does not normalise it). */
function rawRequest(base: URL, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: base.hostname, port: base.port, method, path, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}
