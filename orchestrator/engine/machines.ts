// One machine lifecycle for both modes: create → booting → live → gone. A single-task machine is
// a machine whose one task is assigned at create; a pool machine leases tasks. Creating, checking,
// lapsing, retiring and destroying are written once, here.
import { log, logError } from "../log.ts";
import { FlyApiError, type FlyMachine, type GuestSize } from "../fly/api.ts";
import type { FlyMachines } from "../fly/client.ts";
import { getPhase } from "../phases/index.ts";
import type { Phase } from "../phases/types.ts";
import type { BatchMeta, TaskRow, WorkerRow } from "../store/index.ts";
import { CREATE_ANSWER_MS, RECHECK_MS, RETIRE_GRACE_MS, type Engine } from "./context.ts";
import { applyCreate, assignedTask } from "./creates.ts";
import { failAttempt } from "./outcomes.ts";
import { LOOK_AFTER_MS } from "./orphans.ts";

const CHECKS_PER_ALARM = 50;

/**
 * The batch's machines as one list per alarm, instead of one get per machine: a list (1/s, burst 3
 * per app) costs one token of the app's list budget however many machines it returns, where a get
 * per machine would spend the get budget (5/s, burst 10) fast (fly/rates.ts). A machine missing from
 * the list is confirmed with a single get before it is taken for gone.
 */
export class MachineCensus {
  private readonly fly: FlyMachines;
  private readonly batchId: string;
  private listing: Promise<Map<string, FlyMachine>> | undefined;

  constructor(fly: FlyMachines, batchId: string) {
    this.fly = fly;
    this.batchId = batchId;
  }

  private all(): Promise<Map<string, FlyMachine>> {
    this.listing ??= this.fly.listMachines({ fanout_batch: this.batchId }).then((ms) => new Map(ms.map((m) => [m.id, m])));
    return this.listing;
  }

  async byId(id: string): Promise<FlyMachine | null> {
    return (await this.all()).get(id) ?? (await this.fly.getMachine(id));
  }

  async find(metadata: Record<string, string>): Promise<FlyMachine | undefined> {
    for (const m of (await this.all()).values()) {
      if (Object.entries(metadata).every(([k, v]) => m.metadata[k] === v)) return m;
    }
    return undefined;
  }
}

/** One machine to create: its row id, size and env; `task` when it runs one assigned task. */
export interface MachinePlan {
  id: string;
  phase: Phase;
  guest: GuestSize;
  image: string;
  env: Record<string, string>;
  slots: number;
  task?: TaskRow;
}

/** Rows for machines about to be created; call inside the transaction that assigns their tasks. */
export function recordCreating(e: Engine, plans: MachinePlan[], bootTimeoutMs: number, now: number): void {
  for (const p of plans) {
    e.store.insertWorker({
      worker_id: p.id,
      phase: p.phase.name,
      now,
      check_at: now + CREATE_ANSWER_MS,
      limit_at: now + CREATE_ANSWER_MS + bootTimeoutMs,
      task_id: p.task?.task_id,
      attempt: p.task?.attempt,
      slots: p.slots,
      guest: p.guest,
    });
  }
}

/** Machines due a look: unknown creates reconciled, started ones marked live, dead or stuck ones given up on. */
export async function checkMachines(e: Engine, meta: BatchMeta, census: MachineCensus): Promise<void> {
  const due = e.store.workersDue(Date.now(), CHECKS_PER_ALARM);
  await Promise.all(
    due.map(async (row) => {
      try {
        await checkMachine(e, meta, row, census);
      } catch (error) {
        // Out of the app's list/get tokens: look again when there is one (not a failure).
        if (error instanceof FlyApiError && error.kind === "budget" && error.retryAfterMs !== undefined) {
          e.store.updateWorker(row.worker_id, { check_at: Date.now() + Math.max(50, error.retryAfterMs) });
          return;
        }
        logError("DO", "machine_check_failed", error, { batch_id: meta.batch_id, worker_id: row.worker_id });
        e.store.updateWorker(row.worker_id, { check_at: Date.now() + RECHECK_MS });
      }
    }),
  );
}

