// The Durable Object shell of a batch: RPC entry points and alarm dispatch, nothing else. The
// engine's concerns live in engine/ (discovery, planning, scheduling, machines, outcomes, pool,
// finalisation, views); SQL lives in store/. The engine names no phase.
import { DurableObject } from "cloudflare:workers";
import type { LeaseResponse, QueueMessage } from "../shared/contracts.ts";
import { backoffMs } from "../shared/backoff.ts";
import { syncBatchIndex } from "./batch-index.ts";
import { type Config, loadConfig } from "./config.ts";
import { attemptExpiry } from "./engine/access.ts";
import { apiStatus, type Engine, isFinished, makeEngine } from "./engine/context.ts";
import { discover, messageRefusal } from "./engine/discovery.ts";
import { finalise } from "./engine/finalise.ts";
import { destroyOrphans } from "./engine/machines.ts";
import { type CallbackReply, type ReserveReply, reserveOutputs, settleCallback } from "./engine/outcomes.ts";
import { plan } from "./engine/planning.ts";
import { heartbeat, lease } from "./engine/pool.ts";
import { run, stopBatch } from "./engine/run.ts";
import * as views from "./engine/views.ts";
import { LiveStreams } from "./engine/events.ts";
import { errorMessage, log, logError } from "./log.ts";
import { FIRST_PHASE, getPhase } from "./phases/index.ts";
import { StorageError } from "./storage.ts";
import { type BatchMeta, BatchStore } from "./store/index.ts";

export type { StatusBody, ApiStatus } from "./engine/views.ts";
export type { CallbackReply } from "./engine/outcomes.ts";
export { machineName } from "./engine/context.ts";

/** Rows written (and requests) counted in memory are added to meta at the latest once this many rows have gone by. */
const USAGE_FLUSH_ROWS = 200;

/** What a dead letter did to its batch (fanout-batches-dlq). */
export type DeadLetterOutcome = "marked_error" | "warned" | "finished";

