// Running a phase: each alarm lapses overdue tasks, looks at machines due a check, asks the
// scheduler what to do, and creates machines — one per ready task (single-task mode) or pool
// machines that lease tasks (pool mode) — within the concurrency and the app's create budget.
import { log } from "../log.ts";
import { getPhase } from "../phases/index.ts";
import type { Phase } from "../phases/types.ts";
import type { BatchMeta, TaskRow } from "../store/index.ts";
import { attemptEnv, attemptExpiry, leaseToken, leaseUrl } from "./access.ts";
import { CREATE_ANSWER_MS, type Engine, SPAWNS_PER_ALARM, taskView } from "./context.ts";
import { createMachines, pauseAllows } from "./creates.ts";
import { askFleet } from "./fleet.ts";
import { checkMachines, lapseOverdue, MachineCensus, type MachinePlan, recordCreating, retireAll } from "./machines.ts";
import { nextPhase, pipelineOf } from "./pipeline.ts";
import { failAttempt } from "./outcomes.ts";
import { destroyOrphans } from "./orphans.ts";
import { learn, planOf, planPhase } from "./plan.ts";
import { decide, poolRoom, type SchedulerState } from "./schedule.ts";
import { guestOf } from "./sizing.ts";

export function schedulerState(e: Engine, meta: BatchMeta, phase: Phase, now: number): SchedulerState {
  const c = e.store.phaseCounts(phase.name);
  const plan = planOf(e, meta, phase);
  const machines = e.store.poolMachineCounts({ slots: plan.slots, ...plan.guest });
  // A paused phase sends no create until its pause has passed (then one, to try again).
  const paused = meta.paused_error ? meta.paused_until : 0;
  return {
    mode: meta.pool ? "pool" : "single",
    counts: c,
    poolMachines: machines.creating + machines.booting + machines.live,
    poolStale: machines.stale,
    poolSlots: machines.slots,
    planMachines: plan.machines,
    slots: meta.pool ? plan.slots : 1,
    maxLive: e.limits(phase).maxLive,
    ready: meta.pool ? 0 : e.store.readyTasks(now, SPAWNS_PER_ALARM).length,
    readyAt: e.store.earliestReady(),
    blockedUntil: Math.max(meta.fly_blocked_until, paused),
    budgetAt: meta.bucket_at,
    earliestDeadline: e.store.earliestDeadline(),
    checkIntervalMs: e.config.MACHINE_CHECK_INTERVAL_MS,
    spawnsPerAlarm: SPAWNS_PER_ALARM,
  };
}

export async function run(e: Engine, meta: BatchMeta): Promise<number | null> {
  const phase = getPhase(meta.phase);
  await destroyOrphans(e, Date.now());
  lapseOverdue(e, meta, Date.now());
  await checkMachines(e, meta, new MachineCensus(e.fly(), meta.batch_id));
  let fresh = e.store.getMeta()!;
  if (fresh.stage !== "run") return e.store.earliestDeadline();
  fresh = learn(e, planPhase(e, fresh, phase), phase);
  const intolerable = toleranceExceeded(e, fresh, phase);
  if (intolerable) {
    stopBatch(e, fresh, "failed", intolerable, `cancelled: ${intolerable}`, Date.now());
    return e.store.earliestDeadline();
  }
  const now = Date.now();
  const state = schedulerState(e, fresh, phase, now);
  const decision = decide(state, now);
  if (decision.phaseFinished) return finishPhase(e, fresh, phase);
  // Every alarm reports to the fleet (what the batch holds, what it could use) and creates only
  // what the fleet grants: within its share, the room under the fleet's limits, and create tokens.
  const answer = await askFleet(e, fresh, {
    demand: fleetDemand(state),
    want: Math.min(decision.create, pauseAllows(fresh, now)),
    guest: planOf(e, fresh, phase).guest,
  });
  fresh = e.store.getMeta()!;
  if (answer.granted > 0) await (fresh.pool ? launchPool(e, fresh, phase, answer.granted) : launchSingle(e, fresh, phase, answer.granted));
  const after = e.store.getMeta()!;
  if (after.stage !== "run") return e.store.earliestDeadline();
  // Unclamped by the share: a batch that wants more asks again when the fleet said (bucket_at).
  return decide(schedulerState(e, after, phase, Date.now()), Date.now()).nextAt;
}

