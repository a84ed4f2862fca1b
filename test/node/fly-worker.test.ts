// The fly-worker as a Fly Machine runs it: a child process with a machine's env, a real S3
// endpoint on loopback (the local S3, checking signatures as R2 does) and a real HTTP server
// receiving its callbacks.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HeadObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { CallbackError, CallbackSuccess, MachineEnv } from "../../shared/contracts.ts";
import { pageKey, WRITER_METADATA } from "../../shared/keys.ts";
import { callbackSubject, verifyToken } from "../../shared/token.ts";
import { EXIT } from "../../fly-worker/exit-codes.ts";
import { startLocalS3, type LocalS3 } from "../../local/s3.ts";
import type { Config } from "../../orchestrator/config.ts";
import { presign } from "../../orchestrator/engine/presign.ts";
import { startCallbackReceiver, type CallbackReceiver, type ReceivedCallback } from "./support/callback-receiver.ts";
import { compareJpeg, jpegFacts } from "./support/jpeg-check.ts";
import { getObjectBytes, localS3Client, objectExists, putFile } from "./support/s3.ts";
import { generateTiffCorpus, type CorpusCase } from "./support/tiff-corpus.ts";
import { machineEnv, runWorker, type WorkerRun } from "./support/worker.ts";

const BUCKET = "fanout";
const SECRET = "test-callback-secret";
const BATCH = "batch-fw-1";

let dir: string;
let s3: LocalS3;
let client: S3Client;
let receiver: CallbackReceiver;
let corpus: Record<string, CorpusCase>;
let taskSeq = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "fanout-fw-test-"));
  [corpus, s3, receiver] = await Promise.all([generateTiffCorpus(join(dir, "corpus"), { large: true }), startLocalS3({ buckets: [BUCKET] }), startCallbackReceiver()]);
  client = localS3Client(s3);
  await Promise.all(Object.values(corpus).map((c) => putFile(client, BUCKET, `scans/${c.name}.tif`, c.path)));
});

