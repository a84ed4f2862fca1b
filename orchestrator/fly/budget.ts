// One FlyBudget Durable Object per Fly app: what every batch of the app shares.
// - The API budget: Fly's rate limits are per action and per app (rates.ts), not per batch, so one
//   token bucket per action hands a token to every request of every batch (create, list, get,
//   destroy), and a 429's Retry-After holds that action back for all of them.
// - The fleet: the app's live machines, vCPUs and memory across batches, against FLEET_MAX_* and
//   what Fly's quota refusals taught (fleet.ts). No batch creates a machine this object has not
//   granted; shares are max-min fair, weighted by priority, and so are create tokens.
// Everything is in storage, not memory: an evicted or restarted budget must not hand out a fresh
// burst, nor forget what is live.
import { DurableObject } from "cloudflare:workers";
import type { CreateToken } from "./api.ts";
import {
  add,
  type Claim,
  effectiveLimits,
  fairShares,
  grow,
  type Learned,
  learnedSummary,
  learnRefusal,
  machineOf,
  NOTHING_LEARNED,
  type QuotaResource,
  type Resources,
  RESOURCES,
  vcpuLevel,
  ZERO,
} from "./fleet.ts";
import { FLY_ACTIONS, type FlyAction, type Rate, type Rates } from "./rates.ts";
import { FleetTables } from "./fleet-tables.ts";
import { logError } from "../log.ts";

export interface Grant {
  granted: number;
  /** When the next token will be there (now if one is left). */
  next_at: number;
}

/** What a batch tells the fleet at each of its alarms, and asks of it. */
export interface FleetRequest {
  batch_id: string;
  /** The message's priority (default 1): its weight in every share. */
  weight: number;
  /** Machines it could use now, its own cap applied. */
  demand: number;
  /** Each machine it creates. */
  guest: { cpus: number; memory_mb: number };
  /** Its machines that may exist now (live, booting, being created, or being destroyed): they count against the limits. */
  live: Resources;
  /** Of those, the ones it runs (not on their way out): they count against its share. */
  running: number;
  /** Creates it would send now. */
  want: number;
  limits: Resources;
  create: Rate;
}

export interface FleetAnswer {
  /** Creates it may send now (tokens taken, capacity reserved). */
  granted: number;
  /** Machines it may have live: its fair share of the fleet. */
  share: number;
  /** When asking again may give more; null when nothing is held back. */
  next_at: number | null;
  /** It wants machines the fleet has no room for now. */
  waiting: boolean;
  /** Its place among the waiting batches (1: next to get room), when waiting. */
  position: number | null;
  waiting_batches: number;
  batches: number;
  /** The limits the fleet runs at now (configured, or lower after quota refusals). */
  limits: Resources;
  /** What every batch of the app holds. */
  fleet_live: Resources;
  /** Pass back with a quota refusal of these creates (so one refusal is not counted twice). */
  epoch: number;
  /** What Fly's refusals taught, in a sentence, or null. */
  learned: string | null;
}

/** A batch that has not reported for this long no longer counts in the shares (its machines still count as live). */
export const STALE_MS = 5 * 60_000;
/** … and after this long it is taken for gone, machines and all (a deleted batch must not hold the fleet for ever). */
export const LOST_MS = 30 * 60_000;
/** A batch that asked for creates within this long and still lacks machines takes turns for create tokens. */
const NEEDY_MS = 10_000;
/**
 * Over-share batches one report tells at once: each is a Durable Object call, a subrequest, and the
 * reporting batch waits for them; six is one round of the simultaneous connections an invocation
 * may hold (developers.cloudflare.com/workers/platform/limits/#simultaneous-open-connections).
 */
export const NUDGES_PER_REPORT = 6;
/** How soon a batch waiting for room asks again: below its share, and at it (wanting more). */
export const FLEET_POLL_MS = 2_000;
export const FLEET_POLL_AT_SHARE_MS = 5_000;

