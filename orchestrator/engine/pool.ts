// Pool mode's side of the lifecycle: a pool machine leases task after task, keeps each lease by
// heartbeats, and is retired as soon as the other machines can take every waiting task. A lease
// credential works only for the machine the engine created for its worker row, while that row is
// live and the batch is in the epoch it was minted in; the one in the create body lasts until the
// machine's boot limit, and every lease and heartbeat answer carries a renewed one that lasts
// LEASE_TOKEN_TIMEOUTS lease timeouts: nothing a machine was given outlives it.
import type { LeaseResponse } from "../../shared/contracts.ts";
import { log } from "../log.ts";
import { getPhase } from "../phases/index.ts";
import type { BatchMeta, TaskRow, WorkerRow } from "../store/index.ts";
import { attemptEnv, attemptExpiry, leaseToken } from "./access.ts";
import { LEASE_TOKEN_TIMEOUTS } from "./constants.ts";
import { apiStatus, type Engine, isFinished, RETIRE_GRACE_MS, taskView } from "./context.ts";
import { fleetOf } from "./fleet.ts";
import { retireMachine } from "./machines.ts";
import { failAttempt } from "./outcomes.ts";
import { outOfPlan, planOf } from "./plan.ts";

/** A lease credential that may not act (401): of an earlier epoch, or from another machine than the worker's. */
export interface LeaseRefusal {
  refused: string;
}

/** What the lease credential of pool machine `workerId`, sent by `machineId`, may do now: the worker's live row, or why not. */
function leaseHolder(meta: BatchMeta, row: WorkerRow | null, workerId: string, machineId: string, epoch: number): { row: WorkerRow } | LeaseRefusal | "retired" | "unknown_machine" {
  if (epoch !== meta.epoch) return { refused: `lease credential of epoch ${epoch}: the batch was reset or redriven since (it is at ${meta.epoch})` };
  if (!row || row.task_id || row.state === "gone") return "retired";
  // Its create's answer is not recorded yet: no lease until the engine knows which machine it made.
  if (row.machine_id === null) return "unknown_machine";
  if (row.machine_id !== machineId) return { refused: `${workerId} is machine ${row.machine_id}, not ${machineId}: a lease credential works only for the machine it was given to` };
  return { row };
}

/** A renewed lease credential for a live pool machine: LEASE_TOKEN_TIMEOUTS lease timeouts from now. */
function renewed(e: Engine, meta: BatchMeta, workerId: string, now: number): Promise<string> {
  return leaseToken(e, meta, workerId, now + LEASE_TOKEN_TIMEOUTS * e.config.LEASE_TIMEOUT_MS);
}