afterAll(async () => {
  client?.destroy();
  await Promise.all([receiver?.close(), s3?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Task {
  taskId: string;
  inputKey: string;
  outputKey: string;
  env: Record<string, string>;
}

async function task(inputName: string, extra: Record<string, string> = {}): Promise<Task> {
  const taskId = `tiff-${String(++taskSeq).padStart(6, "0")}`;
  const inputKey = `scans/${inputName}.tif`;
  const outputKey = `scans/${inputName}-${taskId}.jpg`;
  const env = await machineEnv({
    batchId: BATCH,
    taskId,
    inputKey,
    outputKey,
    bucket: BUCKET,
    s3,
    callbackUrl: receiver.urlFor(BATCH, taskId),
    callbackSecret: SECRET,
    extra: { MEMORY_MB: "1024", CALLBACK_BACKOFF_MS: "20", ...extra },
  });
  return { taskId, inputKey, outputKey, env };
}

/** What every run must honour: log format and context, no secret anywhere in the output. */
function checkRunHygiene(run: WorkerRun, t: Task): void {
  const output = `${run.stdout}\n${run.stderr}`;
  for (const name of ["R2_SECRET_ACCESS_KEY", "CALLBACK_TOKEN", "R2_ACCESS_KEY_ID"] as const) {
    expect(output, `${name} leaked into the logs`).not.toContain(t.env[name]);
  }
  const lines = output.split("\n").filter((l) => l.trim() !== "");
  const stray = lines.filter((l) => !/^\[(TiffConversion|Env|S3|Callback|FlyWorker)\] \{.*\}$/.test(l) && !l.includes("ExperimentalWarning") && !l.includes("--trace-warnings"));
  expect(stray, "every log line is `[Component] {json}`").toEqual([]);
  for (const { fields } of run.logs) {
    expect(fields).toMatchObject({ batch_id: BATCH, task_id: t.taskId, machine_id: `local-${t.taskId}` });
  }
}

async function onlyCallback(t: Task): Promise<ReceivedCallback> {
  const received = receiver.forTask(BATCH, t.taskId);
  expect(received, "exactly one callback").toHaveLength(1);
  const [cb] = received;
  expect(await verifyToken(SECRET, callbackSubject(BATCH, t.taskId), cb.authorization ?? null), "Authorization: Bearer <token>").toBe(true);
  expect(cb.contentType).toBe("application/json");
  return cb;
}

const SUCCESS_CASES = ["rgb8", "rgb8-lzw", "rgb8-deflate", "rgb16", "grey16", "cmyk", "cmyk-icc", "rgb-p3-icc", "rgba", "orientation-6", "multipage-thumb-first", "multipage-thumb-unflagged"];
// CMYK round trips through different profiles: plausibly the same hue, not the same value.
// Saturated sRGB blue is outside the CMYK gamut, so it comes back darker (200 → ~123).
const TOLERANCE: Record<string, number> = { cmyk: 90, "cmyk-icc": 90 };

describe("converts archival TIFFs", () => {
  it.concurrent.each(SUCCESS_CASES)("%s → sRGB JPEG(s) with the right size and colours", async (name) => {
    const c = corpus[name];
    const t = await task(name);
    const run = await runWorker(t.env);
    expect(run.code, run.stderr || run.stdout).toBe(EXIT.SUCCESS);
    checkRunHygiene(run, t);
    const cb = await onlyCallback(t);
    const body = CallbackSuccess.parse(cb.body);
    const pages = c.pages ?? [];
    expect(body).toMatchObject({ task_id: t.taskId, batch_id: BATCH, status: "success", output_r2_key: t.outputKey, pages: pages.length });
    expect(body.outputs?.map((o) => o.r2_key)).toEqual(pages.map((_, i) => pageKey(t.outputKey, i + 1)));
    expect(body.performance).toMatchObject({ total_time_ms: expect.any(Number), download_time_ms: expect.any(Number), conversion_time_ms: expect.any(Number), upload_time_ms: expect.any(Number) });
    expect(body).toMatchObject({ width: pages[0].width, height: pages[0].height, encoder: { quality: 95, mozjpeg: true } });
    for (const [i, expected] of pages.entries()) {
      const key = pageKey(t.outputKey, i + 1);
      const { bytes, contentType } = await getObjectBytes(client, BUCKET, key);
      expect(contentType).toBe("image/jpeg");
      expect(body.outputs?.[i]).toMatchObject({ file_size: bytes.length, width: expected.width, height: expected.height });
      expect(await compareJpeg(bytes, expected, TOLERANCE[name]), `${key} (page ${i + 1})`).toEqual([]);
    }
  });

  it("lists the thumbnail it skipped and never converts it", async () => {
    const t = await task("multipage-thumb-first");
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.SUCCESS);
    const body = CallbackSuccess.parse((await onlyCallback(t)).body);
    expect(body.outputs?.map((o) => (o as { source_page?: number }).source_page)).toEqual([2, 3]);
    expect(body).toMatchObject({ input: { tiff_pages: 3, skipped_pages: [{ page: 1, width: 160, height: 120, reason: expect.stringMatching(/reduced-resolution/) }] } });
    expect(run.logs.some((l) => l.fields.event === "page.skipped")).toBe(true);
  });

  it("logs each step with its timing, so `fly logs -i MACHINE` tells the whole story", async () => {
    const t = await task("rgb8-lzw");
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.SUCCESS);
    checkRunHygiene(run, t);
    const events = run.logs.map((l) => `${l.component}:${String(l.fields.event)}`);
    expect(events).toEqual(expect.arrayContaining(["TiffConversion:task.start", "TiffConversion:download.done", "TiffConversion:inspect.done", "TiffConversion:convert.done", "TiffConversion:upload.done", "Callback:callback.delivered", "TiffConversion:task.exit"]));
    for (const step of ["download.done", "inspect.done", "convert.done", "upload.done"]) {
      expect(run.logs.find((l) => l.fields.event === step)?.fields.duration_ms, step).toEqual(expect.any(Number));
    }
  });

  it("honours JPEG_QUALITY and MOZJPEG=false", async () => {
    const t = await task("rgb8", { JPEG_QUALITY: "70", MOZJPEG: "false" });
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.SUCCESS);
    const body = CallbackSuccess.parse((await onlyCallback(t)).body);
    expect(body).toMatchObject({ encoder: { quality: 70, mozjpeg: false } });
  });
});

describe("scoped storage access (presigned URLs, the default)", () => {
  it("reads its input by presigned GET and PUTs the JPEG with exactly the headers its URL signs: Content-Type image/jpeg, the writer, If-None-Match", async () => {
    const t = await task("rgb8");
    const config = { R2_ENDPOINT: s3.endpoint, R2_BUCKET: BUCKET, R2_ACCOUNT_ID: "", R2_ACCESS_KEY_ID: s3.credentials.accessKeyId, R2_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey } as unknown as Config;
    const expiresAt = Date.now() + 10 * 60_000;
    const headers = { "content-type": "image/jpeg", [`x-amz-meta-${WRITER_METADATA}`]: `${BATCH}/${t.taskId}`, "if-none-match": "*" };
    const { R2_ACCESS_KEY_ID: _id, R2_SECRET_ACCESS_KEY: _secret, R2_BUCKET: _bucket, R2_ENDPOINT: _endpoint, R2_ACCOUNT_ID: _account, ...rest } = t.env;
    const env = {
      ...rest,
      INPUT_URL: await presign(config, "GET", t.inputKey, expiresAt),
      OUTPUT_URL: await presign(config, "PUT", t.outputKey, expiresAt, Date.now(), headers),
      OUTPUT_HEADERS: JSON.stringify(headers),
    };
    expect(new URL(env.OUTPUT_URL).searchParams.get("X-Amz-SignedHeaders")).toBe(`content-type;host;if-none-match;x-amz-meta-${WRITER_METADATA}`);
    const run = await runWorker(env);
    expect(run.code, run.stderr || run.stdout).toBe(EXIT.SUCCESS);
    expect(CallbackSuccess.parse((await onlyCallback(t)).body)).toMatchObject({ status: "success", output_r2_key: t.outputKey });
    const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: t.outputKey }));
    expect(head.ContentType).toBe("image/jpeg");
    expect(head.Metadata).toEqual({ [WRITER_METADATA]: `${BATCH}/${t.taskId}` });
  }, 90_000);
});