export class FlyBudget extends DurableObject<Env> {
  private readonly tables: FleetTables;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.tables = new FleetTables(ctx.storage.sql);
  }

  // ---- the API budget: one bucket per action ---------------------------------------------------

  /**
   * Takes up to `want` tokens of `action` from a bucket refilled at `rate`/s up to `burst`, one of
   * which stays in reserve (when the burst allows it): a token is drawn here but its request reaches
   * Fly later (signing, RPC, network), and two requests bunched on the way would otherwise meet Fly's
   * bucket empty at a steady rate. The soak saw exactly that with the reserve at 0.
   */
  take(action: FlyAction, want: number, rate: number, burst: number): Grant {
    const now = Date.now();
    const bucket = this.tables.bucket(action, now, burst);
    if (now < bucket.blocked_until) return { granted: 0, next_at: bucket.blocked_until };
    const reserve = burstReserve(burst);
    let tokens = Math.min(burst, bucket.tokens + (Math.max(0, now - bucket.at) / 1000) * rate);
    const granted = Math.max(0, Math.min(Math.floor(want), Math.floor(tokens - reserve)));
    tokens -= granted;
    this.tables.saveBucket(action, { tokens, at: Math.max(now, bucket.at), blocked_until: bucket.blocked_until });
    return { granted, next_at: tokens >= 1 + reserve ? now : now + Math.ceil(((1 + reserve - tokens) / rate) * 1000) };
  }

  /** One token for one request of `action` (a create's retry or next region, a list, a get, a destroy). */
  draw(action: FlyAction, rate: number, burst: number): CreateToken {
    const grant = this.take(action, 1, rate, burst);
    return grant.granted === 1 ? { ok: true } : { ok: false, retryAt: grant.next_at };
  }

  /** The API answered 429 with Retry-After: no request of `action` from this app before `until`. */
  block(action: FlyAction, until: number): void {
    const bucket = this.tables.bucket(action, Date.now(), 0);
    const blocked = Math.max(bucket.blocked_until, until);
    this.tables.saveBucket(action, { tokens: 0, at: blocked, blocked_until: blocked });
  }

  /**
   * Debug hook (route /admin/debug/evict-fly-budget, admin token and DEBUG_HOOKS=true): resets
   * this object as the runtime does when it evicts it, so the soak can show what an eviction costs.
   */
  evict(): void {
    this.ctx.abort("evicted on request (debug hook)");
  }

  // ---- the fleet ---------------------------------------------------------------------------------

  /**
   * A batch reports what it holds and wants, and is told its share and how many machines it may
   * create now: no more than its share less what it holds, than the room left under the fleet's
   * limits, and than the create tokens it may take (turns by weight when several batches need them).
   * Granted machines count as live at once, until the batch's next report.
   */
  async acquire(req: FleetRequest): Promise<FleetAnswer> {
    const now = Date.now();
    const learned = this.learned(req.limits, now);
    const limits = effectiveLimits(req.limits, learned);
    const rows = this.tables.upsertBatch(req, now, now - LOST_MS);
    const self = rows.find((r) => r.batch_id === req.batch_id)!;
    const claims: Claim[] = rows.filter((r) => now - r.seen_at < STALE_MS).map((r) => ({ id: r.batch_id, weight: r.weight, demand: r.demand, guest: r.guest, order: r.joined_at }));
    const shares = fairShares(claims, limits);
    const fleetLive = rows.reduce((sum, r) => add(sum, r.live), { ...ZERO });
    const share = shares.get(req.batch_id) ?? 0;
    const room = roomFor(req.guest, limits, fleetLive);
    const could = Math.max(0, Math.min(req.want, share - req.running, room));
    let wanted = could;

    // Create tokens: batches that could create but lack tokens take turns, the one holding the least
    // (vCPUs per weight, as the shares are reckoned) first, then the one served longest ago; each
    // takes its weighted part of what is there.
    const level = vcpuLevel;
    const mine = level(req.live, req.weight);
    const needy = rows.filter((r) => r.batch_id !== req.batch_id && r.unmet > 0 && now - r.seen_at < NEEDY_MS);
    let tokenLimited = false;
    if (wanted > 0 && needy.length > 0) {
      const ahead = needy.some((r) => {
        const theirs = level(r.live, r.weight);
        return theirs < mine - 1e-9 || (Math.abs(theirs - mine) <= 1e-9 && r.served_at < self.served_at);
      });
      if (ahead) {
        tokenLimited = true;
        wanted = 0;
      } else {
        const available = this.peek("create", now, req.create);
        const part = Math.max(1, Math.floor((available * req.weight) / (req.weight + needy.reduce((n, r) => n + r.weight, 0))));
        if (part < wanted) tokenLimited = true;
        wanted = Math.min(wanted, part);
      }
    }
    const grant = wanted > 0 ? this.take("create", wanted, req.create.perSecond, req.create.burst) : { granted: 0, next_at: now };
    if (grant.granted < wanted) tokenLimited = true;
    const holds = add(req.live, machineOf(req.guest), grant.granted);
    const runs = req.running + grant.granted;
    // What it could have created but for the tokens: while any, it takes its turn for them.
    const unmet = could - grant.granted;
    const waiting = req.demand > runs && (share <= runs || room - grant.granted <= 0);
    this.tables.afterGrant(req.batch_id, holds, grant.granted > 0 ? now : self.served_at, unmet, waiting, share);
    // Batches whose share just shrank below what they hold (this one arrived, or asked for more) are
    // told now rather than at their next report (up to FLEET_POLL_AT_SHARE_MS away): their surplus
    // machines stop leasing and drain sooner. Once per smaller share; the furthest over first, at
    // most NUDGES_PER_REPORT (the rest hear at their own next report).
    const shrunk = rows
      .map((r) => ({ id: r.batch_id, told: r.share, now: shares.get(r.batch_id) ?? 0, holds: r.live.machines }))
      .filter((r) => r.id !== req.batch_id && r.told >= 0 && r.now < r.told && r.holds > r.now)
      .sort((a, b) => b.holds - b.now - (a.holds - a.now))
      .slice(0, NUDGES_PER_REPORT);
    if (shrunk.length > 0) {
      this.tables.setShares(shrunk.map((r) => [r.id, r.now]));
      await Promise.all(shrunk.map((r) => this.nudge(r.id)));
    }

    const queue = this.waitingOrder(rows.map((r) => (r.batch_id === req.batch_id ? { ...r, live: holds, waiting } : r)), shares);
    const position = waiting ? queue.indexOf(req.batch_id) + 1 : null;
    // Waiting below its share: room comes as others' surplus drains, soon. At its share: only when a batch ends.
    const nextAt = tokenLimited ? Math.max(grant.next_at, now + 50) : waiting ? now + (share > runs ? FLEET_POLL_MS : FLEET_POLL_AT_SHARE_MS) : null;
    return {
      granted: grant.granted,
      share,
      next_at: nextAt,
      waiting,
      position,
      waiting_batches: queue.length,
      batches: claims.length,
      limits,
      fleet_live: add(fleetLive, machineOf(req.guest), grant.granted),
      epoch: learned.epoch,
      learned: learnedSummary(learned, req.limits),
    };
  }

  /** Asks a batch to report again now (its alarm brought forward); a batch that cannot be reached reports at its next alarm anyway. */
  private async nudge(batchId: string): Promise<void> {
    try {
      await this.env.BATCH_DO.getByName(batchId).fleetChanged();
    } catch (err) {
      logError("FlyBudget", "nudge_failed", err, { batch_id: batchId });
    }
  }

  /**
   * Fly refused a create for quota (`resource`, in its own words `message`): the batch's holdings
   * are brought up to date and the fleet's limit on that resource halves from what is live.
   */
  refused(batchId: string, live: Resources, resource: QuotaResource, message: string, epoch: number, limits: Resources): string | null {
    const now = Date.now();
    this.tables.setLive(batchId, live, now);
    const fleetLive = this.tables.batches(now - LOST_MS).reduce((sum, r) => add(sum, r.live), { ...ZERO });
    const learned = learnRefusal(this.learned(limits, now), limits, resource, fleetLive, message.slice(0, 300), epoch, now);
    this.tables.saveLearned(learned);
    return learnedSummary(learned, limits);
  }

  /** A batch ended and holds no machine any more: it leaves the fleet. */
  leave(batchId: string): void {
    this.tables.deleteBatch(batchId);
  }

  /** Everything GET /fleet shows. */
  snapshot(limits: Resources, rates: Rates): FleetSnapshot {
    const now = Date.now();
    const learned = this.learned(limits, now);
    const effective = effectiveLimits(limits, learned);
    const rows = this.tables.batches(now - LOST_MS);
    const shares = fairShares(
      rows.filter((r) => now - r.seen_at < STALE_MS).map((r) => ({ id: r.batch_id, weight: r.weight, demand: r.demand, guest: r.guest, order: r.joined_at })),
      effective,
    );
    const queue = this.waitingOrder(rows, shares);
    const tokens = Object.fromEntries(
      FLY_ACTIONS.map((action) => {
        const rate = rates[action];
        const b = this.tables.bucket(action, now, rate.burst);
        const level = Math.min(rate.burst, b.tokens + (Math.max(0, now - b.at) / 1000) * rate.perSecond);
        return [action, { tokens: Math.round(level * 100) / 100, per_second: rate.perSecond, burst: rate.burst, blocked_until: b.blocked_until > now ? new Date(b.blocked_until).toISOString() : null }];
      }),
    ) as FleetSnapshot["api_tokens"];
    return {
      limits: { configured: limits, effective, learned: learnedSummary(learned, limits) },
      live: rows.reduce((sum, r) => add(sum, r.live), { ...ZERO }),
      batches: rows.map((r) => ({
        batch_id: r.batch_id,
        priority: r.weight,
        demand: r.demand,
        share: shares.get(r.batch_id) ?? 0,
        live: r.live,
        waiting: r.waiting,
        position: r.waiting ? queue.indexOf(r.batch_id) + 1 : null,
        seen_at: new Date(r.seen_at).toISOString(),
        stale: now - r.seen_at >= STALE_MS,
      })),
      waiting: queue,
      api_tokens: tokens,
    };
  }

  // -------------------------------------------------------------------------------------------------

  /** What has been learned, grown back for the time since (and stored when it grew). */
  private learned(limits: Resources, now: number): Learned {
    const stored = this.tables.learned() ?? NOTHING_LEARNED;
    const grown = grow(stored, limits, now);
    if (grown !== stored) this.tables.saveLearned(grown);
    return grown;
  }

  /** Tokens of `action` there now, less the reserve, without taking any. */
  private peek(action: FlyAction, now: number, rate: Rate): number {
    const b = this.tables.bucket(action, now, rate.burst);
    if (now < b.blocked_until) return 0;
    const level = Math.min(rate.burst, b.tokens + (Math.max(0, now - b.at) / 1000) * rate.perSecond);
    return Math.max(0, Math.floor(level - burstReserve(rate.burst)));
  }

  /** Waiting batches in the order room would reach them: the furthest below its share first, then the least served (vCPUs per weight). */
  private waitingOrder(rows: { batch_id: string; live: Resources; weight: number; waiting: boolean; joined_at: number }[], shares: Map<string, number>): string[] {
    return rows
      .filter((r) => r.waiting)
      .sort(
        (a, b) =>
          (shares.get(b.batch_id) ?? 0) - b.live.machines - ((shares.get(a.batch_id) ?? 0) - a.live.machines) ||
          vcpuLevel(a.live, a.weight) - vcpuLevel(b.live, b.weight) ||
          a.joined_at - b.joined_at,
      )
      .map((r) => r.batch_id);
  }
}

