// What an operator does to a batch (POST /admin/reset, POST /admin/redrive): a reset stops it in
// ERROR and destroys its machines; a redrive re-runs the FAILED tasks of a finished batch. Either
// raises the batch's epoch, so no credential minted before it changes anything after.
import { logError, log } from "../log.ts";
import { apiStatus, type Engine, isFinished } from "./context.ts";
import { settleWithFleet } from "./fleet.ts";
import { destroyOrphans } from "./orphans.ts";
import { pipelineOf } from "./pipeline.ts";
import { stopBatch } from "./run.ts";

export type ResetReply =
  | { ok: true; batch_id: string; status: "ERROR"; tasks_failed: number; machines_destroyed: number; machines_pending: number }
  | { ok: false; code: 404 | 409; error: string };

export type RedriveReply = { ok: true; batch_id: string; tasks: number; status: string; redrive: number } | { ok: false; code: 404 | 409; error: string };

/** Stops the batch in ERROR: its open tasks fail, its machines are destroyed (those not yet gone by the next alarms). */
export async function resetBatch(e: Engine, deleteAlarm: () => Promise<void>, setAlarm: (at: number) => Promise<void>): Promise<ResetReply> {
  const meta = e.store.getMeta();
  if (!meta) return { ok: false, code: 404, error: "unknown batch" };
  if (meta.stage === "done" || meta.stage === "failed") return { ok: false, code: 409, error: `batch is ${apiStatus(meta)}; there is nothing to reset` };
  const now = Date.now();
  // Every credential minted so far is of an earlier epoch from here on: no outstanding attempt's
  // callback, reservation or lease changes anything after a reset.
  e.store.updateMeta({ epoch: meta.epoch + 1 }, now);
  const failed = stopBatch(e, meta, "error", "reset by admin", "batch reset by admin", now);
  await deleteAlarm();
  // Machines whose create outcome was never learned are found by their metadata.
  try {
    for (const m of await e.fly().listMachines({ fanout_batch: meta.batch_id })) {
      if (m.state !== "destroyed") e.store.addOrphan(m.id, "batch reset", now);
    }
  } catch (error) {
    logError("DO", "reset_list_failed", error, { batch_id: meta.batch_id });
  }
  const destroyed = await destroyOrphans(e, now);
  await settleWithFleet(e, e.store.getMeta()!);
  const pending = e.store.orphanCount();
  if (pending > 0) await setAlarm(now + 5_000);
  log("DO", "batch_reset", { batch_id: meta.batch_id, tasks_failed: failed, machines_destroyed: destroyed, machines_pending: pending });
  return { ok: true, batch_id: meta.batch_id, status: "ERROR", tasks_failed: failed, machines_destroyed: destroyed, machines_pending: pending };
}

/**
 * Re-runs only the FAILED tasks of a finished batch (DONE with failures, FAILED, or ERROR after a
 * reset): their attempts continue (history kept, numbers rising), each with a fresh retry budget;
 * the final file list goes downstream again under a new Idempotency-Key. The caller sets the alarm.
 */
export function redriveBatch(e: Engine): RedriveReply {
  const meta = e.store.getMeta();
  if (!meta) return { ok: false, code: 404, error: "unknown batch" };
  if (!isFinished(meta)) return { ok: false, code: 409, error: `batch is running (${apiStatus(meta)}); only a finished batch can be redriven` };
  if (meta.stage === "error" && meta.step_failures > 0) {
    return { ok: false, code: 409, error: `batch stopped on a failing ${meta.stage} step (${meta.error}); fix the cause and submit it again` };
  }
  const now = Date.now();
  const result = e.store.transaction(() => {
    const r = e.store.redriveFailed(now);
    if (r.tasks === 0) return r;
    // Run from the earliest phase of the batch's pipeline that has a task to re-run; the later ones follow.
    const phase = pipelineOf(meta).find((p) => r.phases.includes(p));
    e.store.updateMeta(
      {
        stage: "run",
        phase: phase ?? r.phases[0],
        error: null,
        completed_at: null,
        redrives: meta.redrives + 1,
        // The redriven tasks' earlier attempts end here, whatever their credentials say.
        epoch: meta.epoch + 1,
        finalise_attempts: 0,
        finalise_error: null,
        // The pool is sized again for what the redrive runs, under today's limits.
        pool_plan_json: null,
      },
      now,
    );
    return r;
  });
  if (result.tasks === 0) return { ok: false, code: 409, error: "the batch has no failed task to redrive" };
  e.emit("redrive", { tasks: result.tasks, redrive: meta.redrives + 1 });
  log("DO", "batch_redriven", { batch_id: meta.batch_id, tasks: result.tasks, redrive: meta.redrives + 1 });
  return { ok: true, batch_id: meta.batch_id, tasks: result.tasks, status: apiStatus(e.store.getMeta()!), redrive: meta.redrives + 1 };
}