async function checkMachine(e: Engine, meta: BatchMeta, row: WorkerRow, census: MachineCensus): Promise<void> {
  if (row.state === "creating" && !row.machine_id) {
    const found = await census.find({ fanout_worker: row.worker_id });
    const now = Date.now();
    const current = e.store.getWorker(row.worker_id);
    if (!current || current.state !== "creating" || current.machine_id) return;
    e.store.transaction(() => {
      if (found) {
        applyCreate(e, meta, row.worker_id, { kind: "created", machineId: found.id, name: found.name, region: found.region, state: found.state }, now);
        log("DO", "create_reconciled", { batch_id: meta.batch_id, worker_id: row.worker_id, machine_id: found.id });
      } else {
        machineGone(e, meta, current, "machine create got no answer and no machine was found", now, false);
      }
    });
    return;
  }
  const machineId = row.machine_id!;
  const machine = await census.byId(machineId);
  const now = Date.now();
  const current = e.store.getWorker(row.worker_id);
  if (!current || current.state === "gone") return;
  const state = machine?.state ?? "destroyed";
  const interval = e.config.MACHINE_CHECK_INTERVAL_MS;
  let gone: string | null = null;
  if (state === "stopped" || state === "destroyed" || state === "destroying" || state === "failed") {
    const how = state === "failed" ? "failed" : "exited";
    gone = current.task_id ? `machine ${machineId} ${how} without calling back` : `pool machine ${machineId} ${how}`;
  } else if (state === "started") {
    e.store.transaction(() => {
      e.store.updateWorker(row.worker_id, { state: "live", check_at: now + interval });
      if (current.state !== "live") startRunClock(e, current, now);
    });
    return;
  } else if (current.state !== "live" && now >= current.limit_at) {
    gone = `machine ${machineId} did not start within ${Math.round(e.limits(getPhase(current.phase)).bootTimeoutMs / 1000)}s (state: ${state})`;
  }
  if (gone === null) {
    e.store.updateWorker(row.worker_id, { check_at: current.state === "live" ? now + interval : Math.min(now + interval, current.limit_at) });
    return;
  }
  e.store.transaction(() => machineGone(e, meta, current, gone, now, state !== "destroyed"));
}

/** A single-task machine started: its task runs, with the phase's run limit from now. */
function startRunClock(e: Engine, row: WorkerRow, now: number): void {
  const task = assignedTask(e, row);
  if (!task || task.state !== "booting") return;
  const limitAt = now + e.limits(getPhase(task.phase)).runTimeoutMs;
  e.store.moveTask(task, "running", { limit_at: limitAt, deadline_at: limitAt }, now);
}

/**
 * A machine is given up on: marked gone, destroyed (unless it already is), and every task it
 * held fails its attempt (retried per the phase's budget). Call inside a transaction.
 */
export function machineGone(e: Engine, meta: BatchMeta, row: WorkerRow, reason: string, now: number, destroy = true): void {
  e.store.updateWorker(row.worker_id, { state: "gone" });
  if (destroy && row.machine_id) e.store.addOrphan(row.machine_id, reason, now);
  for (const t of e.store.heldBy(row.worker_id)) failAttempt(e, meta, t, row.task_id ? reason : `${reason} while holding the lease`, true, now);
  log("DO", "machine_gone", { batch_id: meta.batch_id, worker_id: row.worker_id, machine_id: row.machine_id, reason });
}

/**
 * Marks a machine gone. With `graceMs` it was told to exit by itself: it is looked at until seen
 * gone (the fleet counts it till then) and destroyed once the grace has passed if it is still there.
 */
export function retireMachine(e: Engine, row: WorkerRow, reason: string, now: number, graceMs = 0): void {
  if (row.state === "gone") return;
  e.store.updateWorker(row.worker_id, { state: "gone" });
  if (row.machine_id) e.store.addOrphan(row.machine_id, reason, graceMs > 0 ? now + Math.min(LOOK_AFTER_MS, graceMs) : now, now + graceMs);
}

/** A single-task machine that called back exits by itself; it counts until seen gone. */
export function machineDone(e: Engine, row: WorkerRow, now: number): void {
  retireMachine(e, row, "called back; exits by itself", now, RETIRE_GRACE_MS);
}

/** Retires every live machine of the batch (reset, phase end). */
export function retireAll(e: Engine, reason: string, now: number): void {
  for (const row of e.store.liveWorkers()) retireMachine(e, row, reason, now);
}

/**
 * Live tasks whose deadline passed: a leased task whose holder stopped heartbeating, or any task
 * past its run limit. Its machine is given up on, which fails the attempt.
 */
export function lapseOverdue(e: Engine, meta: BatchMeta, now: number): void {
  for (const task of e.store.overdueTasks(now, CHECKS_PER_ALARM)) {
    e.store.transaction(() => {
      const row = task.worker_id ? e.store.getWorker(task.worker_id) : null;
      if (task.state !== "running" && row && row.state !== "gone") {
        // Creating or booting: the machine's own checks decide; look again at its limit.
        e.store.moveTask(task, task.state, { deadline_at: Math.max(now + RECHECK_MS, row.limit_at) }, now);
        return;
      }
      const limits = e.limits(getPhase(task.phase));
      const overran = now >= task.limit_at;
      const reason = overran
        ? `task ran longer than ${Math.round(limits.runTimeoutMs / 1000)}s on machine ${task.machine_id ?? task.worker_id}`
        : `lease expired: ${task.worker_id} stopped heartbeating`;
      // A machine that is stuck or stopped heartbeating must not keep counting as capacity. But a
      // pool machine still heartbeating its other slots' tasks is not stuck: one task past its run
      // limit fails alone (the soak saw a held callback's sibling slots fail with it).
      const siblings = row && !row.task_id && overran ? e.store.heldBy(row.worker_id).filter((t) => t.task_id !== task.task_id) : [];
      if (row && row.state !== "gone" && siblings.length === 0) machineGone(e, meta, row, reason, now);
      const after = e.store.getTask(task.task_id);
      if (after && after.state === task.state && after.attempt === task.attempt) failAttempt(e, meta, after, reason, true, now);
    });
  }
}