describe("fails with an error callback that says what went wrong", () => {
  const cases: [string, RegExp][] = [
    ["truncated", /truncated/i],
    ["truncated-data", /truncated or corrupt/i],
    ["zero-byte", /empty \(0 bytes\)/],
    ["png-named-tif", /not a TIFF: it looks like a PNG image/],
    ["garbage", /truncated or corrupt/i],
  ];
  it.concurrent.each(cases)("%s", async (name, reason) => {
    const t = await task(name);
    const run = await runWorker(t.env);
    expect(run.code, run.stderr).toBe(EXIT.TASK_FAILED);
    checkRunHygiene(run, t);
    const body = CallbackError.parse((await onlyCallback(t)).body);
    expect(body.error).toMatch(reason);
    expect(body).toMatchObject({ error_kind: "input", retryable: false });
    expect(await objectExists(client, BUCKET, t.outputKey), "no output written").toBe(false);
  });

  it("a missing input object", async () => {
    const t = await task("does-not-exist");
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.TASK_FAILED);
    const body = CallbackError.parse((await onlyCallback(t)).body);
    expect(body.error).toBe(`input object not found: s3://${BUCKET}/scans/does-not-exist.tif does not exist (NoSuchKey)`);
  });

  it("a page over MAX_INPUT_PIXELS, before decoding it", async () => {
    const t = await task("rgb8", { MAX_INPUT_PIXELS: "100000" });
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.TASK_FAILED);
    const body = CallbackError.parse((await onlyCallback(t)).body);
    expect(body.error).toMatch(/page 1 is 640×480 = 307,200 pixels, over the limit of 100,000 \(MAX_INPUT_PIXELS/);
    expect(body).toMatchObject({ error_kind: "resources", retryable: false });
  });

  it("an unreachable S3 endpoint is a retryable storage error", async () => {
    const t = await task("rgb8", { R2_ENDPOINT: "http://127.0.0.1:9" });
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.TASK_FAILED);
    const body = CallbackError.parse((await onlyCallback(t)).body);
    expect(body.error).toMatch(/^download of s3:\/\/fanout\/scans\/rgb8.tif failed: .*ECONNREFUSED/);
    expect(body).toMatchObject({ error_kind: "storage", retryable: true });
  });
});

