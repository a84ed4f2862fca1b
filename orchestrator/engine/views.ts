// Views: what GET /status/:batchId, its task list and one task's attempts show. Every count comes
// from the phase counters, so a status read costs the same at 100 or 300,000 tasks.
import type { BatchMeta, PhaseCounts, Stage, TaskRow, TaskState } from "../store/index.ts";
import { apiStatus, type Engine, iso, openCount } from "./context.ts";
import { type CostView, costView, type MachinesView, machinesView, type SizingView, sizingView } from "./cost-view.ts";

const RECENT_FAILURES = 10;

export interface StatusBody {
  batch_id: string;
  status: string;
  phase: string;
  stage: Stage;
  progress: {
    tasks_total: number;
    tasks_completed: number;
    tasks_failed: number;
    pending: number;
    starting: number;
    running: number;
    retrying: number;
  };
  phases: { name: string; total: number; done: number; failed: number; open: number }[];
  files_total: number;
  mode: "single" | "pool";
  workers: { starting: number; live: number; created: number } | null;
  /**
   * What the batch's machines have cost so far: each machine's time from its create request to its
   * end (running ones: to now), and that time at Fly's published per-second price for its size and region.
   */
  machines: MachinesView;
  /** All in so far: machines, Fly egress of the outputs, R2 operations, the Durable Object, Worker requests (engine/cost-view.ts). */
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
  finalisation: { attempts: number; last_error: string | null } | null;
  recent_failures: {
    task_id: string;
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

const logsCommand = (e: Engine, machineId: string | null) => (machineId ? `fly logs -a ${e.config.FLY_APP_NAME} -i ${machineId} --no-tail` : null);
const warningsOf = (json: string | null): string[] => (json ? (JSON.parse(json) as string[]) : []);

export function status(e: Engine, meta: BatchMeta): StatusBody {
  const counts = e.store.counts();
  const sum = (f: (c: PhaseCounts) => number) => counts.reduce((n, c) => n + f(c), 0);
  const workers = e.store.poolMachineCounts();
  const machines = machinesView(e, meta);
  return {
    batch_id: meta.batch_id,
    status: apiStatus(meta),
    phase: meta.phase,
    stage: meta.stage,
    progress: {
      tasks_total: sum((c) => c.total),
      tasks_completed: sum((c) => c.done),
      tasks_failed: sum((c) => c.failed),
      pending: sum((c) => c.pending),
      starting: sum((c) => c.creating + c.booting),
      running: sum((c) => c.running),
      retrying: sum((c) => c.retrying),
    },
    phases: counts.map((c) => ({ name: c.phase, total: c.total, done: c.done, failed: c.failed, open: openCount(c) })),
    files_total: e.store.fileCount(),
    mode: meta.pool ? "pool" : "single",
    workers: meta.pool ? { starting: workers.creating + workers.booting, live: workers.live, created: meta.worker_seq } : null,
    machines,
    cost: costView(e, meta, machines),
    sizing: sizingView(e, meta),
    started_at: iso(meta.started_at)!,
    updated_at: iso(meta.updated_at)!,
    completed_at: iso(meta.completed_at),
    error: meta.error,
    step_failures:
      meta.step_failures > 0 ? { count: meta.step_failures, limit: e.config.MAX_STEP_FAILURES, last_error: meta.step_error, stage: meta.stage } : null,
    warnings: [...warningsOf(meta.warnings_json), ...e.store.recentWarnings(RECENT_FAILURES).map((w) => `${w.task_id}: ${w.warning}`)],
    finalisation: meta.finalise_attempts > 0 ? { attempts: meta.finalise_attempts, last_error: meta.finalise_error } : null,
    recent_failures: e.store.recentFailures(RECENT_FAILURES).map((a) => ({
      task_id: a.task_id,
      attempt: a.attempt,
      machine_id: a.machine_id,
      region: a.region,
      error: a.error,
      at: iso(a.ended_at),
      logs: logsCommand(e, a.machine_id),
    })),
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
