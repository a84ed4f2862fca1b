// The BatchDO's SQLite schema, migrations and queries: the only file that writes SQL.
// Every task change updates its phase's counters in the same transaction, and every query
// on a hot path (callback, alarm, status) is an index lookup whose cost does not grow with
// the batch.
import type { FileEntry } from "../shared/contracts.ts";
import { type Guest, pricePerSecond } from "../shared/fly-model.ts";

/** Where a batch is in its life. `status` in the API is the phase name, DONE or ERROR. */
export type Stage = "discover" | "plan" | "run" | "finalise" | "done" | "failed" | "error";
/** Task states as stored. `creating`: a create request was sent and its outcome is not yet known. */
export const TASK_STATES = ["pending", "retrying", "creating", "booting", "running", "done", "failed"] as const;
export type TaskState = (typeof TASK_STATES)[number];
export const OPEN_STATES: readonly TaskState[] = ["pending", "retrying", "creating", "booting", "running"];
export const LIVE_STATES: readonly TaskState[] = ["creating", "booting", "running"];

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
}

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

/**
 * A machine, whatever the mode. `creating`: create sent, answer not yet known; `booting`: created,
 * not yet seen started; `live`: started; `gone`: exited, destroyed or given up on. A single-task
 * machine has its task (and attempt) assigned at create; a pool machine leases tasks.
 */
export const WORKER_STATES = ["creating", "booting", "live", "gone"] as const;
export type WorkerState = (typeof WORKER_STATES)[number];
export interface WorkerRow {
  worker_id: string;
  phase: string;
  machine_id: string | null;
  state: WorkerState;
  created_at: number;
  check_at: number;
  limit_at: number;
  leases: number;
  last_seen: number | null;
  /** Single-task machine: its task and attempt. Null for a pool machine. */
  task_id: string | null;
  attempt: number;
  slots: number;
  /** The size it was created with (null for rows from before migration 6). */
  cpu_kind: "shared" | "performance" | null;
  cpus: number;
  memory_mb: number;
  /** When it was first seen started, and when it ended (exited, was destroyed or given up on). */
  started_at: number | null;
  ended_at: number | null;
}

export interface FileRow {
  id: number;
  r2_key: string;
  logical_path: string;
  file_name: string;
  file_size: number;
  content_type: string;
  cid: string | null;
  source_key: string | null;
  extra_json: string | null;
}

export interface AttemptRow {
  task_id: string;
  attempt: number;
  machine_id: string | null;
  machine_name: string;
  region: string | null;
  outcome: string | null;
  error: string | null;
  started_at: number;
  ended_at: number | null;
  /** What happened after the attempt ended (a late callback from it, say). */
  note: string | null;
}

export type PhaseCounts = Record<TaskState, number> & { phase: string; total: number };

