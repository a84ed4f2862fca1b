// How a task's attempt ends: a callback (checked against the attempt and epoch its credential
// names and against the objects it claims to have written: engine/verify.ts), or a failure retried
// within the phase's budget. Output reservations are engine/reserve.ts.
import { describeZodError, type FileEntry, Performance } from "../../shared/contracts.ts";
import { backoffMs } from "../../shared/backoff.ts";
import { log } from "../log.ts";
import { getPhase } from "../phases/index.ts";
import type { AttemptRow, BatchMeta, TallyExtra, TaskRow } from "../store/index.ts";
import { type Engine, openCount, RETIRE_GRACE_MS, taskView } from "./context.ts";
import { machineDone, machineGone, retireMachine } from "./machines.ts";
import { type Credential, staleCredential } from "./reserve.ts";
import { verifyOutputs } from "./verify.ts";
import { logsCommand } from "./views.ts";

/** Ends the task's current attempt as failed: retried with backoff, or FAILED for good. Call inside a transaction. */
export function failAttempt(e: Engine, meta: BatchMeta, task: TaskRow, error: string, retryable: boolean, now: number): void {
  const limits = e.limits(getPhase(task.phase));
  e.store.endAttempt(task, task.attempt, "failed", error, now);
  const fields = { batch_id: meta.batch_id, task_id: task.task_id, phase: task.phase, attempt: task.attempt, machine_id: task.machine_id, error };
  const more = retryable && task.attempt - task.attempt_base < limits.maxAttempts;
  if (more) {
    e.store.moveTask(task, "retrying", { error, deadline_at: 0, worker_id: null, next_at: now + backoffMs(task.attempt) }, now);
    log("DO", "task_retry", fields);
  } else {
    const reason = retryable ? `${error} (after ${task.attempt - task.attempt_base} attempts)` : error;
    e.store.moveTask(task, "failed", { error: reason, deadline_at: 0, worker_id: null, finished_at: now }, now);
    log("DO", "task_failed", fields);
  }
  const logs = logsCommand(e, task.machine_id);
  e.emit("task_failed", { task_id: task.task_id, input_key: task.input_key, attempt: task.attempt, machine_id: task.machine_id, reason: error, final: !more, logs });
}

export interface CallbackReply {
  code: 200 | 400 | 401 | 404 | 409;
  body: {
    ok?: boolean;
    outcome?: "done" | "error_recorded" | "ignored";
    reason?: "duplicate" | "earlier_phase" | "superseded" | "already_reported";
    task_status?: string;
    late?: boolean;
    error?: string;
    batch_id?: string;
    task_id?: string;
  };
}

const OPEN = new Set(["creating", "booting", "running"]);

/**
 * A callback from attempt `credential.attempt` of `taskId` (the attempt its credential names, minted
 * in `credential.epoch`). A credential of an earlier epoch (the batch was reset or redriven since)
 * is refused. Only the current, open attempt can fail the task; a superseded attempt's error is
 * recorded on its own history, and its success counts only when every output it names checks out.
 * An attempt that reported an error, or whose success failed the checks, never settles the task
 * later: its callbacks cost no storage read, and a success after its own error destroys its
 * machine. Replays change nothing and read no storage.
 */
