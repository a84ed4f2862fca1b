// The batch index: one D1 row per batch so `GET /batches` can answer "what is running?" without
// waking every BatchDO. Each BatchDO writes its own row at status transitions and at most every
// BATCH_INDEX_PROGRESS_MS of progress (never once per callback); the DO stays the truth.
import { z } from "zod";
import { loadConfig } from "./config.ts";
import { logError } from "./log.ts";

/** Statuses that end a batch; `active` in a query means none of these. */
export const TERMINAL_STATUSES = ["DONE", "ERROR", "FAILED"] as const;

export interface BatchIndexRow {
  batch_id: string;
  /** The status body's `status`: a phase name, DONE, ERROR (FAILED once the engine has it). */
  status: string;
  mode: "single" | "pool";
  tasks_total: number;
  tasks_completed: number;
  tasks_failed: number;
  /** Epoch ms, as the DO keeps them. */
  started_at: number;
  updated_at: number;
  completed_at: number | null;
  error: string | null;
  /** The final file list's object (R2), once written; kept when a later write has none. */
  file_list_key?: string | null;
  /** When the DO's storage was deleted (retention): the row is then all there is. */
  archived_at?: number | null;
}

/** What GET /batches returns per batch: the status body's names and ISO times. */
export interface BatchListItem {
  batch_id: string;
  status: string;
  mode: string;
  progress: { tasks_total: number; tasks_completed: number; tasks_failed: number };
  started_at: string;
  updated_at: string;
  completed_at: string | null;
  error: string | null;
}

/**
 * Upserts a batch's row. `observedAt` is when the caller read the DO's state: a write carrying
 * an older observation than the stored one is dropped, so two writers racing cannot regress a row.
 */
export async function recordBatch(db: D1Database, row: BatchIndexRow, observedAt = Date.now()): Promise<boolean> {
  const result = await db
    .prepare(
      `INSERT INTO batches (batch_id, status, mode, tasks_total, tasks_completed, tasks_failed, started_at, updated_at,
                            completed_at, error, observed_at, writes, file_list_key, archived_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12, ?13)
       ON CONFLICT (batch_id) DO UPDATE SET
         status = excluded.status, mode = excluded.mode, tasks_total = excluded.tasks_total,
         tasks_completed = excluded.tasks_completed, tasks_failed = excluded.tasks_failed,
         started_at = excluded.started_at, updated_at = excluded.updated_at, completed_at = excluded.completed_at,
         error = excluded.error, observed_at = excluded.observed_at, writes = batches.writes + 1,
         file_list_key = COALESCE(excluded.file_list_key, batches.file_list_key),
         archived_at = COALESCE(excluded.archived_at, batches.archived_at)
       WHERE excluded.observed_at >= batches.observed_at`,
    )
    .bind(
      row.batch_id,
      row.status,
      row.mode,
      row.tasks_total,
      row.tasks_completed,
      row.tasks_failed,
      row.started_at,
      row.updated_at,
      row.completed_at,
      row.error === null ? null : row.error.slice(0, 2000),
      observedAt,
      row.file_list_key ?? null,
      row.archived_at ?? null,
    )
    .run();
  return result.meta.changes > 0;
}

export interface ListQuery {
  /** An exact status, `active` (not DONE/ERROR/FAILED), or null for all. */
  status: string | null;
  cursor: string | null;
  limit: number;
}

/** Newest first (started_at, then batch_id), `limit` at a time; `next_cursor` continues after the last row. */
export async function listBatches(db: D1Database, query: ListQuery): Promise<{ batches: BatchListItem[]; next_cursor: string | null }> {
  const where: string[] = [];
  const args: (string | number)[] = [];
  if (query.status === "active") {
    where.push(`status NOT IN (${TERMINAL_STATUSES.map(() => "?").join(", ")})`);
    args.push(...TERMINAL_STATUSES);
  } else if (query.status !== null) {
    where.push("status = ?");
    args.push(query.status);
  }
  if (query.cursor !== null) {
    const after = decodeCursor(query.cursor);
    where.push("(started_at < ? OR (started_at = ? AND batch_id < ?))");
    args.push(after.started_at, after.started_at, after.batch_id);
  }
  const sql = `SELECT batch_id, status, mode, tasks_total, tasks_completed, tasks_failed, started_at, updated_at, completed_at, error
               FROM batches ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
               ORDER BY started_at DESC, batch_id DESC LIMIT ?`;
  const { results } = await db
    .prepare(sql)
    .bind(...args, query.limit + 1)
    .all<BatchIndexRow>();
  const page = results.slice(0, query.limit);
  const last = page[page.length - 1];
  return {
    batches: page.map(toItem),
    next_cursor: results.length > query.limit && last ? encodeCursor(last.started_at, last.batch_id) : null,
  };
}

/** One batch's row, or null (an archived batch's status is answered from it). */
export async function getBatchRow(db: D1Database, batchId: string): Promise<BatchIndexRow | null> {
  return (
    (await db
      .prepare(
        `SELECT batch_id, status, mode, tasks_total, tasks_completed, tasks_failed, started_at, updated_at, completed_at, error,
                file_list_key, archived_at
         FROM batches WHERE batch_id = ?`,
      )
      .bind(batchId)
      .first<BatchIndexRow>()) ?? null
  );
}

