// Views: what GET /status/:batchId, its task list and one task's attempts show. Every count comes
// from the phase counters, so a status read costs the same at 100 or 300,000 tasks.
import type { BatchMeta, PhaseCounts, Stage, TaskRow, TaskState } from "../store/index.ts";
import { apiStatus, type Engine, iso, openCount } from "./context.ts";
import { fleetOf, fleetWarnings } from "./fleet.ts";
import { type CostView, costView, type MachinesView, machinesView, type PhaseCost, type PhaseMachines, phaseViews, type SizingView, sizingView } from "./cost-view.ts";
import { type WrittenFileList, writtenList } from "./file-list.ts";
import { pipelineOf } from "./pipeline.ts";

const RECENT_FAILURES = 10;

export interface StatusBody {
  batch_id: string;
  status: string;
  phase: string;
  stage: Stage;
  /** Which run of the batch this is: 0 the first, N after the Nth redrive (events carry the same). */
  run: number;
  progress: {
    tasks_total: number;
    tasks_completed: number;
    tasks_failed: number;
    pending: number;
    starting: number;
    running: number;
    retrying: number;
  };
  /** The phases the batch runs, in order (its message's `phases`, or the default pipeline). */
  pipeline: string[];
  /**
   * Each phase that had work, in pipeline order: its task counts and its machines — their time and
   * cost so far at their region's price, and the sizes its sizing chose (e.g. `shared-cpu-1x 1024 MB`)
   * — and its all-in cost so far (machines, Fly egress of its outputs, its R2 operations).
   */
  phases: { name: string; total: number; done: number; failed: number; open: number; machines: PhaseMachines; cost: PhaseCost }[];
  files_total: number;
  mode: "single" | "pool";
  workers: { starting: number; live: number; created: number } | null;
  /**
   * What the batch's machines have cost so far, the sum of its phases' `machines`: each machine's time
   * from its create request to its end (running ones: to now), at Fly's per-second price for its size and region.
   */
  machines: MachinesView;
  /**
   * All in so far (engine/cost-view.ts): the sum of the phases' `cost` items, plus the Durable
   * Object and Worker requests, which are the batch's and not split by phase.
   */
  cost: CostView;
  /** The current phase's plan: mode, machines, what it was sized from and whether it was re-sized from measurements. */
  sizing: SizingView | null;
  started_at: string;
  updated_at: string;
  completed_at: string | null;
  error: string | null;
  /** A step that keeps failing: how many times in a row and the last error (the batch goes to ERROR at the limit). */
  step_failures: { count: number; limit: number; last_error: string | null; stage: Stage } | null;
  warnings: string[];
  /**
   * The batch in the app's fleet, as the fleet last answered it: its share of machines, what it
   * holds, whether it waits for room (and its place among the waiting), and the fleet's limits.
   */
  fleet: {
    share: number;
    live: { machines: number; vcpus: number; memory_mb: number };
    waiting: boolean;
    position: number | null;
    waiting_batches: number;
    batches: number;
    limits: { machines: number; vcpus: number; memory_mb: number };
    learned: string | null;
  } | null;
  /** A request Fly called bad paused the phase: the error (naming the field to fix) and when creates try again. */
  paused: { error: string; retry_at: string } | null;
  /**
   * The final file list (an NDJSON object in R2, engine/file-list.ts) once written or while it is
   * being written (parts and entries so far), and the downstream POST's attempts.
   */
  finalisation: {
    attempts: number;
    last_error: string | null;
    file_list: WrittenFileList | null;
    writing: { key: string; parts: number; entries: number } | null;
  } | null;
  recent_failures: {
    task_id: string;
    /** The file the task converts: failures are named by file, not only by task id. */
    input_key: string | null;
    attempt: number;
    machine_id: string | null;
    region: string | null;
    error: string | null;
    at: string | null;
    logs: string | null;
  }[];
}

export type ApiStatus = "pending" | "retrying" | "starting" | "running" | "done" | "failed";
export const API_STATES: Record<ApiStatus, TaskState[]> = {
  pending: ["pending"],
  retrying: ["retrying"],
  starting: ["creating", "booting"],
  running: ["running"],
  done: ["done"],
  failed: ["failed"],
};

/** The command that shows a machine's output (LOGS_COMMAND: `fly logs …`, or the local stack's own). */
export const logsCommand = (e: Engine, machineId: string | null) =>
  machineId ? e.config.LOGS_COMMAND.replaceAll("{app}", e.config.FLY_APP_NAME).replaceAll("{machine}", machineId) : null;
const warningsOf = (json: string | null): string[] => (json ? (JSON.parse(json) as string[]) : []);

