// Creating machines and what Fly's answer to each create means for the batch (fly/create-answer.ts
// reads the answer as documented). No refusal of a create ever fails a task: a task whose machine
// was refused goes back to wait, its attempt not spent, and the batch backs off —
// - rate limited (429): every batch of the app holds its creates until Retry-After;
// - the organisation's quota: the fleet's limits learn (halve) and the creates wait for room;
// - no room in any region: the batch backs off and tries again;
// - a request Fly calls bad (image, guest, config, token, app): the phase pauses with one error
//   naming the field, and tries one create again after a while (a deploy may have fixed it).
import { createDraw } from "../fly/budget.ts";
import type { CreateOutcome, QuotaResource } from "../fly/api.ts";
import { log } from "../log.ts";
import type { BatchMeta, TaskRow, WorkerRow } from "../store/index.ts";
import { backoffMs } from "../../shared/backoff.ts";
import { type Engine, machineName, RECHECK_MS } from "./context.ts";
import { endStreaks, noteRefusal, reportQuota } from "./fleet.ts";
import type { MachinePlan } from "./machines.ts";

/** A paused phase tries again after 1 min, then 2, 4 … up to 30 min. */
const PAUSE_BASE_MS = 60_000;
const PAUSE_MAX_MS = 30 * 60_000;
/** After a quota refusal or no room in any region, in a row: ~2 s, 4 s … up to 2 min. */
const REFUSAL_BACKOFF = { baseMs: 2_000, maxMs: 120_000 };

/** Metadata that finds a machine again whatever happened to its create's answer. */
function metadataOf(meta: BatchMeta, plan: MachinePlan): Record<string, string> {
  return {
    fanout_batch: meta.batch_id,
    fanout_phase: plan.phase.name,
    fanout_worker: plan.id,
    ...(plan.task ? { fanout_task: plan.task.task_id, fanout_attempt: String(plan.task.attempt) } : {}),
  };
}

/** Sends the creates (in parallel; each first POST's token was granted by the fleet) and applies each outcome. */
export async function createMachines(e: Engine, meta: BatchMeta, plans: MachinePlan[]): Promise<void> {
  const fly = e.fly();
  const c = e.config;
  const budget = e.env.FLY_BUDGET.getByName(c.FLY_APP_NAME);
  const outcomes = await Promise.all(
    plans.map((p) =>
      fly.createMachine(
        { name: machineName(meta.batch_id, p.id), image: p.image, guest: p.guest, env: p.env, metadata: metadataOf(meta, p), regions: c.FLY_REGIONS },
        // The first POST spends the token the fleet granted; every retry and next region draws its own.
        { draw: createDraw(budget, c.FLY_CREATE_RATE_PER_SECOND, c.FLY_CREATE_BURST, 1) },
      ),
    ),
  );
  const now = Date.now();
  e.store.transaction(() => plans.forEach((p, i) => applyCreate(e, meta, p.id, outcomes[i], now)));
  const waits = outcomes.flatMap((o) => (o.kind === "rate_limited" ? [o.retryAfterMs] : []));
  // A 429 holds back every batch of the app, not just this one.
  if (waits.length > 0) await budget.block("create", now + Math.max(...waits));
  const quota = outcomes.find((o): o is Extract<CreateOutcome, { kind: "quota" }> => o.kind === "quota");
  if (quota) await reportQuota(e, meta, { resource: quota.resource, message: quota.message }, plans[0].guest);
}

/** The task a single-task machine was created for, if it is still that task's current attempt. */
export function assignedTask(e: Engine, row: WorkerRow): TaskRow | null {
  if (!row.task_id) return null;
  const task = e.store.getTask(row.task_id);
  return task && task.attempt === row.attempt && task.worker_id === row.worker_id && (task.state === "creating" || task.state === "booting" || task.state === "running")
    ? task
    : null;
}

/** Nothing was created: the row goes, and its task (if any) waits again with its attempt not spent. */
function notCreated(e: Engine, workerId: string, task: TaskRow | null, waitMs: number, now: number): void {
  e.store.deleteWorker(workerId);
  if (!task) return;
  e.store.dropAttempt(task.task_id, task.attempt);
  e.store.moveTask(
    task,
    task.attempt > 1 ? "retrying" : "pending",
    { attempt: task.attempt - 1, machine_name: null, worker_id: null, deadline_at: 0, next_at: now + waitMs },
    now,
  );
}

