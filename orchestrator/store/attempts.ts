// Attempts: one row per try of a task (its machine, outcome and error, and what happened after
// it ended), the history status and the failure list show.
import { Queries } from "./sql.ts";

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

export class AttemptQueries extends Queries {
  startAttempt(a: { task_id: string; attempt: number; machine_name: string; now: number }): void {
    this.db.run(
      `INSERT INTO attempts (task_id, attempt, machine_name, started_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (task_id, attempt) DO NOTHING`,
      a.task_id,
      a.attempt,
      a.machine_name,
      a.now,
    );
  }

  recordMachine(taskId: string, attempt: number, machineId: string, region: string | null): void {
    this.db.run("UPDATE attempts SET machine_id = ?, region = ? WHERE task_id = ? AND attempt = ?", machineId, region, taskId, attempt);
  }

  endAttempt(taskId: string, attempt: number, outcome: string, error: string | null, now: number): void {
    this.db.run(
      "UPDATE attempts SET outcome = ?, error = ?, ended_at = ? WHERE task_id = ? AND attempt = ? AND outcome IS NULL",
      outcome,
      error,
      now,
      taskId,
      attempt,
    );
  }

  /**
   * Ends every attempt still open as `cancelled` with `reason` (a reset, or a batch stopped FAILED
   * or ERROR): no attempt of a stopped batch is left running in its history. One index range
   * (attempts_failed, outcome IS NULL): at most the batch's live machines' attempts.
   */
  cancelOpenAttempts(reason: string, now: number): number {
    return this.db.run("UPDATE attempts SET outcome = 'cancelled', error = ?, ended_at = ? WHERE outcome IS NULL", reason, now);
  }

  /** An attempt given up on whose work arrived after all: it is the one that finished the task. */
  reviveAttempt(taskId: string, attempt: number, now: number): void {
    this.db.run(
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
    this.db.run("DELETE FROM attempts WHERE task_id = ? AND attempt = ?", taskId, attempt);
  }

  getAttempt(taskId: string, attempt: number): AttemptRow | null {
    return (
      (this.db.exec<AttemptRow & Record<string, SqlStorageValue>>("SELECT * FROM attempts WHERE task_id = ? AND attempt = ?", taskId, attempt)[0] as AttemptRow) ??
      null
    );
  }

  /** Adds to an attempt's history without changing its outcome (a late callback from it, say). */
  noteAttempt(taskId: string, attempt: number, note: string): void {
    this.db.run(
      "UPDATE attempts SET note = substr(coalesce(note || '; ', '') || ?, 1, 4000) WHERE task_id = ? AND attempt = ?",
      note,
      taskId,
      attempt,
    );
  }

  /** The latest failed attempts with their task's input (attempts_failed index, then one task row each). */
  recentFailures(limit: number): (AttemptRow & { input_key: string | null })[] {
    return this.db.exec<AttemptRow & { input_key: string | null } & Record<string, SqlStorageValue>>(
      `SELECT a.*, t.input_key FROM attempts a LEFT JOIN tasks t ON t.task_id = a.task_id
       WHERE a.outcome = 'failed' ORDER BY a.ended_at DESC LIMIT ?`,
      limit,
    );
  }

  attemptsOf(taskId: string): AttemptRow[] {
    return this.db.exec<AttemptRow & Record<string, SqlStorageValue>>(
      "SELECT * FROM attempts WHERE task_id = ? ORDER BY attempt",
      taskId,
    );
  }
}
