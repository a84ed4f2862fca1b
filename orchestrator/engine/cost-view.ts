// What GET /status/:batchId says a batch has cost so far, all in, and how it was sized. Every
// figure is counted by the batch (machine rows, its phases' tallies, its Durable Object's own
// rows written and requests) and priced by shared/cost-model.ts; nothing here reads the tasks.
import { allInCost, DO_ACTIVE_S_PER_REQUEST, DO_PRICES, FLY_EGRESS, R2_PRICES, WORKERS_PRICES } from "../../shared/cost-model.ts";
import { FLY_PRICES, pricePerSecond } from "../../shared/fly-model.ts";
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

export function machinesView(e: Engine, meta: BatchMeta, now = Date.now()): MachinesView {
  let ms = meta.machine_ms;
  let usd = meta.machine_cost_usd;
  const running = e.store.unendedMachines();
  for (const m of running) {
    const t = Math.max(0, now - m.created_at);
    ms += t;
    if (m.cpu_kind) usd += (t / 1000) * pricePerSecond({ cpu_kind: m.cpu_kind, cpus: m.cpus, memory_mb: m.memory_mb }, m.region);
  }
  return { ended: meta.machines_ended, running: running.length, machine_seconds: round(ms / 1000, 1), estimated_cost_usd: round(usd, 6), prices: FLY_PRICES.source };
}

export function costView(e: Engine, meta: BatchMeta, machines: MachinesView): CostView {
  const used = e.store.phaseUsage();
  const billed = e.store.usageSoFar(meta);
  const doneTasks = e.store.counts().reduce((n, c) => n + c.done, 0);
  const activeS = billed.requests * DO_ACTIVE_S_PER_REQUEST;
  const counted = {
    machine_seconds: machines.machine_seconds,
    output_bytes: used.outputBytes,
    r2_class_a: used.outputs,
    r2_class_b: used.attempts + used.outputs,
    do_rows_written: billed.rowsWritten,
    do_requests: billed.requests,
    worker_requests: billed.workerRequests,
    do_active_s: round(activeS, 2),
  };
  const c = allInCost({
    machineUsd: machines.estimated_cost_usd,
    outputBytes: counted.output_bytes,
    region: e.config.FLY_REGIONS[0] ?? null,
    r2ClassA: counted.r2_class_a,
    r2ClassB: counted.r2_class_b,
    doRowsWritten: counted.do_rows_written,
    doRequests: counted.do_requests,
    doActiveS: activeS,
    workerRequests: counted.worker_requests,
  });
  return {
    machines_usd: round(c.machines, 9),
    egress_usd: round(c.egress, 9),
    r2_operations_usd: round(c.r2_operations, 9),
    durable_object_usd: round(c.durable_object, 9),
    worker_requests_usd: round(c.worker_requests, 9),
    total_usd: round(c.total, 9),
    per_task_done_usd: doneTasks > 0 ? round(c.total / doneTasks, 9) : null,
    counted,
    basis:
      "machines: create to end at each size's price in its region; egress: the outputs' bytes uploaded from the first region; R2: a GET per attempt begun, a PUT and a HEAD per output (discovery's reads not counted); Durable Object: its rows written (setAlarm included) and requests as it counted them, active 10 ms per request (an assumption; an open event stream keeps it billed longer); Worker: the requests that reached the object. Free allowances are an account's and are not subtracted.",
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

