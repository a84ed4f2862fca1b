// Issue 20's hostile probes of findings 1 and 2, through the whole local stack: the orchestrator
// under wrangler dev, real fly-worker processes, and the local S3 checking every signature as R2
// does. Every request the orchestrator and the machines make to S3 passes a recording proxy (the
// test's own uploads do not), so "nothing outside the batch's place was read or written" is what
// S3 saw, not what the code meant to do.
import { HeadObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listenLoopback, pipeThrough } from "../../local/forward.ts";
import type { QueueMessage } from "../../shared/contracts.ts";
import { BACKSTOP_MS, startE2EStack, watchToEnd, type E2EStack } from "./support/stack.ts";

/** Every S3 request the stack makes: method and decoded path (bucket/key). */
const seen: { method: string; path: string; status: number }[] = [];

async function recordingProxy(upstream: string) {
  const target = new URL(upstream);
  const server = await listenLoopback((req, res) => {
    // The raw target, not new URL()'s: a URL parser would resolve a `..` and hide it.
    const path = decodeURIComponent((req.url ?? "/").split("?")[0]);
    const method = req.method ?? "GET";
    // The Host the client signed goes through unchanged (the local S3 checks it).
    pipeThrough(req, res, target, { unreachable: "s3 recorder: upstream unreachable", keepHost: true, onAnswer: (status) => seen.push({ method, path, status }) });
  });
  return { endpoint: server.url, stop: () => server.close() };
}

