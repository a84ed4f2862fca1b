// ObjectStore: how the orchestrator reads the batch's objects. The R2 binding in production;
// the S3 API (signed with aws4fetch) when R2_ENDPOINT is set — the local stack, or any
// S3-compatible store. Machines always use the S3 API (see the machine contract).
import { AwsClient } from "aws4fetch";
import { objectPath } from "../shared/keys.ts";

export interface ObjectInfo {
  key: string;
  size: number;
  contentType?: string;
}

export interface ObjectPage {
  objects: ObjectInfo[];
  /** Pass back to continue the listing; null when it is complete. */
  cursor: string | null;
}

/** An object's bytes from an offset (up to a length, or to its end), streamed, with what identifies the whole object. */
export interface ObjectStream {
  body: ReadableStream<Uint8Array>;
  /** Size of the whole object, not of the range. */
  size: number;
  /** The whole object's ETag (unquoted): a resumed read checks it is still the same object. */
  etag: string;
}

export interface ObjectHead {
  size: number;
  etag: string;
  /** Custom metadata (`x-amz-meta-<name>` on the S3 API, customMetadata on the binding), names in lower case. */
  metadata: Record<string, string>;
}

export interface ObjectStore {
  /** The object's text, or null when there is no such object. */
  getText(key: string): Promise<string | null>;
  /**
   * The object's bytes from `offset` as a stream — at most `length` of them when given, else to its
   * end — or null when there is no such object.
   */
  getStream(key: string, offset: number, length?: number): Promise<ObjectStream | null>;
  list(prefix: string, cursor: string | null, limit: number): Promise<ObjectPage>;
  /** The object's size, ETag (unquoted) and custom metadata, or null when there is no such object. */
  head(key: string): Promise<ObjectHead | null>;
}

/**
 * How the orchestrator writes its own objects (the final file list, engine/file-list.ts): whole,
 * or as a multipart upload whose parts are sent across alarms. R2's multipart rules
 * (developers.cloudflare.com/r2/objects/multipart-objects/): parts of 5 MiB to 5 GiB, all but the
 * last the same size, at most 10,000.
 */
export interface ObjectWriter {
  put(key: string, body: Uint8Array, contentType: string): Promise<{ etag: string }>;
  /** Starts a multipart upload; its id. */
  createMultipart(key: string, contentType: string): Promise<string>;
  /** Sends part `part` (1-based); its ETag. Sending a part again replaces it. */
  uploadPart(key: string, uploadId: string, part: number, body: Uint8Array): Promise<string>;
  completeMultipart(key: string, uploadId: string, parts: { part: number; etag: string }[]): Promise<{ etag: string }>;
  abortMultipart(key: string, uploadId: string): Promise<void>;
}

/** A range getStream can ask for: a zero length has no HTTP Range form. */
function checkRange(offset: number, length: number | undefined): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`getStream: offset must be a non-negative integer, not ${offset}`);
  if (length !== undefined && (!Number.isSafeInteger(length) || length < 1)) {
    throw new RangeError(`getStream: length must be a positive integer, not ${length}`);
  }
}

/** A storage failure worth retrying later (5xx, network); anything else is final. */
export class StorageError extends Error {
  readonly retryable: boolean;
  constructor(message: string, retryable: boolean) {
    super(message);
    this.retryable = retryable;
  }
}

/** The part of the R2 binding used here (structural, so Node code can import this file). */
export interface R2BucketLike {
  get(
    key: string,
    options?: { range?: { offset: number; length?: number } },
  ): Promise<{ text(): Promise<string>; body: ReadableStream<Uint8Array>; size: number; etag: string } | null>;
  head(key: string): Promise<{ size: number; etag: string; customMetadata?: Record<string, string> } | null>;
  put(key: string, value: Uint8Array, options?: { httpMetadata?: { contentType?: string } }): Promise<{ etag: string } | null>;
  createMultipartUpload(key: string, options?: { httpMetadata?: { contentType?: string } }): Promise<{ uploadId: string }>;
  resumeMultipartUpload(key: string, uploadId: string): R2UploadLike;
  list(options: { prefix: string; limit: number; cursor?: string; include?: ("httpMetadata" | "customMetadata")[] }): Promise<
    | { objects: { key: string; size: number; httpMetadata?: { contentType?: string } }[]; truncated: true; cursor: string }
    | { objects: { key: string; size: number; httpMetadata?: { contentType?: string } }[]; truncated: false }
  >;
}

