// A task's storage access, whichever the machine was given: presigned URLs for exactly its input
// and its reserved outputs (the default), or the R2 key pair of the old contract (opt-in). Both
// stream: the input to a temp file, each JPEG up from disk.
import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import { PassThrough, type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import pLimit from "p-limit";
import { request } from "undici";
import { MAX_PAGES_PER_TASK, ReserveResponse } from "../shared/contracts.ts";
import { pageKey } from "../shared/keys.ts";
import type { WorkerEnv } from "./env.ts";
import { TaskError, errorMessage } from "./errors.ts";
import { forgetSecrets, registerSecrets } from "./log.ts";
import { downloadToFile, makeS3Client, openObject, uploadFile, type Downloaded, type OpenedInput } from "./s3.ts";

/**
 * Input downloads of this process, at most `limit` at once (pool mode sets 1). A pool's slots
 * lease together and, a batch's scans being alike, would otherwise download together, each at
 * 1/slots of the machine's network, convert together and stay in step for the whole batch; one
 * at a time, the first slot converts after one download and the slots fall out of step, each
 * download overlapping the others' conversions (bench/RESULTS.md section 3 measures the effect).
 */
let downloads = pLimit(Number.POSITIVE_INFINITY);
export function limitDownloads(limit: number): void {
  downloads = pLimit(limit);
}
/** Runs `download` when a download slot is free; `queuedMs` is how long it waited for one. */
export function whenDownloadFree<T>(download: (queuedMs: number) => Promise<T>): Promise<T> {
  const asked = performance.now();
  return downloads(() => download(Math.round(performance.now() - asked)));
}

export interface TaskStorage {
  download(path: string): Promise<Downloaded>;
  /** The input as a stream (nothing on disk, nothing whole in memory); the caller reads it to the end. */
  openInput(): Promise<OpenedInput>;
  /** Makes keys for pages 1…pages writable; returns them in page order. */
  reserve(pages: number): Promise<string[]>;
  upload(page: number, path: string, contentType: string): Promise<{ key: string; bytes: number }>;
  close(): void;
}

export function taskStorage(env: WorkerEnv): TaskStorage {
  if (env.INPUT_URL && (env.OUTPUTS_URL || env.OUTPUT_URL)) return new ScopedStorage(env);
  if (env.R2_ACCESS_KEY_ID && env.R2_SECRET_ACCESS_KEY && env.R2_BUCKET && (env.R2_ACCOUNT_ID || env.R2_ENDPOINT)) return new KeyStorage(env);
  throw new TaskError("storage", "no storage access: set INPUT_URL and OUTPUTS_URL (scoped) or the R2_* key pair (legacy-keys)", { retryable: false });
}

/**
 * Presigned URLs: nothing beyond this attempt's own objects is reachable, and only until it
 * expires. Each output's PUT URL is asked for at OUTPUTS_URL right before its upload (it lives a
 * few minutes) and signs headers the upload must carry exactly: the content type, the writer, and
 * If-None-Match / If-Match, with which storage itself refuses to replace an object this attempt may
 * not replace. OUTPUT_URL / OUTPUT_HEADERS (page 1's URL given up front) are what orchestrators
 * before OUTPUTS_URL sent; they are used only when there is no OUTPUTS_URL.
 */
class ScopedStorage implements TaskStorage {
  private readonly env: WorkerEnv;
  private keys: string[] = [];

  constructor(env: WorkerEnv) {
    this.env = env;
  }

  async openInput(): Promise<OpenedInput> {
    const key = this.env.INPUT_R2_KEY;
    let res;
    try {
      res = await request(this.env.INPUT_URL!, { method: "GET" });
    } catch (error) {
      throw new TaskError("storage", `download of ${key} failed: ${errorMessage(error)}`, { cause: error });
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw refused("download", key, res.statusCode);
    }
    const expected = Number(res.headers["content-length"] ?? NaN);
    const contentType = typeof res.headers["content-type"] === "string" ? res.headers["content-type"] : undefined;
    const declared = Number.isFinite(expected) ? expected : undefined;
    return { body: limited(res.body, this.env, key, declared), expectedBytes: declared, contentType };
  }

  async download(path: string): Promise<Downloaded> {
    const key = this.env.INPUT_R2_KEY;
    const { body, expectedBytes, contentType } = await this.openInput();
    try {
      await pipeline(body, createWriteStream(path));
    } catch (error) {
      if (error instanceof TaskError) throw error;
      throw new TaskError("storage", `download of ${key} failed: ${errorMessage(error)}`, { cause: error });
    }
    const { size } = await stat(path);
    if (expectedBytes !== undefined && size !== expectedBytes) throw new TaskError("storage", `download of ${key} was cut short: got ${size} of ${expectedBytes} bytes`);
    return { bytes: size, contentType };
  }

  /** POST OUTPUTS_URL with `body`: the orchestrator's answer, or a TaskError saying why not. */
  private async outputs(body: { pages: number } | { page: number }, what: string) {
    let res;
    try {
      res = await request(this.env.OUTPUTS_URL!, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${this.env.CALLBACK_TOKEN}` },
        body: JSON.stringify(body),
      });
    } catch (error) {
      throw new TaskError("storage", `${what} failed: ${errorMessage(error)}`, { cause: error });
    }
    const text = await res.body.text();
    if (res.statusCode !== 200) {
      throw new TaskError("storage", `${what} was refused (HTTP ${res.statusCode}): ${text.slice(0, 300)}`, { retryable: res.statusCode >= 500 || res.statusCode === 409 });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const parsed = ReserveResponse.safeParse(json);
    if (!parsed.success) throw new TaskError("storage", `the orchestrator's answer to ${what} was malformed`);
    return parsed.data.outputs;
  }

  async reserve(pages: number): Promise<string[]> {
    if (pages > MAX_PAGES_PER_TASK) {
      throw new TaskError("input", `the input has ${pages} pages to convert, more than the ${MAX_PAGES_PER_TASK} outputs a task may write (MAX_PAGES_PER_TASK): split it into smaller files`, { retryable: false });
    }
    if (pages <= 1) this.keys = [this.env.OUTPUT_R2_KEY];
    else if (!this.env.OUTPUTS_URL) throw new TaskError("storage", `the input has ${pages} pages but OUTPUTS_URL is not set`, { retryable: false });
    else {
      const outputs = await this.outputs({ pages }, `reserving output keys for ${pages} pages`);
      const byPage = new Map(outputs.map((o) => [o.page, o.r2_key]));
      this.keys = Array.from({ length: pages }, (_, i) => byPage.get(i + 1) ?? "");
      const missing = this.keys.findIndex((k) => k === "");
      if (missing >= 0) throw new TaskError("storage", `the orchestrator reserved no key for page ${missing + 1}`);
    }
    return this.keys;
  }

  /** Page `page`'s PUT URL and the headers it signs: asked for now (OUTPUTS_URL), or page 1's given up front. */
  private async target(page: number): Promise<{ key: string; url: string; headers: Record<string, string> }> {
    if (this.env.OUTPUTS_URL) {
      const [o] = await this.outputs({ page }, `asking for the upload URL of page ${page}`);
      if (!o?.url || o.page !== page) throw new TaskError("storage", `the orchestrator gave no upload URL for page ${page}`);
      // A presigned URL is a credential: never in a log line (forgotten once its upload is done).
      registerSecrets([o.url]);
      return { key: o.r2_key, url: o.url, headers: o.headers ?? {} };
    }
    if (page === 1 && this.env.OUTPUT_URL) return { key: this.env.OUTPUT_R2_KEY, url: this.env.OUTPUT_URL, headers: this.env.OUTPUT_HEADERS ?? {} };
    throw new TaskError("storage", `page ${page} has no upload URL: set OUTPUTS_URL`, { retryable: false });
  }

  async upload(page: number, path: string, contentType: string): Promise<{ key: string; bytes: number }> {
    const target = await this.target(page);
    const { size } = await stat(path);
    let res;
    try {
      // One PUT from disk with its length: memory stays at a stream buffer whatever the size. The
      // signed headers win: the URL is valid only with them (a signed content-type included).
      res = await request(target.url, {
        method: "PUT",
        headers: { "content-type": contentType, ...target.headers, "content-length": String(size) },
        body: createReadStream(path),
      });
      await res.body.dump();
    } catch (error) {
      throw new TaskError("storage", `upload of ${target.key} failed: ${errorMessage(error)}`, { cause: error });
    } finally {
      // Page 1's OUTPUT_URL stays scrubbed for the whole task (registered at start).
      if (target.url !== this.env.OUTPUT_URL) forgetSecrets([target.url]);
    }
    if (res.statusCode < 200 || res.statusCode >= 300) throw refused("upload", target.key, res.statusCode);
    return { key: target.key, bytes: size };
  }

  close(): void {}
}

/** The most input bytes this task may read: the size the orchestrator saw (INPUT_SIZE), and MAX_INPUT_BYTES. */
export function inputLimit(env: Pick<WorkerEnv, "INPUT_SIZE" | "MAX_INPUT_BYTES">): { bytes: number; why: string } {
  if (env.INPUT_SIZE !== undefined && env.INPUT_SIZE <= env.MAX_INPUT_BYTES) {
    return { bytes: env.INPUT_SIZE, why: `the ${env.INPUT_SIZE} bytes the orchestrator saw (INPUT_SIZE): the object changed after the batch listed it, or its manifest's file_size is wrong` };
  }
  return { bytes: env.MAX_INPUT_BYTES, why: `this worker's MAX_INPUT_BYTES (${env.MAX_INPUT_BYTES})` };
}

/**
 * The input body, refused as soon as it is longer than inputLimit: at once when its Content-Length
 * says so, else (a chunked body) at the first chunk past it — never a byte more on disk.
 */
export function limited(body: Readable, env: Pick<WorkerEnv, "INPUT_SIZE" | "MAX_INPUT_BYTES">, key: string, declared: number | undefined): Readable {
  const limit = inputLimit(env);
  const tooLarge = (n: number, exact: boolean) =>
    new TaskError("input", `input ${key} is ${exact ? "" : "more than "}${n} bytes, more than ${limit.why}; it was not downloaded`, { retryable: false });
  if (declared !== undefined && declared > limit.bytes) {
    body.destroy();
    const refusedBody = new PassThrough();
    queueMicrotask(() => refusedBody.destroy(tooLarge(declared, true)));
    return refusedBody;
  }
  let seen = 0;
  let refusedAt: TaskError | undefined;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      seen += chunk.length;
      if (seen > limit.bytes) {
        refusedAt = tooLarge(limit.bytes, false);
        done(refusedAt);
        body.destroy(); // hang up: the rest is never read
        return;
      }
      done(null, chunk);
    },
  });
  // The source's own failure, unless it is the hang-up that follows the refusal.
  body.on("error", (error) => counter.destroy(refusedAt ?? error));
  return body.pipe(counter);
}

