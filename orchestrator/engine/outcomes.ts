// How a task's attempt ends: a callback (checked against the attempt its credential names and
// against the objects it claims to have written), a failure retried within the phase's budget,
// and the reservation of extra output keys an attempt asks for before it writes them.
import { describeZodError, type FileEntry, Performance } from "../../shared/contracts.ts";
import { backoffMs } from "../../shared/backoff.ts";
import { log } from "../log.ts";
import { getPhase } from "../phases/index.ts";
import type { BatchMeta, TallyExtra, TaskRow } from "../store/index.ts";
import { keyProblem } from "../../shared/keys.ts";
import { presign } from "./access.ts";
import { type Engine, openCount, taskView } from "./context.ts";
import { outputAccess, overwrites, outputContentTypeOf } from "./outputs.ts";
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
  code: 200 | 400 | 401 | 404;
  body: {
    ok?: boolean;
    outcome?: "done" | "error_recorded" | "ignored";
    reason?: "duplicate" | "earlier_phase" | "superseded";
    task_status?: string;
    late?: boolean;
    error?: string;
    batch_id?: string;
    task_id?: string;
  };
}

const OPEN = new Set(["creating", "booting", "running"]);

/**
 * A callback from attempt `attempt` of `taskId` (the attempt its credential names). Only the
 * current, open attempt can fail the task; a superseded attempt's error is recorded on its own
 * history, and its success counts only when every output it names checks out. Replays change nothing.
 */
