// A task's storage access, whichever the machine was given: presigned URLs for exactly its input
// and its reserved outputs (the default), or the R2 key pair of the old contract (opt-in). Both
// stream: the input to a temp file, each JPEG up from disk.
import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import pLimit from "p-limit";
import { request } from "undici";
import { ReserveResponse } from "../shared/contracts.ts";
import { pageKey } from "../shared/keys.ts";
import type { WorkerEnv } from "./env.ts";
import { TaskError, errorMessage } from "./errors.ts";
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
  if (env.INPUT_URL && env.OUTPUT_URL) return new ScopedStorage(env);
  if (env.R2_ACCESS_KEY_ID && env.R2_SECRET_ACCESS_KEY && env.R2_BUCKET && (env.R2_ACCOUNT_ID || env.R2_ENDPOINT)) return new KeyStorage(env);
  throw new TaskError("storage", "no storage access: set INPUT_URL and OUTPUT_URL (scoped) or the R2_* key pair (legacy-keys)", { retryable: false });
}

/**
 * Presigned URLs: nothing beyond this attempt's own objects is reachable, and only until it
 * expires. Each PUT URL signs headers the upload must carry exactly (OUTPUT_HEADERS, and `headers`
 * in the reservation answer): the content type, the writer, and If-None-Match / If-Match, with which
 * storage itself refuses to replace an object this attempt may not replace.
 */
class ScopedStorage implements TaskStorage {
  private readonly env: WorkerEnv;
  private readonly urls = new Map<number, { key: string; url: string; headers: Record<string, string> }>();

  constructor(env: WorkerEnv) {
    this.env = env;
    this.urls.set(1, { key: env.OUTPUT_R2_KEY, url: env.OUTPUT_URL!, headers: env.OUTPUT_HEADERS ?? {} });
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
    return { body: res.body, expectedBytes: Number.isFinite(expected) ? expected : undefined, contentType };
  }

  async download(path: string): Promise<Downloaded> {
    const key = this.env.INPUT_R2_KEY;
    const { body, expectedBytes, contentType } = await this.openInput();
    try {
      await pipeline(body, createWriteStream(path));
    } catch (error) {
      throw new TaskError("storage", `download of ${key} failed: ${errorMessage(error)}`, { cause: error });
    }
    const { size } = await stat(path);
    if (expectedBytes !== undefined && size !== expectedBytes) throw new TaskError("storage", `download of ${key} was cut short: got ${size} of ${expectedBytes} bytes`);
    return { bytes: size, contentType };
  }

  async reserve(pages: number): Promise<string[]> {
    if (pages > 1 && !this.urls.has(pages)) {
      if (!this.env.OUTPUTS_URL) throw new TaskError("storage", `the input has ${pages} pages but OUTPUTS_URL is not set`, { retryable: false });
      let res;
      try {
        res = await request(this.env.OUTPUTS_URL, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${this.env.CALLBACK_TOKEN}` },
          body: JSON.stringify({ pages }),
        });
      } catch (error) {
        throw new TaskError("storage", `reserving output keys for ${pages} pages failed: ${errorMessage(error)}`, { cause: error });
      }
      const text = await res.body.text();
      if (res.statusCode !== 200) {
        throw new TaskError("storage", `reserving output keys for ${pages} pages was refused (HTTP ${res.statusCode}): ${text.slice(0, 300)}`, {
          retryable: res.statusCode >= 500,
        });
      }
      const parsed = ReserveResponse.safeParse(JSON.parse(text));
      if (!parsed.success) throw new TaskError("storage", "the orchestrator's answer to the output reservation was malformed");
      for (const o of parsed.data.outputs) this.urls.set(o.page, { key: o.r2_key, url: o.url, headers: o.headers ?? {} });
    }
    return Array.from({ length: pages }, (_, i) => this.urls.get(i + 1)!.key);
  }

  async upload(page: number, path: string, contentType: string): Promise<{ key: string; bytes: number }> {
    const target = this.urls.get(page);
    if (!target) throw new TaskError("storage", `page ${page} has no reserved output key`);
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
    } catch (error) {
      throw new TaskError("storage", `upload of ${target.key} failed: ${errorMessage(error)}`, { cause: error });
    }
    await res.body.dump();
    if (res.statusCode < 200 || res.statusCode >= 300) throw refused("upload", target.key, res.statusCode);
    return { key: target.key, bytes: size };
  }

  close(): void {}
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
    return downloadToFile(this.s3, this.env.R2_BUCKET!, this.env.INPUT_R2_KEY, path);
  }

  openInput(): Promise<OpenedInput> {
    return openObject(this.s3, this.env.R2_BUCKET!, this.env.INPUT_R2_KEY);
  }

  async reserve(pages: number): Promise<string[]> {
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