export async function settleCallback(e: Engine, taskId: string, credential: Pick<Credential, "attempt" | "epoch">, raw: unknown): Promise<CallbackReply> {
  const attempt = credential.attempt;
  const meta = e.store.getMeta();
  if (!meta) return { code: 404, body: { error: "unknown batch" } };
  let task = e.store.getTask(taskId);
  if (!task) return { code: 404, body: { error: "unknown task", batch_id: meta.batch_id, task_id: taskId } };
  const stale = staleCredential(meta, task, credential);
  if (stale) return { code: stale.code, body: { error: stale.error, batch_id: meta.batch_id, task_id: taskId } };
  const row = e.store.getAttempt(task, attempt);
  const phase = getPhase(task.phase);
  const parsed = phase.callback.safeParse(raw);
  if (!parsed.success) return { code: 400, body: { error: `invalid body: ${describeZodError(parsed.error)}` } };
  const fields = { batch_id: meta.batch_id, task_id: taskId, phase: task.phase, attempt };
  if (task.state === "done" || task.state === "failed") {
    const reason = task.phase === meta.phase ? "duplicate" : "earlier_phase";
    // An attempt another one beat to the task (ended superseded) reports its error only now: a first
    // word, not a replay — it goes on its own history, as while the task was open.
    const verdict = phase.result(taskView(meta, { ...task, attempt }), parsed.data);
    if (!verdict.ok && e.store.getAttempt(task, attempt)?.outcome === "superseded") {
      e.store.noteAttempt(taskId, attempt, `late callback: ${verdict.error}`);
      log("Callback", "superseded_error_recorded", { ...fields, state: task.state, error: verdict.error });
      return { code: 200, body: { ok: true, outcome: "ignored", reason: "superseded", task_status: task.state } };
    }
    log("Callback", "ignored", { ...fields, reason, state: task.state });
    return { code: 200, body: { ok: true, outcome: "ignored", reason, task_status: task.state } };
  }
  const outcome = phase.result(taskView(meta, { ...task, attempt }), parsed.data);
  if (row && row.verdict !== null) {
    const reply = alreadyReported(e, meta, task, row, outcome.ok, fields);
    if (reply.code === 409) await e.wake(Date.now()); // its machine is destroyed at once
    return reply;
  }
  const isCurrent = (t: TaskRow) => t.attempt === attempt && OPEN.has(t.state);
  let verdict: { ok: true; add: FileEntry[] } | { ok: false; error: string; retryable: boolean; refused?: boolean };
  if (!outcome.ok) verdict = outcome;
  else {
    const checked = await verifyOutputs(e, phase, task, outcome.add);
    verdict = checked.ok ? { ok: true, add: checked.files } : { ok: false, error: checked.error, retryable: true, refused: true };
    // The checks read storage: the task may have moved meanwhile.
    task = e.store.getTask(taskId)!;
    if (task.state === "done" || task.state === "failed") {
      return { code: 200, body: { ok: true, outcome: "ignored", reason: "duplicate", task_status: task.state } };
    }
  }
  const now = Date.now();
  const current = isCurrent(task);
  if (!verdict.ok && !current) {
    // A superseded attempt cannot fail the live one: its error goes on its own history, and it never wins later.
    e.store.transaction(() => {
      e.store.noteAttempt(taskId, attempt, `late callback: ${verdict.error}`);
      e.store.setVerdict(taskId, attempt, verdict.refused ? "refused" : "error");
    });
    log("Callback", "superseded_error_recorded", { ...fields, current_attempt: task.attempt, error: verdict.error });
    return { code: 200, body: { ok: true, outcome: "ignored", reason: "superseded", task_status: task.state } };
  }
  const settled = task;
  e.store.transaction(() => {
    const holder = settled.worker_id ? e.store.getWorker(settled.worker_id) : null;
    if (verdict.ok) {
      if (outcome.ok) for (const key of outcome.remove ?? []) e.store.removeFile(key);
      // The files, the task's move, its phase's counters and what its machine measured: one tally row.
      const files = e.store.insertFiles(verdict.add, { tallied: true });
      e.store.moveTask(
        settled,
        "done",
        { error: null, finished_at: now, deadline_at: 0, worker_id: null, warnings_json: outcome.ok && outcome.warnings?.length ? JSON.stringify(outcome.warnings) : null },
        now,
        { files, outputs: { count: verdict.add.length, bytes: verdict.add.reduce((n, f) => n + f.file_size, 0) }, measured: measuredOf(parsed.data, settled) },
      );
      if (attempt !== settled.attempt) {
        e.store.endAttempt(settled, settled.attempt, "superseded", `attempt ${attempt} finished the task first`, now);
      }
      e.store.endAttempt(settled, attempt, "done", null, now);
      // An attempt that had ended (failed, lapsed) before its work arrived: it is the one that finished.
      e.store.reviveAttempt(taskId, attempt, now);
      if (outcome.ok && outcome.inputFields) e.store.annotateFile(settled.input_key, outcome.inputFields);
    } else {
      failAttempt(e, meta, settled, verdict.error, verdict.retryable, now);
      e.store.setVerdict(taskId, attempt, verdict.refused ? "refused" : "error");
    }
    // A single-task machine is done with its one task (it exits by itself when it called back;
    // when another attempt settled the task, the current machine is moot and is destroyed). One
    // that reported an error or a refused success is destroyed unless it has exited within the grace.
    if (holder && holder.task_id && holder.state !== "gone") {
      if (holder.attempt !== attempt) retireMachine(e, holder, "task settled by an earlier attempt", now);
      else if (!verdict.ok) retireMachine(e, holder, `attempt ${attempt} ended: ${verdict.error}`.slice(0, 500), now, RETIRE_GRACE_MS);
      // Its own attempt called back: it exits by itself, and counts in the fleet until seen gone.
      else machineDone(e, holder, now);
    }
  });
  log("Callback", verdict.ok ? "task_done" : "task_error", {
    ...fields,
    ...(verdict.ok ? { outputs: verdict.add.length, late: !current } : { error: verdict.error, retryable: verdict.retryable }),
  });
  // Single-task mode: the freed slot wants a machine now. A pool machine leases its next task by
  // itself, so the alarm (a billed row to set) is brought forward only when a failure must be
  // retried or the phase may be finished.
  if (!meta.pool || !verdict.ok || openCount(e.store.phaseCounts(settled.phase)) === 0) await e.wake(now);
  return { code: 200, body: { ok: true, outcome: verdict.ok ? "done" : "error_recorded", late: !current } };
}

