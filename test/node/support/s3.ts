// S3 helpers for tests and benchmarks against the local S3 endpoint (local/s3.ts).
import { createReadStream } from "node:fs";
import { GetObjectCommand, HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { LOCAL_S3_CREDENTIALS } from "../../../local/s3.ts";
import type { Config } from "../../../orchestrator/config.ts";

export function localS3Client(endpoint: string): S3Client {
  return new S3Client({
    region: "auto",
    endpoint,
    forcePathStyle: true,
    credentials: { ...LOCAL_S3_CREDENTIALS },
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

/** The storage part of the orchestrator's config, as the engine presigns machines' URLs with it, for the local S3. */
export function presignConfig(endpoint: string, bucket: string): Config {
  return { R2_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId, R2_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey, R2_ACCOUNT_ID: "local", R2_BUCKET: bucket, R2_ENDPOINT: endpoint } as unknown as Config;
}