/** What a create's answer means for the machine row and its task. */
export function applyCreate(e: Engine, meta: BatchMeta, workerId: string, outcome: CreateOutcome, now: number): void {
  const row = e.store.getWorker(workerId);
  if (!row) return;
  const task = assignedTask(e, row);
  const fields = { batch_id: meta.batch_id, worker_id: workerId, task_id: row.task_id, attempt: row.attempt };
  switch (outcome.kind) {
    case "created": {
      if (e.store.getMeta()!.paused_error) resume(e, meta, now);
      endStreaks(e, now);
      if (row.state === "gone" || (row.task_id && !task)) {
        // The attempt already ended: its row names the machine that came too late.
        if (row.task_id) e.store.recordMachine(row.task_id, row.attempt, outcome.machineId, outcome.region);
        // Its task moved on (reset, an earlier attempt's callback) or the pool closed: not needed.
        e.store.updateWorker(workerId, { state: "gone", machine_id: outcome.machineId, region: outcome.region });
        e.store.addOrphan(outcome.machineId, "created after it was no longer needed", now);
        return;
      }
      e.store.updateWorker(workerId, {
        state: row.state === "live" ? "live" : "booting",
        machine_id: outcome.machineId,
        region: outcome.region,
        check_at: Math.min(now + e.config.MACHINE_CHECK_INTERVAL_MS, row.limit_at),
      });
      if (task && task.state === "creating") {
        e.store.moveTask(task, "booting", { machine_id: outcome.machineId, region: outcome.region }, now);
      }
      log("DO", "machine_created", { ...fields, machine_id: outcome.machineId, region: outcome.region });
      return;
    }
    case "rate_limited":
    case "budget": {
      notCreated(e, workerId, task, outcome.kind === "rate_limited" ? outcome.retryAfterMs : 0, now);
      if (outcome.kind === "rate_limited") {
        const blocked = Math.max(e.store.getMeta()!.fly_blocked_until, now + outcome.retryAfterMs);
        e.store.updateMeta({ fly_blocked_until: blocked, bucket_at: blocked }, now);
        noteRefusal(e, "rate_limited", `429, retry after ${outcome.retryAfterMs} ms`, now);
        log("DO", "rate_limited", { ...fields, retry_after_ms: outcome.retryAfterMs });
      }
      return;
    }
    case "quota":
    case "no_capacity": {
      // Quota: the fleet halves its limit (createMachines reports it). Either way the task waits and
      // the batch's creates back off, longer each time in a row, so a full organisation is not hammered.
      const kind = outcome.kind === "quota" ? "quota" : "capacity";
      const streak = noteRefusal(e, kind, outcome.message, now);
      const wait = backoffMs(Math.min(streak, 10), REFUSAL_BACKOFF.baseMs, REFUSAL_BACKOFF.maxMs);
      notCreated(e, workerId, task, wait, now);
      e.store.updateMeta({ fly_blocked_until: Math.max(e.store.getMeta()!.fly_blocked_until, now + wait) }, now);
      const resource: QuotaResource | undefined = outcome.kind === "quota" ? outcome.resource : undefined;
      log("DO", outcome.kind === "quota" ? "quota_refused" : "no_capacity", { ...fields, resource, error: outcome.message, retry_in_ms: wait });
      return;
    }
    case "invalid": {
      notCreated(e, workerId, task, 0, now);
      pause(e, meta, outcome, now);
      return;
    }
    case "unknown":
      // The machine may exist: look for it by metadata before creating again.
      e.store.updateWorker(workerId, { check_at: now + RECHECK_MS });
      log("DO", "create_outcome_unknown", { ...fields, error: outcome.message });
      return;
  }
}

/** Fly refused the machine as asked: the phase creates nothing until `paused_until`, then tries one create. */
function pause(e: Engine, meta: BatchMeta, outcome: Extract<CreateOutcome, { kind: "invalid" }>, now: number): void {
  const current = e.store.getMeta()!;
  // Creates sent together are refused together: one pause.
  if (current.paused_error && current.paused_until > now) return;
  const probes = current.pause_probes + 1;
  const until = now + Math.min(PAUSE_MAX_MS, PAUSE_BASE_MS * 2 ** (probes - 1));
  const error = `Fly refused the machine config (HTTP ${outcome.status}) — fix ${outcome.field}: ${outcome.message}. No task failed for it; creates try again at ${new Date(until).toISOString()} (or reset the batch)`;
  e.store.updateMeta({ paused_error: error, paused_until: until, pause_probes: probes }, now);
  noteRefusal(e, "invalid", `${outcome.field}: ${outcome.message}`, now);
  if (current.paused_error === null) e.emit("paused", { error, field: outcome.field, until });
  log("DO", "phase_paused", { batch_id: meta.batch_id, phase: meta.phase, status: outcome.status, field: outcome.field, error: outcome.message, retry_at: until });
}

function resume(e: Engine, meta: BatchMeta, now: number): void {
  e.store.updateMeta({ paused_error: null, paused_until: 0, pause_probes: 0 }, now);
  log("DO", "phase_resumed", { batch_id: meta.batch_id, phase: meta.phase });
}

/** Creates the phase may send now: none while paused, one to try again once the pause has passed. */
export function pauseAllows(meta: BatchMeta, now: number): number {
  if (!meta.paused_error) return Infinity;
  return now >= meta.paused_until ? 1 : 0;
}
