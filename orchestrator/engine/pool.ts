// Pool mode's side of the lifecycle: a pool machine leases task after task, keeps each lease by
// heartbeats, and is retired as soon as the other machines can take every waiting task.
import type { LeaseResponse } from "../../shared/contracts.ts";
import { log } from "../log.ts";
import { getPhase } from "../phases/index.ts";
import type { TaskRow } from "../store/index.ts";
import { attemptEnv, attemptExpiry } from "./access.ts";
import { apiStatus, type Engine, isFinished, RETIRE_GRACE_MS, taskView } from "./context.ts";
import { retireMachine } from "./machines.ts";
import { failAttempt } from "./outcomes.ts";
import { outOfPlan, planOf } from "./plan.ts";

/** The next task for pool machine `workerId`, or wait, or done (the machine exits). */
export async function lease(e: Engine, workerId: string, machineId: string | null): Promise<LeaseResponse | null> {
  const meta = e.store.getMeta();
  if (!meta) return null;
  if (isFinished(meta) || meta.stage === "finalise") return { kind: "done", reason: `batch is ${apiStatus(meta)}` };
  const row = e.store.getWorker(workerId);
  if (!row || row.task_id || row.state === "gone") return { kind: "done", reason: "this machine has been retired" };
  if (row.phase !== meta.phase) return { kind: "done", reason: `phase ${row.phase} is finished` };
  const now = Date.now();
  const machine = row.machine_id ?? machineId;
  // A machine that leases is alive: its next check moves on, but the row is rewritten only when
  // something changes or the check is due within half an interval (each write is a billed row,
  // and a machine leases a task every few seconds).
  const interval = e.config.MACHINE_CHECK_INTERVAL_MS;
  if (row.state !== "live" || row.machine_id !== machine || row.check_at - now < interval / 2) {
    e.store.updateWorker(workerId, { state: "live", last_seen: now, machine_id: machine, check_at: Math.max(row.check_at, now + interval) });
  }
  if (meta.stage !== "run") return { kind: "wait", wait_ms: 1000 };
  const phase = getPhase(meta.phase);
  const limits = e.limits(phase);
  const leaseMs = e.config.LEASE_TIMEOUT_MS;
  // A machine of a shape the phase's re-made plan replaced takes no new task; it leaves once its slots are free.
  const plan = planOf(e, meta, phase);
  const stale = outOfPlan(plan, row);
  const [ready] = stale ? [] : e.store.readyTasks(now, 1);
  if (!ready) {
    const counts = e.store.phaseCounts(phase.name);
    const pool = e.store.poolMachineCounts({ slots: plan.slots, ...plan.guest });
    // Leave when the other slots cover every open task, the same count the scheduler creates
    // machines by (so a machine is never retired only to be replaced); stay while they do not.
    const open = counts.pending + counts.retrying + counts.running;
    if (!stale && open > pool.slots - 1) {
      const nextAt = e.store.earliestReady() ?? now + 1000;
      return { kind: "wait", wait_ms: Math.min(5000, Math.max(200, nextAt - now)) };
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
    return { kind: "wait", wait_ms: 250 };
  }
  const req = phase.machine(taskView(meta, task));
  const env = { ...req.env, ...access.env };
  // Legacy machines got the storage keys at create; a lease never repeats them.
  for (const secret of ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"]) delete env[secret];
  return { kind: "task", task_id: task.task_id, env, lease_ms: leaseMs, heartbeat_ms: Math.max(500, Math.floor(leaseMs / 3)) };
}

/** Renews the lease of a task a pool machine is working on. */
export function heartbeat(e: Engine, workerId: string, taskId: string): { ok: boolean; reason?: string } | null {
  const meta = e.store.getMeta();
  if (!meta) return null;
  const task = e.store.getTask(taskId);
  if (!task || task.state !== "running" || task.worker_id !== workerId) {
    const holder = task?.worker_id && task.worker_id !== workerId ? ` (leased to ${task.worker_id})` : "";
    return { ok: false, reason: task ? `lease lost: task is ${task.state}${holder}` : "unknown task" };
  }
  const now = Date.now();
  // One row: the task's deadline (no index holds it, and the machine's row is not rewritten).
  e.store.moveTask(task, "running", { deadline_at: Math.min(now + e.config.LEASE_TIMEOUT_MS, task.limit_at) }, now);
  return { ok: true };
}
