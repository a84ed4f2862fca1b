// What finalisation sends downstream: POST ${WORKER_URL}/api/batches/:batchId/enqueue-processed
// with `Idempotency-Key: fanout:<batch>:final` (`…:final:redrive-N` after the Nth redrive). The
// file list itself is an NDJSON object in the batch's bucket (one FileEntry per line); the body
// names it with its counts and checksum, so it stays a few hundred bytes whatever the batch.
import { z } from "zod";
import { BatchId, ObjectKey } from "./contracts.ts";

export const FileListChecksum = z.object({
  /** SHA-256 of each `part_bytes` piece of the object (the last may be shorter), then SHA-256 of those digests concatenated. */
  algorithm: z.literal("SHA-256"),
  type: z.literal("COMPOSITE"),
  /** base64 of the digest of digests, "-", the number of pieces (S3's form for multipart objects). */
  value: z.string().regex(/^[A-Za-z0-9+/]{43}=-[0-9]+$/),
  part_bytes: z.number().int().positive(),
});

export const FinalisedBatch = z.object({
  batch_id: BatchId,
  status: z.literal("DONE"),
  /** 0 for the first finalisation; N after the Nth redrive (each writes its own object). */
  redrive: z.number().int().nonnegative(),
  file_list: z.object({
    bucket: z.string().min(1),
    key: ObjectKey,
    content_type: z.literal("application/x-ndjson"),
    /** Lines (files) in the object. */
    entries: z.number().int().nonnegative(),
    bytes: z.number().int().nonnegative(),
    /** The object's ETag as R2 reports it (multipart: MD5 of the parts' MD5s, "-", their number). */
    etag: z.string().min(1),
    checksum: FileListChecksum,
  }),
  counts: z.object({
    files: z.number().int().nonnegative(),
    tasks_total: z.number().int().nonnegative(),
    tasks_completed: z.number().int().nonnegative(),
    tasks_failed: z.number().int().nonnegative(),
  }),
});
export type FinalisedBatch = z.infer<typeof FinalisedBatch>;

/** The body's ceiling, whatever the batch (a receiver may refuse more). */
export const MAX_FINALISATION_BODY_BYTES = 64 * 1024;
