// Presigned S3/R2 URLs of single objects, and when an attempt's credentials expire. Pure (aws4fetch
// and Web Crypto only), so the Node tests can check the signatures the machines get.
import { AwsClient } from "aws4fetch";
import { objectPath } from "../../shared/keys.ts";
import type { Config } from "../config.ts";
import { CREATE_ANSWER_MS, CREDENTIAL_GRACE_MS } from "./constants.ts";

/** SigV4 presigned URLs live 1 s to 7 days (developers.cloudflare.com/r2/api/s3/presigned-urls/). */
const MAX_PRESIGN_S = 604_800;

/** When an attempt's credentials stop working: its create, boot and run limits, plus a grace. */
export function attemptExpiry(now: number, limits: { bootTimeoutMs: number; runTimeoutMs: number }): number {
  return now + CREATE_ANSWER_MS + limits.bootTimeoutMs + limits.runTimeoutMs + CREDENTIAL_GRACE_MS;
}

/** The S3 API endpoint: the configured one, or R2's account endpoint. */
export function endpointOf(config: Config): string {
  return (config.R2_ENDPOINT ?? `https://${config.R2_ACCOUNT_ID}.r2.cloudflarestorage.com`).replace(/\/+$/, "");
}

/** The URL of one object: each key segment encoded (shared/keys.ts objectPath), so no URL parser resolves a `..` in it. */
export const objectUrl = (config: Config, key: string) => `${endpointOf(config)}${objectPath(config.R2_BUCKET, key)}`;

/**
 * A presigned GET, PUT or HEAD of one object, valid until `expiresAt`. `headers` are signed too
 * (X-Amz-SignedHeaders names them): the request must carry exactly those values — e.g. a PUT's
 * `content-type` and `if-none-match: *`, so the URL can neither store another type nor replace an
 * object it was not meant to.
 */
export async function presign(
  config: Config,
  method: "GET" | "PUT" | "HEAD",
  key: string,
  expiresAt: number,
  now = Date.now(),
  headers: Record<string, string> = {},
): Promise<string> {
  const client = new AwsClient({
    accessKeyId: config.R2_ACCESS_KEY_ID,
    secretAccessKey: config.R2_SECRET_ACCESS_KEY,
    service: "s3",
    region: "auto",
  });
  const url = new URL(objectUrl(config, key));
  const seconds = Math.max(1, Math.min(MAX_PRESIGN_S, Math.ceil((expiresAt - now) / 1000)));
  url.searchParams.set("X-Amz-Expires", String(seconds));
  // allHeaders: aws4fetch leaves content-type out of a signature unless told to sign every header given.
  const signed = await client.sign(new Request(url, { method, headers }), { aws: { signQuery: true, allHeaders: true, datetime: amzDate(now) } });
  return signed.url;
}

function amzDate(t: number): string {
  return new Date(t).toISOString().replace(/[:-]|\.\d{3}/g, "");
}
