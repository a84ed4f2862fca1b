// A phase's plan: the mode, machine size, slots and machine count sizing.ts picks when the phase
// begins to run, stored with the batch so every alarm and lease uses the same one; re-made once,
// after the first tasks, from what the batch's machines measured (CPU-seconds per megapixel,
// pixels per input byte), and saying so in /status.
import type { GuestSize } from "../fly/api.ts";
import { guestForSlots } from "../fly/api.ts";
import { log } from "../log.ts";
import type { Phase, WorkRates } from "../phases/types.ts";
import type { BatchMeta } from "../store/index.ts";
import type { Engine } from "./context.ts";
import { DEFAULT_LIMITS, fitsFleet, type Limits, maxMachinesOf, type Objective, pick, type Plan, planBatch, planName, poolPlan, singlePlan } from "./sizing.ts";

/** Boot time the sizing assumes (image pull and Node start on a warm Fly host). */
export const SIZING_BOOT_S = 5;

/** What the work model of a plan was based on. */
export interface PlanBasis {
  source: "starting figure" | "measured";
  /** Tasks whose callbacks reported CPU-seconds and megapixels (0 for the starting figure). */
  tasks: number;
  cpuSPerMp: number | null;
  pixelsPerByte: number | null;
}

/** A phase's plan as stored in meta.pool_plan_json. */
export interface StoredPlan {
  phase: string;
  mode: "single" | "pool";
  slots: number;
  machines: number;
  guest: GuestSize;
  perSlotMb: number;
  makespanS: number | null;
  costUsd: number | null;
  objective: Objective | null;
  considered: number;
  basis: PlanBasis | null;
  /** Set when the plan was re-made from measurements: what it replaced, and when. */
  resized: { at: number; from: string; to: string } | null;
}

/** The modes the batch may run in: its message's `pool` (and slots), else POOL_MODE (true: the sizing chooses). */
export function modesOf(meta: BatchMeta): ("single" | "pool")[] {
  const request = meta.mode_request ?? (meta.pool ? "pool" : "single");
  return request === "auto" ? ["single", "pool"] : [request];
}

export function limitsOf(e: Engine, phase: Phase): Limits {
  const c = e.config;
  return {
    ...DEFAULT_LIMITS,
    // What the batch could run alone (its cap, the fleet's limits); the fleet's share bounds it at run time.
    maxMachines: e.limits(phase).maxLive,
    maxVcpus: c.FLEET_MAX_VCPUS,
    maxMemoryMb: c.FLEET_MAX_MEMORY_MB,
    createPerS: c.FLY_CREATE_RATE_PER_SECOND,
    createBurst: c.FLY_CREATE_BURST,
    bootS: SIZING_BOOT_S,
    region: c.FLY_REGIONS[0] ?? null,
    heartbeatS: Math.max(0.5, c.LEASE_TIMEOUT_MS / 3 / 1000),
  };
}

export const storedOf = (meta: BatchMeta, phase: Phase): StoredPlan | null => {
  const stored = meta.pool_plan_json ? (JSON.parse(meta.pool_plan_json) as Partial<StoredPlan>) : null;
  if (!stored || stored.phase !== phase.name) return null;
  // Plans stored before issue 23 were pools only.
  return { mode: "pool", makespanS: null, costUsd: null, objective: null, considered: 0, basis: null, resized: null, ...stored } as StoredPlan;
};

function fromPlan(phase: Phase, p: Plan, considered: number, objective: Objective, basis: PlanBasis | null): StoredPlan {
  return { phase: phase.name, mode: p.mode, slots: p.slots, machines: p.machines, guest: p.guest, perSlotMb: p.perSlotMb, makespanS: p.makespanS, costUsd: p.costUsd, objective, considered, basis, resized: null };
}

/**
 * Sizes the phase for `tasks` tasks: every plan sizing.ts knows within the batch's modes, and the
 * one its objective picks. A phase without a work model runs one machine per task (its `guest`),
 * or pools of that guest per slot.
 */