export interface FleetSnapshot {
  limits: { configured: Resources; effective: Resources; learned: string | null };
  live: Resources;
  batches: { batch_id: string; priority: number; demand: number; share: number; live: Resources; waiting: boolean; position: number | null; seen_at: string; stale: boolean }[];
  waiting: string[];
  api_tokens: Record<FlyAction, { tokens: number; per_second: number; burst: number; blocked_until: string | null }>;
}

/** Machines of `guest` that fit in what the limits leave. */
function roomFor(guest: { cpus: number; memory_mb: number }, limits: Resources, live: Resources): number {
  const one = machineOf(guest);
  return Math.max(0, Math.min(...RESOURCES.map((r) => (one[r] > 0 ? Math.floor((limits[r] - live[r]) / one[r]) : Infinity))));
}

/** Tokens of the burst the budget never hands out (headroom for requests delayed on their way). */
export const burstReserve = (burst: number): number => (burst >= 2 ? 1 : 0);

/**
 * The `draw` a createMachine call is given: every POST it sends takes a create token. `prepaid`
 * POSTs are covered by tokens the fleet already granted. A later POST (a retry, the next region)
 * waits up to `maxWaitMs` for its token: its create is under way and already paid for, and the next
 * alarm's grants would claim every new token for first tries again, so giving up at once could
 * starve fallbacks for ever.
 */
export function createDraw(
  budget: { draw(action: FlyAction, rate: number, burst: number): Promise<CreateToken> },
  rate: number,
  burst: number,
  prepaid = 0,
  maxWaitMs = 2000,
): () => Promise<CreateToken> {
  let covered = prepaid;
  return async () => {
    if (covered > 0) {
      covered--;
      return { ok: true };
    }
    const giveUpAt = Date.now() + maxWaitMs;
    for (;;) {
      const token = await budget.draw("create", rate, burst);
      if (token.ok || token.retryAt > giveUpAt) return token;
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, token.retryAt - Date.now())));
    }
  };
}