export class BatchDO extends DurableObject<Env> {
  private readonly store: BatchStore;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.store = new BatchStore(ctx.storage);
    // Only an existing batch is migrated: a read of an unknown batch creates no storage.
    ctx.blockConcurrencyWhile(async () => {
      if (this.store.exists()) this.store.migrate();
    });
  }

  private get config(): Config {
    return loadConfig(this.env);
  }

  private engine(): Engine {
    return makeEngine(this.store, this.config, this.env, (at) => this.wake(at), (id, type, data) => this.live.publish(id, type, data));
  }

  /** Open event streams of this batch (GET /status/:batchId/events). */
  private readonly live = new LiveStreams(() => {
    const meta = this.store.getMeta();
    return meta ? views.status(this.engine(), meta) : null;
  });

  /** The DO's HTTP face: only the event stream, which RPC cannot carry. */
  async fetch(request: Request): Promise<Response> {
    this.request(true);
    if (new URL(request.url).pathname !== "/events") return Response.json({ error: "no such route" }, { status: 404 });
    if (!this.store.getMeta()) return Response.json({ error: "unknown batch" }, { status: 404 });
    const last = Number(request.headers.get("last-event-id") ?? new URL(request.url).searchParams.get("last_event_id") ?? 0);
    return this.live.open(Number.isFinite(last) ? last : 0, (after) => this.store.eventsAfter(after, 1000), this.store.lastEventId());
  }

  /** Brings the alarm forward to `at` unless one is due sooner. */
  private async wake(at: number): Promise<void> {
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at + 50) await this.setAlarm(at);
  }

  /** Every setAlarm is billed as a row written: counted with the store's rows. */
  private async setAlarm(at: number): Promise<void> {
    this.store.usage.rowsWritten++;
    await this.ctx.storage.setAlarm(at);
  }

  /** A billed request reached this object: an RPC (from the Worker's HTTP entry when `viaWorker`) or an alarm. */
  private request(viaWorker: boolean): void {
    this.store.usage.requests++;
    if (viaWorker) this.store.usage.workerRequests++;
  }

  // ---- RPC: queue ---------------------------------------------------------------------

  /** Records the batch (once) and starts its alarm loop. Redelivery changes nothing. */
  async start(message: QueueMessage, options: { firstPhase?: string } = {}): Promise<{ created: boolean; status: string }> {
    const existing = this.store.getMeta();
    if (existing) return { created: false, status: apiStatus(existing) };
    const outside = messageRefusal(message, this.config.ALLOWED_PREFIXES);
    if (outside) {
      await this.recordInvalid(message.batch_id, `invalid queue message: ${outside}`, JSON.stringify(message));
      log("DO", "batch_refused", { batch_id: message.batch_id, error: outside });
      return { created: true, status: "ERROR" };
    }
    this.store.migrate();
    const phase = getPhase(options.firstPhase ?? FIRST_PHASE);
    const now = Date.now();
    this.store.createMeta({
      batch_id: message.batch_id,
      stage: "discover",
      phase: phase.name,
      error: null,
      message_json: JSON.stringify(message),
      manifest_key: message.manifest_r2_key ?? null,
      prefix: message.manifest_r2_key ? null : (message.r2_prefix ?? ""),
      now,
    });
    // Pool mode when the message asks (or sets slots); one machine per task when it says `"pool": false`
    // or POOL_MODE is off; otherwise the sizing picks either, batch by batch (engine/plan.ts).
    const request = message.pool === true || (message.pool === undefined && message.pool_tasks_per_machine && this.config.POOL_MODE) ? "pool" : message.pool === false || !this.config.POOL_MODE ? "single" : "auto";
    this.store.updateMeta({ mode_request: request, pool: request === "single" ? 0 : 1, pool_slots: request === "single" ? 0 : (message.pool_tasks_per_machine ?? 0) }, now);
    this.store.updateMeta(
      { tolerated_failure_percentage: message.tolerated_failure_percentage ?? null, tolerated_failure_count: message.tolerated_failure_count ?? null },
      now,
    );
    await this.setAlarm(now);
    await syncBatchIndex(this.env, this.store.getMeta(), () => this.status());
    log("DO", "batch_started", { batch_id: message.batch_id, phase: phase.name });
    return { created: true, status: phase.name };
  }

  /** A message that failed validation: the batch exists in ERROR so that /status explains it. */
  async recordInvalid(batchId: string, error: string, messageJson: string): Promise<{ created: boolean }> {
    if (this.store.getMeta()) return { created: false };
    this.store.migrate();
    this.store.createMeta({
      batch_id: batchId,
      stage: "error",
      phase: FIRST_PHASE,
      error,
      message_json: messageJson.slice(0, 65536),
      manifest_key: null,
      prefix: null,
      now: Date.now(),
    });
    await syncBatchIndex(this.env, this.store.getMeta(), () => this.status());
    return { created: true };
  }

  /**
   * A copy of this batch's queue message exhausted its retries (fanout-batches-dlq). With no batch
   * yet, the batch is recorded in ERROR with the reason. A batch an earlier delivery (or another
   * message) started is not stopped — its work is sound — but its status says what happened.
   */
  async deadLettered(batchId: string, reason: string, messageJson: string): Promise<{ outcome: DeadLetterOutcome }> {
    const meta = this.store.getMeta();
    if (!meta) {
      await this.recordInvalid(batchId, reason, messageJson);
      return { outcome: "marked_error" };
    }
    if (isFinished(meta)) return { outcome: "finished" };
    this.store.addWarning(`${reason}; the batch had already been started and goes on`, Date.now());
    this.live.progressChanged();
    return { outcome: "warned" };
  }

  // ---- RPC: machines (callbacks, output reservations, leases) ------------------------------

  /** A callback from attempt `attempt` of `taskId` (the attempt the verified credential names). */
  async callback(taskId: string, attempt: number, body: unknown): Promise<CallbackReply> {
    this.request(true);
    if (!this.store.getMeta()) return { code: 404, body: { error: "unknown batch" } };
    const reply = await settleCallback(this.engine(), taskId, attempt, body);
    this.live.progressChanged();
    return reply;
  }

  /** Reserves (and presigns) the keys of pages 2…pages of the task's output for its running attempt. */
  async reserveOutputs(taskId: string, attempt: number, pages: number): Promise<ReserveReply> {
    this.request(true);
    const meta = this.store.getMeta();
    if (!meta) return { code: 404, body: { error: "unknown batch" } };
    const e = this.engine();
    const task = this.store.getTask(taskId);
    const limits = e.limits(getPhase(task?.phase ?? meta.phase));
    return reserveOutputs(e, taskId, attempt, pages, attemptExpiry(Date.now(), limits));
  }

  async lease(workerId: string, machineId: string | null): Promise<LeaseResponse | null> {
    this.request(true);
    return lease(this.engine(), workerId, machineId);
  }

  async heartbeat(workerId: string, taskId: string): Promise<{ ok: boolean; reason?: string } | null> {
    this.request(true);
    return heartbeat(this.engine(), workerId, taskId);
  }

  // ---- RPC: views ---------------------------------------------------------------------------

  async status(): Promise<views.StatusBody | null> {
    this.request(true);
    const meta = this.store.getMeta();
    return meta ? views.status(this.engine(), meta) : null;
  }

  async tasks(opts: { status: views.ApiStatus | null; cursor: number; limit: number }) {
    this.request(true);
    const meta = this.store.getMeta();
    return meta ? views.tasks(this.engine(), meta, opts) : null;
  }

  async task(taskId: string) {
    this.request(true);
    const meta = this.store.getMeta();
    const task = meta ? this.store.getTask(taskId) : null;
    return meta && task ? views.task(this.engine(), meta, task) : null;
  }

  // ---- RPC: reset --------------------------------------------------------------------------

  async reset(): Promise<
    | { ok: true; batch_id: string; status: "ERROR"; tasks_failed: number; machines_destroyed: number; machines_pending: number }
    | { ok: false; code: 404 | 409; error: string }
  > {
    const meta = this.store.getMeta();
    if (!meta) return { ok: false, code: 404, error: "unknown batch" };
    if (meta.stage === "done" || meta.stage === "failed") return { ok: false, code: 409, error: `batch is ${apiStatus(meta)}; there is nothing to reset` };
    const e = this.engine();
    const now = Date.now();
    const failed = stopBatch(e, meta, "error", "reset by admin", "batch reset by admin", now);
    await this.ctx.storage.deleteAlarm();
    // Machines whose create outcome was never learned are found by their metadata.
    try {
      for (const m of await e.fly().listMachines({ fanout_batch: meta.batch_id })) {
        if (m.state !== "destroyed") this.store.addOrphan(m.id, "batch reset", now);
      }
    } catch (error) {
      logError("DO", "reset_list_failed", error, { batch_id: meta.batch_id });
    }
    const destroyed = await destroyOrphans(e, now);
    const pending = this.store.orphanCount();
    if (pending > 0) await this.setAlarm(now + 5_000);
    await syncBatchIndex(this.env, this.store.getMeta(), () => this.status());
    log("DO", "batch_reset", { batch_id: meta.batch_id, tasks_failed: failed, machines_destroyed: destroyed, machines_pending: pending });
    return { ok: true, batch_id: meta.batch_id, status: "ERROR", tasks_failed: failed, machines_destroyed: destroyed, machines_pending: pending };
  }


  // ---- RPC: redrive -------------------------------------------------------------------------

  /**
   * Re-runs only the FAILED tasks of a finished batch (DONE with failures, FAILED, or ERROR after a
   * reset): their attempts continue (history kept, numbers rising), each with a fresh retry budget;
   * the final file list goes downstream again under a new Idempotency-Key.
   */
  async redrive(): Promise<{ ok: true; batch_id: string; tasks: number; status: string; redrive: number } | { ok: false; code: 404 | 409; error: string }> {
    const meta = this.store.getMeta();
    if (!meta) return { ok: false, code: 404, error: "unknown batch" };
    if (!isFinished(meta)) return { ok: false, code: 409, error: `batch is running (${apiStatus(meta)}); only a finished batch can be redriven` };
    if (meta.stage === "error" && meta.step_failures > 0) {
      return { ok: false, code: 409, error: `batch stopped on a failing ${meta.stage} step (${meta.error}); fix the cause and submit it again` };
    }
    const e = this.engine();
    const now = Date.now();
    const result = this.store.transaction(() => {
      const r = this.store.redriveFailed(now);
      if (r.tasks === 0) return r;
      // Run from the earliest phase (in pipeline order) that has a task to re-run.
      let phase: string | null = FIRST_PHASE;
      while (phase && !r.phases.includes(phase)) phase = getPhase(phase).next;
      this.store.updateMeta(
        {
          stage: "run",
          phase: phase ?? r.phases[0],
          error: null,
          completed_at: null,
          redrives: meta.redrives + 1,
          finalise_attempts: 0,
          finalise_error: null,
          // The pool is sized again for what the redrive runs, under today's limits.
          pool_plan_json: null,
        },
        now,
      );
      return r;
    });
    if (result.tasks === 0) return { ok: false, code: 409, error: "the batch has no failed task to redrive" };
    e.emit("redrive", { tasks: result.tasks, redrive: meta.redrives + 1 });
    log("DO", "batch_redriven", { batch_id: meta.batch_id, tasks: result.tasks, redrive: meta.redrives + 1 });
    await this.setAlarm(now);
    return { ok: true, batch_id: meta.batch_id, tasks: result.tasks, status: apiStatus(this.store.getMeta()!), redrive: meta.redrives + 1 };
  }

  // ---- the alarm loop ------------------------------------------------------------------------

  async alarm(): Promise<void> {
    this.request(false);
    const meta = this.store.getMeta();
    if (!meta) return;
    let next: number | null = null;
    try {
      next = await this.step(meta);
      if (meta.step_failures > 0) this.store.updateMeta({ step_failures: 0, step_error: null }, Date.now());
    } catch (error) {
      next = this.stepFailed(meta, error);
    } finally {
      // Always re-arm while work remains, whatever the step did.
      const after = this.store.getMeta();
      if (after && isFinished(after)) next = this.store.earliestDeadline();
      if (next !== null) await this.setAlarm(Math.max(next, Date.now()));
      // The billed work counted since meta was last written goes into it now and then (a row per flush).
      if (after && (this.store.usage.rowsWritten >= USAGE_FLUSH_ROWS || isFinished(after))) this.store.flushUsage();
      this.live.progressChanged();
      await syncBatchIndex(this.env, after, () => this.status());
    }
  }

  /**
   * A step that throws is retried with backoff; after MAX_STEP_FAILURES in a row (or a storage
   * error that will not heal, during discovery) the batch stops in ERROR naming the step and error.
   */
  private stepFailed(meta: BatchMeta, error: unknown): number | null {
    const failures = meta.step_failures + 1;
    const message = errorMessage(error);
    const final = meta.stage === "discover" && error instanceof StorageError && !error.retryable;
    logError("DO", "step_failed", error, { batch_id: meta.batch_id, stage: meta.stage, failures });
    const now = Date.now();
    this.store.updateMeta({ step_failures: failures, step_error: message.slice(0, 2000) }, now);
    if (final || failures >= this.config.MAX_STEP_FAILURES) {
      const what = meta.stage === "discover" ? "discovery failed" : `${meta.stage} step failed`;
      stopBatch(this.engine(), meta, "error", `${what}${final ? "" : ` ${failures} times in a row`}: ${message}`, `batch stopped: ${meta.stage} step failed`, now);
      return this.store.earliestDeadline();
    }
    return now + backoffMs(failures, 1000, 60_000);
  }

  /** One step of the batch; returns when the next alarm should fire (null: nothing to do). */
  private async step(meta: BatchMeta): Promise<number | null> {
    const e = this.engine();
    switch (meta.stage) {
      case "discover":
        return await discover(e, meta);
      case "plan":
        return plan(e, meta);
      case "run":
        return await run(e, meta);
      case "finalise":
        return await finalise(e, meta);
      case "done":
      case "failed":
      case "error":
        await destroyOrphans(e, Date.now());
        return this.store.earliestDeadline();
    }
  }
}
