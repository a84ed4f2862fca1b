// Submitting a batch the way the ingest pipeline does: upload a directory's files to the
// bucket under batches/<batch_id>/, write a manifest next to them, and enqueue the queue
// message through POST /admin/batches. Used by `fanout submit`, the demo and the e2e tests.
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { basename, extname, join, relative, sep } from "node:path";
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { BatchId, type Manifest } from "../shared/contracts.ts";
import { isTiff } from "../shared/keys.ts";
import { type OrchestratorClient, UnreachableError } from "./api.ts";

export interface S3Target {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export function s3Client(target: S3Target): S3Client {
  return new S3Client({
    region: "auto",
    endpoint: target.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: target.accessKeyId, secretAccessKey: target.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

export interface SubmitOptions {
  dir: string;
  batchId?: string;
  /** Key prefix; default batches/<batchId>/ */
  prefix?: string;
  /** Upload progress: called after each file. */
  onUpload?: (done: number, total: number, key: string) => void;
  concurrency?: number;
  /** Pool mode for this batch (the message's `pool`); unset: the orchestrator's POOL_MODE. */
  pool?: boolean;
  /** Pool mode: tasks each machine converts at once (the message's `pool_tasks_per_machine`). */
  slots?: number;
}

/** Re-using a batch id would overwrite its manifest while the orchestrator ignores the message. */
export class BatchExistsError extends Error {
  readonly batchId: string;
  readonly status: string;
  constructor(batchId: string, status: string) {
    super(`batch ${batchId} already exists (status ${status}); nothing was uploaded. Choose another --batch-id, or leave it out for a fresh one.`);
    this.batchId = batchId;
    this.status = status;
  }
}

const CONTENT_TYPES: Record<string, string> = {
  ".tif": "image/tiff",
  ".tiff": "image/tiff",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".jp2": "image/jp2",
  ".png": "image/png",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".pdf": "application/pdf",
  ".json": "application/json",
  ".xml": "application/xml",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".csv": "text/csv; charset=utf-8",
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".zip": "application/zip",
};

/** The Content-Type a file is uploaded (and listed in the manifest) with, from its extension. */
export function contentTypeFor(path: string): string {
  if (isTiff(path)) return "image/tiff";
  return CONTENT_TYPES[extname(path).toLowerCase()] ?? "application/octet-stream";
}

export interface Submitted {
  batchId: string;
  prefix: string;
  manifestKey: string;
  files: { key: string; size: number }[];
}

/** A batch id from the directory name and the time: `scans-20261125-175650`. */
export function defaultBatchId(dir: string): string {
  const base = basename(dir).replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "").slice(0, 80) || "batch";
  const t = new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  return `${base}-${t}`;
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name.startsWith(".")) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out.sort();
}

export async function uploadBatch(client: S3Client, bucket: string, options: SubmitOptions): Promise<Submitted> {
  const batchId = BatchId.parse(options.batchId ?? defaultBatchId(options.dir));
  const prefix = options.prefix ?? `batches/${batchId}/`;
  const paths = await walk(options.dir);
  if (paths.length === 0) throw new Error(`${options.dir} has no files to submit`);
  const files: { key: string; size: number; rel: string; path: string }[] = [];
  for (const path of paths) {
    const rel = relative(options.dir, path).split(sep).join("/");
    files.push({ key: `${prefix}${rel}`, size: (await stat(path)).size, rel, path });
  }
  let done = 0;
  const queue = [...files];
  const worker = async () => {
    for (let f = queue.shift(); f; f = queue.shift()) {
      const contentType = contentTypeFor(f.key);
      await new Upload({
        client,
        params: { Bucket: bucket, Key: f.key, Body: createReadStream(f.path), ContentType: contentType },
        partSize: 8 * 1024 * 1024,
      }).done();
      options.onUpload?.(++done, files.length, f.key);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 8, files.length) }, worker));

  // One manifest directory per folder of the input, as the ingest pipeline writes them.
  const byDir = new Map<string, typeof files>();
  for (const f of files) {
    const d = f.rel.includes("/") ? f.rel.slice(0, f.rel.lastIndexOf("/")) : "";
    byDir.set(d, [...(byDir.get(d) ?? []), f]);
  }
  const manifest: Manifest = {
    batch_id: batchId,
    directories: [...byDir].map(([d, list]) => ({
      directory_path: `/${d}`,
      processing_config: {},
      files: list.map((f) => ({
        r2_key: f.key,
        logical_path: `/${f.rel}`,
        file_name: basename(f.rel),
        file_size: f.size,
        content_type: contentTypeFor(f.key),
      })),
    })),
  };
  const manifestKey = `${prefix}manifest.json`;
  await client.send(
    new PutObjectCommand({ Bucket: bucket, Key: manifestKey, Body: JSON.stringify(manifest), ContentType: "application/json" }),
  );
  return { batchId, prefix, manifestKey, files: files.map(({ key, size }) => ({ key, size })) };
}

/** Uploads and enqueues: the whole `fanout submit <dir>`. */
export async function submitBatch(api: OrchestratorClient, client: S3Client, bucket: string, options: SubmitOptions): Promise<Submitted> {
  // Fail before uploading anything when the orchestrator is not there.
  if (!(await api.health())) {
    throw new UnreachableError(`cannot reach the orchestrator at ${api.url}/health. Is it running (\`npm start\`)? Set ORCHESTRATOR_URL to its address.`);
  }
  const batchId = BatchId.parse(options.batchId ?? defaultBatchId(options.dir));
  const existing = await api.statusOrNull(batchId);
  if (existing) throw new BatchExistsError(batchId, existing.status);
  const submitted = await uploadBatch(client, bucket, { ...options, batchId });
  await api.enqueue({
    batch_id: submitted.batchId,
    manifest_r2_key: submitted.manifestKey,
    ...(options.pool !== undefined ? { pool: options.pool } : {}),
    ...(options.slots !== undefined ? { pool_tasks_per_machine: options.slots } : {}),
  });
  return submitted;
}

export interface StoredObject {
  key: string;
  size: number;
}

export async function listObjects(client: S3Client, bucket: string, prefix: string): Promise<StoredObject[]> {
  const out: StoredObject[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key) out.push({ key: o.Key, size: o.Size ?? 0 });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

export async function getBytes(client: S3Client, bucket: string, key: string): Promise<Buffer> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  if (!res.Body) throw new Error(`s3://${bucket}/${key} has no body`);
  return Buffer.from(await res.Body.transformToByteArray());
}

export async function headSize(client: S3Client, bucket: string, key: string): Promise<number | null> {
  try {
    const res = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return res.ContentLength ?? null;
  } catch {
    return null;
  }
}
