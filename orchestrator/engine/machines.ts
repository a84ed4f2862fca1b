// One machine lifecycle for both modes: create → booting → live → gone. A single-task machine is
// a machine whose one task is assigned at create; a pool machine leases tasks. Creating, checking,
// lapsing, retiring and destroying are written once, here.
import { createDraw } from "../fly/budget.ts";
import { log, logError } from "../log.ts";
import type { CreateOutcome, FlyMachine, GuestSize } from "../fly/api.ts";
import type { FlyMachines } from "../fly/client.ts";
import { getPhase } from "../phases/index.ts";
import type { Phase } from "../phases/types.ts";
import type { BatchMeta, TaskRow, WorkerRow } from "../store/index.ts";
import { backoffMs } from "../../shared/backoff.ts";
import { CREATE_ANSWER_MS, RECHECK_MS, type Engine, machineName } from "./context.ts";
import { failAttempt } from "./outcomes.ts";

const CHECKS_PER_ALARM = 50;
const ORPHANS_PER_ALARM = 50;

/**
 * The batch's machines as one list per alarm, instead of one read per machine: Fly's read
 * limit (5/s, burst 10) would otherwise be met by a batch with many live machines. A machine
 * missing from the list is confirmed with a single read before it is taken for gone.
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

/** Metadata that finds a machine again whatever happened to its create's answer. */
function metadataOf(meta: BatchMeta, plan: MachinePlan): Record<string, string> {
  return {
    fanout_batch: meta.batch_id,
    fanout_phase: plan.phase.name,
    fanout_worker: plan.id,
    ...(plan.task ? { fanout_task: plan.task.task_id, fanout_attempt: String(plan.task.attempt) } : {}),
  };
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

/** Sends the creates (in parallel) and applies each outcome. */
export async function createMachines(e: Engine, meta: BatchMeta, plans: MachinePlan[]): Promise<void> {
  const fly = e.fly();
  const c = e.config;
  const budget = e.env.FLY_BUDGET.getByName(c.FLY_APP_NAME);
  const outcomes = await Promise.all(
    plans.map((p) =>
      fly.createMachine(
        {
          name: machineName(meta.batch_id, p.id),
          image: p.image,
          guest: p.guest,
          env: p.env,
          metadata: metadataOf(meta, p),
          regions: c.FLY_REGIONS,
        },
        // The first POST spends the token the scheduler took; every retry and next region draws its own.
        { draw: createDraw(budget, c.FLY_CREATE_RATE_PER_SECOND, c.FLY_CREATE_BURST, 1) },
      ),
    ),
  );
  const now = Date.now();
  e.store.transaction(() => plans.forEach((p, i) => applyCreate(e, meta, p.id, outcomes[i], now)));
  const waits = outcomes.flatMap((o) => (o.kind === "rate_limited" ? [o.retryAfterMs] : []));
  // A 429 holds back every batch of the app, not just this one.
  if (waits.length > 0) await e.env.FLY_BUDGET.getByName(e.config.FLY_APP_NAME).block(now + Math.max(...waits));
}

/** The task a single-task machine was created for, if it is still that task's current attempt. */
function assignedTask(e: Engine, row: WorkerRow): TaskRow | null {
  if (!row.task_id) return null;
  const task = e.store.getTask(row.task_id);
  return task && task.attempt === row.attempt && task.worker_id === row.worker_id && (task.state === "creating" || task.state === "booting" || task.state === "running")
    ? task
    : null;
}

/** What a create's answer means for the machine row and its task. */
export function applyCreate(e: Engine, meta: BatchMeta, workerId: string, outcome: CreateOutcome, now: number): void {
  const row = e.store.getWorker(workerId);
  if (!row) return;
  const task = assignedTask(e, row);
  const fields = { batch_id: meta.batch_id, worker_id: workerId, task_id: row.task_id, attempt: row.attempt };
  switch (outcome.kind) {
    case "created": {
      if (row.state === "gone" || (row.task_id && !task)) {
        // The attempt already ended: its row names the machine that came too late.
        if (row.task_id) e.store.recordMachine(row.task_id, row.attempt, outcome.machineId, outcome.region);
        // Its task moved on (reset, an earlier attempt's callback) or the pool closed: not needed.
        e.store.updateWorker(workerId, { state: "gone", machine_id: outcome.machineId, region: outcome.region });
        e.store.addOrphan(outcome.machineId, "created after it was no longer needed", now);
        return;
      }
      e.store.updateWorker(workerId, {
        state: row.state === "live" ? "live" : "booting",
        machine_id: outcome.machineId,
        region: outcome.region,
        check_at: Math.min(now + e.config.MACHINE_CHECK_INTERVAL_MS, row.limit_at),
      });
      if (task && task.state === "creating") {
        e.store.moveTask(task, "booting", { machine_id: outcome.machineId, region: outcome.region }, now);
      }
      log("DO", "machine_created", { ...fields, machine_id: outcome.machineId, region: outcome.region });
      return;
    }
    case "rate_limited":
    case "budget": {
      // Nothing was created: the attempt never happened.
      e.store.deleteWorker(workerId);
      if (task) {
        const wait = outcome.kind === "rate_limited" ? outcome.retryAfterMs : 0;
        e.store.dropAttempt(task.task_id, task.attempt);
        e.store.moveTask(
          task,
          task.attempt > 1 ? "retrying" : "pending",
          { attempt: task.attempt - 1, machine_name: null, worker_id: null, deadline_at: 0, next_at: now + wait },
          now,
        );
      }
      if (outcome.kind === "rate_limited") {
        const blocked = Math.max(e.store.getMeta()!.fly_blocked_until, now + outcome.retryAfterMs);
        e.store.updateMeta({ fly_blocked_until: blocked, bucket_at: blocked }, now);
        log("DO", "rate_limited", { ...fields, retry_after_ms: outcome.retryAfterMs });
      }
      return;
    }
    case "no_capacity":
      e.store.deleteWorker(workerId);
      if (task) failAttempt(e, meta, task, `no capacity: ${outcome.message}`, true, now);
      else e.store.updateMeta({ fly_blocked_until: now + backoffMs(1, 5000, 60_000) }, now);
      log("DO", "no_capacity", { ...fields, error: outcome.message });
      return;
    case "invalid": {
      e.store.deleteWorker(workerId);
      const reason = `Fly API rejected the machine (${outcome.status}): ${outcome.message}`;
      if (task) failAttempt(e, meta, task, reason, false, now);
      // Every pool machine of the phase has this config: no task can run.
      else log("DO", "pool_invalid", { ...fields, error: reason, tasks_failed: e.store.failOpenTasks(reason, now) });
      return;
    }
    case "unknown":
      // The machine may exist: look for it by metadata before creating again.
      e.store.updateWorker(workerId, { check_at: now + RECHECK_MS });
      log("DO", "create_outcome_unknown", { ...fields, error: outcome.message });
      return;
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

/** Marks a machine gone and destroys it after `graceMs` in case it does not exit by itself. */
export function retireMachine(e: Engine, row: WorkerRow, reason: string, now: number, graceMs = 0): void {
  if (row.state === "gone") return;
  e.store.updateWorker(row.worker_id, { state: "gone" });
  if (row.machine_id) e.store.addOrphan(row.machine_id, reason, now + graceMs);
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

/** Destroys machines that are no longer wanted; a failed destroy is retried on later alarms. */
export async function destroyOrphans(e: Engine, now: number): Promise<number> {
  const due = e.store.dueOrphans(now, ORPHANS_PER_ALARM);
  if (due.length === 0) return 0;
  const fly = e.fly();
  let destroyed = 0;
  await Promise.all(
    due.map(async (o) => {
      const result = await fly.destroyMachine(o.machine_id).catch(() => "failed" as const);
      if (result === "failed") e.store.orphanRetry(o.machine_id, Date.now() + backoffMs(o.tries + 1, 1000, 60_000));
      else {
        e.store.orphanDone(o.machine_id);
        if (result === "destroyed") destroyed++;
      }
    }),
  );
  return destroyed;
}