function refused(action: string, key: string, status: number): TaskError {
  if (action === "download" && status === 404) return new TaskError("input", `input object not found: ${key} does not exist`, { retryable: false });
  if (status === 412) {
    // If-None-Match / If-Match failed: an object is there that this attempt may not replace. The
    // orchestrator looks again before the next attempt (it is this task's own, or another's).
    return new TaskError("storage", `upload of ${key} was refused (HTTP 412 PreconditionFailed): storage holds an object there that this attempt may not replace`);
  }
  if (status === 401 || status === 403) {
    // Expired or not for this key: another attempt gets fresh URLs.
    return new TaskError("storage", `${action} of ${key} was refused (HTTP ${status}): the presigned URL expired or does not cover this key`);
  }
  return new TaskError("storage", `${action} of ${key} failed (HTTP ${status})`, { retryable: status >= 500 || status === 429 });
}

/** The old contract: the R2 key pair, page keys derived here (not reserved: opt-in only). */
class KeyStorage implements TaskStorage {
  private readonly env: WorkerEnv;
  private readonly s3: ReturnType<typeof makeS3Client>;
  private keys: string[] = [];

  constructor(env: WorkerEnv) {
    this.env = env;
    this.s3 = makeS3Client({ R2_ACCOUNT_ID: env.R2_ACCOUNT_ID ?? "", R2_ACCESS_KEY_ID: env.R2_ACCESS_KEY_ID!, R2_SECRET_ACCESS_KEY: env.R2_SECRET_ACCESS_KEY!, R2_ENDPOINT: env.R2_ENDPOINT });
  }