// Numbered migrations, applied once each in order (cloudflare/actors style).
const MIGRATIONS: string[] = [
  `CREATE TABLE meta (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     batch_id TEXT NOT NULL,
     stage TEXT NOT NULL,
     phase TEXT NOT NULL,
     error TEXT,
     message_json TEXT NOT NULL,
     manifest_key TEXT,
     prefix TEXT,
     discover_cursor TEXT,
     plan_cursor INTEGER NOT NULL DEFAULT 0,
     started_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     completed_at INTEGER,
     fly_blocked_until INTEGER NOT NULL DEFAULT 0,
     bucket_tokens REAL NOT NULL DEFAULT 0,
     bucket_at INTEGER NOT NULL DEFAULT 0,
     step_failures INTEGER NOT NULL DEFAULT 0,
     finalise_attempts INTEGER NOT NULL DEFAULT 0,
     finalise_error TEXT,
     next_seq INTEGER NOT NULL DEFAULT 0,
     files_total INTEGER NOT NULL DEFAULT 0
   );
   CREATE TABLE files (
     id INTEGER PRIMARY KEY,
     r2_key TEXT NOT NULL UNIQUE,
     logical_path TEXT NOT NULL,
     file_name TEXT NOT NULL,
     file_size INTEGER NOT NULL,
     content_type TEXT NOT NULL,
     cid TEXT,
     source_key TEXT,
     extra_json TEXT
   );
   CREATE TABLE tasks (
     id INTEGER PRIMARY KEY,
     task_id TEXT NOT NULL UNIQUE,
     phase TEXT NOT NULL,
     file_id INTEGER NOT NULL,
     input_key TEXT NOT NULL,
     output_key TEXT NOT NULL UNIQUE,
     size_bytes INTEGER NOT NULL,
     params_json TEXT NOT NULL DEFAULT '{}',
     state TEXT NOT NULL,
     attempt INTEGER NOT NULL DEFAULT 0,
     next_at INTEGER NOT NULL DEFAULT 0,
     deadline_at INTEGER NOT NULL DEFAULT 0,
     limit_at INTEGER NOT NULL DEFAULT 0,
     machine_id TEXT,
     machine_name TEXT,
     region TEXT,
     error TEXT,
     updated_at INTEGER NOT NULL,
     finished_at INTEGER
   );
   CREATE INDEX tasks_ready ON tasks (state, next_at);
   CREATE INDEX tasks_deadline ON tasks (state, deadline_at);
   CREATE INDEX tasks_state_id ON tasks (state, id);
   CREATE TABLE phase_counts (
     phase TEXT NOT NULL,
     state TEXT NOT NULL,
     n INTEGER NOT NULL,
     PRIMARY KEY (phase, state)
   ) WITHOUT ROWID;
   CREATE TABLE attempts (
     task_id TEXT NOT NULL,
     attempt INTEGER NOT NULL,
     machine_id TEXT,
     machine_name TEXT NOT NULL,
     region TEXT,
     outcome TEXT,
     error TEXT,
     started_at INTEGER NOT NULL,
     ended_at INTEGER,
     PRIMARY KEY (task_id, attempt)
   ) WITHOUT ROWID;
   CREATE INDEX attempts_failed ON attempts (outcome, ended_at);
   CREATE TABLE orphan_machines (
     machine_id TEXT PRIMARY KEY,
     reason TEXT NOT NULL,
     tries INTEGER NOT NULL DEFAULT 0,
     next_at INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;`,
  // 2: pool mode — machines (workers) that lease task after task.
  `ALTER TABLE meta ADD COLUMN pool INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE meta ADD COLUMN worker_seq INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE meta ADD COLUMN max_task_size INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE tasks ADD COLUMN worker_id TEXT;
   CREATE TABLE workers (
     worker_id TEXT PRIMARY KEY,
     phase TEXT NOT NULL,
     machine_id TEXT,
     state TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     check_at INTEGER NOT NULL,
     limit_at INTEGER NOT NULL,
     leases INTEGER NOT NULL DEFAULT 0,
     last_seen INTEGER
   ) WITHOUT ROWID;
   CREATE INDEX workers_check ON workers (state, check_at);`,
  // 3: pool machines' size chosen per batch.
  `ALTER TABLE meta ADD COLUMN pool_slots INTEGER NOT NULL DEFAULT 0;`,
  // 4: one machine lifecycle (a single-task machine is a row with its task assigned at create),
  // every output key reserved before it is written, why a step keeps failing, warnings.
  `ALTER TABLE workers ADD COLUMN task_id TEXT;
   ALTER TABLE workers ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE workers ADD COLUMN slots INTEGER NOT NULL DEFAULT 1;
   CREATE TABLE outputs (
     key TEXT PRIMARY KEY,
     task_id TEXT NOT NULL,
     page INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE UNIQUE INDEX outputs_task_page ON outputs (task_id, page);
   INSERT INTO outputs (key, task_id, page) SELECT output_key, task_id, 1 FROM tasks;
   ALTER TABLE meta ADD COLUMN step_error TEXT;
   ALTER TABLE meta ADD COLUMN warnings_json TEXT;
   ALTER TABLE tasks ADD COLUMN warnings_json TEXT;
   ALTER TABLE attempts ADD COLUMN note TEXT;
   CREATE INDEX tasks_worker ON tasks (worker_id);
   CREATE INDEX tasks_warned ON tasks (finished_at) WHERE warnings_json IS NOT NULL;`,
  // 5: tolerated failures, redrives, and the events a live stream can resume from.
  `ALTER TABLE meta ADD COLUMN tolerated_failure_percentage REAL;
   ALTER TABLE meta ADD COLUMN tolerated_failure_count INTEGER;
   ALTER TABLE meta ADD COLUMN redrives INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX tasks_phase_file ON tasks (phase, file_id);
   ALTER TABLE tasks ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
   CREATE TABLE events (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     type TEXT NOT NULL,
     data TEXT NOT NULL,
     at INTEGER NOT NULL
   );`,
  // 6: what machines cost — each machine row's size, when it was seen started and when it ended;
  // the batch's totals of ended machines (kept as they end, so status never sums rows).
  `ALTER TABLE workers ADD COLUMN cpu_kind TEXT;
   ALTER TABLE workers ADD COLUMN cpus INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE workers ADD COLUMN memory_mb INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE workers ADD COLUMN started_at INTEGER;
   ALTER TABLE workers ADD COLUMN ended_at INTEGER;
   ALTER TABLE meta ADD COLUMN machine_ms INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE meta ADD COLUMN machine_cost_usd REAL NOT NULL DEFAULT 0;
   ALTER TABLE meta ADD COLUMN machines_ended INTEGER NOT NULL DEFAULT 0;`,
  // 7: the pool decided once per phase (see BatchMeta.pool_plan_json).
  `ALTER TABLE meta ADD COLUMN pool_plan_json TEXT;`,
];

