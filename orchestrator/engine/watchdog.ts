// No silent stall. Alarms drive every batch, and an alarm can die where the engine's own error
// handling never sees it: past its CPU time or its isolate's 128 MB, or with its isolate reset.
// The runtime retries an alarm whose handler did not finish, "using exponential backoff, starting
// at 2 second delays for up to 6 retries" (developers.cloudflare.com/durable-objects/api/alarms/),
// and then gives up. So:
// - every alarm of a running batch sets the next one (ALARM_REARM_MS ahead) before it works, and
//   a running batch is never left without an alarm;
// - a retried alarm (alarmInfo.isRetry) counts as a failed step, with the runtime's retry count,
//   into step_failures, which stops the batch in ERROR at MAX_STEP_FAILURES like any failing step;
// - each alarm's outbound work ends at ALARM_WORK_MS (engine/context.ts's Outbound deadline) and
//   its loops stop taking pages or parts then, besides their counts;
// - a Cron Trigger (wrangler.jsonc `triggers`) looks in the batch index for running batches whose
//   row has not moved for STALL_AFTER_MS and asks each one's DO to check itself: a batch with no
//   alarm, or one overdue by STALL_GRACE_MS, is woken and says so in its warnings; GET /status
//   shows the same stall while it lasts.
import { batchesToCheck } from "../batch-index.ts";
import { loadConfig } from "../config.ts";
import { backoffMs } from "../../shared/backoff.ts";
import { errorMessage, log, logError } from "../log.ts";
import { StorageError } from "../storage.ts";
import type { BatchMeta } from "../store/index.ts";
import { type Engine, iso, isFinished } from "./context.ts";
import { archiveDue } from "./retention.ts";
import { stopBatch } from "./run.ts";

/** How far ahead an alarm sets its successor before it works: beyond any one alarm's work (ALARM_WORK_MS). */
export const ALARM_REARM_MS = 120_000;
/** An alarm this overdue, or none at all, means nothing is driving a running batch. */
export const STALL_GRACE_MS = 5 * 60_000;
/** The cron asks a running batch's DO to check itself once its index row has been still this long. */
export const STALL_AFTER_MS = 15 * 60_000;
/** Batches the cron looks at per run (each is one RPC: well inside the invocation's subrequests). */
export const WATCHDOG_BATCHES_PER_RUN = 200;

/** Why a running batch is stalled (no alarm, or one long overdue), or null. `alarmAt` from getAlarm(). */
export function stallReason(meta: BatchMeta, alarmAt: number | null, now: number): string | null {
  if (isFinished(meta)) return null;
  if (alarmAt === null) return `no alarm is set: nothing has driven the batch since ${iso(meta.updated_at)}`;
  if (alarmAt < now - STALL_GRACE_MS) return `its alarm was due at ${iso(alarmAt)} and has not run`;
  return null;
}

/** The status warning for a stall (the watchdog wakes such a batch on its next run). */
export function stallWarning(reason: string): string {
  return `stalled: ${reason}; the watchdog (a Cron Trigger every 5 minutes) wakes it, or POST /admin/reset/:batchId stops it`;
}

/** The step error a runtime retry of the alarm records (the previous invocation died). */
export function runtimeRetryError(retryCount: number): string {
  return (
    `the previous alarm did not finish and the runtime retried it (retry ${retryCount}): an alarm dies this way when it ` +
    "exceeds its CPU time (limits.cpu_ms) or its isolate's memory (128 MB), or when its isolate is reset"
  );
}

/**
 * The Cron Trigger (wrangler.jsonc `triggers`): running batches whose index row has not moved for
 * STALL_AFTER_MS, and finished ones past retention not yet archived, are asked to check
 * themselves (BatchDO.watchdog): one with no alarm, or one long overdue, is woken. Each is one
 * RPC; at most WATCHDOG_BATCHES_PER_RUN a run.
 */
export async function runWatchdog(env: Env, now: number): Promise<{ checked: number; woken: string[] }> {
  const days = loadConfig(env).BATCH_RETENTION_DAYS;
  const ids = await batchesToCheck(env.BATCH_INDEX, now - STALL_AFTER_MS, now - days * 86_400_000, WATCHDOG_BATCHES_PER_RUN);
  const woken: string[] = [];
  for (const id of ids) {
    try {
      const answer = await env.BATCH_DO.getByName(id).watchdog();
      if (answer.woken) woken.push(id);
    } catch (error) {
      logError("Watchdog", "check_failed", error, { batch_id: id });
    }
  }
  log("Watchdog", "run", { checked: ids.length, woken });
  return { checked: ids.length, woken };
}

/**
 * The DO's side of the watchdog: a running batch with no alarm, or one long overdue, is woken now
 * and says so in its warnings; a finished one past retention with no alarm (it finished before
 * retention had one) gets one now. Returns why it was stalled, or null.
 */
export async function wakeIfStalled(e: Engine, meta: BatchMeta, storage: DurableObjectStorage, now: number): Promise<string | null> {
  const reason = stallReason(meta, await storage.getAlarm(), now);
  if (reason) {
    e.store.addWarning(`${new Date(now).toISOString()}: the watchdog woke the batch: ${reason}`, now);
    await storage.setAlarm(now);
    log("DO", "stall_woken", { batch_id: meta.batch_id, reason });
  } else if (isFinished(meta) && archiveDue(e, meta, now)) {
    await storage.setAlarm(now);
  }
  return reason;
}

/**
 * A step that throws is retried with backoff; after MAX_STEP_FAILURES in a row (or a storage
 * error that will not heal, during discovery) the batch stops in ERROR naming the step and error.
 * Returns when the next alarm should fire.
 */
export function stepFailed(e: Engine, meta: BatchMeta, error: unknown): number | null {
  const failures = meta.step_failures + 1;
  const message = errorMessage(error);
  const final = meta.stage === "discover" && error instanceof StorageError && !error.retryable;
  logError("DO", "step_failed", error, { batch_id: meta.batch_id, stage: meta.stage, failures });
  const now = Date.now();
  e.store.updateMeta({ step_failures: failures, step_error: message.slice(0, 2000) }, now);
  if (final || failures >= e.config.MAX_STEP_FAILURES) {
    const what = meta.stage === "discover" ? "discovery failed" : `${meta.stage} step failed`;
    stopBatch(e, meta, "error", `${what}${final ? "" : ` ${failures} times in a row`}: ${message}`, `batch stopped: ${meta.stage} step failed`, now);
    return e.store.earliestDeadline();
  }
  return now + backoffMs(failures, 1000, 60_000);
}
