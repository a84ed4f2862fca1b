// The batch's SQLite schema as numbered migrations, applied once each in order by schema.ts
// (cloudflare/actors style). Append-only: a batch created by an earlier deploy has run every
// migration up to its own last, so a change is a new entry at the end, never an edit of one
// that shipped. Each entry's number is its index + 1.

export const MIGRATIONS: string[] = [
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
  // 8: the batch's pipeline (see BatchMeta.pipeline_json), and what each phase's ended machines cost
  // (one row per phase, kept as machines end, so status never sums machine rows).
  `ALTER TABLE meta ADD COLUMN pipeline_json TEXT;
   CREATE TABLE phase_costs (
     phase TEXT PRIMARY KEY,
     machine_ms INTEGER NOT NULL DEFAULT 0,
     cost_usd REAL NOT NULL DEFAULT 0,
     ended INTEGER NOT NULL DEFAULT 0,
     last_guest TEXT
   ) WITHOUT ROWID;`,
  // 9: a manifest directory's processing_config stored once, its files pointing at it (a copy on
  // every file made a 250-entry page past the 2 MB value limit at ~8 KB of config); the final file
  // list written to R2 as an object, part by part across alarms (engine/file-list.ts).
  `CREATE TABLE directories (
     idx INTEGER PRIMARY KEY,
     path TEXT NOT NULL,
     config_json TEXT
   );
   ALTER TABLE files ADD COLUMN dir_idx INTEGER;
   CREATE TABLE file_lists (
     redrive INTEGER PRIMARY KEY,
     key TEXT NOT NULL,
     upload_id TEXT,
     after_id INTEGER NOT NULL DEFAULT 0,
     carry BLOB,
     entries INTEGER NOT NULL DEFAULT 0,
     bytes INTEGER NOT NULL DEFAULT 0,
     parts INTEGER NOT NULL DEFAULT 0,
     etag TEXT,
     checksum TEXT,
     written_at INTEGER
   );
   CREATE TABLE file_list_parts (
     redrive INTEGER NOT NULL,
     part INTEGER NOT NULL,
     etag TEXT NOT NULL,
     sha256 BLOB NOT NULL,
     PRIMARY KEY (redrive, part)
   ) WITHOUT ROWID;`,
  // 10: credentials die with their purpose — the batch's epoch (raised by every reset and redrive;
  // a machine credential of an earlier epoch is refused), and what an attempt said about itself
  // (an attempt that reported an error, or whose success failed its checks, never wins later).
  `ALTER TABLE meta ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE attempts ADD COLUMN verdict TEXT;`,
  // 11: the fleet — the batch's priority, what the fleet last answered it, what Fly refused it, a
  // phase paused on a request Fly calls bad; when a retired machine is destroyed if it has not exited.
  `ALTER TABLE meta ADD COLUMN priority REAL NOT NULL DEFAULT 1;
   ALTER TABLE meta ADD COLUMN fleet_json TEXT;
   ALTER TABLE meta ADD COLUMN fly_refusals_json TEXT;
   ALTER TABLE meta ADD COLUMN paused_error TEXT;
   ALTER TABLE meta ADD COLUMN paused_until INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE meta ADD COLUMN pause_probes INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE orphan_machines ADD COLUMN destroy_at INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX workers_machine ON workers (machine_id);`,
  // 12: fewer rows written per task (issue 23; DO SQLite bills every row and index entry written,
  // developers.cloudflare.com/durable-objects/platform/pricing). Phase counters become one row
  // per phase (a task's move rewrites one row, not two) that also keeps the files a phase's
  // callbacks added and the CPU-seconds and megapixels its machines reported (sizing learns from
  // them); the ready index holds only waiting tasks; live tasks (at most the machines' slots) are
  // found through tasks_state_id, so leases and heartbeats rewrite no deadline or worker index;
  // attempts are written once, when they end, and not at all for the attempt that finishes its
  // task (the open one and that one are the task row: attempt_started_at, finished_at; tasks_done
  // gives the timeline the latest). And what the all-in cost in /status needs:
  // the tally's attempts, outputs and their bytes; the batch's mode request (auto: the sizing
  // chooses single-task or pool); the Durable Object's rows written and requests; each machine's region.
  `CREATE TABLE phase_tally (
     phase TEXT PRIMARY KEY,
     pending INTEGER NOT NULL DEFAULT 0,
     retrying INTEGER NOT NULL DEFAULT 0,
     creating INTEGER NOT NULL DEFAULT 0,
     booting INTEGER NOT NULL DEFAULT 0,
     running INTEGER NOT NULL DEFAULT 0,
     done INTEGER NOT NULL DEFAULT 0,
     failed INTEGER NOT NULL DEFAULT 0,
     files_added INTEGER NOT NULL DEFAULT 0,
     attempts INTEGER NOT NULL DEFAULT 0,
     outputs INTEGER NOT NULL DEFAULT 0,
     output_bytes INTEGER NOT NULL DEFAULT 0,
     measured_tasks INTEGER NOT NULL DEFAULT 0,
     measured_cpu_s REAL NOT NULL DEFAULT 0,
     measured_megapixels REAL NOT NULL DEFAULT 0,
     measured_bytes INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;
   INSERT INTO phase_tally (phase, pending, retrying, creating, booting, running, done, failed)
     SELECT phase,
            SUM(CASE state WHEN 'pending' THEN n ELSE 0 END), SUM(CASE state WHEN 'retrying' THEN n ELSE 0 END),
            SUM(CASE state WHEN 'creating' THEN n ELSE 0 END), SUM(CASE state WHEN 'booting' THEN n ELSE 0 END),
            SUM(CASE state WHEN 'running' THEN n ELSE 0 END), SUM(CASE state WHEN 'done' THEN n ELSE 0 END),
            SUM(CASE state WHEN 'failed' THEN n ELSE 0 END)
     FROM phase_counts GROUP BY phase;
   DROP TABLE phase_counts;
   DROP INDEX tasks_ready;
   DROP INDEX tasks_deadline;
   DROP INDEX tasks_worker;
   CREATE INDEX tasks_pending ON tasks (next_at) WHERE state = 'pending';
   CREATE INDEX tasks_retrying ON tasks (next_at) WHERE state = 'retrying';
   CREATE INDEX tasks_done ON tasks (finished_at) WHERE state = 'done';
   ALTER TABLE tasks ADD COLUMN attempt_started_at INTEGER;
   UPDATE tasks SET attempt_started_at = (SELECT started_at FROM attempts a WHERE a.task_id = tasks.task_id AND a.attempt = tasks.attempt) WHERE state IN ('creating', 'booting', 'running');
   ALTER TABLE meta ADD COLUMN mode_request TEXT;
   ALTER TABLE meta ADD COLUMN do_rows_written INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE meta ADD COLUMN do_requests INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE meta ADD COLUMN worker_requests INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE workers ADD COLUMN region TEXT;`,
];
