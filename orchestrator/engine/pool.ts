// Pool mode's side of the lifecycle: a pool machine leases task after task, keeps each lease by
// heartbeats, and is retired as soon as the other machines can take every waiting task.
import type { LeaseResponse } from "../../shared/contracts.ts";
import { log } from "../log.ts";
import { getPhase } from "../phases/index.ts";
import type { BatchMeta, TaskRow } from "../store/index.ts";
import { attemptEnv, attemptExpiry } from "./access.ts";
import { apiStatus, type Engine, isFinished, RETIRE_GRACE_MS, taskView } from "./context.ts";
import { fleetOf } from "./fleet.ts";
import { retireMachine } from "./machines.ts";
import { failAttempt } from "./outcomes.ts";
import { slotsOf } from "./run.ts";

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
  e.store.updateWorker(workerId, {
    state: "live",
    last_seen: now,
    machine_id: machine,
    check_at: Math.max(row.check_at, now + e.config.MACHINE_CHECK_INTERVAL_MS),
  });
  if (meta.stage !== "run") return { kind: "wait", wait_ms: 1000 };
  const phase = getPhase(meta.phase);
  const limits = e.limits(phase);
  const leaseMs = e.config.LEASE_TIMEOUT_MS;
  // Over its fair share of the fleet: the newest machines lease no new work and drain (running work is never killed).
  const [ready] = draining(e, meta, workerId) ? [] : e.store.readyTasks(now, 1);
  if (!ready) {
    const counts = e.store.phaseCounts(phase.name);
    const pool = e.store.poolMachineCounts();
    // Leave when the other slots cover every open task, the same count the scheduler creates
    // machines by (so a machine is never retired only to be replaced); stay while they do not.
    const open = counts.pending + counts.retrying + counts.running;
    if (!draining(e, meta, workerId) && open > (pool.creating + pool.booting + pool.live) * slotsOf(e, meta) - 1) {
      const nextAt = e.store.earliestReady() ?? now + 1000;
      return { kind: "wait", wait_ms: Math.min(5000, Math.max(200, nextAt - now)) };
    }
    // Retired once its last slot is told done (its other slots may still work); it exits by itself.
    if (e.store.heldBy(workerId).length === 0) {
      e.store.transaction(() => retireMachine(e, { ...row, machine_id: machine }, "retired: no work left", now, RETIRE_GRACE_MS));
      log("DO", "pool_machine_retired", { batch_id: meta.batch_id, worker_id: workerId, machine_id: machine, leases: row.leases });
    }
    return { kind: "done", reason: "no work left for this machine" };
  }
  const attempt = ready.attempt + 1;
  const set = { attempt, worker_id: workerId, machine_id: machine, machine_name: workerId, region: null, deadline_at: now + leaseMs, limit_at: now + limits.runTimeoutMs };
  const task: TaskRow = { ...ready, ...set, state: "running" };
  e.store.transaction(() => {
    e.store.moveTask(ready, "running", set, now);
    e.store.startAttempt({ task_id: task.task_id, attempt, machine_name: workerId, now });
    if (machine) e.store.recordMachine(task.task_id, attempt, machine, null);
    e.store.updateWorker(workerId, { leases: row.leases + 1 });
  });
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

/** True when the batch holds more pool machines than its share of the fleet and this is one of the newest past it. */
function draining(e: Engine, meta: BatchMeta, workerId: string): boolean {
  const fleet = fleetOf(meta);
  if (!fleet) return false;
  const pool = e.store.poolMachineCounts();
  const surplus = pool.creating + pool.booting + pool.live - fleet.share;
  return surplus > 0 && e.store.newestPoolMachines(surplus).includes(workerId);
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
  e.store.moveTask(task, "running", { deadline_at: Math.min(now + e.config.LEASE_TIMEOUT_MS, task.limit_at) }, now);
  e.store.updateWorker(workerId, { last_seen: now });
  return { ok: true };
}