export async function settleCallback(e: Engine, taskId: string, attempt: number, raw: unknown): Promise<CallbackReply> {
  const meta = e.store.getMeta();
  if (!meta) return { code: 404, body: { error: "unknown batch" } };
  let task = e.store.getTask(taskId);
  if (!task) return { code: 404, body: { error: "unknown task", batch_id: meta.batch_id, task_id: taskId } };
  // Attempts 1…task.attempt all began (a create that never happened gives its number back).
  if (attempt < 1 || attempt > task.attempt) {
    return { code: 401, body: { error: `attempt ${attempt} of ${taskId} never ran`, batch_id: meta.batch_id, task_id: taskId } };
  }
  const phase = getPhase(task.phase);
  const parsed = phase.callback.safeParse(raw);
  if (!parsed.success) return { code: 400, body: { error: `invalid body: ${describeZodError(parsed.error)}` } };
  const fields = { batch_id: meta.batch_id, task_id: taskId, phase: task.phase, attempt };
  if (task.state === "done" || task.state === "failed") {
    const reason = task.phase === meta.phase ? "duplicate" : "earlier_phase";
    log("Callback", "ignored", { ...fields, reason, state: task.state });
    return { code: 200, body: { ok: true, outcome: "ignored", reason, task_status: task.state } };
  }
  const isCurrent = (t: TaskRow) => t.attempt === attempt && OPEN.has(t.state);
  const outcome = phase.result(taskView(meta, { ...task, attempt }), parsed.data);
  let verdict: { ok: true; add: FileEntry[] } | { ok: false; error: string; retryable: boolean };
  if (!outcome.ok) verdict = outcome;
  else {
    const problem = await verifyOutputs(e, task, outcome.add);
    verdict = problem ? { ok: false, error: problem, retryable: true } : { ok: true, add: outcome.add };
    // The checks read storage: the task may have moved meanwhile.
    task = e.store.getTask(taskId)!;
    if (task.state === "done" || task.state === "failed") {
      return { code: 200, body: { ok: true, outcome: "ignored", reason: "duplicate", task_status: task.state } };
    }
  }
  const now = Date.now();
  const current = isCurrent(task);
  if (!verdict.ok && !current) {
    // A superseded attempt cannot fail the live one: its error goes on its own history.
    e.store.noteAttempt(taskId, attempt, `late callback: ${verdict.error}`);
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
    }
    // A single-task machine is done with its one task (it exits by itself when it called back;
    // when another attempt settled the task, the current machine is moot and is destroyed).
    if (holder && holder.task_id && holder.state !== "gone") {
      e.store.updateWorker(holder.worker_id, { state: "gone" });
      if (holder.attempt !== attempt && holder.machine_id) e.store.addOrphan(holder.machine_id, "task settled by an earlier attempt", now);
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

/** Each reported output must be a key reserved for this task and exist with the reported size. */
async function verifyOutputs(e: Engine, task: TaskRow, outputs: FileEntry[]): Promise<string | null> {
  const reserved = new Map(e.store.outputsOf(task.task_id).map((o) => [o.key, o.page]));
  for (const [i, o] of outputs.entries()) {
    if (reserved.has(o.r2_key)) continue;
    // Images on the old contract (opt-in) derive page keys themselves: reserve them now if free.
    const legacy = e.config.MACHINE_STORAGE === "legacy-keys" && e.store.reserveOutput(o.r2_key, task.task_id, i + 1);
    if (!legacy) return `output ${o.r2_key} was not reserved for ${task.task_id}`;
  }
  const store = e.objects();
  const heads = await Promise.all(outputs.map(async (o) => ({ o, head: await store.head(o.r2_key) })));
  for (const { o, head } of heads) {
    if (!head) return `output ${o.r2_key} does not exist`;
    if (head.size !== o.file_size) return `output ${o.r2_key} is ${head.size} bytes, not the ${o.file_size} reported`;
  }
  return null;
}

export type ReserveReply =
  | { code: 200; body: { batch_id: string; task_id: string; attempt: number; outputs: { page: number; r2_key: string; url: string; headers: Record<string, string> }[] } }
  | { code: 401 | 404 | 409 | 400; body: { error: string } };

/**
 * Reserves keys for pages 2…`pages` of a task's output (page 1 was reserved at plan time), each
 * the first of the phase's candidates that no file, object or other task has, and answers a
 * presigned PUT for each with the headers it signs (outputs.ts outputAccess: an already reserved
 * key — a retry's — is checked again in storage). Idempotent: asking again returns the same keys.
 */
export async function reserveOutputs(e: Engine, taskId: string, attempt: number, pages: number, expiresAt: number): Promise<ReserveReply> {
  const meta = e.store.getMeta();
  const task = meta ? e.store.getTask(taskId) : null;
  if (!meta || !task) return { code: 404, body: { error: "unknown batch or task" } };
  if (attempt < 1 || attempt > task.attempt) return { code: 401, body: { error: `attempt ${attempt} of ${taskId} never ran` } };
  if (attempt !== task.attempt || !OPEN.has(task.state)) {
    return { code: 409, body: { error: `attempt ${attempt} is no longer the running attempt of ${taskId}` } };
  }
  const phase = getPhase(task.phase);
  if (!phase.pageKeyCandidates) return { code: 400, body: { error: `phase ${phase.name} writes one output per task` } };
  const store = e.objects();
  const replace = overwrites(meta);
  const have = new Map(e.store.outputsOf(taskId).map((o) => [o.page, o.key]));
  const fresh = new Set<string>();
  for (let page = 2; page <= pages; page++) {
    if (have.has(page)) continue;
    for (const candidate of phase.pageKeyCandidates(task.output_key, page)) {
      const problem = keyProblem(candidate);
      if (problem) return { code: 400, body: { error: `page ${page} of ${task.input_key} has no valid output key: ${candidate} is not a canonical object key: ${problem}` } };
      if (e.store.keyTaken(candidate)) continue;
      // Never an existing object (one outside the batch's file list, say), unless the batch overwrites.
      if (!replace && (await store.head(candidate))) continue;
      if (e.store.reserveOutput(candidate, taskId, page)) {
        have.set(page, candidate);
        fresh.add(candidate);
        break;
      }
    }
  }
  const outputs = [];
  for (let page = 2; page <= pages; page++) {
    const key = have.get(page)!;
    const access = await outputAccess(e, meta, task, key, outputContentTypeOf(phase, page), fresh.has(key) ? "absent" : undefined);
    if (!access.ok) return { code: 409, body: { error: access.reason } };
    outputs.push({ page, r2_key: key, url: await presign(e.config, "PUT", key, expiresAt, Date.now(), access.headers), headers: access.headers });
  }
  log("DO", "outputs_reserved", { batch_id: meta.batch_id, task_id: taskId, attempt, pages });
  return { code: 200, body: { batch_id: meta.batch_id, task_id: taskId, attempt, outputs } };
}