function size(e: Engine, meta: BatchMeta, phase: Phase, tasks: number, rates: WorkRates | null, modes = modesOf(meta)): { plan: Plan | StoredPlan; considered: Plan[] } {
  const fixed = meta.pool_slots || e.config.POOL_TASKS_PER_MACHINE || undefined;
  const limits = limitsOf(e, phase);
  if (!phase.work) {
    const slots = modes.includes("pool") ? (fixed ?? 1) : 1;
    const { guest, perSlotMb } = guestForSlots(phase.guest(meta.max_task_size), slots);
    if (!fitsFleet(limits, guest)) {
      throw new Error(`${phase.name}'s machine (${guest.cpus} CPUs, ${guest.memory_mb} MB for ${slots} slot(s)) is larger than the fleet's limits (FLEET_MAX_VCPUS ${limits.maxVcpus}, FLEET_MAX_MEMORY_MB ${limits.maxMemoryMb}): it would wait for room for ever`);
    }
    const mode = modes.includes("pool") ? "pool" : "single";
    return { plan: { phase: phase.name, mode, slots, machines: maxMachinesOf(limits, guest), guest, perSlotMb, makespanS: null, costUsd: null, objective: null, considered: 0, basis: null, resized: null }, considered: [] };
  }
  const work = phase.work(meta.max_task_size, rates ?? undefined);
  const { plan, considered } = planBatch({ tasks: Math.max(1, tasks), work, limits, objective: e.config.SIZING_OBJECTIVE, modes, slots: fixed });
  return { plan, considered };
}

/** The phase's plan: the one stored when it began to run (machines capped by today's limit); before that, sized afresh. */
export function planOf(e: Engine, meta: BatchMeta, phase: Phase): StoredPlan {
  const stored = storedOf(meta, phase);
  if (stored) return { ...stored, machines: Math.min(stored.machines, e.limits(phase).maxLive) };
  const { plan, considered } = size(e, meta, phase, e.store.phaseCounts(phase.name).total, null);
  return "phase" in plan ? plan : fromPlan(phase, plan, considered.length, e.config.SIZING_OBJECTIVE, null);
}

const basisOf = (rates: WorkRates | null, tasks: number): PlanBasis =>
  rates ? { source: "measured", tasks, cpuSPerMp: rates.cpuSPerMp ?? null, pixelsPerByte: rates.pixelsPerByte ?? null } : { source: "starting figure", tasks: 0, cpuSPerMp: null, pixelsPerByte: null };

/**
 * Stores the phase's plan once, when it begins to run, with the batch's mode following it. A phase
 * with nothing to do (a phase of the pipeline none of the batch's files is for) is not sized: the plan and mode
 * the status shows stay those of the last phase that did work.
 */
export function planPhase(e: Engine, meta: BatchMeta, phase: Phase): BatchMeta {
  if (storedOf(meta, phase)) return meta;
  const tasks = e.store.phaseCounts(phase.name).total;
  if (tasks === 0) return meta;
  const { plan, considered } = size(e, meta, phase, tasks, null);
  const stored = "phase" in plan ? plan : fromPlan(phase, plan, considered.length, e.config.SIZING_OBJECTIVE, basisOf(null, 0));
  const fields = { pool_plan_json: JSON.stringify(stored), pool: stored.mode === "pool" ? 1 : 0 };
  e.store.updateMeta(fields, Date.now());
  log("DO", "phase_sized", { batch_id: meta.batch_id, phase: phase.name, plan: planName(stored), makespan_s: stored.makespanS, cost_usd: stored.costUsd, considered: stored.considered });
  return { ...meta, ...fields };
}

/**
 * A re-made plan moves to another machine size only when it ends this much sooner (`fast`,
 * `balanced`) or costs this much less (`cheapest`). `balanced` does not switch for cost alone: the
 * new size's machines boot while the old ones finish, and under an organisation's quota Fly refuses
 * them until the old have gone (the quota e2e stalled 120 s so: test/e2e/quota.test.ts).
 */
export const SWITCH_GAIN = 0.1;

/** Measured tasks after which a phase's plan is re-made: the first few, never more than 2% of the phase. */
export function learnAfter(total: number): number {
  return Math.max(3, Math.min(20, Math.ceil(total * 0.02)));
}