/**
 * What the watchdog asks about: running batches whose row has not been written since `before`
 * (a batch's row is written at least every BATCH_INDEX_PROGRESS_MS while its counts move), and
 * finished ones past retention not yet archived. Oldest first, `limit` at most.
 */
export async function batchesToCheck(db: D1Database, before: number, finishedBefore: number, limit: number): Promise<string[]> {
  const { results } = await db
    .prepare(
      `SELECT batch_id FROM batches
       WHERE (status NOT IN (${TERMINAL_STATUSES.map(() => "?").join(", ")}) AND observed_at < ?)
          OR (archived_at IS NULL AND completed_at IS NOT NULL AND completed_at < ?)
       ORDER BY observed_at LIMIT ?`,
    )
    .bind(...TERMINAL_STATUSES, before, finishedBefore, limit)
    .all<{ batch_id: string }>();
  return results.map((r) => r.batch_id);
}

export class CursorError extends Error {}

function encodeCursor(startedAt: number, batchId: string): string {
  return btoa(JSON.stringify([startedAt, batchId])).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const CursorBody = z.tuple([z.number().int().nonnegative(), z.string().min(1).max(256)]);

function decodeCursor(cursor: string): { started_at: number; batch_id: string } {
  try {
    const parsed = CursorBody.parse(JSON.parse(atob(cursor.replace(/-/g, "+").replace(/_/g, "/"))));
    return { started_at: parsed[0], batch_id: parsed[1] };
  } catch {
    throw new CursorError("cursor must be the next_cursor of a previous page");
  }
}

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());

function toItem(r: BatchIndexRow): BatchListItem {
  return {
    batch_id: r.batch_id,
    status: r.status,
    mode: r.mode,
    progress: { tasks_total: r.tasks_total, tasks_completed: r.tasks_completed, tasks_failed: r.tasks_failed },
    started_at: iso(r.started_at)!,
    updated_at: iso(r.updated_at)!,
    completed_at: iso(r.completed_at),
    error: r.error,
  };
}

// ---- the engine's side: when to write ----------------------------------------------------------

/** The part of the DO's status body the index keeps. */
export interface StatusLike {
  batch_id: string;
  status: string;
  mode: "single" | "pool";
  progress: { tasks_total: number; tasks_completed: number; tasks_failed: number };
  started_at: string;
  updated_at: string;
  completed_at: string | null;
  error: string | null;
  finalisation?: { file_list: { key: string } | null } | null;
}

/** The cheap part of the DO's state that tells a transition from progress. */
export interface MetaLike {
  batch_id: string;
  stage: string;
  phase: string;
  error: string | null;
}

interface Written {
  transition: string;
  progress: string;
  /** When the DO state was last read for progress (written or found unchanged). */
  checkedAt: number;
  /** After a failed write, nothing is tried again before checkedAt + interval. */
  failed: boolean;
}

/**
 * Per batch, what this isolate last wrote. Lost when the DO is evicted: the next call then
 * writes once more, which is harmless (an upsert).
 */
const written = new Map<string, Written>();
const MAX_TRACKED = 10_000;

/**
 * The engine's one call: writes the batch's row when its status changed since the last write,
 * or when `intervalMs` has passed and its counts moved. Never throws: the index is a view, and a
 * failing D1 must not stop a batch. `read` (the full status) is only called when a write may be due.
 */
export async function syncBatchIndex(
  env: Env,
  meta: MetaLike | null,
  read: () => Promise<StatusLike | null>,
  options: { force?: boolean } = {},
): Promise<void> {
  const db = env.BATCH_INDEX as D1Database | undefined;
  if (!db || !meta) return;
  let intervalMs: number;
  try {
    intervalMs = loadConfig(env).BATCH_INDEX_PROGRESS_MS;
  } catch {
    return; // a misconfigured Worker says so on every route; the index waits for the fix
  }
  const now = Date.now();
  const transition = `${meta.stage}|${meta.phase}|${meta.error ?? ""}`;
  const last = written.get(meta.batch_id);
  const due = now - (last?.checkedAt ?? 0) >= intervalMs;
  if (!options.force && last && (last.failed || last.transition === transition) && !due) return;
  try {
    const status = await read();
    if (!status) return;
    const progress = `${status.progress.tasks_total}/${status.progress.tasks_completed}/${status.progress.tasks_failed}`;
    if (!options.force && last && !last.failed && last.transition === transition && last.progress === progress) {
      last.checkedAt = now;
      return;
    }
    await recordBatch(db, toRow(status), now);
    if (written.size >= MAX_TRACKED) written.clear();
    written.set(meta.batch_id, { transition, progress, checkedAt: now, failed: false });
  } catch (error) {
    logError("Index", "batch_index_write_failed", error, { batch_id: meta.batch_id, status: transition });
    written.set(meta.batch_id, { transition, progress: "", checkedAt: now, failed: true });
  }
}

export function toRow(s: StatusLike): BatchIndexRow {
  return {
    batch_id: s.batch_id,
    status: s.status,
    mode: s.mode,
    tasks_total: s.progress.tasks_total,
    tasks_completed: s.progress.tasks_completed,
    tasks_failed: s.progress.tasks_failed,
    started_at: Date.parse(s.started_at),
    updated_at: Date.parse(s.updated_at),
    completed_at: s.completed_at === null ? null : Date.parse(s.completed_at),
    error: s.error,
    file_list_key: s.finalisation?.file_list?.key ?? null,
  };
}
