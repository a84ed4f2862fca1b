// The batch's one meta row (where it is, its message, cursors, counters) and its warnings.
import type { Schema } from "./schema.ts";
import { Queries, Sql } from "./sql.ts";

/** Where a batch is in its life. `status` in the API is the phase name, DONE or ERROR. */
export type Stage = "discover" | "plan" | "run" | "finalise" | "done" | "failed" | "error";

export interface BatchMeta {
  batch_id: string;
  stage: Stage;
  phase: string;
  error: string | null;
  message_json: string;
  manifest_key: string | null;
  prefix: string | null;
  discover_cursor: string | null;
  plan_cursor: number;
  started_at: number;
  updated_at: number;
  completed_at: number | null;
  fly_blocked_until: number;
  /** Unused since the create budget moved to the app-wide FlyBudget DO (kept: migrations only add). */
  bucket_tokens: number;
  /** When the app-wide create budget next has a token for this batch. */
  bucket_at: number;
  step_failures: number;
  finalise_attempts: number;
  finalise_error: string | null;
  next_seq: number;
  /** Size of the file list, kept with every insert and delete so status never counts rows. */
  files_total: number;
  /** 1 when the batch runs in pool mode. */
  pool: number;
  worker_seq: number;
  /** Largest input of the current phase: pool machines are sized for it. */
  max_task_size: number;
  /** Pool mode: tasks per machine from the batch's message; 0 = POOL_TASKS_PER_MACHINE. */
  pool_slots: number;
  /** The last error of the step that keeps failing (step_failures in a row), shown in status. */
  step_error: string | null;
  /** JSON array of batch-level warnings (e.g. nothing to do). */
  warnings_json: string | null;
  tolerated_failure_percentage: number | null;
  tolerated_failure_count: number | null;
  /** How many times the batch's failed tasks were re-run. */
  redrives: number;
  /** Ended machines: their time from create to end, summed, and its estimated cost (Fly's prices). */
  machine_ms: number;
  machine_cost_usd: number;
  machines_ended: number;
  /**
   * Pool mode: the pool decided when the current phase began to run (JSON: phase, slots,
   * machines, guest, perSlotMb), so a deploy that changes the limits mid-phase neither mixes
   * machine sizes nor recounts every open lease against a different slot count.
   */
  pool_plan_json: string | null;
  /** The message's priority: its weight in the fleet's shares (default 1). */
  priority: number;
  /** What the fleet last answered (JSON FleetView): share, waiting and position, limits. */
  fleet_json: string | null;
  /** Fly's refusals of this batch's creates by kind (JSON FlyRefusals): counts and the last words. */
  fly_refusals_json: string | null;
  /** A request Fly calls bad paused the phase: the error naming the field, and when to try again. */
  paused_error: string | null;
  paused_until: number;
  pause_probes: number;
  /** The modes the batch may run in: `auto` (sizing chooses single-task or pool), `pool`, `single`; null before migration 12. */
  mode_request: "auto" | "pool" | "single" | null;
  /** This Durable Object's billed work, counted as it happens (flushed with meta's writes): rows written incl. setAlarm, requests (RPCs and alarms), Worker requests that reached it. */
  do_rows_written: number;
  do_requests: number;
  worker_requests: number;
  /**
   * The phases the batch runs, in order (JSON array of names): its message's `phases`, or the default
   * pipeline when it named none. Null for batches recorded before migration 8: they end after their phase.
   */
  pipeline_json: string | null;
  /**
   * Raised by every reset and redrive: each machine credential names the epoch it was minted in,
   * and one of an earlier epoch is refused (every outstanding attempt's powers end there).
   */
  epoch: number;
}

/** Batch-level warnings kept (the newest). */
export const MAX_WARNINGS = 50;

export class MetaQueries extends Queries {
  #schema: Schema;

  constructor(db: Sql, schema: Schema) {
    super(db);
    this.#schema = schema;
  }