/** Machines the batch could use now: those it holds and those its plan would add (pool), or a machine per open task (single), within its limits. */
function fleetDemand(s: SchedulerState): number {
  const c = s.counts;
  return s.mode === "pool" ? s.poolMachines + Math.max(0, poolRoom(s)) : Math.min(s.maxLive, c.pending + c.retrying + c.creating + c.booting + c.running);
}

function finishPhase(e: Engine, meta: BatchMeta, phase: Phase): number {
  const now = Date.now();
  const counts = e.store.phaseCounts(phase.name);
  log("DO", "phase_finished", { batch_id: meta.batch_id, phase: phase.name, done: counts.done, failed: counts.failed });
  const next = nextPhase(meta, phase.name);
  // A phase of the pipeline with nothing to do (none of its files in this batch) passes without an event.
  if (counts.total > 0) e.emit("phase", { phase: phase.name, finished: true, done: counts.done, failed: counts.failed, next });
  if (counts.total > 0 && counts.done === 0) {
    // Whatever the threshold, nothing converted is a failed batch, not a DONE one.
    stopBatch(e, meta, "failed", `every task of ${phase.name} failed (${counts.failed} of ${counts.total})`, "batch failed", now);
    return now;
  }
  e.store.transaction(() => {
    retireAll(e, "phase finished", now);
    if (next) e.store.updateMeta({ stage: "plan", phase: getPhase(next).name, plan_cursor: 0, max_task_size: 0 }, now);
    else {
      const all = e.store.counts().reduce((n, c) => n + c.total, 0);
      if (all === 0) {
        const phases = pipelineOf(meta);
        e.store.addWarning(`nothing to do: no file of the batch (${plural(e.store.fileCount(), "file")}) needed ${phases.length > 1 ? `any of ${phases.join(", ")}` : phase.name}`, now);
      }
      // The batch's status names the last phase that did something, not an empty one that passed at the end.
      const worked = e.store.counts().map((c) => c.phase);
      const shown = counts.total > 0 ? phase.name : ([...pipelineOf(meta)].reverse().find((p) => worked.includes(p)) ?? phase.name);
      e.store.updateMeta({ stage: "finalise", phase: shown }, now);
    }
  });
  return now;
}

/** Why the batch's failures are past what its message tolerates (Step Functions' meaning), or null. */
export function toleranceExceeded(e: Engine, meta: BatchMeta, phase: Phase): string | null {
  const c = e.store.phaseCounts(phase.name);
  const count = meta.tolerated_failure_count ?? e.config.TOLERATED_FAILURE_COUNT;
  const pct = meta.tolerated_failure_percentage ?? e.config.TOLERATED_FAILURE_PERCENTAGE;
  if (count !== undefined && count !== null && c.failed > count) {
    return `${c.failed} of ${c.total} tasks failed, more than tolerated_failure_count=${count}`;
  }
  if (pct !== undefined && pct !== null && c.total > 0 && (c.failed / c.total) * 100 > pct) {
    return `${c.failed} of ${c.total} tasks failed (${((c.failed / c.total) * 100).toFixed(1)}%), more than tolerated_failure_percentage=${pct}`;
  }
  return null;
}

/** Ends the batch in FAILED or ERROR: every machine retired (destroyed), every open task failed with `taskReason`. */
export function stopBatch(e: Engine, meta: BatchMeta, stage: "failed" | "error", error: string, taskReason: string, now: number): number {
  const n = e.store.transaction(() => {
    retireAll(e, error, now);
    // Each open task's attempt ends with it: a stopped batch has no attempt still "open".
    e.store.cancelOpenAttempts(taskReason, now);
    const failed = e.store.failOpenTasks(taskReason, now);
    e.store.updateMeta({ stage, error, completed_at: meta.completed_at ?? now }, now);
    return failed;
  });
  log("DO", stage === "failed" ? "batch_failed" : "batch_error", { batch_id: meta.batch_id, error, tasks_cancelled: n });
  e.emit(stage, { error, tasks_cancelled: n });
  return n;
}