/** The next task for pool machine `workerId` (as `machineId`, with a credential of `epoch`), or wait, or done (the machine exits). */
export async function lease(e: Engine, workerId: string, machineId: string, epoch: number): Promise<LeaseResponse | LeaseRefusal | null> {
  const meta = e.store.getMeta();
  if (!meta) return null;
  if (epoch === meta.epoch && (isFinished(meta) || meta.stage === "finalise")) return { kind: "done", reason: `batch is ${apiStatus(meta)}` };
  const holder = leaseHolder(meta, e.store.getWorker(workerId), workerId, machineId, epoch);
  if (holder === "retired") return { kind: "done", reason: "this machine has been retired" };
  if (holder === "unknown_machine") return { kind: "wait", wait_ms: 1000 };
  if ("refused" in holder) {
    log("Lease", "refused", { batch_id: meta.batch_id, worker_id: workerId, machine_id: machineId, reason: holder.refused });
    return holder;
  }
  const row = holder.row;
  if (row.phase !== meta.phase) return { kind: "done", reason: `phase ${row.phase} is finished` };
  const now = Date.now();
  const machine = row.machine_id;
  // A machine that leases is alive: its next check moves on, but the row is rewritten only when
  // something changes or the check is due within half an interval (each write is a billed row,
  // and a machine leases a task every few seconds).
  const interval = e.config.MACHINE_CHECK_INTERVAL_MS;
  if (row.state !== "live" || row.check_at - now < interval / 2) {
    e.store.updateWorker(workerId, { state: "live", last_seen: now, check_at: Math.max(row.check_at, now + interval) });
  }
  // Every answer to a live machine renews its credential (signed after the store's work: an await
  // before it would let another request of this machine interleave).
  const withToken = async <A extends LeaseResponse>(answer: A): Promise<A> => ({ ...answer, lease_token: await renewed(e, meta, workerId, Date.now()) });
  if (meta.stage !== "run") return withToken({ kind: "wait", wait_ms: 1000 });
  const phase = getPhase(meta.phase);
  const limits = e.limits(phase);
  const leaseMs = e.config.LEASE_TIMEOUT_MS;
  // A machine of a shape the phase's re-made plan replaced, or one past the batch's fair share of the
  // fleet (those that will be free soonest), takes no new task: it leaves once its slots are free
  // (running work is never killed).
  const plan = planOf(e, meta, phase);
  const stale = outOfPlan(plan, row) || draining(e, meta, workerId);
  const [ready] = stale ? [] : e.store.readyTasks(now, 1);
  if (!ready) {
    const counts = e.store.phaseCounts(phase.name);
    const pool = e.store.poolMachineCounts({ slots: plan.slots, ...plan.guest });
    // Leave when the other slots cover every open task, the same count the scheduler creates
    // machines by (so a machine is never retired only to be replaced); stay while they do not.
    const open = counts.pending + counts.retrying + counts.running;
    if (!stale && open > pool.slots - 1) {
      const nextAt = e.store.earliestReady() ?? now + 1000;
      return withToken({ kind: "wait", wait_ms: Math.min(5000, Math.max(200, nextAt - now)) });
    }
    // Retired once its last slot is told done (its other slots may still work); it exits by itself.
    if (e.store.heldBy(workerId).length === 0) {
      e.store.transaction(() => retireMachine(e, { ...row, machine_id: machine }, stale ? "retired: the phase's plan changed" : "retired: no work left", now, RETIRE_GRACE_MS));
      log("DO", "pool_machine_retired", { batch_id: meta.batch_id, worker_id: workerId, machine_id: machine });
    }
    return { kind: "done", reason: stale ? "the phase was re-sized: machines of this size take no more tasks" : "no work left for this machine" };
  }
  const attempt = ready.attempt + 1;
  // The attempt is the task row until it ends (store/attempts.ts): one row written per lease.
  const set = {
    attempt,
    worker_id: workerId,
    machine_id: machine,
    machine_name: workerId,
    region: null,
    deadline_at: now + leaseMs,
    limit_at: now + limits.runTimeoutMs,
    attempt_started_at: now,
  };
  const task: TaskRow = { ...ready, ...set, state: "running" };
  e.store.moveTask(ready, "running", set, now);
  log("DO", "task_leased", { batch_id: meta.batch_id, task_id: task.task_id, phase: phase.name, attempt, worker_id: workerId, machine_id: machine });
  const access = await attemptEnv(e, meta, task, attemptExpiry(now, { bootTimeoutMs: 0, runTimeoutMs: limits.runTimeoutMs }));
  if (!access.ok) {
    // The task may not write its output (outputs.ts outputAccess): it fails, and the slot asks again.
    e.store.transaction(() => failAttempt(e, meta, e.store.getTask(task.task_id)!, access.reason, access.retryable, Date.now()));
    await e.wake(Date.now());
    return withToken({ kind: "wait", wait_ms: 250 });
  }
  const req = phase.machine(taskView(meta, task));
  const env = { ...req.env, ...access.env };
  // Legacy machines got the storage keys at create; a lease never repeats them.
  for (const secret of ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"]) delete env[secret];
  return withToken({ kind: "task", task_id: task.task_id, env, lease_ms: leaseMs, heartbeat_ms: Math.max(500, Math.floor(leaseMs / 3)) });
}

/** True when the batch holds more pool machines than its share of the fleet and this is one of those that will be free soonest. */
function draining(e: Engine, meta: BatchMeta, workerId: string): boolean {
  const fleet = fleetOf(meta);
  if (!fleet) return false;
  const pool = e.store.poolMachineCounts();
  const surplus = pool.creating + pool.booting + pool.live - fleet.share;
  return surplus > 0 && e.store.poolMachinesToDrain(surplus).includes(workerId);
}

/** Renews the lease of a task a pool machine is working on, and the machine's lease credential with it. */
export async function heartbeat(
  e: Engine,
  workerId: string,
  machineId: string,
  taskId: string,
  epoch: number,
): Promise<{ ok: boolean; reason?: string; lease_token?: string } | LeaseRefusal | null> {
  const meta = e.store.getMeta();
  if (!meta) return null;
  const holder = leaseHolder(meta, e.store.getWorker(workerId), workerId, machineId, epoch);
  if (holder === "retired" || holder === "unknown_machine") return { ok: false, reason: "lease lost: this machine has been retired" };
  if ("refused" in holder) {
    log("Lease", "refused", { batch_id: meta.batch_id, worker_id: workerId, machine_id: machineId, reason: holder.refused });
    return holder;
  }
  const task = e.store.getTask(taskId);
  if (!task || task.state !== "running" || task.worker_id !== workerId) {
    const holderOf = task?.worker_id && task.worker_id !== workerId ? ` (leased to ${task.worker_id})` : "";
    return { ok: false, reason: task ? `lease lost: task is ${task.state}${holderOf}` : "unknown task" };
  }
  const now = Date.now();
  // One row: the task's deadline (no index holds it, and the machine's row is not rewritten).
  e.store.moveTask(task, "running", { deadline_at: Math.min(now + e.config.LEASE_TIMEOUT_MS, task.limit_at) }, now);
  return { ok: true, lease_token: await renewed(e, meta, workerId, now) };
}