/** CPU-seconds and megapixels a success callback reports (fly-worker's process accounting), for sizing to learn from. */
function measuredOf(body: unknown, task: TaskRow): TallyExtra["measured"] {
  // The phase's callback schema checked the body; `performance` is the shared contract's (cpu_s ≥ 0, megapixels > 0).
  const perf = Performance.safeParse((body as { performance?: unknown }).performance);
  if (!perf.success || perf.data.cpu_s === undefined || perf.data.megapixels === undefined || task.size_bytes <= 0) return undefined;
  return { cpuS: perf.data.cpu_s, megapixels: perf.data.megapixels, bytes: task.size_bytes };
}

/**
 * A callback from an attempt that already reported an error (or whose success was refused): it
 * changes nothing and reads no storage. A success after its own error is not a machine telling the
 * truth — the machine that sent it is destroyed at once.
 */
function alreadyReported(e: Engine, meta: BatchMeta, task: TaskRow, row: AttemptRow, success: boolean, fields: Record<string, unknown>): CallbackReply {
  // An error again, or its refused success again (a retry of the same callback): a copy, nothing more.
  if (!success || row.verdict === "refused") {
    log("Callback", "ignored", { ...fields, reason: "already_reported", verdict: row.verdict });
    return { code: 200, body: { ok: true, outcome: "ignored", reason: "already_reported", task_status: task.state } };
  }
  const now = Date.now();
  const said = "reported an error";
  const reason = `attempt ${row.attempt} sent a success after it ${said}`;
  e.store.transaction(() => {
    e.store.noteAttempt(task.task_id, row.attempt, `refused a success after it ${said}`);
    // Its machine row (a pool machine's too: whatever else it holds is retried elsewhere), then the machine itself.
    const worker = e.store.getWorker(row.machine_name);
    if (worker && worker.state !== "gone" && (worker.machine_id === null || worker.machine_id === row.machine_id)) machineGone(e, meta, worker, reason, now);
    if (row.machine_id) e.store.orphanNow(row.machine_id, reason, now);
  });
  log("Callback", "success_after_report_refused", { ...fields, verdict: row.verdict, machine_id: row.machine_id });
  return { code: 409, body: { error: `attempt ${row.attempt} of ${task.task_id} already ${said}; it cannot settle the task (its machine is destroyed)` } };
}
