-- The batch index: one row per batch, written by its BatchDO at status transitions and at most
-- every few seconds of progress. GET /batches reads it newest first with a (started_at, batch_id) cursor.
CREATE TABLE batches (
  batch_id TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  mode TEXT NOT NULL,
  tasks_total INTEGER NOT NULL DEFAULT 0,
  tasks_completed INTEGER NOT NULL DEFAULT 0,
  tasks_failed INTEGER NOT NULL DEFAULT 0,
  started_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  completed_at INTEGER,
  error TEXT,
  -- When the writer read the DO's state: an older observation never overwrites a newer one.
  observed_at INTEGER NOT NULL,
  -- Upserts of this row (the "D1 writes per batch" figure).
  writes INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX batches_newest ON batches (started_at DESC, batch_id DESC);
CREATE INDEX batches_status_newest ON batches (status, started_at DESC, batch_id DESC);
