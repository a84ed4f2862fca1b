// The local S3 refuses what R2 refuses (local/s3.ts, local/s3-auth.ts): every request must carry
// a SigV4 signature by its one key pair, over the method, the path exactly as sent, every signed
// header and query parameter, within the date and expiry; a key is at most 1,024 bytes; a
// conditional PUT honours If-None-Match / If-Match. Expected codes are R2's and S3's documented
// ones (developers.cloudflare.com/r2/api/error-codes/, /r2/api/s3/presigned-urls/,
// /r2/api/s3/conditional-operations/, /r2/platform/limits/). Requests are sent with node:http, so
// the path reaches the server byte for byte (no URL normalisation on the way).
import { request } from "node:http";
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { AwsClient, AwsV4Signer } from "aws4fetch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateS3Credentials, startLocalS3, type LocalS3 } from "../../local/s3.ts";
import { localS3Client } from "./support/s3.ts";

const BUCKET = "archive";
let s3: LocalS3;
let client: S3Client;

beforeAll(async () => {
  s3 = await startLocalS3({ buckets: [BUCKET] });
  client = localS3Client(s3);
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: "batches/b1/a.tif", Body: "II*\0tiff" }));
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: "private/secret.tif", Body: "secret" }));
});
afterAll(async () => {
  await s3?.stop();
});

interface Answer {
  status: number;
  code: string | null;
  message: string | null;
  body: string;
}

/** Sends a request with this exact path, method and headers. */
function send(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  const { hostname, port } = new URL(s3.endpoint);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, method, path, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          code: text.match(/<Code>([^<]*)<\/Code>/)?.[1] ?? null,
          message: text.match(/<Message>([^<]*)<\/Message>/)?.[1] ?? null,
          body: text,
        }),
      );
    });
    req.on("error", reject);
    req.end(body);
  });
}

const amzDate = (t: number) => new Date(t).toISOString().replace(/[:-]|\.\d{3}/g, "");

/** A header-signed request (aws4fetch, service s3, region auto) as [path, headers] to send. */
async function headerSigned(method: string, path: string, opts: { secret?: string; accessKeyId?: string; at?: number; headers?: Record<string, string> } = {}) {
  const signer = new AwsV4Signer({
    method,
    url: `${s3.endpoint}${path}`,
    headers: opts.headers,
    accessKeyId: opts.accessKeyId ?? s3.credentials.accessKeyId,
    secretAccessKey: opts.secret ?? s3.credentials.secretAccessKey,
    service: "s3",
    region: "auto",
    datetime: amzDate(opts.at ?? Date.now()),
  });
  const signed = await signer.sign();
  return { path: `${signed.url.pathname}${signed.url.search}`, headers: Object.fromEntries(signed.headers) };
}

/** A presigned URL's path and query (aws4fetch signQuery), valid `seconds` from `at`. */
async function presigned(method: string, key: string, seconds: number, opts: { at?: number; headers?: Record<string, string> } = {}) {
  const aws = new AwsClient({ ...s3.credentials, service: "s3", region: "auto" });
  const url = new URL(`${s3.endpoint}/${BUCKET}/${key}`);
  url.searchParams.set("X-Amz-Expires", String(seconds));
  const signed = await aws.sign(new Request(url, { method, headers: opts.headers }), { aws: { signQuery: true, allHeaders: true, datetime: amzDate(opts.at ?? Date.now()) } });
  const u = new URL(signed.url);
  return `${u.pathname}${u.search}`;
}

