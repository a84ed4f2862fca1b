// The batch's side of the fleet (fly/budget.ts): at each alarm it tells the app's FlyBudget what its
// machines hold and how many it could use, and creates only what the fleet grants; it reports Fly's
// quota refusals (the fleet's limits learn from them) and leaves when it holds nothing. What the
// fleet answered and what Fly refused are kept in meta for /status.
import type { FleetAnswer } from "../fly/budget.ts";
import { fleetLimitsOf } from "../config.ts";
import type { QuotaResource } from "../fly/api.ts";
import type { Resources } from "../fly/fleet.ts";
import { log } from "../log.ts";
import type { BatchMeta } from "../store/index.ts";
import type { Engine } from "./context.ts";

/** What /status shows of the fleet's last answer: the answer, what the batch held, and when. */
export type FleetView = Pick<FleetAnswer, "share" | "waiting" | "position" | "waiting_batches" | "batches" | "limits" | "fleet_live" | "learned" | "epoch"> & {
  live: Resources;
  at: number;
};

/** Kinds of create refusal a batch keeps count of. */
export type RefusalKind = "quota" | "capacity" | "invalid" | "rate_limited";
/** Per kind: refusals in all, in a row (since the last machine created), the last words and when. */
export type FlyRefusals = Partial<Record<RefusalKind, { count: number; streak: number; last: string; at: number }>>;

const budget = (e: Engine) => e.env.FLY_BUDGET.getByName(e.config.FLY_APP_NAME);

/** What the batch's machines hold: rows not yet gone, and machines waiting to be seen gone (orphans of unknown size as `guest`). */
export function holdings(e: Engine, guest: { cpus: number; memory_mb: number }): Resources & { running: number } {
  const u = e.store.fleetUsage();
  return { machines: u.machines, vcpus: u.vcpus + u.unsized * guest.cpus, memory_mb: u.memory_mb + u.unsized * guest.memory_mb, running: u.rows };
}

/**
 * Reports to the fleet and asks for up to `want` creates: the answer says how many may be sent now
 * (their tokens are taken), the batch's share, and when asking again may give more.
 */
export async function askFleet(e: Engine, meta: BatchMeta, ask: { demand: number; want: number; guest: { cpus: number; memory_mb: number } }): Promise<FleetAnswer> {
  const c = e.config;
  const { running, ...live } = holdings(e, ask.guest);
  const answer = await budget(e).acquire({
    batch_id: meta.batch_id,
    weight: meta.priority,
    demand: ask.demand,
    guest: ask.guest,
    live,
    running,
    want: ask.want,
    limits: fleetLimitsOf(c),
    create: { perSecond: c.FLY_CREATE_RATE_PER_SECOND, burst: c.FLY_CREATE_BURST },
  });
  const now = Date.now();
  const view: FleetView = {
    share: answer.share,
    live,
    waiting: answer.waiting,
    position: answer.position,
    waiting_batches: answer.waiting_batches,
    batches: answer.batches,
    limits: answer.limits,
    fleet_live: answer.fleet_live,
    learned: answer.learned,
    epoch: answer.epoch,
    at: now,
  };
  const before = fleetOf(meta);
  if (answer.waiting && !before?.waiting) log("DO", "fleet_waiting", { batch_id: meta.batch_id, share: answer.share, position: answer.position, live: live.machines });
  e.store.updateMeta({ fleet_json: JSON.stringify(view), bucket_at: answer.next_at ?? now }, now);
  return answer;
}

/** Fly refused creates for quota: the fleet's limit on that resource halves (once per refusal epoch). */
export async function reportQuota(e: Engine, meta: BatchMeta, refusal: { resource: QuotaResource; message: string }, guest: { cpus: number; memory_mb: number }): Promise<void> {
  const epoch = fleetOf(e.store.getMeta() ?? meta)?.epoch ?? 0;
  const { running: _running, ...live } = holdings(e, guest);
  const learned = await budget(e).refused(meta.batch_id, live, refusal.resource, refusal.message, epoch, fleetLimitsOf(e.config));
  log("DO", "fleet_quota_refused", { batch_id: meta.batch_id, resource: refusal.resource, error: refusal.message, learned });
}