describe("environment", () => {
  it("a missing variable is named, reported by callback, and exits BAD_ENV", async () => {
    const t = await task("rgb8");
    const { INPUT_R2_KEY: _dropped, ...env } = t.env;
    const run = await runWorker(env);
    expect(run.code).toBe(EXIT.BAD_ENV);
    checkRunHygiene(run, t);
    expect(run.stderr).toContain("INPUT_R2_KEY is required but it is not set");
    const body = CallbackError.parse((await onlyCallback(t)).body);
    expect(body.error).toContain("INPUT_R2_KEY is required but it is not set");
  });

  it("a malformed variable says what was expected and received", async () => {
    const t = await task("rgb8", { JPEG_QUALITY: "high", MOZJPEG: "yes" });
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.BAD_ENV);
    expect(run.stderr).toMatch(/JPEG_QUALITY: must be a whole number; received \\"high\\"/);
    expect(run.stderr).toMatch(/MOZJPEG: must be 'true' or 'false'; received \\"yes\\"/);
    expect(CallbackError.parse((await onlyCallback(t)).body).error).toMatch(/JPEG_QUALITY/);
  });

  it("a malformed secret is named but never shown", async () => {
    const t = await task("rgb8");
    const run = await runWorker({ ...t.env, R2_SECRET_ACCESS_KEY: "", CALLBACK_URL: "ftp://nowhere" });
    expect(run.code).toBe(EXIT.BAD_ENV);
    checkRunHygiene(run, t);
    expect(run.stderr).toContain("R2_SECRET_ACCESS_KEY is required but it is not set");
    expect(run.stderr).toMatch(/CALLBACK_URL: must be an http\(s\) URL; received \\"ftp:\/\/nowhere\\"/);
    expect(run.stderr).toContain("no error callback sent");
    expect(receiver.forTask(BATCH, t.taskId)).toHaveLength(0);
  });

  it("the machine env contract is the shared schema", () => {
    expect(Object.keys(MachineEnv.shape)).toEqual(expect.arrayContaining(["TASK_ID", "BATCH_ID", "INPUT_R2_KEY", "OUTPUT_R2_KEY", "CALLBACK_URL", "CALLBACK_TOKEN", "R2_ENDPOINT", "MEMORY_MB"]));
  });
});

describe("callback delivery", () => {
  it("retries 5xx and network errors with backoff, then succeeds", async () => {
    const t = await task("rgb8-lzw");
    receiver.scriptFor(BATCH, t.taskId, [503, "drop", 502]);
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.SUCCESS);
    const received = receiver.forTask(BATCH, t.taskId);
    expect(received).toHaveLength(4);
    expect(new Set(received.map((r) => JSON.stringify(r.body))).size, "the same body each time").toBe(1);
    expect(run.logs.filter((l) => l.component === "Callback" && l.fields.event !== "callback.delivered")).toHaveLength(3);
  });

  it("does not retry a 4xx and exits CALLBACK_UNDELIVERABLE", async () => {
    const t = await task("rgb8-lzw");
    receiver.scriptFor(BATCH, t.taskId, [401]);
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.CALLBACK_UNDELIVERABLE);
    expect(receiver.forTask(BATCH, t.taskId)).toHaveLength(1);
    expect(run.stderr).toMatch(/callback.undeliverable.*HTTP 401/);
  });

  it("gives up after CALLBACK_MAX_ATTEMPTS when the orchestrator stays down", async () => {
    const t = await task("zero-byte", { CALLBACK_MAX_ATTEMPTS: "3" });
    receiver.scriptFor(BATCH, t.taskId, [], 503);
    const run = await runWorker(t.env);
    expect(run.code).toBe(EXIT.CALLBACK_UNDELIVERABLE);
    expect(receiver.forTask(BATCH, t.taskId)).toHaveLength(3);
  });
});

/** Figures worth reading: an annotation (json/html reporters) and a console line (`--silent=false`). */
async function report(annotate: (message: string) => Promise<unknown>, message: string): Promise<void> {
  console.log(`[large-scan] ${message}`);
  await annotate(message);
}