describe("the local S3 checks SigV4 like R2", () => {
  it("accepts the SDK's own requests (header-signed, payload hashed) and aws4fetch's", async () => {
    const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: "batches/b1/a.tif" }));
    expect(await got.Body!.transformToString()).toBe("II*\0tiff");
    const aws = new AwsClient({ ...s3.credentials, service: "s3", region: "auto" });
    const res = await aws.fetch(`${s3.endpoint}/${BUCKET}/batches/b1/a.tif`, { method: "HEAD" });
    expect(res.status).toBe(200);
  });

  it("refuses a request without a signature (401 Unauthorized)", async () => {
    const a = await send("GET", `/${BUCKET}/batches/b1/a.tif`);
    expect([a.status, a.code]).toEqual([401, "Unauthorized"]);
    const listing = await send("GET", `/${BUCKET}?list-type=2`);
    expect([listing.status, listing.code]).toEqual([401, "Unauthorized"]);
  });

  it("refuses a wrong secret (403 SignatureDoesNotMatch) and an unknown key id (401)", async () => {
    const wrong = await headerSigned("GET", `/${BUCKET}/batches/b1/a.tif`, { secret: generateS3Credentials().secretAccessKey });
    const a = await send("GET", wrong.path, wrong.headers);
    expect([a.status, a.code]).toEqual([403, "SignatureDoesNotMatch"]);
    const stranger = await headerSigned("GET", `/${BUCKET}/batches/b1/a.tif`, generateS3Credentials());
    const b = await send("GET", stranger.path, stranger.headers);
    expect([b.status, b.code]).toEqual([401, "Unauthorized"]);
    // R2's own answer to a key id of the wrong shape.
    const short = await headerSigned("GET", `/${BUCKET}/batches/b1/a.tif`, { accessKeyId: "local-access-key" });
    const c = await send("GET", short.path, short.headers);
    expect([c.status, c.code, c.message]).toEqual([400, "InvalidArgument", "Credential access key has length 16, should be 32"]);
    // The SDK with the wrong secret gets the same refusal.
    const sdk = new S3Client({ region: "auto", endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: s3.credentials.accessKeyId, secretAccessKey: "0".repeat(64) } });
    await expect(sdk.send(new HeadObjectCommand({ Bucket: BUCKET, Key: "batches/b1/a.tif" }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 403 } });
  });

  it("signs the path exactly as sent: a `..` the signer did not sign is refused, never resolved", async () => {
    const ok = await headerSigned("GET", `/${BUCKET}/batches/b1/a.tif`);
    // The same signature on a path that a normalising server would resolve to another object.
    const a = await send("GET", `/${BUCKET}/batches/b1/../../private/secret.tif`, ok.headers);
    expect([a.status, a.code]).toEqual([403, "SignatureDoesNotMatch"]);
    expect(a.body).not.toContain("secret\n");
    // A `..` the client did sign (the SDK sends it as it is) is a literal key, as in S3: no such object.
    await expect(client.send(new GetObjectCommand({ Bucket: BUCKET, Key: "batches/b1/../../private/secret.tif" }))).rejects.toMatchObject({ name: "NoSuchKey" });
  });

  it("checks the body against its signed SHA-256 (400 XAmzContentSHA256Mismatch)", async () => {
    const body = "the signed body";
    const hash = (await import("node:crypto")).createHash("sha256").update(body).digest("hex");
    const signed = await headerSigned("PUT", `/${BUCKET}/batches/b1/hashed.txt`, { headers: { "x-amz-content-sha256": hash } });
    const tampered = await send("PUT", signed.path, signed.headers, "another body!!!");
    expect([tampered.status, tampered.code]).toEqual([400, "XAmzContentSHA256Mismatch"]);
    const head = await headerSigned("HEAD", `/${BUCKET}/batches/b1/hashed.txt`);
    expect((await send("HEAD", head.path, head.headers)).status).toBe(404);
    expect((await send("PUT", signed.path, signed.headers, body)).status).toBe(200);
  });

  it("refuses an unsigned x-amz-* header, a stale date, and signed chunks (R2 implements none)", async () => {
    const signed = await headerSigned("GET", `/${BUCKET}/batches/b1/a.tif`);
    const a = await send("GET", signed.path, { ...signed.headers, "x-amz-meta-extra": "1" });
    expect([a.status, a.code]).toEqual([403, "AccessDenied"]);
    expect(a.body).toContain("<HeadersNotSigned>x-amz-meta-extra</HeadersNotSigned>");
    const stale = await headerSigned("GET", `/${BUCKET}/batches/b1/a.tif`, { at: Date.now() - 16 * 60_000 });
    const b = await send("GET", stale.path, stale.headers);
    expect([b.status, b.code]).toEqual([403, "RequestTimeTooSkewed"]);
    const chunked = await headerSigned("PUT", `/${BUCKET}/batches/b1/c.txt`, { headers: { "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" } });
    const c = await send("PUT", chunked.path, chunked.headers, "x");
    expect([c.status, c.code]).toEqual([501, "NotImplemented"]);
  });

  it("a HEAD refusal has a status and no body, as from S3", async () => {
    const a = await send("HEAD", `/${BUCKET}/batches/b1/a.tif`);
    expect(a.status).toBe(401);
    expect(a.body).toBe("");
  });
});