/**
 * Once the phase's machines have reported enough tasks, re-sizes what is left of it from their
 * measured CPU-seconds per megapixel and pixels per byte (once per phase; the mode stays). The
 * current shape is one of the plans compared; another is taken only when the objective picks it
 * and it gains SWITCH_GAIN over the current one (machines of the old shape then take no new task
 * and leave, pool.ts).
 */
export function learn(e: Engine, meta: BatchMeta, phase: Phase): BatchMeta {
  const stored = storedOf(meta, phase);
  if (!stored || !phase.work || stored.basis?.source === "measured") return meta;
  const measured = e.store.measured(phase.name);
  const counts = e.store.phaseCounts(phase.name);
  if (measured.tasks < learnAfter(counts.total) || measured.megapixels <= 0 || measured.bytes <= 0) return meta;
  const rates: WorkRates = { cpuSPerMp: measured.cpuS / measured.megapixels, pixelsPerByte: (measured.megapixels * 1e6) / measured.bytes };
  const open = counts.pending + counts.retrying + counts.creating + counts.booting + counts.running;
  const { considered } = size(e, meta, phase, open, rates, [stored.mode]);
  const limits = limitsOf(e, phase);
  const work = phase.work(meta.max_task_size, rates);
  const tasks = Math.max(1, open);
  const keep = stored.mode === "pool" ? poolPlan(tasks, work, stored.guest, stored.slots, limits) : singlePlan(tasks, work, stored.guest, limits);
  const picked = pick([keep, ...considered], e.config.SIZING_OBJECTIVE);
  // Another size costs new boots and creates while the old machines, already up, finish: worth it
  // only for a clear gain over keeping them (whose boot and create ramp are behind them).
  const sameShape = picked.guest.cpu_kind === keep.guest.cpu_kind && picked.guest.cpus === keep.guest.cpus && picked.guest.memory_mb === keep.guest.memory_mb && picked.slots === keep.slots;
  const keepLeft = Math.max(0, keep.makespanS - limits.bootS - Math.max(0, keep.machines - limits.createBurst) / limits.createPerS);
  const gain = e.config.SIZING_OBJECTIVE === "cheapest" ? picked.decidedUsd < keep.decidedUsd * (1 - SWITCH_GAIN) : picked.makespanS < keepLeft * (1 - SWITCH_GAIN);
  const chosen = sameShape || gain ? picked : keep;
  const [from, to] = [planName(stored), planName(chosen)];
  const next: StoredPlan = {
    ...fromPlan(phase, chosen, considered.length + 1, e.config.SIZING_OBJECTIVE, basisOf(rates, measured.tasks)),
    resized: from === to ? null : { at: Date.now(), from, to },
  };
  const fields = { pool_plan_json: JSON.stringify(next) };
  e.store.updateMeta(fields, Date.now());
  log("DO", "phase_resized", { batch_id: meta.batch_id, phase: phase.name, measured_tasks: measured.tasks, cpu_s_per_mp: rates.cpuSPerMp, pixels_per_byte: rates.pixelsPerByte, from, to });
  return { ...meta, ...fields };
}

/** True when a pool machine of this size and slot count is not the phase's plan any more (it leaves once its tasks end). */
export function outOfPlan(plan: StoredPlan, row: { slots: number; cpu_kind: string | null; cpus: number; memory_mb: number }): boolean {
  return row.cpu_kind !== null && (row.slots !== plan.slots || row.cpu_kind !== plan.guest.cpu_kind || row.cpus !== plan.guest.cpus || row.memory_mb !== plan.guest.memory_mb);
}

/**
 * The modes a new batch may run in: pool when its message asks (or sets slots, with POOL_MODE on);
 * one machine per task when it says `"pool": false` or POOL_MODE is off; otherwise `auto`, the
 * sizing picks either, batch by batch.
 */
export function modeOf(message: { pool?: boolean; pool_tasks_per_machine?: number }, poolMode: boolean): Pick<BatchMeta, "mode_request" | "pool" | "pool_slots"> {
  const request = message.pool === true || (message.pool === undefined && message.pool_tasks_per_machine && poolMode) ? "pool" : message.pool === false || !poolMode ? "single" : "auto";
  return { mode_request: request, pool: request === "single" ? 0 : 1, pool_slots: request === "single" ? 0 : (message.pool_tasks_per_machine ?? 0) };
}