/** Rows read and written by the queries of this store, for the scale tests and benchmarks. */
export interface SqlWork {
  rowsRead: number;
  rowsWritten: number;
}

type SqlValue = string | number | null | ArrayBuffer;

export class BatchStore {
  readonly work: SqlWork = { rowsRead: 0, rowsWritten: 0 };
  private hasSchema = false;
  private readonly storage: DurableObjectStorage;
  private readonly sql: SqlStorage;

  constructor(storage: DurableObjectStorage) {
    this.storage = storage;
    this.sql = storage.sql;
  }

  /** True once the batch's schema exists: reads of an unknown batch must not create it. */
  exists(): boolean {
    return this.sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").toArray().length > 0;
  }

  /** Applies the migrations this database has not seen yet. Call under blockConcurrencyWhile. */
  migrate(): void {
    this.sql.exec("CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
    const row = this.sql.exec<{ v: number | null }>("SELECT MAX(version) AS v FROM _migrations").one();
    const applied = row.v ?? 0;
    for (let version = applied + 1; version <= MIGRATIONS.length; version++) {
      this.storage.transactionSync(() => {
        this.sql.exec(MIGRATIONS[version - 1]);
        this.sql.exec("INSERT INTO _migrations (version, applied_at) VALUES (?, ?)", version, Date.now());
      });
    }
    this.hasSchema = true;
  }

  transaction<T>(fn: () => T): T {
    return this.storage.transactionSync(fn);
  }

  private exec<T extends Record<string, SqlStorageValue>>(query: string, ...params: SqlValue[]): T[] {
    const cursor = this.sql.exec<T>(query, ...params);
    const rows = cursor.toArray();
    this.work.rowsRead += cursor.rowsRead;
    this.work.rowsWritten += cursor.rowsWritten;
    return rows;
  }

  private run(query: string, ...params: SqlValue[]): number {
    const cursor = this.sql.exec(query, ...params);
    cursor.toArray();
    this.work.rowsRead += cursor.rowsRead;
    this.work.rowsWritten += cursor.rowsWritten;
    return cursor.rowsWritten;
  }

  // ---- batch ----------------------------------------------------------------------------

  getMeta(): BatchMeta | null {
    // An unknown batch has no schema: answering "none" must not create one.
    if (!this.hasSchema) {
      if (!this.exists()) return null;
      this.hasSchema = true;
    }
    return (this.exec<BatchMeta & Record<string, SqlStorageValue>>("SELECT * FROM meta WHERE id = 1")[0] as BatchMeta) ?? null;
  }

  createMeta(
    m: Pick<BatchMeta, "batch_id" | "stage" | "phase" | "error" | "message_json" | "manifest_key" | "prefix"> & { now: number },
  ): void {
    this.run(
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
    const entries = Object.entries({ ...fields, updated_at: now });
    const sets = entries.map(([k]) => `${k} = ?`).join(", ");
    this.run(`UPDATE meta SET ${sets} WHERE id = 1`, ...entries.map(([, v]) => v as SqlValue));
  }

  /** Appends a batch-level warning (shown in the status body); earlier ones are kept. */
  addWarning(warning: string, now: number): void {
    this.run("UPDATE meta SET warnings_json = json_insert(coalesce(warnings_json, '[]'), '$[#]', ?), updated_at = ? WHERE id = 1", warning, now);
  }

  // ---- files ----------------------------------------------------------------------------

  /** Adds files to the list; a key already present is kept as it was. Returns how many were new. */
  insertFiles(files: FileEntry[]): number {
    if (files.length === 0) return 0;
    // One statement per page, its rows as one JSON parameter: a statement per row grew workerd's
    // memory by ~150 MB over 60,000 manifest entries (one page per statement: ~55 MB).
    const rows = files.map((f) => {
      const { r2_key, logical_path, file_name, file_size, content_type, cid, source_r2_key, ...extra } = f;
      return [r2_key, logical_path, file_name, file_size, content_type, cid ?? null, source_r2_key ?? null, Object.keys(extra).length > 0 ? JSON.stringify(extra) : null];
    });
    const added = this.exec<{ id: number }>(
      `INSERT INTO files (r2_key, logical_path, file_name, file_size, content_type, cid, source_key, extra_json)
       SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7
       FROM json_each(?) WHERE true ORDER BY key
       ON CONFLICT (r2_key) DO NOTHING RETURNING id`,
      JSON.stringify(rows),
    ).length;
    if (added > 0) this.run("UPDATE meta SET files_total = files_total + ? WHERE id = 1", added);
    return added;
  }

  removeFile(key: string): void {
    if (this.run("DELETE FROM files WHERE r2_key = ?", key) > 0) {
      this.run("UPDATE meta SET files_total = files_total - 1 WHERE id = 1");
    }
  }

  filesAfter(afterId: number, limit: number): FileRow[] {
    return this.exec<FileRow & Record<string, SqlStorageValue>>(
      "SELECT * FROM files WHERE id > ? ORDER BY id LIMIT ?",
      afterId,
      limit,
    );
  }

  fileCount(): number {
    return this.exec<{ n: number }>("SELECT files_total AS n FROM meta WHERE id = 1")[0]?.n ?? 0;
  }

  /** True when `key` is already a file of the batch or reserved as a task's output. */
  keyTaken(key: string): boolean {
    return this.exec("SELECT 1 FROM files WHERE r2_key = ? UNION ALL SELECT 1 FROM outputs WHERE key = ? LIMIT 1", key, key).length > 0;
  }

  /** Reserves `key` as page `page` of `taskId`'s outputs; false when it is taken (by a file or any task). */
  reserveOutput(key: string, taskId: string, page: number): boolean {
    if (this.keyTaken(key)) return false;
    return this.run("INSERT INTO outputs (key, task_id, page) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", key, taskId, page) > 0;
  }

  /** The keys reserved for a task, by page. */
  outputsOf(taskId: string): { key: string; page: number }[] {
    return this.exec<{ key: string; page: number }>("SELECT key, page FROM outputs WHERE task_id = ? ORDER BY page", taskId);
  }

  // ---- tasks ----------------------------------------------------------------------------

  /** A new task (pending; or failed with `error` when it cannot run); its output key is reserved with it. */
  insertTask(
    t: Pick<TaskRow, "task_id" | "phase" | "file_id" | "input_key" | "output_key" | "size_bytes" | "params_json"> & {
      now: number;
      error?: string;
    },
  ): boolean {
    const state: TaskState = t.error ? "failed" : "pending";
    const written = this.run(
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
    if (!t.error) this.run("INSERT INTO outputs (key, task_id, page) VALUES (?, ?, 1) ON CONFLICT DO NOTHING", t.output_key, t.task_id);
    this.bumpCount(t.phase, state, 1);
    return true;
  }

  getTask(taskId: string): TaskRow | null {
    return (this.exec<TaskRow & Record<string, SqlStorageValue>>("SELECT * FROM tasks WHERE task_id = ?", taskId)[0] as TaskRow) ?? null;
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
    const entries = Object.entries({ ...set, updated_at: now });
    const sets = entries.map(([k]) => `${k} = ?`).join(", ");
    const changed = this.run(
      `UPDATE tasks SET state = ?, ${sets} WHERE task_id = ? AND state = ? AND attempt = ?`,
      to,
      ...entries.map(([, v]) => v as SqlValue),
      task.task_id,
      task.state,
      task.attempt,
    );
    if (changed === 0) return false;
    if (task.state !== to) {
      this.bumpCount(task.phase, task.state, -1);
      this.bumpCount(task.phase, to, 1);
    }
    return true;
  }

  private bumpCount(phase: string, state: TaskState, delta: number): void {
    this.run(
      `INSERT INTO phase_counts (phase, state, n) VALUES (?, ?, ?)
       ON CONFLICT (phase, state) DO UPDATE SET n = n + excluded.n`,
      phase,
      state,
      delta,
    );
  }

  /** Tasks ready to spawn (ready retries first, then pending in plan order): one index range scan per state. */
  readyTasks(now: number, limit: number): TaskRow[] {
    const take = (state: TaskState) =>
      this.exec<TaskRow & Record<string, SqlStorageValue>>(
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
        ...this.exec<TaskRow & Record<string, SqlStorageValue>>(
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
    const times: number[] = [];
    for (const state of ["pending", "retrying"] as const) {
      const row = this.exec<{ t: number | null }>("SELECT MIN(next_at) AS t FROM tasks WHERE state = ?", state)[0];
      if (row.t !== null) times.push(row.t);
    }
    return times.length > 0 ? Math.min(...times) : null;
  }

  /** The earliest deadline: a live task's, an orphan machine's or a pool machine's check (index MIN lookups). */
  earliestDeadline(): number | null {
    const times: number[] = [];
    for (const state of LIVE_STATES) {
      const row = this.exec<{ t: number | null }>("SELECT MIN(deadline_at) AS t FROM tasks WHERE state = ?", state)[0];
      if (row.t !== null) times.push(row.t);
    }
    const orphan = this.exec<{ t: number | null }>("SELECT MIN(next_at) AS t FROM orphan_machines")[0];
    if (orphan.t !== null) times.push(orphan.t);
    for (const state of ["creating", "booting", "live"] as const) {
      const row = this.exec<{ t: number | null }>("SELECT MIN(check_at) AS t FROM workers WHERE state = ?", state)[0];
      if (row.t !== null) times.push(row.t);
    }
    return times.length > 0 ? Math.min(...times) : null;
  }

  /** Fails every open task of the batch with `reason` (reset); counters follow. */
  failOpenTasks(reason: string, now: number): number {
    let failed = 0;
    for (const state of OPEN_STATES) {
      const byPhase = this.exec<{ phase: string; n: number }>(
        "SELECT phase, COUNT(*) AS n FROM tasks WHERE state = ? GROUP BY phase",
        state,
      );
      this.run(
        "UPDATE tasks SET state = 'failed', error = ?, finished_at = ?, updated_at = ? WHERE state = ?",
        reason,
        now,
        now,
        state,
      );
      for (const { phase, n } of byPhase) {
        this.bumpCount(phase, state, -n);
        this.bumpCount(phase, "failed", n);
        failed += n;
      }
    }
    return failed;
  }

  tasksPage(opts: { states: readonly TaskState[] | null; afterId: number; limit: number }): TaskRow[] {
    if (opts.states === null) {
      return this.exec<TaskRow & Record<string, SqlStorageValue>>(
        "SELECT * FROM tasks WHERE id > ? ORDER BY id LIMIT ?",
        opts.afterId,
        opts.limit,
      );
    }
    const rows: TaskRow[] = [];
    for (const state of opts.states) {
      rows.push(
        ...this.exec<TaskRow & Record<string, SqlStorageValue>>(
          "SELECT * FROM tasks WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
          state,
          opts.afterId,
          opts.limit,
        ),
      );
    }
    return rows.sort((a, b) => a.id - b.id).slice(0, opts.limit);
  }

  counts(): PhaseCounts[] {
    const rows = this.exec<{ phase: string; state: TaskState; n: number }>("SELECT phase, state, n FROM phase_counts");
    const byPhase = new Map<string, PhaseCounts>();
    for (const r of rows) {
      let c = byPhase.get(r.phase);
      if (!c) {
        c = { phase: r.phase, total: 0, pending: 0, retrying: 0, creating: 0, booting: 0, running: 0, done: 0, failed: 0 };
        byPhase.set(r.phase, c);
      }
      c[r.state] += r.n;
      c.total += r.n;
    }
    return [...byPhase.values()];
  }

  phaseCounts(phase: string): PhaseCounts {
    return (
      this.counts().find((c) => c.phase === phase) ?? {
        phase,
        total: 0,
        pending: 0,
        retrying: 0,
        creating: 0,
        booting: 0,
        running: 0,
        done: 0,
        failed: 0,
      }
    );
  }

  // ---- attempts (machine per task attempt) ----------------------------------------------

  startAttempt(a: { task_id: string; attempt: number; machine_name: string; now: number }): void {
    this.run(
      `INSERT INTO attempts (task_id, attempt, machine_name, started_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (task_id, attempt) DO NOTHING`,
      a.task_id,
      a.attempt,
      a.machine_name,
      a.now,
    );
  }

  recordMachine(taskId: string, attempt: number, machineId: string, region: string | null): void {
    this.run("UPDATE attempts SET machine_id = ?, region = ? WHERE task_id = ? AND attempt = ?", machineId, region, taskId, attempt);
  }

  endAttempt(taskId: string, attempt: number, outcome: string, error: string | null, now: number): void {
    this.run(
      "UPDATE attempts SET outcome = ?, error = ?, ended_at = ? WHERE task_id = ? AND attempt = ? AND outcome IS NULL",
      outcome,
      error,
      now,
      taskId,
      attempt,
    );
  }

  /** An attempt given up on whose work arrived after all: it is the one that finished the task. */
  reviveAttempt(taskId: string, attempt: number, now: number): void {
    this.run(
      `UPDATE attempts SET note = substr(coalesce(note || '; ', '') || 'had ended ' || coalesce(outcome, 'open') || coalesce(': ' || error, '') || ' before its callback arrived', 1, 4000),
                           outcome = 'done', error = NULL, ended_at = ?
       WHERE task_id = ? AND attempt = ? AND coalesce(outcome, '') <> 'done'`,
      now,
      taskId,
      attempt,
    );
  }

  /** A create that turned out never to have happened (429, budget): the attempt is forgotten. */
  dropAttempt(taskId: string, attempt: number): void {
    this.run("DELETE FROM attempts WHERE task_id = ? AND attempt = ?", taskId, attempt);
  }

  getAttempt(taskId: string, attempt: number): AttemptRow | null {
    return (
      (this.exec<AttemptRow & Record<string, SqlStorageValue>>("SELECT * FROM attempts WHERE task_id = ? AND attempt = ?", taskId, attempt)[0] as AttemptRow) ??
      null
    );
  }

  /** Adds to an attempt's history without changing its outcome (a late callback from it, say). */
  noteAttempt(taskId: string, attempt: number, note: string): void {
    this.run(
      "UPDATE attempts SET note = substr(coalesce(note || '; ', '') || ?, 1, 4000) WHERE task_id = ? AND attempt = ?",
      note,
      taskId,
      attempt,
    );
  }

  recentFailures(limit: number): AttemptRow[] {
    return this.exec<AttemptRow & Record<string, SqlStorageValue>>(
      "SELECT * FROM attempts WHERE outcome = 'failed' ORDER BY ended_at DESC LIMIT ?",
      limit,
    );
  }

  /** True when `fileId` already has a task in `phase` (re-planning after a redrive adds only new files). */
  hasTask(phase: string, fileId: number): boolean {
    return this.exec("SELECT 1 FROM tasks WHERE phase = ? AND file_id = ? LIMIT 1", phase, fileId).length > 0;
  }

  /**
   * Failed tasks of every phase back to retrying (their attempts kept, numbers rising), except
   * those that can never run (no output reserved). Counters follow. Returns how many, and the
   * earliest phase they are in.
   */
  redriveFailed(now: number): { tasks: number; phases: string[] } {
    const byPhase = this.exec<{ phase: string; n: number }>(
      "SELECT phase, COUNT(*) AS n FROM tasks WHERE state = 'failed' AND output_key NOT LIKE '(none:%' GROUP BY phase",
    );
    this.run(
      `UPDATE tasks SET state = 'retrying', next_at = ?, deadline_at = 0, worker_id = NULL, finished_at = NULL, updated_at = ?, attempt_base = attempt
       WHERE state = 'failed' AND output_key NOT LIKE '(none:%'`,
      now,
      now,
    );
    let tasks = 0;
    for (const { phase, n } of byPhase) {
      this.bumpCount(phase, "failed", -n);
      this.bumpCount(phase, "retrying", n);
      tasks += n;
    }
    return { tasks, phases: byPhase.map((p) => p.phase) };
  }

  // ---- events (what a live stream resumes from) ----------------------------------------

  /** Appends an event; keeps the latest `keep` so the table never grows with the batch. */
  addEvent(type: string, data: unknown, now: number, keep = 5000): number {
    this.run("INSERT INTO events (type, data, at) VALUES (?, ?, ?)", type, JSON.stringify(data), now);
    const id = this.exec<{ id: number }>("SELECT last_insert_rowid() AS id")[0].id;
    if (id % 100 === 0) this.run("DELETE FROM events WHERE id <= ?", id - keep);
    return id;
  }

  eventsAfter(id: number, limit: number): { id: number; type: string; data: string }[] {
    return this.exec<{ id: number; type: string; data: string }>("SELECT id, type, data FROM events WHERE id > ? ORDER BY id LIMIT ?", id, limit);
  }

  lastEventId(): number {
    return this.exec<{ id: number | null }>("SELECT MAX(id) AS id FROM events")[0].id ?? 0;
  }

  /** The latest tasks with warnings (pages skipped, say): an index range, newest first. */
  recentWarnings(limit: number): { task_id: string; warning: string }[] {
    const rows = this.exec<{ task_id: string; warnings_json: string }>(
      "SELECT task_id, warnings_json FROM tasks WHERE warnings_json IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
      limit,
    );
    return rows.flatMap((r) => (JSON.parse(r.warnings_json) as string[]).map((warning) => ({ task_id: r.task_id, warning }))).slice(0, limit);
  }

  attemptsOf(taskId: string): AttemptRow[] {
    return this.exec<AttemptRow & Record<string, SqlStorageValue>>(
      "SELECT * FROM attempts WHERE task_id = ? ORDER BY attempt",
      taskId,
    );
  }

  // ---- machines to destroy later (destroy failed, or created after the task closed) -----

  addOrphan(machineId: string, reason: string, now: number): void {
    this.run(
      "INSERT INTO orphan_machines (machine_id, reason, next_at) VALUES (?, ?, ?) ON CONFLICT (machine_id) DO NOTHING",
      machineId,
      reason,
      now,
    );
  }

  dueOrphans(now: number, limit: number): { machine_id: string; tries: number }[] {
    return this.exec<{ machine_id: string; tries: number }>(
      "SELECT machine_id, tries FROM orphan_machines WHERE next_at <= ? ORDER BY next_at LIMIT ?",
      now,
      limit,
    );
  }

  orphanDone(machineId: string): void {
    this.run("DELETE FROM orphan_machines WHERE machine_id = ?", machineId);
  }

  orphanRetry(machineId: string, nextAt: number): void {
    this.run("UPDATE orphan_machines SET tries = tries + 1, next_at = ? WHERE machine_id = ?", nextAt, machineId);
  }

  orphanCount(): number {
    return this.exec<{ n: number }>("SELECT COUNT(*) AS n FROM orphan_machines")[0].n;
  }

  // ---- pool workers ---------------------------------------------------------------------

  insertWorker(w: {
    worker_id: string;
    phase: string;
    now: number;
    check_at: number;
    limit_at: number;
    task_id?: string;
    attempt?: number;
    slots?: number;
    guest?: Guest;
  }): void {
    this.run(
      `INSERT INTO workers (worker_id, phase, state, created_at, check_at, limit_at, task_id, attempt, slots, cpu_kind, cpus, memory_mb)
       VALUES (?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      w.worker_id,
      w.phase,
      w.now,
      w.check_at,
      w.limit_at,
      w.task_id ?? null,
      w.attempt ?? 0,
      w.slots ?? 1,
      w.guest?.cpu_kind ?? null,
      w.guest?.cpus ?? 0,
      w.guest?.memory_mb ?? 0,
    );
  }

  getWorker(workerId: string): WorkerRow | null {
    return (this.exec<WorkerRow & Record<string, SqlStorageValue>>("SELECT * FROM workers WHERE worker_id = ?", workerId)[0] as WorkerRow) ?? null;
  }

  updateWorker(workerId: string, set: Partial<Omit<WorkerRow, "worker_id" | "phase">>): void {
    const before = set.state === "gone" || set.state === "live" ? this.getWorker(workerId) : null;
    if (before && before.state !== "gone" && set.state === "gone") {
      // A machine ends once: its time from create to now (the DO's clock) goes into the batch's totals.
      const now = Date.now();
      const ms = Math.max(0, now - before.created_at);
      set = { ...set, ended_at: now };
      const cost = before.cpu_kind ? (ms / 1000) * pricePerSecond({ cpu_kind: before.cpu_kind, cpus: before.cpus, memory_mb: before.memory_mb }) : 0;
      this.run(
        "UPDATE meta SET machine_ms = machine_ms + ?, machine_cost_usd = machine_cost_usd + ?, machines_ended = machines_ended + 1 WHERE id = 1",
        ms,
        cost,
      );
    }
    if (before && before.started_at === null && set.state === "live") set = { ...set, started_at: Date.now() };
    const entries = Object.entries(set);
    if (entries.length === 0) return;
    this.run(`UPDATE workers SET ${entries.map(([k]) => `${k} = ?`).join(", ")} WHERE worker_id = ?`, ...entries.map(([, v]) => v as SqlValue), workerId);
  }

  deleteWorker(workerId: string): void {
    this.run("DELETE FROM workers WHERE worker_id = ?", workerId);
  }

  /** Live machines (creating, booting, live): at most MAX_CONCURRENT_MACHINES rows. */
  liveWorkers(): WorkerRow[] {
    return this.exec<WorkerRow & Record<string, SqlStorageValue>>("SELECT * FROM workers WHERE state IN ('creating', 'booting', 'live')");
  }

  workersDue(now: number, limit: number): WorkerRow[] {
    const rows: WorkerRow[] = [];
    for (const state of ["creating", "booting", "live"] as const) {
      rows.push(
        ...this.exec<WorkerRow & Record<string, SqlStorageValue>>(
          "SELECT * FROM workers WHERE state = ? AND check_at <= ? ORDER BY check_at LIMIT ?",
          state,
          now,
          limit,
        ),
      );
    }
    return rows.slice(0, limit);
  }

  /** The open tasks a machine holds: its assigned task, or its leases. */
  heldBy(workerId: string): TaskRow[] {
    return LIVE_STATES.flatMap((state) =>
      this.exec<TaskRow & Record<string, SqlStorageValue>>("SELECT * FROM tasks WHERE state = ? AND worker_id = ?", state, workerId),
    );
  }

  /** Pool machines only (single-task machines have their task), per live state. */
  poolMachineCounts(): { creating: number; booting: number; live: number } {
    const count = (state: WorkerState) =>
      this.exec<{ n: number }>("SELECT COUNT(*) AS n FROM workers WHERE state = ? AND task_id IS NULL", state)[0].n;
    return { creating: count("creating"), booting: count("booting"), live: count("live") };
  }

  /** Machines not yet ended (at most MAX_CONCURRENT_MACHINES rows): for the running part of the cost. */
  unendedMachines(): { created_at: number; cpu_kind: "shared" | "performance" | null; cpus: number; memory_mb: number }[] {
    return this.exec<{ created_at: number; cpu_kind: "shared" | "performance" | null; cpus: number; memory_mb: number }>(
      "SELECT created_at, cpu_kind, cpus, memory_mb FROM workers WHERE state IN ('creating', 'booting', 'live')",
    );
  }

  databaseSize(): number {
    return this.sql.databaseSize;
  }
}