describe("presigned URLs, as R2 takes them", () => {
  it("a GET URL reads its key; another key, method or expiry is refused", async () => {
    const url = await presigned("GET", "batches/b1/a.tif", 60);
    const ok = await send("GET", url);
    expect([ok.status, ok.body]).toEqual([200, "II*\0tiff"]);
    const otherKey = await send("GET", url.replace("batches/b1/a.tif", "private/secret.tif"));
    expect([otherKey.status, otherKey.code]).toEqual([403, "SignatureDoesNotMatch"]);
    const dotted = await send("GET", url.replace("batches/b1/a.tif", "batches/b1/../../private/secret.tif"));
    expect([dotted.status, dotted.code]).toEqual([403, "SignatureDoesNotMatch"]);
    const put = await send("PUT", url, {}, "overwritten");
    expect([put.status, put.code]).toEqual([403, "SignatureDoesNotMatch"]);
    const longer = await send("GET", url.replace("X-Amz-Expires=60", "X-Amz-Expires=604800"));
    expect([longer.status, longer.code]).toEqual([403, "SignatureDoesNotMatch"]);
    const extra = await send("GET", `${url}&x-id=GetObject`);
    expect([extra.status, extra.code]).toEqual([403, "SignatureDoesNotMatch"]);
  });

  it("expires at X-Amz-Date + X-Amz-Expires (403 ExpiredRequest); 1 s to 7 days only", async () => {
    const old = await presigned("GET", "batches/b1/a.tif", 60, { at: Date.now() - 61_000 });
    const a = await send("GET", old);
    expect([a.status, a.code, a.message]).toEqual([403, "ExpiredRequest", "Request has expired"]);
    const live = await presigned("GET", "batches/b1/a.tif", 120, { at: Date.now() - 61_000 });
    expect((await send("GET", live)).status).toBe(200);
    const week = await send("GET", await presigned("GET", "batches/b1/a.tif", 604_801));
    expect([week.status, week.code]).toEqual([400, "AuthorizationQueryParametersError"]);
    const zero = await send("GET", await presigned("GET", "batches/b1/a.tif", 0));
    expect([zero.status, zero.code]).toEqual([400, "AuthorizationQueryParametersError"]);
    const future = await send("GET", await presigned("GET", "batches/b1/a.tif", 60, { at: Date.now() + 20 * 60_000 }));
    expect([future.status, future.code]).toEqual([403, "AccessDenied"]);
  });

  it("a PUT that signs Content-Type must send that Content-Type", async () => {
    const url = await presigned("PUT", "batches/b1/out.jpg", 60, { headers: { "content-type": "image/jpeg" } });
    expect(new URLSearchParams(url.split("?")[1]).get("X-Amz-SignedHeaders")).toBe("content-type;host");
    const html = await send("PUT", url, { "content-type": "text/html" }, "<script>");
    expect([html.status, html.code]).toEqual([403, "SignatureDoesNotMatch"]);
    const none = await send("PUT", url, {}, "<script>");
    expect([none.status, none.code]).toEqual([403, "SignatureDoesNotMatch"]);
    expect((await send("PUT", url, { "content-type": "image/jpeg" }, "\xff\xd8jpeg")).status).toBe(200);
  });
});

describe("R2's object rules", () => {
  it("a key is at most 1,024 bytes of UTF-8 (400 KeyTooLongError), counted in bytes, not characters", async () => {
    const fits = `k/${"é".repeat(511)}`; // 2 + 1,022 = 1,024 bytes, 513 characters
    const over = `k/${"é".repeat(511)}x`; // 1,025 bytes
    const aws = new AwsClient({ ...s3.credentials, service: "s3", region: "auto" });
    const enc = (k: string) => k.split("/").map(encodeURIComponent).join("/");
    expect((await aws.fetch(`${s3.endpoint}/${BUCKET}/${enc(fits)}`, { method: "PUT", body: "x" })).status).toBe(200);
    const res = await aws.fetch(`${s3.endpoint}/${BUCKET}/${enc(over)}`, { method: "PUT", body: "x" });
    expect(res.status).toBe(400);
    expect(await res.text()).toContain("<Code>KeyTooLongError</Code>");
  });

  it("If-None-Match: * writes only a key that does not exist (412 PreconditionFailed); If-Match an exact ETag", async () => {
    const url = await presigned("PUT", "batches/b1/cond.jpg", 60, { headers: { "content-type": "image/jpeg", "if-none-match": "*" } });
    const first = await send("PUT", url, { "content-type": "image/jpeg", "if-none-match": "*" }, "first");
    expect(first.status).toBe(200);
    const second = await send("PUT", url, { "content-type": "image/jpeg", "if-none-match": "*" }, "second");
    expect([second.status, second.code]).toEqual([412, "PreconditionFailed"]);
    const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: "batches/b1/cond.jpg" }));
    expect(head.ContentLength).toBe(5);
    // The header is signed: dropping it to overwrite anyway breaks the signature.
    const dropped = await send("PUT", url, { "content-type": "image/jpeg" }, "third");
    expect([dropped.status, dropped.code]).toEqual([403, "SignatureDoesNotMatch"]);
    const etag = head.ETag!;
    const replace = await presigned("PUT", "batches/b1/cond.jpg", 60, { headers: { "if-match": etag } });
    expect((await send("PUT", replace, { "if-match": etag }, "replaced")).status).toBe(200);
    const stale = await send("PUT", replace, { "if-match": etag }, "again");
    expect([stale.status, stale.code]).toEqual([412, "PreconditionFailed"]);
    const absent = await presigned("PUT", "batches/b1/none.jpg", 60, { headers: { "if-match": "*" } });
    expect((await send("PUT", absent, { "if-match": "*" }, "x")).status).toBe(412);
  });
});