export function status(e: Engine, meta: BatchMeta): StatusBody {
  // In the batch's pipeline order (a phase not in it, from before pipelines were recorded, last).
  const order = pipelineOf(meta);
  const rank = (phase: string) => (order.includes(phase) ? order.indexOf(phase) : order.length);
  const counts = e.store.counts().sort((a, b) => rank(a.phase) - rank(b.phase));
  const phases = phaseViews(e, counts.map((c) => c.phase));
  const sum = (f: (c: PhaseCounts) => number) => counts.reduce((n, c) => n + f(c), 0);
  const workers = e.store.poolMachineCounts();
  const machines = machinesView(phases);
  return {
    batch_id: meta.batch_id,
    status: apiStatus(meta),
    phase: meta.phase,
    stage: meta.stage,
    run: meta.redrives,
    progress: {
      tasks_total: sum((c) => c.total),
      tasks_completed: sum((c) => c.done),
      tasks_failed: sum((c) => c.failed),
      pending: sum((c) => c.pending),
      starting: sum((c) => c.creating + c.booting),
      running: sum((c) => c.running),
      retrying: sum((c) => c.retrying),
    },
    pipeline: order,
    phases: counts.map((c, i) => ({ name: c.phase, total: c.total, done: c.done, failed: c.failed, open: openCount(c), machines: phases[i].machines, cost: phases[i].cost })),
    files_total: e.store.fileCount(),
    mode: meta.pool ? "pool" : "single",
    workers: meta.pool ? { starting: workers.creating + workers.booting, live: workers.live, created: meta.worker_seq } : null,
    machines,
    cost: costView(e, meta, machines, phases),
    sizing: sizingView(e, meta),
    started_at: iso(meta.started_at)!,
    updated_at: iso(meta.updated_at)!,
    completed_at: iso(meta.completed_at),
    error: meta.error,
    step_failures:
      meta.step_failures > 0 ? { count: meta.step_failures, limit: e.config.MAX_STEP_FAILURES, last_error: meta.step_error, stage: meta.stage } : null,
    warnings: [
      ...fleetWarnings(meta, meta.stage === "run"),
      ...warningsOf(meta.warnings_json),
      ...e.store.recentWarnings(RECENT_FAILURES).map((w) => `${w.task_id}: ${w.warning}`),
    ],
    fleet: fleetView(meta),
    paused: meta.paused_error && meta.stage === "run" ? { error: meta.paused_error, retry_at: iso(meta.paused_until)! } : null,
    finalisation: finalisation(e, meta),
    recent_failures: e.store.recentFailures(RECENT_FAILURES).map((a) => ({
      task_id: a.task_id,
      input_key: a.input_key,
      attempt: a.attempt,
      machine_id: a.machine_id,
      region: a.region,
      error: a.error,
      at: iso(a.ended_at),
      logs: logsCommand(e, a.machine_id),
    })),
  };
}

function fleetView(meta: BatchMeta): StatusBody["fleet"] {
  const f = fleetOf(meta);
  if (!f) return null;
  const { share, live, waiting, position, waiting_batches, batches, limits, learned } = f;
  return { share, live, waiting, position, waiting_batches, batches, limits, learned };
}

function finalisation(e: Engine, meta: BatchMeta): StatusBody["finalisation"] {
  const row = meta.stage === "finalise" || meta.stage === "done" ? e.store.fileList(meta.redrives) : null;
  if (!row && meta.finalise_attempts === 0) return null;
  const written = row ? writtenList(row) : null;
  return {
    attempts: meta.finalise_attempts,
    last_error: meta.finalise_error,
    file_list: written,
    writing: row && !written ? { key: row.key, parts: row.parts, entries: row.entries } : null,
  };
}

export function taskSummary(e: Engine, t: TaskRow) {
  return {
    task_id: t.task_id,
    phase: t.phase,
    status: (Object.keys(API_STATES) as ApiStatus[]).find((k) => API_STATES[k].includes(t.state)),
    attempt: t.attempt,
    input_key: t.input_key,
    output_key: t.output_key,
    machine_id: t.machine_id,
    region: t.region,
    error: t.error,
    warnings: warningsOf(t.warnings_json),
    updated_at: iso(t.updated_at),
    logs: logsCommand(e, t.machine_id),
  };
}

export function tasks(e: Engine, meta: BatchMeta, opts: { status: ApiStatus | null; cursor: number; limit: number }) {
  const rows = e.store.tasksPage({ states: opts.status ? API_STATES[opts.status] : null, afterId: opts.cursor, limit: opts.limit });
  return {
    batch_id: meta.batch_id,
    tasks: rows.map((t) => taskSummary(e, t)),
    next_cursor: rows.length === opts.limit ? String(rows[rows.length - 1].id) : null,
  };
}

/** One task with every attempt: the machine each ran on, how it ended and why. */
export function task(e: Engine, meta: BatchMeta, t: TaskRow) {
  return {
    batch_id: meta.batch_id,
    ...taskSummary(e, t),
    outputs: e.store.outputsOf(t.task_id).map((o) => ({ page: o.page, r2_key: o.key })),
    attempts: e.store.attemptsOf(t).map((a) => ({
      attempt: a.attempt,
      machine_name: a.machine_name,
      machine_id: a.machine_id,
      region: a.region,
      outcome: a.outcome ?? "open",
      error: a.error,
      note: a.note,
      started_at: iso(a.started_at),
      ended_at: iso(a.ended_at),
      logs: logsCommand(e, a.machine_id),
    })),
  };
}

/**
 * The machine timeline (GET /status/:batchId/timeline): the open attempts and the `limit` latest
 * ended ones, each with its machine and times — what the dashboard draws, in one read of at most
 * 4 x `limit` rows, instead of the task list and a request per task.
 */
export function timeline(e: Engine, meta: BatchMeta, limit: number) {
  const { open, ended } = e.store.recentAttempts(limit);
  return {
    batch_id: meta.batch_id,
    limit,
    attempts: [...open, ...ended].map((a) => ({
      task_id: a.task_id,
      attempt: a.attempt,
      machine: a.machine_id ?? a.machine_name,
      machine_id: a.machine_id,
      outcome: a.outcome ?? "open",
      error: a.error,
      started_at: iso(a.started_at),
      ended_at: iso(a.ended_at),
    })),
    open: open.length,
    ended: ended.length,
  };
}
