// Presigned S3/R2 URLs of single objects, and when an attempt's credentials expire. Pure (aws4fetch
// and Web Crypto only), so the Node tests can check the signatures the machines get.
import { AwsClient } from "aws4fetch";
import type { Config } from "../config.ts";
import { CREATE_ANSWER_MS, CREDENTIAL_GRACE_MS } from "./constants.ts";

/** SigV4 presigned URLs live at most 7 days. */
const MAX_PRESIGN_S = 604_800;

/** When an attempt's credentials stop working: its create, boot and run limits, plus a grace. */
export function attemptExpiry(now: number, limits: { bootTimeoutMs: number; runTimeoutMs: number }): number {
  return now + CREATE_ANSWER_MS + limits.bootTimeoutMs + limits.runTimeoutMs + CREDENTIAL_GRACE_MS;
}

/** Base URL of the bucket on the S3 API: the configured endpoint, or R2's account endpoint. */
export function bucketBase(config: Config): string {
  const endpoint = config.R2_ENDPOINT ?? `https://${config.R2_ACCOUNT_ID}.r2.cloudflarestorage.com`;
  return `${endpoint.replace(/\/+$/, "")}/${encodeURIComponent(config.R2_BUCKET)}`;
}

export const objectUrl = (config: Config, key: string) => `${bucketBase(config)}/${key.split("/").map(encodeURIComponent).join("/")}`;

/** A presigned GET or PUT of one object, valid until `expiresAt`. */
export async function presign(config: Config, method: "GET" | "PUT" | "HEAD", key: string, expiresAt: number, now = Date.now()): Promise<string> {
  const client = new AwsClient({
    accessKeyId: config.R2_ACCESS_KEY_ID,
    secretAccessKey: config.R2_SECRET_ACCESS_KEY,
    service: "s3",
    region: "auto",
  });
  const url = new URL(objectUrl(config, key));
  const seconds = Math.max(1, Math.min(MAX_PRESIGN_S, Math.ceil((expiresAt - now) / 1000)));
  url.searchParams.set("X-Amz-Expires", String(seconds));
  const signed = await client.sign(new Request(url, { method }), { aws: { signQuery: true, datetime: amzDate(now) } });
  return signed.url;
}

function amzDate(t: number): string {
  return new Date(t).toISOString().replace(/[:-]|\.\d{3}/g, "");
}

