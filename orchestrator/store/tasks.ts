// Tasks: one per file and phase, moved from state to state only if still where the caller saw
// them (state and attempt), with phase_counts (counts.ts) following in the same transaction.
// Every query on a hot path is an index range per state, whatever the batch's size.
import type { CountQueries } from "./counts.ts";
import type { OutputQueries } from "./outputs.ts";
import { Queries, Sql } from "./sql.ts";

/** Task states as stored. `creating`: a create request was sent and its outcome is not yet known. */
export const TASK_STATES = ["pending", "retrying", "creating", "booting", "running", "done", "failed"] as const;
export type TaskState = (typeof TASK_STATES)[number];
export const OPEN_STATES: readonly TaskState[] = ["pending", "retrying", "creating", "booting", "running"];
export const LIVE_STATES: readonly TaskState[] = ["creating", "booting", "running"];

export interface TaskRow {
  id: number;
  task_id: string;
  phase: string;
  file_id: number;
  input_key: string;
  output_key: string;
  size_bytes: number;
  params_json: string;
  state: TaskState;
  attempt: number;
  next_at: number;
  /** When the task is next looked at (create answer, machine check). */
  deadline_at: number;
  /** The hard limit of the current stage: boot deadline while booting, run deadline while running. */
  limit_at: number;
  machine_id: string | null;
  machine_name: string | null;
  region: string | null;
  error: string | null;
  updated_at: number;
  finished_at: number | null;
  /** The machine row (workers.worker_id) running the current attempt: assigned at create, or leased. */
  worker_id: string | null;
  /** JSON array of warnings from the phase (e.g. pages skipped). */
  warnings_json: string | null;
  /** Attempts before the last redrive: the retry budget counts from here. */
  attempt_base: number;
}

export class TaskQueries extends Queries {
  #counts: CountQueries;
  #outputs: OutputQueries;

  constructor(db: Sql, counts: CountQueries, outputs: OutputQueries) {
    super(db);
    this.#counts = counts;
    this.#outputs = outputs;
  }

  /** A new task (pending; or failed with `error` when it cannot run); its output key is reserved with it. */
  insertTask(
    t: Pick<TaskRow, "task_id" | "phase" | "file_id" | "input_key" | "output_key" | "size_bytes" | "params_json"> & {
      now: number;
      error?: string;
    },
  ): boolean {
    const state: TaskState = t.error ? "failed" : "pending";
    const written = this.db.run(
      `INSERT INTO tasks (task_id, phase, file_id, input_key, output_key, size_bytes, params_json, state, error, finished_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING`,
      t.task_id,
      t.phase,
      t.file_id,
      t.input_key,
      t.output_key,
      t.size_bytes,
      t.params_json,
      state,
      t.error ?? null,
      t.error ? t.now : null,
      t.now,
    );
    if (written === 0) return false;
    if (!t.error) this.#outputs.insert(t.output_key, t.task_id, 1);
    this.#counts.bump(t.phase, state, 1);
    return true;
  }

  getTask(taskId: string): TaskRow | null {
    return (this.db.exec<TaskRow & Record<string, SqlStorageValue>>("SELECT * FROM tasks WHERE task_id = ?", taskId)[0] as TaskRow) ?? null;
  }

  /**
   * Moves a task from `from` to `to` (with the other columns in `set`) only if it is still in
   * `from` at `attempt`; keeps the phase counters exact. Returns whether the task moved.
   */
  moveTask(
    task: Pick<TaskRow, "task_id" | "phase" | "state" | "attempt">,
    to: TaskState,
    set: Partial<Omit<TaskRow, "id" | "task_id" | "phase" | "state">>,
    now: number,
  ): boolean {
    const { sets, values } = Sql.sets({ ...set, updated_at: now });
    const changed = this.db.run(
      `UPDATE tasks SET state = ?, ${sets} WHERE task_id = ? AND state = ? AND attempt = ?`,
      to,
      ...values,
      task.task_id,
      task.state,
      task.attempt,
    );
    if (changed === 0) return false;
    if (task.state !== to) {
      this.#counts.bump(task.phase, task.state, -1);
      this.#counts.bump(task.phase, to, 1);
    }
    return true;
  }

  /** Tasks ready to spawn (ready retries first, then pending in plan order): one index range scan per state. */
  readyTasks(now: number, limit: number): TaskRow[] {
    const take = (state: TaskState) =>
      this.db.exec<TaskRow & Record<string, SqlStorageValue>>(
        "SELECT * FROM tasks WHERE state = ? AND next_at <= ? ORDER BY next_at LIMIT ?",
        state,
        now,
        limit,
      );
    // A retry whose backoff has passed goes first: sorted with the pending tasks (next_at 0) it
    // would wait for every one of them, and a batch's stragglers would be its retries.
    return [...take("retrying"), ...take("pending")].slice(0, limit);
  }

