// R2 through the S3 API: the input object is streamed to a temp file (sharp reads TIFF with
// random access and would buffer a stream whole), the JPEG is streamed up from disk.
import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { GetObjectCommand, S3Client, S3ServiceException } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { TaskError, errorMessage } from "./errors.ts";

export interface S3Settings {
  R2_ACCOUNT_ID: string;
  R2_ACCESS_KEY_ID: string;
  R2_SECRET_ACCESS_KEY: string;
  R2_ENDPOINT?: string;
}

export function r2Endpoint(settings: S3Settings): string {
  return settings.R2_ENDPOINT ?? `https://${settings.R2_ACCOUNT_ID}.r2.cloudflarestorage.com`;
}

export function makeS3Client(settings: S3Settings): S3Client {
  return new S3Client({
    region: "auto",
    endpoint: r2Endpoint(settings),
    // R2 accepts path-style; loopback S3 servers need it.
    forcePathStyle: true,
    credentials: { accessKeyId: settings.R2_ACCESS_KEY_ID, secretAccessKey: settings.R2_SECRET_ACCESS_KEY },
    // R2 and local S3 servers do not all speak the SDK's default aws-chunked checksums.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    maxAttempts: 4,
  });
}

const where = (bucket: string, key: string) => `s3://${bucket}/${key}`;

function storageError(action: string, bucket: string, key: string, error: unknown): TaskError {
  if (error instanceof S3ServiceException) {
    const status = error.$metadata.httpStatusCode;
    if (error.name === "NoSuchKey" || (action === "download" && status === 404)) {
      return new TaskError("input", `input object not found: ${where(bucket, key)} does not exist (NoSuchKey)`, { retryable: false });
    }
    if (error.name === "NoSuchBucket") {
      return new TaskError("storage", `bucket not found: ${bucket} (NoSuchBucket; check R2_BUCKET)`, { retryable: false });
    }
    if (status === 401 || status === 403) {
      return new TaskError("storage", `${action} of ${where(bucket, key)} was refused (${error.name}, HTTP ${status}): check R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY`, {
        retryable: false,
      });
    }
    return new TaskError("storage", `${action} of ${where(bucket, key)} failed: ${error.name} (HTTP ${status ?? "?"}): ${error.message}`, { cause: error });
  }
  return new TaskError("storage", `${action} of ${where(bucket, key)} failed: ${errorMessage(error)}`, { cause: error });
}

export interface Downloaded {
  bytes: number;
  contentType?: string;
}

/** The object's body as a stream, with its length and type; errors say what went wrong for whom. */
export async function openObject(client: S3Client, bucket: string, key: string): Promise<OpenedInput> {
  try {
    const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    if (!(response.Body instanceof Readable)) throw new Error("GetObject returned no readable body");
    return { body: response.Body, expectedBytes: response.ContentLength, contentType: response.ContentType };
  } catch (error) {
    throw storageError("download", bucket, key, error);
  }
}

export interface OpenedInput {
  body: Readable;
  /** Content-Length when the server sent one: fewer bytes read means the body was cut short. */
  expectedBytes?: number;
  contentType?: string;
}

/**
 * Streams the object to `path`; a cut-off body is an error, never a short file. `guard` may wrap
 * the body (the worker's input size limit); a TaskError it raises is passed on as it is.
 */
export async function downloadToFile(
  client: S3Client,
  bucket: string,
  key: string,
  path: string,
  guard: (body: Readable, declared: number | undefined) => Readable = (body) => body,
): Promise<Downloaded> {
  let expected: number | undefined;
  let contentType: string | undefined;
  try {
    const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    expected = response.ContentLength;
    contentType = response.ContentType;
    if (!(response.Body instanceof Readable)) throw new Error("GetObject returned no readable body");
    await pipeline(guard(response.Body, expected), createWriteStream(path));
  } catch (error) {
    if (error instanceof TaskError) throw error;
    throw storageError("download", bucket, key, error);
  }
  const { size } = await stat(path);
  if (expected !== undefined && size !== expected) {
    throw new TaskError("storage", `download of ${where(bucket, key)} was cut short: got ${size} of ${expected} bytes`);
  }
  return { bytes: size, contentType };
}

/** Multipart above one part (8 MiB), a single PUT below; two parts in flight at most. */
export const UPLOAD_PART_BYTES = 8 * 1024 * 1024;

export async function uploadFile(client: S3Client, bucket: string, key: string, path: string, contentType: string): Promise<{ bytes: number }> {
  const { size } = await stat(path);
  try {
    const upload = new Upload({
      client,
      params: { Bucket: bucket, Key: key, Body: createReadStream(path), ContentType: contentType },
      partSize: UPLOAD_PART_BYTES,
      queueSize: 2,
      leavePartsOnError: false,
    });
    await upload.done();
  } catch (error) {
    throw storageError("upload", bucket, key, error);
  }
  return { bytes: size };
}