  download(path: string): Promise<Downloaded> {
    return downloadToFile(this.s3, this.env.R2_BUCKET!, this.env.INPUT_R2_KEY, path, (body, declared) => limited(body, this.env, this.env.INPUT_R2_KEY, declared));
  }

  async openInput(): Promise<OpenedInput> {
    const opened = await openObject(this.s3, this.env.R2_BUCKET!, this.env.INPUT_R2_KEY);
    return { ...opened, body: limited(opened.body, this.env, this.env.INPUT_R2_KEY, opened.expectedBytes) };
  }

  async reserve(pages: number): Promise<string[]> {
    if (pages > MAX_PAGES_PER_TASK) {
      throw new TaskError("input", `the input has ${pages} pages to convert, more than the ${MAX_PAGES_PER_TASK} outputs a task may write (MAX_PAGES_PER_TASK): split it into smaller files`, { retryable: false });
    }
    this.keys = Array.from({ length: pages }, (_, i) => pageKey(this.env.OUTPUT_R2_KEY, i + 1));
    return this.keys;
  }

  async upload(page: number, path: string, contentType: string): Promise<{ key: string; bytes: number }> {
    const key = this.keys[page - 1] ?? pageKey(this.env.OUTPUT_R2_KEY, page);
    const { bytes } = await uploadFile(this.s3, this.env.R2_BUCKET!, key, path, contentType);
    return { key, bytes };
  }

  close(): void {
    this.s3.destroy();
  }
}
