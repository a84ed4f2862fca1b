// S3 helpers for tests and benchmarks against the local S3 endpoint (local/s3.ts).
import { createReadStream } from "node:fs";
import { GetObjectCommand, HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import type { LocalS3 } from "../../../local/s3.ts";
import type { Config } from "../../../orchestrator/config.ts";

/** An SDK client of the local S3, signing with its one key pair. */
export function localS3Client(s3: Pick<LocalS3, "endpoint" | "credentials">): S3Client {
  return new S3Client({
    region: "auto",
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: { ...s3.credentials },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

/** Uploads a file (multipart above 8 MiB: fauxqs caps a single request body at 11 MiB). */
export async function putFile(client: S3Client, bucket: string, key: string, path: string, contentType = "image/tiff"): Promise<void> {
  await new Upload({ client, params: { Bucket: bucket, Key: key, Body: createReadStream(path), ContentType: contentType }, partSize: 8 * 1024 * 1024 }).done();
}

export async function getObjectBytes(client: S3Client, bucket: string, key: string): Promise<{ bytes: Buffer; contentType?: string }> {
  const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  if (!response.Body) throw new Error(`s3://${bucket}/${key} has no body`);
  return { bytes: Buffer.from(await response.Body.transformToByteArray()), contentType: response.ContentType };
}

export async function objectExists(client: S3Client, bucket: string, key: string): Promise<boolean> {
  try {
    await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (error) {
    if (error instanceof Error && (error.name === "NotFound" || error.name === "NoSuchKey")) return false;
    throw error;
  }
}

/** The storage part of the orchestrator's config, as the engine presigns machines' URLs with it: the local S3's key pair (it checks every signature). */
export function presignConfig(s3: Pick<LocalS3, "endpoint" | "credentials">, bucket: string): Config {
  return { R2_ACCESS_KEY_ID: s3.credentials.accessKeyId, R2_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey, R2_ACCOUNT_ID: "local", R2_BUCKET: bucket, R2_ENDPOINT: s3.endpoint } as unknown as Config;
}
