// Real-world TIFF kinds that used to convert wrong or fail for the wrong reason (issue 15),
// each made for the test, run through the fly-worker as a machine runs it: a child process,
// a real S3 endpoint on loopback and a real callback receiver.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CallbackError, CallbackSuccess } from "../../shared/contracts.ts";
import { pageKey } from "../../shared/keys.ts";
import { EXIT } from "../../fly-worker/exit-codes.ts";
import { startLocalS3, type LocalS3 } from "../../local/s3.ts";
import { startCallbackReceiver, type CallbackReceiver } from "./support/callback-receiver.ts";
import { compareJpeg } from "./support/jpeg-check.ts";
import { getObjectBytes, localS3Client, objectExists, putFile } from "./support/s3.ts";
import { generateKindsCorpus, type KindCase } from "./support/tiff-corpus.ts";
import { machineEnv, runWorker } from "./support/worker.ts";

const BUCKET = "fanout";
const SECRET = "test-callback-secret";
const BATCH = "batch-kinds-1";

let dir: string;
let s3: LocalS3;
let client: S3Client;
let receiver: CallbackReceiver;
let corpus: Record<string, KindCase>;
let taskSeq = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "fanout-kinds-test-"));
  [corpus, s3, receiver] = await Promise.all([generateKindsCorpus(join(dir, "corpus")), startLocalS3({ buckets: [BUCKET] }), startCallbackReceiver()]);
  client = localS3Client(s3);
  await Promise.all(Object.values(corpus).map((c) => putFile(client, BUCKET, `kinds/${c.name}.tif`, c.path)));
});

afterAll(async () => {
  client?.destroy();
  await Promise.all([receiver?.close(), s3?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Runs the worker on corpus case `name` and returns its one callback and the output key. */
async function convert(name: string) {
  const c = corpus[name];
  const taskId = `tiff-${String(++taskSeq).padStart(6, "0")}`;
  const outputKey = `kinds/${name}-${taskId}.jpg`;
  const env = await machineEnv({
    batchId: BATCH,
    taskId,
    inputKey: `kinds/${name}.tif`,
    outputKey,
    bucket: BUCKET,
    s3,
    callbackUrl: receiver.urlFor(BATCH, taskId),
    callbackSecret: SECRET,
    extra: { MEMORY_MB: "1024", CALLBACK_BACKOFF_MS: "20", ...c.env },
  });
  const run = await runWorker(env);
  const received = receiver.forTask(BATCH, taskId);
  expect(received, `${name}: exactly one callback (exit ${run.code}; ${run.stderr.slice(0, 500)})`).toHaveLength(1);
  return { c, run, body: received[0].body, outputKey };
}

const names = (pick: (c: KindCase) => boolean) => Object.values(corpus ?? {}).filter(pick).map((c) => c.name);

describe("converts each kind to the right picture", () => {
  // Listed here (not from the corpus) so the test names exist before beforeAll has run.
  const SUCCESS = ["uint32-grey", "uint32-rgb-contig", "uint32-rgb-planar", "extrasample-unspecified", "extrasample-alpha", "multipage-grey12-page-2", "multipage-loop-at-3", "multipage-bad-data-page-1", "grey8", "grey8-rgb", "bilevel", "chroma-default", "chroma-444", "ojpeg-tiled", "cielab8", "lzma"];

  it("covers every case of the corpus that converts", () => {
    expect(names((c) => c.pages !== undefined).sort()).toEqual([...SUCCESS].sort());
  });

  it.concurrent.each(SUCCESS)("%s", async (name) => {
    const { c, run, body: raw, outputKey } = await convert(name);
    expect(run.code, run.stderr).toBe(EXIT.SUCCESS);
    const body = CallbackSuccess.parse(raw);
    const pages = c.pages ?? [];
    expect(body.outputs?.map((o) => o.r2_key)).toEqual(pages.map((_, i) => pageKey(outputKey, i + 1)));
    const chroma = c.env?.JPEG_CHROMA ?? "4:2:0";
    for (const [i, expected] of pages.entries()) {
      const { bytes } = await getObjectBytes(client, BUCKET, pageKey(outputKey, i + 1));
      expect(await compareJpeg(bytes, expected), `${name} page ${i + 1}`).toEqual([]);
      if (expected.channels === 3) expect((await sharp(bytes).metadata()).chromaSubsampling, `${name} page ${i + 1} chroma`).toBe(chroma);
    }
    expect(body.jpeg).toEqual({ quality: Number(c.env?.JPEG_QUALITY ?? 95), chroma, mozjpeg: true, channels: pages[0].channels });
    if (c.skipped) {
      expect(body.pages_skipped?.map((s) => s.page)).toEqual(c.skipped.map((s) => s.page));
      c.skipped.forEach((s, i) => expect(body.pages_skipped?.[i].reason).toMatch(s.reason));
    } else {
      expect(body.pages_skipped).toBeUndefined();
    }
  });
});

describe("refuses with one clean sentence saying what is wrong", () => {
  const FAILURE = ["fully-transparent", "multipage-none-convertible", "logluv", "logl", "grey12", "rgb4", "rgb24", "strip-past-eof", "bigtiff-offset-64bit", "samples-per-pixel-65535"];

  it("covers every case of the corpus that fails", () => {
    expect(names((c) => c.error !== undefined).sort()).toEqual([...FAILURE].sort());
  });

  it.concurrent.each(FAILURE)("%s", async (name) => {
    const { c, run, body: raw, outputKey } = await convert(name);
    expect(run.code, run.stderr).toBe(EXIT.TASK_FAILED);
    const body = CallbackError.parse(raw);
    expect(body.error).toMatch(c.error ?? /never/);
    if (c.notError) expect(body.error).not.toMatch(c.notError);
    // No temp path, no libtiff line twice, no line breaks.
    expect(body.error).not.toMatch(/\/tmp\/|fanout-tiff|input\.tif|\n/);
    const clauses = body.error.split(/[;()]/).map((s) => s.trim()).filter((s) => s.length > 12);
    expect(new Set(clauses).size, `a clause repeats in: ${body.error}`).toBe(clauses.length);
    expect(body).toMatchObject({ error_kind: "input", retryable: false });
    expect(await objectExists(client, BUCKET, outputKey), "no output written").toBe(false);
  });
});
