// The worker trusts no length it did not ask for, and holds no upload URL longer than it needs
// (issue 20 points 3 and 6): the fly-worker as a child process against the local S3 (checking
// SigV4 as R2 does), a fake OUTPUTS_URL that presigns exactly as the orchestrator does
// (orchestrator/engine/presign.ts), and plain HTTP servers that send more than the worker was told.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HeadObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CallbackError, CallbackSuccess } from "../../shared/contracts.ts";
import { WRITER_METADATA } from "../../shared/keys.ts";
import { EXIT } from "../../fly-worker/exit-codes.ts";
import { startLocalS3, type LocalS3 } from "../../local/s3.ts";
import type { Config } from "../../orchestrator/config.ts";
import { presign } from "../../orchestrator/engine/presign.ts";
import { startCallbackReceiver, type CallbackReceiver } from "./support/callback-receiver.ts";
import { joinTiffPages, quadrants } from "./support/tiff-corpus.ts";
import { localS3Client, objectExists, putFile } from "./support/s3.ts";
import { machineEnv, runWorker } from "./support/worker.ts";

const BUCKET = "fanout";
const SECRET = "test-callback-secret";
const BATCH = "batch-bounds";

let dir: string;
let s3: LocalS3;
let client: S3Client;
let receiver: CallbackReceiver;
let config: Config;
let seq = 0;
const servers: Server[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "fanout-bounds-"));
  [s3, receiver] = await Promise.all([startLocalS3({ buckets: [BUCKET] }), startCallbackReceiver()]);
  client = localS3Client(s3);
  config = { R2_ENDPOINT: s3.endpoint, R2_BUCKET: BUCKET, R2_ACCOUNT_ID: "", R2_ACCESS_KEY_ID: s3.credentials.accessKeyId, R2_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey } as unknown as Config;
  const page1 = await quadrants(320, 240).tiff({ compression: "lzw" }).toBuffer();
  const page2 = await quadrants(200, 150).tiff({ compression: "deflate" }).toBuffer();
  await writeFile(join(dir, "two.tif"), joinTiffPages([{ tiff: page1 }, { tiff: page2 }]));
  await putFile(client, BUCKET, "scans/two.tif", join(dir, "two.tif"));
  await sharp({ create: { width: 400, height: 300, channels: 3, background: "#406080" } }).tiff().toFile(join(dir, "one.tif"));
  await putFile(client, BUCKET, "scans/one.tif", join(dir, "one.tif"));
});

afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
  client?.destroy();
  await Promise.all([receiver?.close(), s3?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A task's env as the orchestrator gives it (scoped access: INPUT_URL, OUTPUTS_URL; no key pair). */
async function scopedTask(inputKey: string, extra: Record<string, string> = {}) {
  const taskId = `tiff-${String(++seq).padStart(6, "0")}`;
  const outputKey = `out/${taskId}.jpg`;
  const env = await machineEnv({ batchId: BATCH, taskId, inputKey, outputKey, bucket: BUCKET, s3, callbackUrl: receiver.urlFor(BATCH, taskId), callbackSecret: SECRET, extra: { CALLBACK_BACKOFF_MS: "20", MEMORY_MB: "1024" } });
  const { R2_ACCESS_KEY_ID: _id, R2_SECRET_ACCESS_KEY: _secret, R2_BUCKET: _bucket, R2_ENDPOINT: _endpoint, R2_ACCOUNT_ID: _account, ...rest } = env;
  return { taskId, outputKey, env: { ...rest, INPUT_URL: await presign(config, "GET", inputKey, Date.now() + 600_000), ...extra } };
}

function onlyCallback(taskId: string) {
  const got = receiver.forTask(BATCH, taskId);
  expect(got, `exactly one callback for ${taskId}`).toHaveLength(1);
  return got[0];
}

describe("upload URLs are asked for right before each upload", () => {
  it("a two-page TIFF: keys reserved once, then each page's URL asked for just before its PUT; storage takes exactly what each URL signs", async () => {
    const t = await scopedTask("scans/two.tif");
    const asked: { body: { pages?: number; page?: number }; at: number; objects: number }[] = [];
    const keys = [t.outputKey, "out/two-p002.jpg"];
    const headers = (page: number) => ({ "content-type": "image/jpeg", [`x-amz-meta-${WRITER_METADATA}`]: `${BATCH}/${t.taskId}`, "if-none-match": "*", page: String(page) });
    // The orchestrator's side of POST /outputs (engine/reserve.ts), with a real presigned PUT per page.
    const outputsUrl = await listen((req, res) => {
      let text = "";
      req.on("data", (c: Buffer) => (text += c.toString()));
      req.on("end", () => {
        void (async () => {
          const body = JSON.parse(text) as { pages?: number; page?: number };
          const objects = (await Promise.all(keys.map((k) => objectExists(client, BUCKET, k)))).filter(Boolean).length;
          asked.push({ body, at: Date.now(), objects });
          const answer = body.pages !== undefined
            ? { batch_id: BATCH, task_id: t.taskId, attempt: 1, outputs: keys.slice(0, body.pages).map((k, i) => ({ page: i + 1, r2_key: k })) }
            : await (async () => {
                const page = body.page!;
                const { page: _p, ...signed } = headers(page);
                const url = await presign(config, "PUT", keys[page - 1], Date.now() + 300_000, Date.now(), signed);
                return { batch_id: BATCH, task_id: t.taskId, attempt: 1, outputs: [{ page, r2_key: keys[page - 1], url, headers: signed }] };
              })();
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify(answer));
        })();
      });
    });
    const run = await runWorker({ ...t.env, OUTPUTS_URL: `${outputsUrl}/outputs/${BATCH}/${t.taskId}` });
    expect(run.code, run.stderr || run.stdout).toBe(EXIT.SUCCESS);
    // Keys for both pages, then page 1's URL (nothing written yet), then page 2's (page 1 written by then).
    expect(asked.map((a) => a.body)).toEqual([{ pages: 2 }, { page: 1 }, { page: 2 }]);
    expect(asked.map((a) => a.objects)).toEqual([0, 0, 1]);
    const body = CallbackSuccess.parse(onlyCallback(t.taskId).body);
    expect(body.outputs?.map((o) => [o.r2_key, o.width, o.height])).toEqual([[keys[0], 320, 240], [keys[1], 200, 150]]);
    for (const k of keys) {
      const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: k }));
      expect(head.ContentType).toBe("image/jpeg");
      expect(head.Metadata).toEqual({ [WRITER_METADATA]: `${BATCH}/${t.taskId}` });
    }
  }, 90_000);
});

