// Every kind of issue 26 and every row of the README's "Supported TIFF kinds" table, each in a
// file made for it, through the worker's task code (runTask: download from a real S3 endpoint on
// loopback, inspect, rewrite when needed, convert with real sharp, upload). In-process, so forty
// kinds stay cheap; fly-worker-kinds.test.ts runs kinds through the worker's child process.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CallbackSuccess } from "../../shared/contracts.ts";
import { pageKey } from "../../shared/keys.ts";
import { parseEnv } from "../../fly-worker/env.ts";
import { TaskError } from "../../fly-worker/errors.ts";
import { runTask } from "../../fly-worker/task.ts";
import { startLocalS3, type LocalS3 } from "../../local/s3.ts";
import { compareJpeg } from "./support/jpeg-check.ts";
import { getObjectBytes, localS3Client, objectExists, putFile } from "./support/s3.ts";
import { generateDecoderCorpus, type DecoderCase } from "./support/tiff-kinds-corpus.ts";
import { machineEnv } from "./support/worker.ts";

const BUCKET = "fanout";
const BATCH = "batch-decoders-1";

let dir: string;
let s3: LocalS3;
let client: S3Client;
let corpus: Record<string, DecoderCase>;
let taskSeq = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "fanout-decoders-test-"));
  [corpus, s3] = await Promise.all([generateDecoderCorpus(join(dir, "corpus")), startLocalS3({ buckets: [BUCKET] })]);
  client = localS3Client(s3);
  await Promise.all(Object.values(corpus).map((c) => putFile(client, BUCKET, `decoders/${c.name}.tif`, c.path)));
});

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Runs one task on corpus case `name`: its success body, or the TaskError it failed with. */
async function convert(name: string): Promise<{ c: DecoderCase; outputKey: string; body?: CallbackSuccess; error?: TaskError }> {
  const c = corpus[name];
  const taskId = `tiff-${String(++taskSeq).padStart(6, "0")}`;
  const outputKey = `decoders/${name}-${taskId}.jpg`;
  const parsed = parseEnv(
    await machineEnv({ batchId: BATCH, taskId, inputKey: `decoders/${name}.tif`, outputKey, bucket: BUCKET, s3, callbackUrl: `http://127.0.0.1:9/callback/${BATCH}/${taskId}`, callbackSecret: "s", extra: { MEMORY_MB: "1024" } }),
  );
  if (!parsed.ok) throw new Error(`env: ${parsed.problems.join("; ")}`);
  const workDir = await mkdtemp(join(dir, "task-"));
  try {
    const body = await runTask(parsed.env, workDir, { timings: { download_time_ms: 0, inspect_time_ms: 0, conversion_time_ms: 0, upload_time_ms: 0 } });
    return { c, outputKey, body: CallbackSuccess.parse(body) };
  } catch (error) {
    if (error instanceof TaskError) return { c, outputKey, error };
    throw error;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

const CONVERTED = [
  "int16-grey", "int16-grey-negative", "int8-grey-negative", "int32-grey-negative", "int16-rgb", "int16-grey-tiled", "int16-multipage",
  "float32-grey", "float32-grey-0-1000", "float32-nan", "float32-rgb", "float32-rgb-wide", "float32-rgb-predictor3-deflate", "float32-rgb-predictor3-zstd",
  "logluv32", "logl16", "cielab8", "icclab8", "cielab16",
  "ojpeg-tiled", "ojpeg-strips-tables", "ojpeg-interchange-whole",
  "tiled-planar-8", "tiled-planar-16-lzw", "tiled-planar-8-zstd", "zstd-rgb", "lzma-rgb", "rgba-plus-extra", "icc-not-a-profile",
  "rgb-packbits", "rgb-jpeg", "rgb-tiled-lzw", "bilevel-g4", "bilevel-g3", "grey2", "grey4", "palette8", "palette4",
];
const REFUSED = ["float32-all-nan", "float64-grey", "uint32-rgba", "itulab", "tall-65537", "fifteen-itulab-pages", "lerc", "jpeg2000", "jpegxl", "samples-per-pixel-0", "bits-per-sample-0", "bits-per-sample-65", "pdf-named-tif"];

describe("converts each kind by its documented rule", () => {
  it("covers every case of the corpus", () => {
    expect(Object.keys(corpus).sort()).toEqual([...CONVERTED, ...REFUSED, "float32-cmyk", "cmyk8-twin"].sort());
  });

  it.concurrent.each(CONVERTED)("%s", async (name) => {
    const { c, body, error, outputKey } = await convert(name);
    expect(error?.message, name).toBeUndefined();
    const pages = c.pages ?? [];
    expect(body?.outputs?.map((o) => o.r2_key)).toEqual(pages.map((_, i) => pageKey(outputKey, i + 1)));
    for (const [i, expected] of pages.entries()) {
      const { bytes } = await getObjectBytes(client, BUCKET, pageKey(outputKey, i + 1));
      expect(await compareJpeg(bytes, expected, c.tolerance ?? 4), `${name} page ${i + 1}`).toEqual([]);
    }
    expect(body?.pages_skipped, `${name}: no page skipped`).toBeUndefined();
    expect(body?.page_notes?.map((n) => n.page) ?? [], `${name}: pages with notes`).toEqual((c.notes ?? []).map((n) => n.page));
    (c.notes ?? []).forEach((n, i) => expect(body?.page_notes?.[i].note).toMatch(n.note));
  });

  it("float CMYK ink 0–1 converts as the 8-bit CMYK of ink × 255", async () => {
    const [float, twin] = await Promise.all([convert("float32-cmyk"), convert("cmyk8-twin")]);
    expect(float.error?.message).toBeUndefined();
    const decode = async (key: string) => sharp((await getObjectBytes(client, BUCKET, key)).bytes).raw().toBuffer();
    const [a, b] = await Promise.all([decode(float.outputKey), decode(twin.outputKey)]);
    expect(a.length).toBe(b.length);
    const worst = a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
    expect(worst, "largest difference in levels").toBeLessThanOrEqual(2);
    // And the picture is not blank: the left half is inked (cyan + yellow → green-blue), the right white.
    const left = [a[((24 * 64) + 16) * 3], a[((24 * 64) + 16) * 3 + 1], a[((24 * 64) + 16) * 3 + 2]];
    expect(left[0], `left half ${left.join(",")} is inked`).toBeLessThan(160);
    expect([a[((24 * 64) + 48) * 3], a[((24 * 64) + 48) * 3 + 2]]).toEqual([255, 255]);
  });
});

describe("refuses only what nothing reads, saying why and what to do", () => {
  it.concurrent.each(REFUSED)("%s", async (name) => {
    const { c, error, outputKey } = await convert(name);
    expect(error, `${name} must fail`).toBeInstanceOf(TaskError);
    expect(error?.message).toMatch(c.error ?? /never/);
    expect(error?.message.length, "one sentence, not a page-by-page list").toBeLessThan(400);
    expect(error?.kind).toBe("input");
    expect(error?.retryable).toBe(false);
    expect(await objectExists(client, BUCKET, outputKey), "no output written").toBe(false);
  });
});