/**
 * Outside the run stage (finalising, finished): the batch's machines may still be going; the fleet
 * counts them until they are gone, then the batch leaves it.
 */
export async function settleWithFleet(e: Engine, meta: BatchMeta): Promise<void> {
  const u = e.store.fleetUsage();
  if (u.machines === 0) {
    if (meta.fleet_json !== null) {
      await budget(e).leave(meta.batch_id);
      e.store.updateMeta({ fleet_json: null }, Date.now());
    }
    return;
  }
  const last = fleetOf(meta);
  const guest = last && last.live.machines > 0 ? { cpus: Math.ceil(last.live.vcpus / last.live.machines), memory_mb: Math.ceil(last.live.memory_mb / last.live.machines) } : { cpus: 1, memory_mb: 256 };
  await askFleet(e, meta, { demand: 0, want: 0, guest });
}

export function fleetOf(meta: BatchMeta): FleetView | null {
  return meta.fleet_json ? (JSON.parse(meta.fleet_json) as FleetView) : null;
}

/** Counts a refusal of this batch's creates (per kind: counts and the last words, never a list); returns the streak. */
export function noteRefusal(e: Engine, kind: RefusalKind, message: string, now: number): number {
  const notes = refusalsOf(e.store.getMeta()!);
  const streak = (notes[kind]?.streak ?? 0) + 1;
  notes[kind] = { count: (notes[kind]?.count ?? 0) + 1, streak, last: message.slice(0, 300), at: now };
  e.store.updateMeta({ fly_refusals_json: JSON.stringify(notes) }, now);
  return streak;
}

/** A machine was created: no refusal is in a row any more. */
export function endStreaks(e: Engine, now: number): void {
  const notes = refusalsOf(e.store.getMeta()!);
  const kinds = Object.keys(notes) as RefusalKind[];
  if (!kinds.some((k) => (notes[k]?.streak ?? 0) > 0)) return;
  for (const k of kinds) notes[k] = { ...notes[k]!, streak: 0 };
  e.store.updateMeta({ fly_refusals_json: JSON.stringify(notes) }, now);
}

export function refusalsOf(meta: BatchMeta): FlyRefusals {
  return meta.fly_refusals_json ? (JSON.parse(meta.fly_refusals_json) as FlyRefusals) : {};
}

/** The fleet and Fly's refusals as /status warnings: what bound the batch, in a sentence each. */
export function fleetWarnings(meta: BatchMeta, running: boolean): string[] {
  const out: string[] = [];
  if (meta.paused_error && running) out.push(`paused: ${meta.paused_error}`);
  const view = fleetOf(meta);
  if (running && view?.waiting) {
    out.push(
      `waiting for fleet capacity: share ${view.share} machine${view.share === 1 ? "" : "s"} of the fleet's ${view.limits.machines} (${view.batches} batch${view.batches === 1 ? "" : "es"} running), ${view.live.machines} live, position ${view.position ?? "?"} of ${view.waiting_batches} waiting`,
    );
  }
  const r = refusalsOf(meta);
  // The fleet's own summary repeats Fly's last words; the batch's warning already has them.
  const lowered = view?.learned?.match(/the fleet runs at .*$/);
  if (r.quota) {
    out.push(
      `Fly's quota bound this batch: ${r.quota.count} create${r.quota.count === 1 ? "" : "s"} refused for the organisation's quota (last: ${r.quota.last}); nothing failed for it: the creates wait and the fleet lowered its limits${lowered ? ` (${lowered[0]})` : ""}`,
    );
  }
  if (r.capacity) out.push(`Fly had no room in any region for ${r.capacity.count} create${r.capacity.count === 1 ? "" : "s"} (last: ${r.capacity.last}); they backed off and were tried again`);
  return out;
}
