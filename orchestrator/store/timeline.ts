// The machine timeline's rows (GET /status/:batchId/timeline): the attempts still open and the
// latest ended ones, each an index range (attempts_failed is on outcome, ended_at; an open attempt
// is its live task's row, tasks_state_id; the attempt that finished a task is its row, tasks_done),
// so one read costs the same at 100 or 300,000 tasks.
import { Queries } from "./sql.ts";
import { LIVE_STATES } from "./tasks.ts";

export interface TimelineAttempt {
  task_id: string;
  attempt: number;
  machine_id: string | null;
  machine_name: string;
  outcome: string | null;
  error: string | null;
  started_at: number;
  ended_at: number | null;
}

/** Every outcome an attempt ends with (outcomes.ts, attempts.ts cancelAttempts); open attempts have none. */
export const ENDED_OUTCOMES = ["done", "failed", "superseded", "cancelled"] as const;

export class TimelineQueries extends Queries {
  /** Open attempts (at most `limit`), then the `limit` most recently ended of each outcome, newest first. */
  recentAttempts(limit: number): { open: TimelineAttempt[]; ended: TimelineAttempt[] } {
    const columns = "task_id, attempt, machine_id, machine_name, outcome, error, started_at, ended_at";
    // Attempts are written when they end (store/attempts.ts): an open one is its task's current
    // attempt, while the task is live; open rows are only those of batches from before migration 12.
    const open = [
      ...LIVE_STATES.flatMap((state) =>
        this.db.exec<TimelineAttempt & Record<string, SqlStorageValue>>(
          `SELECT task_id, attempt, machine_id, coalesce(machine_name, worker_id, '') AS machine_name, NULL AS outcome, NULL AS error,
                  coalesce(attempt_started_at, updated_at) AS started_at, NULL AS ended_at
           FROM tasks WHERE state = ? AND attempt > 0 LIMIT ?`,
          state,
          limit,
        ),
      ),
      ...this.db.exec<TimelineAttempt & Record<string, SqlStorageValue>>(`SELECT ${columns} FROM attempts WHERE outcome IS NULL LIMIT ?`, limit),
    ].slice(0, limit);
    const ended = ENDED_OUTCOMES.flatMap((outcome) =>
      this.db.exec<TimelineAttempt & Record<string, SqlStorageValue>>(`SELECT ${columns} FROM attempts WHERE outcome = ? ORDER BY ended_at DESC LIMIT ?`, outcome, limit),
    );
    // The attempt that finished its task has no row of its own (store/attempts.ts): the latest done
    // tasks (tasks_done, newest first) whose current attempt has none.
    ended.push(
      ...this.db.exec<TimelineAttempt & Record<string, SqlStorageValue>>(
        `SELECT task_id, attempt, machine_id, coalesce(machine_name, worker_id, '') AS machine_name, 'done' AS outcome, NULL AS error,
                coalesce(attempt_started_at, updated_at) AS started_at, finished_at AS ended_at
         FROM tasks t WHERE state = 'done' AND attempt > 0
           AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.task_id AND a.attempt = t.attempt)
         ORDER BY finished_at DESC LIMIT ?`,
        limit,
      ),
    );
    ended.sort((a, b) => (b.ended_at ?? 0) - (a.ended_at ?? 0));
    return { open, ended: ended.slice(0, limit) };
  }
}
