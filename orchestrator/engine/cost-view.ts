// What GET /status/:batchId says a batch has cost so far, all in, per phase and in total, and how
// it was sized. Every figure is counted by the batch (its phases' phase_costs and tally rows, its
// running machines' rows, its Durable Object's own rows written and requests) and priced by
// shared/cost-model.ts; nothing here reads the tasks. The totals are the sums of the phases'.
import { allInCost, DO_ACTIVE_S_PER_REQUEST, DO_PRICES, FLY_EGRESS, R2_PRICES, WORKERS_PRICES } from "../../shared/cost-model.ts";
import { FLY_PRICES, type Guest, pricePerSecond } from "../../shared/fly-model.ts";
import { getPhase } from "../phases/index.ts";
import type { BatchMeta } from "../store/index.ts";
import type { Engine } from "./context.ts";
import { storedOf } from "./plan.ts";
import { planName } from "./sizing.ts";

export interface MachinesView {
  ended: number;
  running: number;
  machine_seconds: number;
  /** The machines' seconds at Fly's per-second price for each one's size and region. */
  estimated_cost_usd: number;
  prices: string;
}

export interface CostView {
  /** USD so far, item by item, and per task done (to the nano-dollar: a small batch's egress is fractions of a cent). */
  machines_usd: number;
  egress_usd: number;
  r2_operations_usd: number;
  durable_object_usd: number;
  worker_requests_usd: number;
  total_usd: number;
  per_task_done_usd: number | null;
  /** What was counted and priced. */
  counted: {
    machine_seconds: number;
    output_bytes: number;
    r2_class_a: number;
    r2_class_b: number;
    do_rows_written: number;
    do_requests: number;
    worker_requests: number;
    do_active_s: number;
  };
  /** How each item is counted, and where its price comes from. */
  basis: string;
  sources: string[];
}

export interface SizingView {
  objective: string | null;
  plan: string;
  mode: "single" | "pool";
  guest: { cpu_kind: string; cpus: number; memory_mb: number };
  slots: number;
  machines: number;
  estimated_makespan_s: number | null;
  estimated_cost_usd: number | null;
  plans_considered: number;
  /** What the work model rests on: the bench's starting figure, or what the batch's machines measured. */
  work: { basis: "starting figure" | "measured"; measured_tasks: number; cpu_s_per_mp: number | null; pixels_per_byte: number | null };
  resized: { at: string; from: string; to: string } | null;
}

const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;

/** A phase's machines so far: the status body's `phases[].machines`. */
export interface PhaseMachines {
  ended: number;
  running: number;
  machine_seconds: number;
  /** Their seconds at Fly's per-second price for each one's size and region. */
  estimated_cost_usd: number;
  /** Sizes of its running machines, else of the last one that ended: `performance-1x 2048 MB`. */
  sizes: string[];
}

/** A phase's all-in cost so far: its machines, Fly egress of its outputs, its R2 operations (`phases[].cost`). */
export interface PhaseCost {
  machines_usd: number;
  egress_usd: number;
  r2_operations_usd: number;
  total_usd: number;
}

/** One phase's figures before rounding, kept so the batch's totals are the exact sums of its phases'. */
export interface PhaseView {
  machines: PhaseMachines;
  cost: PhaseCost;
  raw: { machineMs: number; machineUsd: number; egress: number; r2: number; r2ClassA: number; r2ClassB: number; outputBytes: number };
}

const sizeName = (g: Guest) => `${g.cpu_kind}-cpu-${g.cpus}x ${g.memory_mb} MB`.replace("performance-cpu", "performance");

/**
 * Each named phase's machines and all-in cost: its ended machines from its phase_costs row (kept as
 * they end, at their region's price), its running ones (at most MAX_CONCURRENT_MACHINES rows) to
 * now, and its tally row's attempts and outputs priced as R2 operations and egress from the first region.
 */
export function phaseViews(e: Engine, names: string[], now = Date.now()): PhaseView[] {
  const costs = e.store.phaseCosts();
  const unended = e.store.unendedMachines();
  const usage = e.store.phaseUsage();
  const region = e.config.FLY_REGIONS[0] ?? null;
  return names.map((phase) => {
    const ended = costs.find((c) => c.phase === phase);
    let ms = ended?.machine_ms ?? 0;
    let usd = ended?.cost_usd ?? 0;
    const running = unended.filter((m) => m.phase === phase);
    const sizes = new Set<string>();
    for (const m of running) {
      const t = Math.max(0, now - m.created_at);
      ms += t;
      if (m.cpu_kind) {
        const guest = { cpu_kind: m.cpu_kind, cpus: m.cpus, memory_mb: m.memory_mb };
        usd += (t / 1000) * pricePerSecond(guest, m.region);
        sizes.add(sizeName(guest));
      }
    }
    if (sizes.size === 0 && ended?.last_guest) sizes.add(sizeName(JSON.parse(ended.last_guest) as Guest));
    const used = usage.find((u) => u.phase === phase) ?? { attempts: 0, outputs: 0, outputBytes: 0 };
    const c = allInCost({
      machineUsd: usd,
      outputBytes: used.outputBytes,
      region,
      r2ClassA: used.outputs,
      r2ClassB: used.attempts + used.outputs,
      doRowsWritten: 0,
      doRequests: 0,
      doActiveS: 0,
      workerRequests: 0,
    });
    return {
      machines: { ended: ended?.ended ?? 0, running: running.length, machine_seconds: round(ms / 1000, 1), estimated_cost_usd: round(usd, 6), sizes: [...sizes].sort() },
      cost: { machines_usd: round(usd, 9), egress_usd: round(c.egress, 9), r2_operations_usd: round(c.r2_operations, 9), total_usd: round(c.total, 9) },
      raw: { machineMs: ms, machineUsd: usd, egress: c.egress, r2: c.r2_operations, r2ClassA: used.outputs, r2ClassB: used.attempts + used.outputs, outputBytes: used.outputBytes },
    };
  });
}