describe("the bucket is the boundary (issue 20, findings 1 and 2)", () => {
  let stack: E2EStack;
  let tiff: Buffer;
  const put = (key: string, body: Buffer | string, contentType = "image/tiff") =>
    stack.s3client.send(new PutObjectCommand({ Bucket: stack.bucket, Key: key, Body: body, ContentType: contentType }));
  const etag = async (key: string) => (await stack.s3client.send(new HeadObjectCommand({ Bucket: stack.bucket, Key: key }))).ETag;
  const exists = (key: string) => etag(key).then(
    () => true,
    () => false,
  );
  const manifest = (batchId: string, keys: string[]) =>
    JSON.stringify({ batch_id: batchId, directories: [{ directory_path: "/", files: keys.map((r2_key) => ({ r2_key, content_type: "image/tiff" })) }] });
  /** Runs a batch to its end; its failed tasks' reasons by input key. */
  async function run(message: QueueMessage) {
    await stack.api.enqueue(message);
    const { final, stalled } = await watchToEnd(stack, message.batch_id);
    expect(stalled, `batch ${message.batch_id} stalled`).toBeNull();
    const failed = await stack.api.allTasks(message.batch_id, "failed");
    return { final, reasons: Object.fromEntries(failed.map((t) => [t.input_key, t.error])) };
  }
  /** S3 requests the stack made outside `place` (the bucket-level listing of the place itself aside). */
  const outside = (place: string) => seen.filter((r) => !r.path.startsWith(`/${stack.bucket}/${place}`) && !(r.path === `/${stack.bucket}` || r.path === `/${stack.bucket}/`));

  beforeAll(async () => {
    stack = await startE2EStack({ wrapS3Endpoint: recordingProxy });
    tiff = await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 200, g: 40, b: 40 } } }).tiff().toBuffer();
    await put("private/secret.tif", "secret", "image/tiff");
    await put("private/manifest.json", manifest("trav-2", ["private/secret.tif"]), "application/json");
  }, 180_000);
  afterAll(async () => {
    await stack?.dispose();
  });

  it("manifest entries with `..` (another folder, another bucket) fail with the reason; nothing outside batches/trav-1/ is read or written", async () => {
    await put("batches/trav-1/a.tif", tiff);
    await put("batches/trav-1/manifest.json", manifest("trav-1", ["batches/trav-1/a.tif", "batches/trav-1/../../private/secret.tif", "batches/../../other-bucket/x.tif"]), "application/json");
    seen.length = 0;
    const { final, reasons } = await run({ batch_id: "trav-1", manifest_r2_key: "batches/trav-1/manifest.json" });
    expect(final.status).toBe("DONE");
    expect(final.progress).toMatchObject({ tasks_total: 3, tasks_completed: 1, tasks_failed: 2 });
    expect(reasons).toEqual({
      "batches/trav-1/../../private/secret.tif": `"batches/trav-1/../../private/secret.tif" is not a canonical object key: the key has a ".." segment`,
      "batches/../../other-bucket/x.tif": `"batches/../../other-bucket/x.tif" is not a canonical object key: the key has a ".." segment`,
    });
    expect(await exists("batches/trav-1/a.jpg")).toBe(true);
    expect(await exists("private/secret.jpg")).toBe(false);
    expect(outside("batches/trav-1/")).toEqual([]);
    expect(seen.filter((r) => r.path.includes(".."))).toEqual([]);
    console.log(`[e2e security] trav-1: ${seen.length} S3 requests, all under batches/trav-1/; refused: ${JSON.stringify(reasons)}`);
  });

  it("a manifest key with `..` is refused at the door (400), and private/ is never read", async () => {
    seen.length = 0;
    const refused = await stack.api.enqueue({ batch_id: "trav-2", manifest_r2_key: "batches/../private/manifest.json" }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ status: 400 });
    expect(String((refused as Error).message)).toContain(`manifest_r2_key: not a canonical object key: the key has a ".." segment`);
    expect(await stack.api.statusOrNull("trav-2")).toBeNull();
    expect(seen).toEqual([]);
  });

  it("a manifest listing another batch's file: refused as outside the batch's place; that batch's JPEG is untouched", async () => {
    await put("batches/b-basic-1/one.tif", tiff);
    expect((await run({ batch_id: "b-basic-1", r2_prefix: "batches/b-basic-1/" })).final.status).toBe("DONE");
    const before = await etag("batches/b-basic-1/one.jpg");
    await put("batches/cross-1/manifest.json", manifest("cross-1", ["batches/b-basic-1/one.tif"]), "application/json");
    seen.length = 0;
    const { final, reasons } = await run({ batch_id: "cross-1", manifest_r2_key: "batches/cross-1/manifest.json" });
    expect(final.status).toBe("FAILED"); // its only task failed
    expect(reasons).toEqual({
      "batches/b-basic-1/one.tif": "batches/b-basic-1/one.tif is outside this batch's place batches/cross-1/: a batch reads only under its manifest's directory or its r2_prefix (READ_SCOPE=allowed-prefixes widens that to ALLOWED_PREFIXES)",
    });
    expect(await etag("batches/b-basic-1/one.jpg")).toBe(before);
    expect(outside("batches/cross-1/")).toEqual([]);
  });

  it("scan.tif beside an unlisted, pre-existing scan.jpg: refused naming the key, scan.jpg untouched; `overwrite: true` replaces it on purpose", async () => {
    await put("batches/ow-1/scan.tif", tiff);
    await put("batches/ow-1/scan.jpg", "precious", "image/jpeg");
    await put("batches/ow-1/manifest.json", manifest("ow-1", ["batches/ow-1/scan.tif"]), "application/json");
    const machinesBefore = stack.emulator.core.machines().length;
    const { final, reasons } = await run({ batch_id: "ow-1", manifest_r2_key: "batches/ow-1/manifest.json" });
    expect(final.status).toBe("FAILED");
    expect(reasons).toEqual({
      "batches/ow-1/scan.tif": `output batches/ow-1/scan.jpg already exists in storage and was not written by this batch; it was left as it is (to replace it on purpose, send the batch again with "overwrite": true)`,
    });
    expect(stack.emulator.core.machines().length).toBe(machinesBefore); // no machine was made for it
    expect((await stack.s3client.send(new HeadObjectCommand({ Bucket: stack.bucket, Key: "batches/ow-1/scan.jpg" }))).ContentLength).toBe(8);

    await put("batches/ow-1/again.json", manifest("ow-1-again", ["batches/ow-1/scan.tif"]), "application/json");
    const again = await run({ batch_id: "ow-1-again", manifest_r2_key: "batches/ow-1/again.json", overwrite: true });
    expect(again.final.status).toBe("DONE");
    const replaced = await stack.s3client.send(new HeadObjectCommand({ Bucket: stack.bucket, Key: "batches/ow-1/scan.jpg" }));
    expect(replaced.ContentType).toBe("image/jpeg");
    expect(replaced.Metadata).toEqual({ "fanout-writer": "ow-1-again/tiff-000000" });
    expect(replaced.ContentLength).toBeGreaterThan(8);
  });
}, BACKSTOP_MS);
