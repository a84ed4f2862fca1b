// Attempts: one row per try of a task (its machine, outcome and error, and what happened after
// it ended), the history status and the failure list show. A row is written once, when its
// attempt ends: while it runs, the attempt is the task row (attempt, machine, region,
// attempt_started_at), so starting one writes nothing more (each row is billed).
import { Queries } from "./sql.ts";
import { LIVE_STATES, type TaskRow } from "./tasks.ts";

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
  /**
   * What the attempt's own callbacks came to: `error` (it reported an error) or `refused` (its
   * success failed the output checks). Either way it can never settle the task later.
   */
  verdict: "error" | "refused" | null;
}

/** The task's fields that describe its current attempt. */
export type CurrentAttempt = Pick<TaskRow, "task_id" | "attempt" | "machine_id" | "machine_name" | "worker_id" | "region" | "attempt_started_at" | "updated_at">;
type TaskAttempt = CurrentAttempt & Pick<TaskRow, "state" | "finished_at">;

export class AttemptQueries extends Queries {
  /**
   * Ends attempt `attempt` of the task: the current one (the task row's) is written with its
   * outcome; an earlier one, already written, keeps the outcome it ended with.
   */
  endAttempt(task: CurrentAttempt, attempt: number, outcome: string, error: string | null, now: number): void {
    // The current attempt that finishes its task is the task row itself (its machine, start and
    // finished_at; tasks_done indexes it for the timeline): no row of its own. A row already
    // written for it (it had ended, then its work arrived) is reviveAttempt's.
    if (attempt === task.attempt && outcome === "done") return;
    if (attempt === task.attempt) {
      this.db.run(
        `INSERT INTO attempts (task_id, attempt, machine_id, machine_name, region, outcome, error, started_at, ended_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (task_id, attempt) DO UPDATE SET outcome = excluded.outcome, error = excluded.error, ended_at = excluded.ended_at,
           machine_id = coalesce(attempts.machine_id, excluded.machine_id), region = coalesce(attempts.region, excluded.region)
         WHERE attempts.outcome IS NULL`,
        task.task_id,
        attempt,
        task.machine_id,
        task.machine_name ?? task.worker_id ?? "",
        task.region,
        outcome,
        error,
        task.attempt_started_at ?? task.updated_at,
        now,
      );
      return;
    }
    this.db.run(
      "UPDATE attempts SET outcome = ?, error = ?, ended_at = ? WHERE task_id = ? AND attempt = ? AND outcome IS NULL",
      outcome,
      error,
      now,
      task.task_id,
      attempt,
    );
  }

  /** The machine of an attempt that already ended (created after its task moved on): its history says which. */
  recordMachine(taskId: string, attempt: number, machineId: string, region: string | null): void {
    this.db.run("UPDATE attempts SET machine_id = ?, region = ? WHERE task_id = ? AND attempt = ? AND machine_id IS NULL", machineId, region, taskId, attempt);
  }

  /**
   * Ends every attempt still open as `cancelled` with `reason` (a reset, or a batch stopped FAILED
   * or ERROR): no attempt of a stopped batch is left running in its history. An open attempt is its
   * live task's row (a range of tasks_state_id per live state: at most the machines' slots), written
   * now as it ends; open rows of batches from before migration 12 are ended too (attempts_failed,
   * outcome IS NULL). Returns the rows written.
   */
  cancelOpenAttempts(reason: string, now: number): number {
    let written = 0;
    for (const state of LIVE_STATES) {
      written += this.db.run(
        `INSERT INTO attempts (task_id, attempt, machine_id, machine_name, region, outcome, error, started_at, ended_at)
         SELECT task_id, attempt, machine_id, coalesce(machine_name, worker_id, ''), region, 'cancelled', ?, coalesce(attempt_started_at, updated_at), ?
         FROM tasks WHERE state = ? AND attempt > 0
         ON CONFLICT (task_id, attempt) DO UPDATE SET outcome = 'cancelled', error = excluded.error, ended_at = excluded.ended_at WHERE attempts.outcome IS NULL`,
        reason,
        now,
        state,
      );
    }
    return written + this.db.run("UPDATE attempts SET outcome = 'cancelled', error = ?, ended_at = ? WHERE outcome IS NULL", reason, now);
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

  /** A create that turned out never to have happened (429, budget): the attempt is forgotten (rows of batches from before migration 12). */
  dropAttempt(taskId: string, attempt: number): void {
    this.db.run("DELETE FROM attempts WHERE task_id = ? AND attempt = ?", taskId, attempt);
  }

  /**
   * Attempt `attempt` of the task as its history has it: an ended attempt's row, or the task row's
   * for the attempt running now or the one that finished it; null for an attempt that never ran.
   */
  getAttempt(task: TaskAttempt, attempt: number): AttemptRow | null {
    // One row by its key (a callback's path); the task row stands for the attempt running or done.
    const row = this.db.exec<AttemptRow & Record<string, SqlStorageValue>>("SELECT * FROM attempts WHERE task_id = ? AND attempt = ?", task.task_id, attempt)[0];
    return row ?? (attempt === task.attempt ? currentAttempt(task) : null);
  }

  /** Records what the attempt's own callback came to (an error it reported, a success refused): it never wins later. Its row is written (it has ended). */
  setVerdict(taskId: string, attempt: number, verdict: "error" | "refused"): void {
    this.db.run("UPDATE attempts SET verdict = ? WHERE task_id = ? AND attempt = ? AND verdict IS NULL", verdict, taskId, attempt);
  }

  /** Adds to an (ended) attempt's history without changing its outcome (a late callback from it, say). */
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

  /** Every attempt of the task: the ended ones' rows, then the one running now or the one that finished it (from the task row). */
  attemptsOf(task: TaskAttempt): AttemptRow[] {
    const rows: AttemptRow[] = this.db.exec<AttemptRow & Record<string, SqlStorageValue>>("SELECT * FROM attempts WHERE task_id = ? ORDER BY attempt", task.task_id);
    const current = currentAttempt(task);
    if (current && !rows.some((r) => r.attempt === current.attempt)) rows.push(current);
    return rows;
  }
}

/** The attempt running now or the one that finished its task, as the task row holds it (no row of its own); null otherwise. */
function currentAttempt(task: TaskAttempt): AttemptRow | null {
  const live = task.state === "creating" || task.state === "booting" || task.state === "running";
  const done = task.state === "done";
  if (!(live || done) || task.attempt <= 0) return null;
  return {
    task_id: task.task_id,
    attempt: task.attempt,
    machine_id: task.machine_id,
    machine_name: task.machine_name ?? task.worker_id ?? "",
    region: task.region,
    outcome: done ? "done" : null,
    error: null,
    started_at: task.attempt_started_at ?? task.updated_at,
    ended_at: done ? task.finished_at : null,
    note: null,
    verdict: null,
  };
}