/** The batch's machines: the sum of its phases' (`phases` from phaseViews over every phase it has). */
export function machinesView(phases: PhaseView[]): MachinesView {
  const ms = phases.reduce((n, p) => n + p.raw.machineMs, 0);
  const usd = phases.reduce((n, p) => n + p.raw.machineUsd, 0);
  return {
    ended: phases.reduce((n, p) => n + p.machines.ended, 0),
    running: phases.reduce((n, p) => n + p.machines.running, 0),
    machine_seconds: round(ms / 1000, 1),
    estimated_cost_usd: round(usd, 6),
    prices: FLY_PRICES.source,
  };
}

/** The batch's all-in cost: its phases' items summed, plus its Durable Object's and Worker's, which are the batch's. */
export function costView(e: Engine, meta: BatchMeta, machines: MachinesView, phases: PhaseView[]): CostView {
  const billed = e.store.usageSoFar(meta);
  const doneTasks = e.store.counts().reduce((n, c) => n + c.done, 0);
  const activeS = billed.requests * DO_ACTIVE_S_PER_REQUEST;
  const sum = (f: (p: PhaseView["raw"]) => number) => phases.reduce((n, p) => n + f(p.raw), 0);
  const counted = {
    machine_seconds: machines.machine_seconds,
    output_bytes: sum((r) => r.outputBytes),
    r2_class_a: sum((r) => r.r2ClassA),
    r2_class_b: sum((r) => r.r2ClassB),
    do_rows_written: billed.rowsWritten,
    do_requests: billed.requests,
    worker_requests: billed.workerRequests,
    do_active_s: round(activeS, 2),
  };
  const c = allInCost({
    machineUsd: sum((r) => r.machineUsd),
    outputBytes: 0,
    region: null,
    r2ClassA: 0,
    r2ClassB: 0,
    doRowsWritten: counted.do_rows_written,
    doRequests: counted.do_requests,
    doActiveS: activeS,
    workerRequests: counted.worker_requests,
  });
  const egress = sum((r) => r.egress);
  const r2 = sum((r) => r.r2);
  const total = c.total + egress + r2;
  return {
    machines_usd: round(c.machines, 9),
    egress_usd: round(egress, 9),
    r2_operations_usd: round(r2, 9),
    durable_object_usd: round(c.durable_object, 9),
    worker_requests_usd: round(c.worker_requests, 9),
    total_usd: round(total, 9),
    per_task_done_usd: doneTasks > 0 ? round(total / doneTasks, 9) : null,
    counted,
    basis:
      "per phase (phases[].cost): machines from create to end at each size's price in its region; egress: the outputs' bytes uploaded from the first region; R2: a GET per attempt begun, a PUT and a ranged GET of its first bytes per output (discovery's reads not counted). The batch's: its Durable Object's rows written (setAlarm included) and requests as it counted them, active 10 ms per request (an assumption; an open event stream keeps it billed longer); Worker: the requests that reached the object. Free allowances are an account's and are not subtracted.",
    sources: [FLY_PRICES.source, FLY_EGRESS.source, R2_PRICES.source, DO_PRICES.source, WORKERS_PRICES.source],
  };
}

/** The current phase's stored plan (null before the phase runs): a status read never sizes anything. */
export function sizingView(e: Engine, meta: BatchMeta): SizingView | null {
  const phase = getPhase(meta.phase);
  const plan = storedOf(meta, phase);
  if (!plan) return null;
  const basis = plan.basis;
  return {
    objective: plan.objective,
    plan: planName(plan),
    mode: plan.mode,
    guest: plan.guest,
    slots: plan.slots,
    machines: plan.machines,
    estimated_makespan_s: plan.makespanS === null ? null : round(plan.makespanS, 1),
    estimated_cost_usd: plan.costUsd === null ? null : round(plan.costUsd, 6),
    plans_considered: plan.considered,
    work: {
      basis: basis?.source ?? "starting figure",
      measured_tasks: e.store.measured(phase.name).tasks,
      cpu_s_per_mp: basis?.cpuSPerMp ?? null,
      pixels_per_byte: basis?.pixelsPerByte ?? null,
    },
    resized: plan.resized ? { at: new Date(plan.resized.at).toISOString(), from: plan.resized.from, to: plan.resized.to } : null,
  };
}

