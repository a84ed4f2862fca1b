// Retention: a finished batch's Durable Object storage (tasks, attempts, events, files) is kept
// BATCH_RETENTION_DAYS after it ended, then deleted with deleteAll(); its batch index row (D1)
// stays with its final counts and the key of its file list object, so GET /status/:id still
// answers (from D1, saying it is archived) and GET /batches still lists it. The row is written
// first: a batch whose row cannot be written is kept and tried again later.
import { type BatchIndexRow, getBatchRow, recordBatch, toRow, type StatusLike } from "../batch-index.ts";
import { errorMessage, log } from "../log.ts";
import type { BatchMeta } from "../store/index.ts";
import type { Engine } from "./context.ts";

const DAY_MS = 86_400_000;
/** A failed archive (the index could not be written) is tried again after this. */
export const ARCHIVE_RETRY_MS = 3_600_000;

/** When the finished batch's storage is due for deletion. */
export function retentionAt(e: Engine, meta: BatchMeta): number {
  return (meta.completed_at ?? meta.updated_at) + e.config.BATCH_RETENTION_DAYS * DAY_MS;
}

/** A finished batch's next alarm: what is left to do (machines to destroy), else its retention. */
export function retentionAlarm(e: Engine, meta: BatchMeta, _now: number): number {
  const deadline = e.store.earliestDeadline();
  const at = retentionAt(e, meta);
  return deadline === null ? at : Math.min(deadline, at);
}

/** True when the batch is due to be archived now: retention has passed and no machine is left to destroy. */
export function archiveDue(e: Engine, meta: BatchMeta, now: number): boolean {
  return now >= retentionAt(e, meta) && e.store.orphanCount() === 0;
}

/**
 * Writes the batch's final index row (archived), then deletes its storage. Returns false (and logs)
 * when the row could not be written: the storage stays, and the caller tries again later.
 */
export async function archive(e: Engine, meta: BatchMeta, status: StatusLike, storage: DurableObjectStorage, now: number): Promise<boolean> {
  const db = e.env.BATCH_INDEX as D1Database | undefined;
  if (!db) return false;
  try {
    await recordBatch(db, { ...toRow(status), archived_at: now }, now);
  } catch (error) {
    log("DO", "archive_deferred", { batch_id: meta.batch_id, error: errorMessage(error) });
    return false;
  }
  await storage.deleteAlarm();
  await storage.deleteAll();
  e.store.forget();
  log("DO", "batch_archived", { batch_id: meta.batch_id, completed_at: meta.completed_at, file_list_key: status.finalisation?.file_list?.key ?? null });
  return true;
}

/** GET /status/:batchId of an archived batch: its index row, in the status body's names. */
export function archivedStatus(row: BatchIndexRow, retentionDays: number) {
  const iso = (t: number | null | undefined) => (t === null || t === undefined ? null : new Date(t).toISOString());
  return {
    batch_id: row.batch_id,
    status: row.status,
    archived: true,
    archived_at: iso(row.archived_at),
    progress: { tasks_total: row.tasks_total, tasks_completed: row.tasks_completed, tasks_failed: row.tasks_failed },
    mode: row.mode,
    started_at: iso(row.started_at),
    updated_at: iso(row.updated_at),
    completed_at: iso(row.completed_at),
    error: row.error,
    file_list: row.file_list_key ? { key: row.file_list_key } : null,
    warnings: [
      `archived: the batch's tasks, attempts and events were deleted ${retentionDays} days after it ended (BATCH_RETENTION_DAYS); its final counts and file list remain`,
    ],
  };
}

/** The index row of a batch whose storage retention deleted, or null (a late redelivery must not start it again). */
export async function archivedRow(db: D1Database | undefined, batchId: string): Promise<BatchIndexRow | null> {
  if (!db) return null;
  const row = await getBatchRow(db, batchId).catch(() => null);
  return row?.archived_at ? row : null;
}