/** Single-task mode: one machine per ready task, its task assigned at create. */
async function launchSingle(e: Engine, meta: BatchMeta, phase: Phase, n: number): Promise<void> {
  const now = Date.now();
  const limits = e.limits(phase);
  const ready = e.store.readyTasks(now, n);
  const launched = e.store.transaction(() => {
    const moved: TaskRow[] = [];
    for (const task of ready) {
      const attempt = task.attempt + 1;
      const id = `${task.task_id}-a${attempt}`;
      const limitAt = now + CREATE_ANSWER_MS + limits.bootTimeoutMs;
      const set = { attempt, machine_name: id, worker_id: id, machine_id: null, region: null, deadline_at: limitAt, limit_at: limitAt, attempt_started_at: now };
      if (e.store.moveTask(task, "creating", set, now)) moved.push({ ...task, ...set, state: "creating" });
    }
    return moved;
  });
  if (launched.length === 0) return;
  const expiresAt = attemptExpiry(now, limits);
  const plan = planOf(e, meta, phase);
  const minted = await Promise.all(launched.map(async (t) => ({ t, access: await attemptEnv(e, meta, t, expiresAt) })));
  const plans: MachinePlan[] = [];
  for (const { t, access } of minted) {
    if (!access.ok) continue;
    const req = phase.machine(taskView(meta, t));
    // The plan's kind and CPUs, with the memory this task needs (its own guest when the plan's kind cannot hold it).
    const guest = (phase.work && guestOf(plan.guest.cpu_kind, plan.guest.cpus, phase.work(t.size_bytes).memoryMb)) || phase.guest(t.size_bytes);
    plans.push({ id: t.worker_id!, phase, guest, image: req.image ?? e.config.FLY_IMAGE, env: { ...req.env, ...access.env }, slots: 1, task: t });
  }
  e.store.transaction(() => {
    // An attempt that may not write its output never gets a machine (outputs.ts outputAccess).
    for (const { t, access } of minted) if (!access.ok) failAttempt(e, meta, t, access.reason, access.retryable, now);
    recordCreating(e, plans, limits.bootTimeoutMs, now);
  });
  await createMachines(e, meta, plans);
}

/** Pool mode: machines sized for the phase's largest task, once per slot, that lease tasks. */
async function launchPool(e: Engine, meta: BatchMeta, phase: Phase, n: number): Promise<void> {
  const now = Date.now();
  const c = e.config;
  const limits = e.limits(phase);
  const { slots, guest, perSlotMb } = planOf(e, meta, phase);
  const ids = Array.from({ length: n }, (_, i) => `pool-${String(meta.worker_seq + i + 1).padStart(4, "0")}`);
  const plans: MachinePlan[] = await Promise.all(
    ids.map(async (id) => ({
      id,
      phase,
      guest,
      image: c.FLY_IMAGE,
      slots,
      env: {
        POOL_MODE: "true",
        BATCH_ID: meta.batch_id,
        PHASE: phase.name,
        WORKER_ID: id,
        LEASE_URL: leaseUrl(c, meta.batch_id),
        // Good for the machine's first lease only: until its boot limit, and only from the machine
        // the engine created for this row (engine/pool.ts); every answer then renews it, briefly.
        LEASE_TOKEN: await leaseToken(e, meta, id, now + CREATE_ANSWER_MS + limits.bootTimeoutMs),
        IDLE_TIMEOUT_MS: String(c.POOL_IDLE_TIMEOUT_MS),
        POOL_CONCURRENCY: String(slots),
        // Per slot: what one task may use.
        MEMORY_MB: String(perSlotMb),
        ...(c.MACHINE_STORAGE === "legacy-keys"
          ? {
              R2_ACCOUNT_ID: c.R2_ACCOUNT_ID,
              R2_ACCESS_KEY_ID: c.R2_ACCESS_KEY_ID,
              R2_SECRET_ACCESS_KEY: c.R2_SECRET_ACCESS_KEY,
              R2_BUCKET: c.R2_BUCKET,
              ...(c.R2_ENDPOINT ? { R2_ENDPOINT: c.R2_ENDPOINT } : {}),
            }
          : {}),
      },
    })),
  );
  e.store.transaction(() => {
    recordCreating(e, plans, limits.bootTimeoutMs, now);
    e.store.updateMeta({ worker_seq: meta.worker_seq + n }, now);
  });
  await createMachines(e, meta, plans);
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
