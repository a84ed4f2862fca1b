// Machines that must be gone: one that died or was given up on is destroyed at once; one told to
// exit by itself (a retired pool machine, a single-task machine that called back) is looked at
// until it is seen gone, and destroyed once its grace has passed if it is still there. Until then
// the fleet counts it: Fly's quota does. Every look and destroy draws from the app's API budget.
import { FlyApiError } from "../fly/api.ts";
import { backoffMs } from "../../shared/backoff.ts";
import type { Engine } from "./context.ts";

const ORPHANS_PER_ALARM = 50;
/** A machine told to exit is first looked at this long after, then this often. */
export const LOOK_AFTER_MS = 1_000;

/** Destroys (or sees gone) machines that are no longer wanted; what cannot be done now is tried on later alarms. */
export async function destroyOrphans(e: Engine, now: number): Promise<number> {
  const due = e.store.dueOrphans(now, ORPHANS_PER_ALARM);
  if (due.length === 0) return 0;
  const fly = e.fly();
  let destroyed = 0;
  await Promise.all(
    due.map(async (o) => {
      if (o.destroy_at > now) {
        // Told to exit: a look (a get token) before a destroy (a scarcer destroy token).
        try {
          const m = await fly.getMachine(o.machine_id);
          if (m === null || m.state === "destroyed") e.store.orphanDone(o.machine_id);
          else e.store.orphanRecheck(o.machine_id, Math.min(Date.now() + LOOK_AFTER_MS, o.destroy_at));
        } catch (error) {
          const wait = error instanceof FlyApiError && error.retryAfterMs !== undefined ? error.retryAfterMs : LOOK_AFTER_MS;
          e.store.orphanRecheck(o.machine_id, Math.min(Date.now() + Math.max(50, wait), o.destroy_at));
        }
        return;
      }
      const result = await fly.destroyMachine(o.machine_id).catch(() => "failed" as const);
      if (typeof result === "object") e.store.orphanRecheck(o.machine_id, result.retryAt);
      else if (result === "failed") e.store.orphanRetry(o.machine_id, Date.now() + backoffMs(o.tries + 1, 1000, 60_000));
      else {
        e.store.orphanDone(o.machine_id);
        if (result === "destroyed") destroyed++;
      }
    }),
  );
  return destroyed;
}