  /** Live tasks whose deadline has passed. */
  overdueTasks(now: number, limit: number): TaskRow[] {
    const rows: TaskRow[] = [];
    for (const state of LIVE_STATES) {
      rows.push(
        ...this.db.exec<TaskRow & Record<string, SqlStorageValue>>(
          "SELECT * FROM tasks WHERE state = ? AND deadline_at <= ? ORDER BY deadline_at LIMIT ?",
          state,
          now,
          limit - rows.length,
        ),
      );
      if (rows.length >= limit) break;
    }
    return rows;
  }

  /** When the next pending or retrying task becomes ready (index MIN lookups). */
  earliestReady(): number | null {
    return this.db.earliest("SELECT MIN(next_at) AS t FROM tasks WHERE state = ?", ["pending", "retrying"]);
  }

  /** The earliest deadline of a live task (index MIN lookups), or null. */
  earliestDeadline(): number | null {
    return this.db.earliest("SELECT MIN(deadline_at) AS t FROM tasks WHERE state = ?", LIVE_STATES);
  }

  /** Fails every open task of the batch with `reason` (reset); counters follow. */
  failOpenTasks(reason: string, now: number): number {
    let failed = 0;
    for (const state of OPEN_STATES) {
      const byPhase = this.db.exec<{ phase: string; n: number }>(
        "SELECT phase, COUNT(*) AS n FROM tasks WHERE state = ? GROUP BY phase",
        state,
      );
      this.db.run(
        "UPDATE tasks SET state = 'failed', error = ?, finished_at = ?, updated_at = ? WHERE state = ?",
        reason,
        now,
        now,
        state,
      );
      for (const { phase, n } of byPhase) {
        this.#counts.bump(phase, state, -n);
        this.#counts.bump(phase, "failed", n);
        failed += n;
      }
    }
    return failed;
  }

  tasksPage(opts: { states: readonly TaskState[] | null; afterId: number; limit: number }): TaskRow[] {
    if (opts.states === null) {
      return this.db.exec<TaskRow & Record<string, SqlStorageValue>>(
        "SELECT * FROM tasks WHERE id > ? ORDER BY id LIMIT ?",
        opts.afterId,
        opts.limit,
      );
    }
    const rows: TaskRow[] = [];
    for (const state of opts.states) {
      rows.push(
        ...this.db.exec<TaskRow & Record<string, SqlStorageValue>>(
          "SELECT * FROM tasks WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
          state,
          opts.afterId,
          opts.limit,
        ),
      );
    }
    return rows.sort((a, b) => a.id - b.id).slice(0, opts.limit);
  }

  /** True when `fileId` already has a task in `phase` (re-planning after a redrive adds only new files). */
  hasTask(phase: string, fileId: number): boolean {
    return this.db.exec("SELECT 1 FROM tasks WHERE phase = ? AND file_id = ? LIMIT 1", phase, fileId).length > 0;
  }

  /**
   * Failed tasks of every phase back to retrying (their attempts kept, numbers rising), except
   * those that can never run (no output reserved). Counters follow. Returns how many, and the
   * earliest phase they are in.
   */
  redriveFailed(now: number): { tasks: number; phases: string[] } {
    const byPhase = this.db.exec<{ phase: string; n: number }>(
      "SELECT phase, COUNT(*) AS n FROM tasks WHERE state = 'failed' AND output_key NOT LIKE '(none:%' GROUP BY phase",
    );
    this.db.run(
      `UPDATE tasks SET state = 'retrying', next_at = ?, deadline_at = 0, worker_id = NULL, finished_at = NULL, updated_at = ?, attempt_base = attempt
       WHERE state = 'failed' AND output_key NOT LIKE '(none:%'`,
      now,
      now,
    );
    let tasks = 0;
    for (const { phase, n } of byPhase) {
      this.#counts.bump(phase, "failed", -n);
      this.#counts.bump(phase, "retrying", n);
      tasks += n;
    }
    return { tasks, phases: byPhase.map((p) => p.phase) };
  }

  /** The open tasks a machine holds: its assigned task, or its leases. */
  heldBy(workerId: string): TaskRow[] {
    return LIVE_STATES.flatMap((state) =>
      this.db.exec<TaskRow & Record<string, SqlStorageValue>>("SELECT * FROM tasks WHERE state = ? AND worker_id = ?", state, workerId),
    );
  }
}