describe("a 50+ megapixel scan", () => {
  it("reports the megapixels it converted and the CPU-seconds its process spent on them, which GNU time confirms", async () => {
    const c = corpus["large-scan"];
    const t = await task("large-scan", { MEMORY_MB: "2048" });
    const run = await runWorker(t.env, { measureCpu: true });
    expect(run.code, run.stderr || run.stdout).toBe(EXIT.SUCCESS);
    const body = CallbackSuccess.parse((await onlyCallback(t)).body);
    // Every page's width × height (the corpus made it).
    const pixels = (c.pages ?? []).reduce((n, p) => n + p.width * p.height, 0);
    expect(body.performance?.megapixels).toBe(pixels / 1e6);
    // The worker measures its process from the task's start to its callback; GNU time the whole
    // process: Node's start and loading sharp before the task (~0.3–0.5 CPU-s), sending the
    // callback and exiting after. The task is most of it.
    const cpuS = z.number().parse(body.performance?.cpu_s);
    expect(run.cpuS).toBeGreaterThan(1);
    expect(cpuS).toBeLessThanOrEqual(run.cpuS! + 0.02);
    expect(cpuS).toBeGreaterThanOrEqual(run.cpuS! * 0.6);
  });

  it("fits mozjpeg on a 1 GB machine", async ({ annotate }) => {
    const c = corpus["large-scan"];
    const t = await task("large-scan", { MEMORY_MB: "1024" });
    const run = await runWorker(t.env, { timeoutMs: 120_000 });
    expect(run.code, run.stderr).toBe(EXIT.SUCCESS);
    checkRunHygiene(run, t);
    const body = CallbackSuccess.parse((await onlyCallback(t)).body);
    const reported = z.number().parse(body.performance?.peak_rss_mb);
    await report(annotate, `MEMORY_MB=1024, mozjpeg q95: peak RSS ${reported} MB (polled ${run.peakRssMb} MB), ${run.durationMs} ms wall, ${JSON.stringify(body.performance)}`);
    expect(body).toMatchObject({ width: 8700, height: 5800, encoder: { mozjpeg: true, optimise_coding: true } });
    // The limit is judged on the independent measurement: the process's VmHWM polled from /proc
    // (the worker's own maxRSS figure, `reported`, is what it says, not what it did). A mozjpeg
    // encode of 50 MP holds far more than Node alone: the poll saw the encode.
    expect(run.peakRssMb).toBeGreaterThan(200);
    expect(run.peakRssMb).toBeLessThan(1024 * 0.8);
    expect(reported).toBeLessThan(1024 * 0.8);
    const { bytes } = await getObjectBytes(client, BUCKET, t.outputKey);
    expect(await compareJpeg(bytes, c.pages![0], 25)).toEqual([]);
  });

  it("switches to the streaming encoder on a small machine and says so", async ({ annotate }) => {
    const t = await task("large-scan", { MEMORY_MB: "256" });
    const run = await runWorker(t.env, { timeoutMs: 120_000 });
    expect(run.code, run.stderr).toBe(EXIT.SUCCESS);
    const body = CallbackSuccess.parse((await onlyCallback(t)).body);
    const reported = z.number().parse(body.performance?.peak_rss_mb);
    await report(annotate, `MEMORY_MB=256, streaming baseline q95: peak RSS ${reported} MB (polled ${run.peakRssMb} MB), ${run.durationMs} ms wall, ${JSON.stringify(body.performance)}`);
    expect(body).toMatchObject({ encoder: { mozjpeg: false, optimise_coding: false, reason: expect.stringMatching(/would need ~\d+ MB for 8700×5800, over the 204 MB budget/) } });
    // Judged on the /proc poll (independent of the worker), not only on what it reports.
    expect(run.peakRssMb).toBeGreaterThan(0);
    expect(run.peakRssMb).toBeLessThan(256);
    expect(reported).toBeLessThan(256);
    const facts = await jpegFacts((await getObjectBytes(client, BUCKET, t.outputKey)).bytes);
    expect(facts).toMatchObject({ format: "jpeg", width: 8700, height: 5800 });
  });

  it("refuses, with the numbers, what cannot fit at all", async () => {
    const t = await task("large-scan", { MEMORY_MB: "128" });
    const run = await runWorker(t.env, { timeoutMs: 120_000 });
    expect(run.code).toBe(EXIT.TASK_FAILED);
    const body = CallbackError.parse((await onlyCallback(t)).body);
    expect(body.error).toMatch(/needs ~\d+ MB even with the streaming encoder; the budget is 102 MB of 128 MB \(MEMORY_MB\)/);
    expect(body).toMatchObject({ error_kind: "resources", retryable: false });
  });
});
