// Stepping the Durable Objects of a simulation by hand: a batch's alarm when virtual time reaches
// it, and the app's FlyBudget emptied between simulations (sim-machines.ts runs the machines, the benches
// the loop).
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import type { BatchStore } from "../../orchestrator/store/index.ts";
import { stub } from "../../test/workers/support/engine.ts";

/** Runs the DO's alarm if it is due at virtual `now`; returns when the next one is set. */
export function alarmStep(batchId: string, now: number): Promise<{ ran: boolean; next: number | null }> {
  return runInDurableObject(stub(batchId), async (instance: BatchDO, state) => {
    const at = await state.storage.getAlarm();
    if (at === null || at > now) return { ran: false, next: runAlarm(instance, at) };
    await state.storage.deleteAlarm();
    await instance.alarm();
    return { ran: true, next: runAlarm(instance, await state.storage.getAlarm()) };
  });
}

/**
 * The alarm as far as the run goes: a finished batch's last alarm waits BATCH_RETENTION_DAYS to
 * archive it (engine/retention.ts), which is no part of the run — a simulation that followed it
 * sampled 30 days of virtual time, 5 s at a time, after the batch ended.
 */
function runAlarm(instance: BatchDO, at: number | null): number | null {
  if (at === null) return null;
  const meta = (instance as unknown as { store: BatchStore }).store.getMeta();
  const finished = meta !== null && (meta.stage === "done" || meta.stage === "failed" || meta.stage === "error");
  return finished && at >= (meta.completed_at ?? meta.updated_at) + RETENTION_FLOOR_MS ? null : at;
}

/** BATCH_RETENTION_DAYS is at least a day (config.ts): nothing a run waits for is that far off. */
const RETENTION_FLOOR_MS = 86_400_000;

/**
 * Empties the app's FlyBudget (its API buckets, its fleet, what it learned). Every simulation starts
 * at the same virtual time: the previous one left its buckets dated at its end, and no token would
 * refill until virtual time passed it again (it once did: every mode after the first waited out the
 * one before it).
 */
export async function resetFlyBudget(app: string = env.FLY_APP_NAME): Promise<void> {
  await runInDurableObject(env.FLY_BUDGET.getByName(app), (_budget, state) => {
    for (const table of ["buckets", "fleet", "learned"]) state.storage.sql.exec(`DELETE FROM ${table}`);
  });
}
