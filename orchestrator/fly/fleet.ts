// The fleet of a Fly app, as pure functions: how its machines, vCPUs and memory are shared between
// the batches running at once (weighted max-min fairness in vCPUs, within all three limits), and how the
// limits it runs under learn from Fly's quota refusals (halve on a refusal, grow back while none
// comes). The FlyBudget Durable Object (budget.ts) keeps the state and calls these.

/** Machines, vCPUs and memory: what the fleet limits and what a batch holds. */
export interface Resources {
  machines: number;
  vcpus: number;
  memory_mb: number;
}

export const RESOURCES = ["machines", "vcpus", "memory_mb"] as const;
export type Resource = (typeof RESOURCES)[number];

export const ZERO: Resources = { machines: 0, vcpus: 0, memory_mb: 0 };

/** One batch's claim on the fleet. */
export interface Claim {
  id: string;
  /** Its weight (the message's `priority`, default 1). */
  weight: number;
  /** Machines it could use now (its own cap applied). */
  demand: number;
  /** The size of each machine it creates. */
  guest: { cpus: number; memory_mb: number };
  /** Tie-break: who joined first. */
  order: number;
}

/** A batch's vCPUs per unit of weight: what the shares (and the turns for create tokens) even out. */
export const vcpuLevel = (live: Resources, weight: number): number => live.vcpus / Math.max(weight, 1e-9);

/** What one machine of `guest` takes of each resource. */
export const machineOf = (guest: { cpus: number; memory_mb: number }): Resources => ({ machines: 1, vcpus: guest.cpus, memory_mb: guest.memory_mb });

export const add = (a: Resources, b: Resources, k = 1): Resources => ({
  machines: a.machines + k * b.machines,
  vcpus: a.vcpus + k * b.vcpus,
  memory_mb: a.memory_mb + k * b.memory_mb,
});

export const fits = (used: Resources, limits: Resources): boolean => RESOURCES.every((r) => used[r] <= limits[r]);

/**
 * Machines per batch, max-min fair in vCPUs (the compute each batch gets, whatever size its machines
 * are) weighted by priority, within all three limits. Progressive filling one machine at a time:
 * the next machine goes to the batch whose vCPUs per weight would be lowest after it, among those
 * that want one and whose machine still fits every limit; a batch whose machine no longer fits is
 * passed over, so smaller machines fill what is left. (Dominant resource fairness was tried first:
 * it equalises machine counts when the machine limit binds, which gives a batch of 1-vCPU machines a
 * quarter of the compute of one of 4-vCPU machines — the fleet bench's scenario (b) measured Jain's
 * index of vCPU share at 0.76 with it.)
 */
export function fairShares(claims: Claim[], limits: Resources): Map<string, number> {
  const shares = new Map(claims.map((c) => [c.id, 0]));
  let used: Resources = { ...ZERO };
  const open = new Set(claims.filter((c) => c.demand > 0 && c.weight > 0));
  while (open.size > 0) {
    let best: Claim | null = null;
    let bestLevel = Infinity;
    for (const c of open) {
      const level = ((shares.get(c.id)! + 1) * c.guest.cpus) / c.weight;
      if (level < bestLevel - 1e-12 || (Math.abs(level - bestLevel) <= 1e-12 && best !== null && c.order < best.order)) {
        best = c;
        bestLevel = level;
      }
    }
    if (!best) break;
    const next = add(used, machineOf(best.guest));
    if (!fits(next, limits)) {
      open.delete(best);
      continue;
    }
    used = next;
    const n = shares.get(best.id)! + 1;
    shares.set(best.id, n);
    if (n >= best.demand) open.delete(best);
  }
  return shares;
}

/** Jain's fairness index of values (1 = all equal). */
export function jain(values: number[]): number {
  const sum = values.reduce((a, b) => a + b, 0);
  const squares = values.reduce((a, b) => a + b * b, 0);
  return values.length === 0 || squares === 0 ? 1 : (sum * sum) / (values.length * squares);
}

// ---- what the fleet learns from Fly's quota refusals --------------------------------------