describe("the worker reads no more input than it was told", () => {
  /** A server that would send `total` bytes (chunked, or with its Content-Length) and counts what it got out before the worker hung up. */
  async function oversized(total: number, chunked: boolean) {
    const sent = { bytes: 0, closed: false };
    const url = await listen((_req, res) => {
      res.writeHead(200, chunked ? { "content-type": "image/tiff" } : { "content-type": "image/tiff", "content-length": String(total) });
      const chunk = Buffer.alloc(64 * 1024, 0x49);
      const pump = () => {
        while (sent.bytes < total && !res.destroyed) {
          sent.bytes += chunk.length;
          if (!res.write(chunk)) return void res.once("drain", pump);
        }
        if (!res.destroyed) res.end();
      };
      res.on("close", () => (sent.closed = true));
      pump();
    });
    return { url, sent };
  }

  it.each([
    ["a chunked body (no Content-Length)", true],
    ["a Content-Length over the limit", false],
  ])("INPUT_SIZE: %s is refused after at most a few socket buffers, and nothing is left on disk", async (_what, chunked) => {
    const total = 200 * 1024 * 1024;
    const { url, sent } = await oversized(total, chunked);
    const t = await scopedTask("scans/one.tif", { INPUT_URL: `${url}/huge.tif`, INPUT_SIZE: "100000", OUTPUTS_URL: "http://127.0.0.1:9/outputs" });
    const tmp = await mkdtemp(join(dir, "tmp-"));
    const run = await runWorker({ ...t.env, TMPDIR: tmp });
    expect(run.code, run.stderr || run.stdout).toBe(EXIT.TASK_FAILED);
    const body = CallbackError.parse(onlyCallback(t.taskId).body);
    expect(body.error).toBe(
      `input scans/one.tif is ${chunked ? "more than 100000" : String(total)} bytes, more than the 100000 bytes the orchestrator saw (INPUT_SIZE): the object changed after the batch listed it, or its manifest's file_size is wrong; it was not downloaded`,
    );
    expect(body).toMatchObject({ error_kind: "input", retryable: false });
    expect(sent.closed, "the worker hung up").toBe(true);
    expect(sent.bytes, "bytes the server got out before the worker hung up").toBeLessThan(16 * 1024 * 1024);
    expect(await readdir(tmp), "no temp file left").toEqual([]);
  }, 90_000);

  it("MAX_INPUT_BYTES bounds an input the orchestrator gave no size for", async () => {
    const { url, sent } = await oversized(200 * 1024 * 1024, true);
    const t = await scopedTask("scans/one.tif", { INPUT_URL: `${url}/huge.tif`, MAX_INPUT_BYTES: "500000", OUTPUTS_URL: "http://127.0.0.1:9/outputs" });
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.TASK_FAILED);
    expect(CallbackError.parse(onlyCallback(t.taskId).body).error).toBe("input scans/one.tif is more than 500000 bytes, more than this worker's MAX_INPUT_BYTES (500000); it was not downloaded");
    expect(sent.bytes).toBeLessThan(16 * 1024 * 1024);
  }, 90_000);

  it("the old contract (the R2 key pair) too: an object larger than INPUT_SIZE is refused from its Content-Length", async () => {
    const taskId = `tiff-${String(++seq).padStart(6, "0")}`;
    const env = await machineEnv({ batchId: BATCH, taskId, inputKey: "scans/one.tif", outputKey: `out/${taskId}.jpg`, bucket: BUCKET, s3, callbackUrl: receiver.urlFor(BATCH, taskId), callbackSecret: SECRET, extra: { INPUT_SIZE: "1000", CALLBACK_BACKOFF_MS: "20" } });
    const run = await runWorker(env);
    expect(run.code).toBe(EXIT.TASK_FAILED);
    expect(CallbackError.parse(onlyCallback(taskId).body).error).toMatch(/^input scans\/one\.tif is \d+ bytes, more than the 1000 bytes the orchestrator saw \(INPUT_SIZE\)/);
    expect(await objectExists(client, BUCKET, `out/${taskId}.jpg`)).toBe(false);
  }, 90_000);

  it("an input of exactly INPUT_SIZE converts", async () => {
    const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: "scans/one.tif" }));
    const t = await scopedTask("scans/one.tif", { INPUT_SIZE: String(head.ContentLength) });
    const signed = { "content-type": "image/jpeg", [`x-amz-meta-${WRITER_METADATA}`]: `${BATCH}/${t.taskId}`, "if-none-match": "*" };
    const run = await runWorker({ ...t.env, OUTPUT_URL: await presign(config, "PUT", t.outputKey, Date.now() + 300_000, Date.now(), signed), OUTPUT_HEADERS: JSON.stringify(signed) });
    expect(run.code, run.stderr || run.stdout).toBe(EXIT.SUCCESS);
    expect(CallbackSuccess.parse(onlyCallback(t.taskId).body)).toMatchObject({ width: 400, height: 300 });
  }, 90_000);
});
