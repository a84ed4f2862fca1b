// Tasks: one per file and phase, moved from state to state only if still where the caller saw
// them (state and attempt), with phase_tally (counts.ts) following in the same transaction.
// Every query on a hot path is an index range per state whatever the batch's size: waiting
// tasks by tasks_pending / tasks_retrying, live ones (at most the machines' slots) by
// tasks_state_id. Each index a write touches is a row billed (migration 12 says which remain).
import type { CountQueries, TallyExtra } from "./counts.ts";
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
  /** When the current attempt began (its row in attempts is written when it ends). */
  attempt_started_at: number | null;
}

/** A task as the planner inserts it: pending, or failed with `error` when it cannot run. */
export type NewTask = Pick<TaskRow, "task_id" | "phase" | "file_id" | "input_key" | "output_key" | "size_bytes" | "params_json"> & {
  now: number;
  error?: string;
};

export class TaskQueries extends Queries {
  #counts: CountQueries;

  constructor(db: Sql, counts: CountQueries) {
    super(db);
    this.#counts = counts;
  }

  /**
   * Inserts a page of planned tasks (each reserves its output key, page 1, in its own unique
   * column); the phase's counters move once per page. Returns how many were new.
   */
  insertTasks(tasks: NewTask[]): number {
    const added = new Map<string, { pending: number; failed: number }>();
    for (const t of tasks) {
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
      if (written === 0) continue;
      const n = added.get(t.phase) ?? { pending: 0, failed: 0 };
      n[state as "pending" | "failed"]++;
      added.set(t.phase, n);
    }
    let total = 0;
    for (const [phase, n] of added) {
      if (n.pending > 0) this.#counts.move(phase, null, "pending", n.pending);
      if (n.failed > 0) this.#counts.move(phase, null, "failed", n.failed);
      total += n.pending + n.failed;
    }
    return total;
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
    extra: TallyExtra = {},
  ): boolean {
    // The state is set only when it changes: a column named in SET rewrites its index entries
    // even to the same value (a heartbeat would write tasks_state_id again: one more billed row).
    const { sets, values } = Sql.sets({ ...(task.state !== to ? { state: to } : {}), ...set, updated_at: now });
    const changed = this.db.run(
      `UPDATE tasks SET ${sets} WHERE task_id = ? AND state = ? AND attempt = ?`,
      ...values,
      task.task_id,
      task.state,
      task.attempt,
    );
    if (changed === 0) return false;
    if (task.state !== to || extra.files || extra.outputs || extra.measured) this.#counts.move(task.phase, task.state, to, 1, extra);
    return true;
  }

  /** Tasks ready to spawn (ready retries first, then pending in plan order): one index range scan per state. */
  readyTasks(now: number, limit: number): TaskRow[] {
    // The state is spelled out: SQLite uses a partial index only when the query names its WHERE; and
    // the index is named: left to itself the planner took tasks_state_id and read every pending task
    // to sort them (section 1: 31,810 rows read a callback at 100,000 tasks).
    const take = (state: "pending" | "retrying") =>
      this.db.exec<TaskRow & Record<string, SqlStorageValue>>(
        `SELECT * FROM tasks INDEXED BY tasks_${state} WHERE state = '${state}' AND next_at <= ? ORDER BY next_at LIMIT ?`,
        now,
        limit,
      );
    // A retry whose backoff has passed goes first: sorted with the pending tasks (next_at 0) it
    // would wait for every one of them, and a batch's stragglers would be its retries.
    return [...take("retrying"), ...take("pending")].slice(0, limit);
  }

  /** Live tasks whose deadline has passed (at most the machines' slots are live: a range of tasks_state_id). */
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
    const times = (["pending", "retrying"] as const)
      .map((state) => this.db.exec<{ t: number | null }>(`SELECT MIN(next_at) AS t FROM tasks INDEXED BY tasks_${state} WHERE state = '${state}'`)[0].t)
      .filter((t) => t !== null);
    return times.length > 0 ? Math.min(...times) : null;
  }

  /** The earliest deadline of a live task (a range of tasks_state_id per live state), or null. */
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
      // A live task's open attempt is written now (attempts are written when they end); it stays open.
      if (LIVE_STATES.includes(state)) {
        this.db.run(
          `INSERT INTO attempts (task_id, attempt, machine_id, machine_name, region, started_at)
           SELECT task_id, attempt, machine_id, coalesce(machine_name, worker_id, ''), region, coalesce(attempt_started_at, updated_at) FROM tasks WHERE state = ? AND attempt > 0
           ON CONFLICT (task_id, attempt) DO NOTHING`,
          state,
        );
      }
      this.db.run(
        "UPDATE tasks SET state = 'failed', error = ?, finished_at = ?, updated_at = ? WHERE state = ?",
        reason,
        now,
        now,
        state,
      );
      for (const { phase, n } of byPhase) {
        this.#counts.move(phase, state, "failed", n);
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
      this.#counts.move(phase, "failed", "retrying", n);
      tasks += n;
    }
    return { tasks, phases: byPhase.map((p) => p.phase) };
  }

  /** The open tasks a machine holds: its assigned task, or its leases (live tasks only: a short range per state). */
  heldBy(workerId: string): TaskRow[] {
    return LIVE_STATES.flatMap((state) =>
      this.db.exec<TaskRow & Record<string, SqlStorageValue>>("SELECT * FROM tasks WHERE state = ? AND worker_id = ?", state, workerId),
    );
  }
}