export interface R2UploadLike {
  uploadPart(part: number, value: Uint8Array): Promise<{ partNumber: number; etag: string }>;
  complete(parts: { partNumber: number; etag: string }[]): Promise<{ etag: string }>;
  abort(): Promise<void>;
}

export class R2ObjectStore implements ObjectStore, ObjectWriter {
  private readonly bucket: R2BucketLike;
  constructor(bucket: R2BucketLike) {
    this.bucket = bucket;
  }

  async getText(key: string): Promise<string | null> {
    const object = await this.bucket.get(key);
    return object ? await object.text() : null;
  }

  async head(key: string): Promise<ObjectHead | null> {
    const object = await this.bucket.head(key);
    if (!object) return null;
    const metadata = Object.fromEntries(Object.entries(object.customMetadata ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    return { size: object.size, etag: object.etag, metadata };
  }

  async getStream(key: string, offset: number, length?: number): Promise<ObjectStream | null> {
    checkRange(offset, length);
    const range = length !== undefined ? { offset, length } : offset > 0 ? { offset } : undefined;
    const object = await this.bucket.get(key, range ? { range } : undefined);
    return object ? { body: object.body, size: object.size, etag: object.etag } : null;
  }

  async put(key: string, body: Uint8Array, contentType: string): Promise<{ etag: string }> {
    const object = await this.bucket.put(key, body, { httpMetadata: { contentType } });
    if (!object) throw new StorageError(`R2 put ${key} was refused`, false);
    return { etag: object.etag };
  }

  async createMultipart(key: string, contentType: string): Promise<string> {
    return (await this.bucket.createMultipartUpload(key, { httpMetadata: { contentType } })).uploadId;
  }

  async uploadPart(key: string, uploadId: string, part: number, body: Uint8Array): Promise<string> {
    return (await this.bucket.resumeMultipartUpload(key, uploadId).uploadPart(part, body)).etag;
  }

  async completeMultipart(key: string, uploadId: string, parts: { part: number; etag: string }[]): Promise<{ etag: string }> {
    const object = await this.bucket.resumeMultipartUpload(key, uploadId).complete(parts.map((p) => ({ partNumber: p.part, etag: p.etag })));
    return { etag: object.etag };
  }

  async abortMultipart(key: string, uploadId: string): Promise<void> {
    await this.bucket.resumeMultipartUpload(key, uploadId).abort();
  }

  async list(prefix: string, cursor: string | null, limit: number): Promise<ObjectPage> {
    const page = await this.bucket.list({ prefix, limit, ...(cursor ? { cursor } : {}), include: ["httpMetadata"] });
    return {
      objects: page.objects.map((o) => ({ key: o.key, size: o.size, contentType: o.httpMetadata?.contentType })),
      cursor: page.truncated ? page.cursor : null,
    };
  }
}

export interface S3Options {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** How a signed request is sent (the engine's Outbound: counted, six at a time); fetch by default. */
  fetch?: (request: Request) => Promise<Response>;
}

const XML_ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
function xmlText(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name: string) => {
    if (name[0] === "#") return String.fromCodePoint(name[1] === "x" || name[1] === "X" ? parseInt(name.slice(2), 16) : Number(name.slice(1)));
    return XML_ENTITIES[name] ?? whole;
  });
}
const unquote = (etag: string | null) => (etag ?? "").replace(/^(W\/)?"|"$/g, "");
function xmlTag(xml: string, tag: string): string | undefined {
  const m = xml.match(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`));
  return m ? xmlText(m[1]) : undefined;
}

export class S3ObjectStore implements ObjectStore, ObjectWriter {
  private readonly client: AwsClient;
  private readonly endpoint: string;
  private readonly bucket: string;
  private readonly base: string;
  private readonly fetcher: (request: Request) => Promise<Response>;

  constructor(opts: S3Options) {
    this.client = new AwsClient({
      accessKeyId: opts.accessKeyId,
      secretAccessKey: opts.secretAccessKey,
      service: "s3",
      region: "auto",
    });
    this.endpoint = opts.endpoint.replace(/\/+$/, "");
    this.bucket = opts.bucket;
    this.base = `${this.endpoint}/${encodeURIComponent(opts.bucket)}`;
    this.fetcher = opts.fetch ?? ((request) => fetch(request));
  }

  private async send(
    url: string,
    headers?: Record<string, string>,
    method: "GET" | "HEAD" | "PUT" | "POST" | "DELETE" = "GET",
    body?: Uint8Array | string,
  ): Promise<Response> {
    let res: Response;
    try {
      // Signed here, sent by the caller's fetch (one request each: no hidden retries inside an alarm).
      const request = await this.client.sign(url, { method, ...(headers ? { headers } : {}), ...(body !== undefined ? { body } : {}) });
      res = await this.fetcher(request);
    } catch (error) {
      throw new StorageError(`S3 request failed: ${error instanceof Error ? error.message : String(error)}`, true);
    }
    return res;
  }

  async getText(key: string): Promise<string | null> {
    const res = await this.send(this.objectUrl(key));
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    if (!res.ok) throw await this.failure(res, `GET ${key}`);
    return await res.text();
  }

  async head(key: string): Promise<ObjectHead | null> {
    const res = await this.send(this.objectUrl(key), undefined, "HEAD");
    await res.body?.cancel();
    if (res.status === 404) return null;
    if (!res.ok) throw new StorageError(`S3 HEAD ${key} answered ${res.status}`, res.status >= 500 || res.status === 429);
    const metadata: Record<string, string> = {};
    for (const [name, value] of res.headers) if (name.startsWith("x-amz-meta-")) metadata[name.slice("x-amz-meta-".length)] = value;
    const etag = (res.headers.get("etag") ?? "").replace(/^(W\/)?"|"$/g, "");
    return { size: Number(res.headers.get("content-length") ?? 0), etag, metadata };
  }

  async getStream(key: string, offset: number, length?: number): Promise<ObjectStream | null> {
    checkRange(offset, length);
    const range = length !== undefined ? `bytes=${offset}-${offset + length - 1}` : offset > 0 ? `bytes=${offset}-` : undefined;
    const res = await this.send(this.objectUrl(key), range ? { range } : undefined);
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    const etag = (res.headers.get("etag") ?? "").replace(/^(W\/)?"|"$/g, "");
    if (res.status === 416) {
      // Nothing at or after offset: the whole size is in `Content-Range: bytes */size`.
      await res.body?.cancel();
      const size = Number(res.headers.get("content-range")?.match(/\/(\d+)$/)?.[1] ?? offset);
      return { body: new ReadableStream({ start: (c) => c.close() }), size, etag };
    }
    if (!res.ok) throw await this.failure(res, `GET ${key}`);
    if (range && res.status !== 206) {
      await res.body?.cancel();
      throw new StorageError(`S3 GET ${key} ignored the range ${range} (answered ${res.status})`, false);
    }
    const whole = res.headers.get("content-range")?.match(/\/(\d+)$/);
    const size = whole ? Number(whole[1]) : Number(res.headers.get("content-length") ?? 0);
    return { body: res.body ?? new ReadableStream({ start: (c) => c.close() }), size, etag };
  }

  async put(key: string, body: Uint8Array, contentType: string): Promise<{ etag: string }> {
    const res = await this.send(this.objectUrl(key), { "content-type": contentType }, "PUT", body);
    if (!res.ok) throw await this.failure(res, `PUT ${key}`);
    await res.body?.cancel();
    return { etag: unquote(res.headers.get("etag")) };
  }

  async createMultipart(key: string, contentType: string): Promise<string> {
    const res = await this.send(`${this.objectUrl(key)}?uploads`, { "content-type": contentType }, "POST");
    if (!res.ok) throw await this.failure(res, `CreateMultipartUpload ${key}`);
    const id = xmlTag(await res.text(), "UploadId");
    if (!id) throw new StorageError(`S3 CreateMultipartUpload ${key} answered without an UploadId`, true);
    return id;
  }

  async uploadPart(key: string, uploadId: string, part: number, body: Uint8Array): Promise<string> {
    const q = new URLSearchParams({ partNumber: String(part), uploadId });
    const res = await this.send(`${this.objectUrl(key)}?${q}`, undefined, "PUT", body);
    if (!res.ok) throw await this.failure(res, `UploadPart ${part} of ${key}`);
    await res.body?.cancel();
    return unquote(res.headers.get("etag"));
  }

  async completeMultipart(key: string, uploadId: string, parts: { part: number; etag: string }[]): Promise<{ etag: string }> {
    const xml = `<CompleteMultipartUpload>${parts.map((p) => `<Part><PartNumber>${p.part}</PartNumber><ETag>"${p.etag}"</ETag></Part>`).join("")}</CompleteMultipartUpload>`;
    const res = await this.send(`${this.objectUrl(key)}?${new URLSearchParams({ uploadId })}`, { "content-type": "application/xml" }, "POST", xml);
    const text = await res.text();
    // S3 may answer 200 with an <Error> body to a CompleteMultipartUpload.
    if (!res.ok || xmlTag(text, "Code")) {
      throw new StorageError(`S3 CompleteMultipartUpload ${key} answered ${res.status} ${xmlTag(text, "Code") ?? ""}`.trim(), res.status >= 500 || res.ok);
    }
    return { etag: unquote(xmlTag(text, "ETag") ?? null) };
  }

  async abortMultipart(key: string, uploadId: string): Promise<void> {
    const res = await this.send(`${this.objectUrl(key)}?${new URLSearchParams({ uploadId })}`, undefined, "DELETE");
    await res.body?.cancel();
    if (!res.ok && res.status !== 404) throw new StorageError(`S3 AbortMultipartUpload ${key} answered ${res.status}`, res.status >= 500);
  }

  /** Each key segment encoded (shared/keys.ts objectPath): a key that is not canonical is refused, never resolved. */
  private objectUrl(key: string): string {
    return `${this.endpoint}${objectPath(this.bucket, key)}`;
  }

  async list(prefix: string, cursor: string | null, limit: number): Promise<ObjectPage> {
    const q = new URLSearchParams({ "list-type": "2", prefix, "max-keys": String(limit) });
    if (cursor) q.set("continuation-token", cursor);
    const res = await this.send(`${this.base}?${q}`);
    if (!res.ok) throw await this.failure(res, `LIST ${prefix || "(whole bucket)"}`);
    const xml = await res.text();
    const objects: ObjectInfo[] = [];
    for (const m of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
      const key = xmlTag(m[1], "Key");
      if (key !== undefined) objects.push({ key, size: Number(xmlTag(m[1], "Size") ?? 0) });
    }
    const truncated = xmlTag(xml, "IsTruncated") === "true";
    return { objects, cursor: truncated ? (xmlTag(xml, "NextContinuationToken") ?? null) : null };
  }

  private async failure(res: Response, what: string): Promise<StorageError> {
    const body = (await res.text()).slice(0, 2000);
    const code = xmlTag(body, "Code") ?? "";
    return new StorageError(`S3 ${what} answered ${res.status}${code ? ` ${code}` : ""}`, res.status >= 500 || res.status === 429);
  }
}