/** Fly refused a create for a quota on this resource; "unknown" when its words did not say which. */
export type QuotaResource = Resource | "unknown";

/**
 * The limits the fleet has learned, below the configured ones: per resource, the limit now (null:
 * the configured one) and what was live when Fly last refused (known to fit).
 */
export interface Learned {
  limit: Partial<Record<Resource, number>>;
  fitted: Partial<Record<Resource, number>>;
  refusals: number;
  last_refusal: string | null;
  refused_at: number;
  grown_at: number;
  /** Bumped at each halving: refusals of creates granted before it are not counted twice. */
  epoch: number;
}

export const NOTHING_LEARNED: Learned = { limit: {}, fitted: {}, refusals: 0, last_refusal: null, refused_at: 0, grown_at: 0, epoch: 0 };

/** Growth back towards what last fitted: an eighth of it every 5 s; beyond it, every minute. */
export const GROW_FAST_MS = 5_000;
export const GROW_SLOW_MS = 60_000;

/** The smallest step of each resource (a machine, a vCPU, 256 MB). */
const UNIT: Resources = { machines: 1, vcpus: 1, memory_mb: 256 };

export function effectiveLimits(configured: Resources, learned: Learned): Resources {
  const out = { ...configured };
  for (const r of RESOURCES) {
    const l = learned.limit[r];
    if (l !== undefined) out[r] = Math.min(out[r], l);
  }
  return out;
}

/**
 * A quota refusal while `live` was live: the refused resource's limit halves from what was live
 * (never below one unit), and what was live is remembered as fitting. A refusal of a create granted
 * before the last halving (`epoch` older than the learned one) changes nothing: it was counted.
 */
export function learnRefusal(learned: Learned, configured: Resources, resource: QuotaResource, live: Resources, message: string, epoch: number, now: number): Learned {
  const next: Learned = { ...learned, limit: { ...learned.limit }, fitted: { ...learned.fitted }, refusals: learned.refusals + 1, last_refusal: message, refused_at: now };
  if (epoch < learned.epoch) return next;
  const r: Resource = resource === "unknown" ? "machines" : resource;
  const current = Math.min(effectiveLimits(configured, learned)[r], Math.max(live[r], UNIT[r]));
  next.limit[r] = Math.max(UNIT[r], Math.floor(current / 2 / UNIT[r]) * UNIT[r]);
  next.fitted[r] = live[r];
  next.grown_at = now;
  next.epoch = learned.epoch + 1;
  return next;
}

/**
 * Grows every learned limit while no refusal comes: fast back to what last fitted, slowly beyond
 * it; a limit that reaches the configured one is dropped (nothing left to learn).
 */
export function grow(learned: Learned, configured: Resources, now: number): Learned {
  let next = learned;
  for (const r of RESOURCES) {
    const limit = next.limit[r];
    if (limit === undefined) continue;
    const fitted = next.fitted[r] ?? 0;
    const wait = limit < fitted ? GROW_FAST_MS : GROW_SLOW_MS;
    if (now - learned.grown_at < wait) continue;
    const step = Math.max(UNIT[r], Math.ceil(Math.max(fitted, limit) / 8 / UNIT[r]) * UNIT[r]);
    const grown = limit < fitted ? Math.min(fitted, limit + step) : limit + step;
    next = { ...next, limit: { ...next.limit }, grown_at: now };
    if (grown >= configured[r]) delete next.limit[r];
    else next.limit[r] = grown;
  }
  return next;
}

/** One sentence on what the fleet has learned, or null when it runs at its configured limits. */
export function learnedSummary(learned: Learned, configured: Resources): string | null {
  const lowered = RESOURCES.filter((r) => learned.limit[r] !== undefined);
  if (lowered.length === 0) return null;
  const what = lowered.map((r) => `${r} ${learned.limit[r]} of ${configured[r]}`).join(", ");
  return `Fly refused ${learned.refusals} create${learned.refusals === 1 ? "" : "s"} for quota (last: ${learned.last_refusal ?? "?"}); the fleet runs at ${what} until creates succeed again`;
}