  getMeta(): BatchMeta | null {
    // An unknown batch has no schema: answering "none" must not create one.
    if (!this.#schema.ready()) return null;
    return (this.db.exec<BatchMeta & Record<string, SqlStorageValue>>("SELECT * FROM meta WHERE id = 1")[0] as BatchMeta) ?? null;
  }

  createMeta(
    m: Pick<BatchMeta, "batch_id" | "stage" | "phase" | "error" | "message_json" | "manifest_key" | "prefix"> & { now: number },
  ): void {
    this.db.run(
      `INSERT INTO meta (id, batch_id, stage, phase, error, message_json, manifest_key, prefix, started_at, updated_at,
                         completed_at, bucket_at)
       VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      m.batch_id,
      m.stage,
      m.phase,
      m.error,
      m.message_json,
      m.manifest_key,
      m.prefix,
      m.now,
      m.now,
      m.stage === "error" ? m.now : null,
      m.now,
    );
  }

  updateMeta(fields: Partial<Omit<BatchMeta, "batch_id">>, now: number): void {
    const { sets, values } = Sql.sets({ ...fields, updated_at: now });
    // The billed work counted since the last write rides along (no row of its own).
    const u = this.db.usage;
    const [rows, requests, workerRequests] = [u.rowsWritten, u.requests, u.workerRequests];
    u.rowsWritten = u.requests = u.workerRequests = 0;
    this.db.run(
      `UPDATE meta SET ${sets}, do_rows_written = do_rows_written + ?, do_requests = do_requests + ?, worker_requests = worker_requests + ? WHERE id = 1`,
      ...values,
      rows,
      requests,
      workerRequests,
    );
  }

  /** Adds the billed work counted in memory to meta now (one row). */
  flushUsage(): void {
    const u = this.db.usage;
    if (u.rowsWritten === 0 && u.requests === 0) return;
    const [rows, requests, workerRequests] = [u.rowsWritten, u.requests, u.workerRequests];
    u.rowsWritten = u.requests = u.workerRequests = 0;
    this.db.run("UPDATE meta SET do_rows_written = do_rows_written + ?, do_requests = do_requests + ?, worker_requests = worker_requests + ? WHERE id = 1", rows + 1, requests, workerRequests);
  }

  /** The batch's billed Durable Object work: what meta holds plus what is counted in memory. */
  usageSoFar(meta: Pick<BatchMeta, "do_rows_written" | "do_requests" | "worker_requests">): { rowsWritten: number; requests: number; workerRequests: number } {
    const u = this.db.usage;
    return { rowsWritten: meta.do_rows_written + u.rowsWritten, requests: meta.do_requests + u.requests, workerRequests: meta.worker_requests + u.workerRequests };
  }

  /**
   * Appends a batch-level warning (shown in the status body). The newest MAX_WARNINGS are kept, each
   * at most 2,000 characters: the meta row may not grow with the batch (2 MB per row,
   * developers.cloudflare.com/durable-objects/platform/limits/), and dead letters or runtime
   * retries can repeat.
   */
  addWarning(warning: string, now: number): void {
    this.db.run(
      `UPDATE meta SET warnings_json = (
         SELECT json_group_array(value) FROM (
           SELECT key, value FROM (
             SELECT key, value FROM json_each(json_insert(coalesce(warnings_json, '[]'), '$[#]', ?)) ORDER BY key DESC LIMIT ?
           ) ORDER BY key
         )
       ), updated_at = ? WHERE id = 1`,
      warning.slice(0, 2000),
      MAX_WARNINGS,
      now,
    );
  }

  /** The latest tasks with warnings (pages skipped, say): an index range, newest first. */
  recentWarnings(limit: number): { task_id: string; warning: string }[] {
    const rows = this.db.exec<{ task_id: string; warnings_json: string }>(
      "SELECT task_id, warnings_json FROM tasks WHERE warnings_json IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
      limit,
    );
    return rows.flatMap((r) => (JSON.parse(r.warnings_json) as string[]).map((warning) => ({ task_id: r.task_id, warning }))).slice(0, limit);
  }
}
