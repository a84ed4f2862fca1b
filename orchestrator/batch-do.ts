// The Durable Object shell of a batch: RPC entry points and alarm dispatch, nothing else. The
// engine's concerns live in engine/ (discovery, planning, scheduling, machines, outcomes, pool,
// finalisation, views); SQL lives in store/. The engine names no phase.
import { DurableObject } from "cloudflare:workers";
import type { LeaseResponse, QueueMessage, ReserveRequest } from "../shared/contracts.ts";
import { syncBatchIndex } from "./batch-index.ts";
import { type Config, loadConfig } from "./config.ts";
import { apiStatus, type Engine, isFinished, makeEngine } from "./engine/context.ts";
import { discover, messageRefusal } from "./engine/discovery.ts";
import { finalise } from "./engine/finalise.ts";
import { type RedriveReply, redriveBatch, resetBatch, type ResetReply } from "./engine/admin.ts";
import { settleWithFleet } from "./engine/fleet.ts";
import { type CallbackReply, settleCallback } from "./engine/outcomes.ts";
import { type Credential, type ReserveReply, reserveOutputs } from "./engine/reserve.ts";
import { plan } from "./engine/planning.ts";
import { heartbeat, lease, type LeaseRefusal } from "./engine/pool.ts";
import { run } from "./engine/run.ts";
import { archivedRow, finishedAlarm, retentionAlarm } from "./engine/retention.ts";
import * as views from "./engine/views.ts";
import { ALARM_REARM_MS, runtimeRetryError, stallReason, stallWarning, stepFailed, wakeIfStalled } from "./engine/watchdog.ts";
import { modeOf } from "./engine/plan.ts";
import { CLIENT_HEADER, LiveStreams } from "./engine/events.ts";
import { log } from "./log.ts";
import { Outbound, OutboundRefused } from "./outbound.ts";
import { defaultPipeline, getPhase, pipelineProblem } from "./phases/index.ts";
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

  /** The engine of one invocation: its outbound requests counted and, for an alarm, ending at `deadline`. */
  private engine(deadline?: number): Engine {
    const outbound = new Outbound(deadline !== undefined ? { deadline } : {});
    return makeEngine(this.store, this.config, this.env, (at) => this.wake(at), (id, type, data) => this.live.publish(id, type, data), outbound);
  }

  /** What the last alarm did (subrequests, its peak of requests waiting at once, time): the limit tests read it. */
  lastAlarm: { stage: string; subrequests: number; refused: number; peak_in_flight: number; ms: number } | null = null;

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
    const client = request.headers.get(CLIENT_HEADER) ?? "unknown";
    return this.live.open(Number.isFinite(last) ? last : 0, (after) => this.store.eventsAfter(after, 1000), this.store.lastEventId(), client);
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

  // ---- RPC: the fleet -----------------------------------------------------------------------

  /**
   * The fleet's shares changed so that this batch holds more machines than its share (another batch
   * arrived): its alarm runs now, reports, and learns the smaller share, and its surplus pool
   * machines stop leasing at their next lease instead of up to a poll interval later.
   */
  async fleetChanged(): Promise<void> {
    this.request(false);
    const meta = this.store.getMeta();
    if (!meta || isFinished(meta)) return;
    await this.wake(Date.now());
  }

  // ---- RPC: queue ---------------------------------------------------------------------

  /** Records the batch (once) and starts its alarm loop. Redelivery changes nothing. */
  async start(message: QueueMessage): Promise<{ created: boolean; status: string }> {
    const existing = this.store.getMeta();
    if (existing) return { created: false, status: apiStatus(existing) };
    // An archived batch (retention deleted its storage) is not started again by a late redelivery.
    const archived = await archivedRow(this.env.BATCH_INDEX, message.batch_id);
    if (archived) return { created: false, status: archived.status };
    const outside = messageRefusal(message, this.config.ALLOWED_PREFIXES) ?? (message.phases ? pipelineProblem(message.phases) : null);
    if (outside) {
      await this.recordInvalid(message.batch_id, `invalid queue message: ${outside}`, JSON.stringify(message));
      log("DO", "batch_refused", { batch_id: message.batch_id, error: outside });
      return { created: true, status: "ERROR" };
    }
    this.store.migrate();
    const pipeline = message.phases ?? defaultPipeline();
    const phase = getPhase(pipeline[0]);
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
    this.store.updateMeta(
      {
        ...modeOf(message, this.config.POOL_MODE),
        tolerated_failure_percentage: message.tolerated_failure_percentage ?? null,
        tolerated_failure_count: message.tolerated_failure_count ?? null,
        priority: message.priority ?? 1,
        pipeline_json: JSON.stringify(pipeline),
      },
      now,
    );
    await this.setAlarm(now);
    await syncBatchIndex(this.env, this.store.getMeta(), () => this.status());
    log("DO", "batch_started", { batch_id: message.batch_id, phase: phase.name, pipeline });
    return { created: true, status: phase.name };
  }

  /** A message that failed validation: the batch exists in ERROR so that /status explains it. */
  async recordInvalid(batchId: string, error: string, messageJson: string): Promise<{ created: boolean }> {
    if (this.store.getMeta()) return { created: false };
    this.store.migrate();
    this.store.createMeta({
      batch_id: batchId,
      stage: "error",
      // A message that never started has no phase: the default pipeline's first names where it stopped.
      phase: defaultPipeline()[0],
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

  /** Callbacks being settled, by task and attempt: a copy that arrives meanwhile waits for the same answer (no second storage check). */
  private readonly settling = new Map<string, Promise<CallbackReply>>();

  /** A callback from the attempt (and epoch) the verified credential names. */
  async callback(taskId: string, credential: Pick<Credential, "attempt" | "epoch">, body: unknown): Promise<CallbackReply> {
    this.request(true);
    if (!this.store.getMeta()) return { code: 404, body: { error: "unknown batch" } };
    const key = `${taskId}/${credential.attempt}/${credential.epoch}`;
    const running = this.settling.get(key);
    if (running) return running;
    const settled = settleCallback(this.engine(), taskId, credential, body).finally(() => this.settling.delete(key));
    this.settling.set(key, settled);
    const reply = await settled;
    this.live.progressChanged();
    return reply;
  }

  /** Reserves the keys of the task's outputs, or presigns one output's upload, for its running attempt. */
  async reserveOutputs(taskId: string, credential: Credential, request: ReserveRequest): Promise<ReserveReply> {
    this.request(true);
    if (!this.store.getMeta()) return { code: 404, body: { error: "unknown batch" } };
    return reserveOutputs(this.engine(), taskId, credential, request);
  }

  async lease(workerId: string, machineId: string, epoch: number): Promise<LeaseResponse | LeaseRefusal | null> {
    this.request(true);
    return lease(this.engine(), workerId, machineId, epoch);
  }

  async heartbeat(workerId: string, machineId: string, taskId: string, epoch: number): Promise<{ ok: boolean; reason?: string; lease_token?: string } | LeaseRefusal | null> {
    this.request(true);
    return heartbeat(this.engine(), workerId, machineId, taskId, epoch);
  }

  // ---- RPC: views ---------------------------------------------------------------------------

  async status(): Promise<views.StatusBody | null> {
    this.request(true);
    const meta = this.store.getMeta();
    if (!meta) return null;
    const body = views.status(this.engine(), meta);
    const stalled = stallReason(meta, await this.ctx.storage.getAlarm(), Date.now());
    if (stalled) body.warnings.unshift(stallWarning(stalled));
    return body;
  }

  /**
   * The watchdog's question (a Cron Trigger, orchestrator/index.ts): is anything driving this
   * running batch? With no alarm, or one long overdue, it is woken now and says so in its warnings.
   * Its index row is written either way, so a quiet but healthy batch is not asked again soon.
   */
  async watchdog(): Promise<{ batch_id: string | null; woken: boolean; reason: string | null }> {
    const meta = this.store.getMeta();
    if (!meta) return { batch_id: null, woken: false, reason: null };
    const e = this.engine();
    const reason = await wakeIfStalled(e, meta, this.ctx.storage, Date.now());
    await syncBatchIndex(e.env, this.store.getMeta(), () => this.status(), { force: true });
    return { batch_id: meta.batch_id, woken: reason !== null, reason };
  }

  async tasks(opts: { status: views.ApiStatus | null; cursor: number; limit: number }) {
    this.request(true);
    const meta = this.store.getMeta();
    return meta ? views.tasks(this.engine(), meta, opts) : null;
  }

  async timeline(limit: number) {
    const meta = this.store.getMeta();
    return meta ? views.timeline(this.engine(), meta, limit) : null;
  }

  async task(taskId: string) {
    this.request(true);
    const meta = this.store.getMeta();
    const task = meta ? this.store.getTask(taskId) : null;
    return meta && task ? views.task(this.engine(), meta, task) : null;
  }

  // ---- RPC: reset and redrive (engine/admin.ts) ------------------------------------------------

  async reset(): Promise<ResetReply> {
    const reply = await resetBatch(this.engine(), () => this.ctx.storage.deleteAlarm(), (at) => this.setAlarm(at));
    if (reply.ok) await syncBatchIndex(this.env, this.store.getMeta(), () => this.status());
    return reply;
  }

  async redrive(): Promise<RedriveReply> {
    const reply = redriveBatch(this.engine());
    if (reply.ok) await this.setAlarm(Date.now());
    return reply;
  }

  // ---- the alarm loop ------------------------------------------------------------------------

  async alarm(info?: AlarmInvocationInfo): Promise<void> {
    this.request(false);
    let meta = this.store.getMeta();
    if (!meta) return;
    const started = Date.now();
    const e = this.engine(started + this.config.ALARM_WORK_MS);
    // The next alarm is set before any work: an alarm that dies (CPU, memory, an isolate reset)
    // leaves it behind once the runtime's own retries are over (engine/watchdog.ts).
    if (!isFinished(meta)) await this.setAlarm(started + ALARM_REARM_MS);
    // A retry means the last invocation died where no catch could see it: a failed step all the same.
    if (info?.isRetry && !isFinished(meta)) {
      const error = runtimeRetryError(info.retryCount);
      // The count resets when a step succeeds; the warning keeps it visible.
      this.store.addWarning(`${new Date(started).toISOString()}: ${error}`, started);
      const next = stepFailed(e, meta, new Error(error));
      meta = this.store.getMeta()!;
      if (isFinished(meta)) {
        e.outbound.workDone();
        return this.alarmDone(e, meta, next, started);
      }
    }
    let next: number | null;
    try {
      next = await this.step(e, meta);
      const after = this.store.getMeta();
      if (after && after.step_failures > 0 && !isFinished(after)) this.store.updateMeta({ step_failures: 0, step_error: null }, Date.now());
    } catch (error) {
      // Out of time (or subrequests) mid-step is not a failure: the step's writes are per page or
      // part, so the next alarm goes on from what was stored.
      if (error instanceof OutboundRefused) next = Date.now();
      else next = stepFailed(e, meta, error);
    }
    e.outbound.workDone();
    await this.alarmDone(e, this.store.getMeta(), next, started);
  }

  /** Sets the next alarm (a running batch always has one; a finished one only for what is left, then its retention) and updates the index. */
  private async alarmDone(e: Engine, after: BatchMeta | null, next: number | null, started: number): Promise<void> {
    const now = Date.now();
    if (after && isFinished(after)) next = Math.min(next ?? Number.POSITIVE_INFINITY, retentionAlarm(e, after, now));
    else if (after && next === null) next = now + ALARM_REARM_MS;
    // A wake during this alarm (a callback freed a slot) moved the re-armed alarm earlier: keep it.
    const woken = after && !isFinished(after) ? await this.ctx.storage.getAlarm() : null;
    if (next !== null && woken !== null && woken !== started + ALARM_REARM_MS) next = Math.min(next, woken);
    if (next !== null) await this.setAlarm(Math.max(next, now));
    // The billed work counted since meta was last written goes into it now and then (a row per flush).
    if (after && (this.store.usage.rowsWritten >= USAGE_FLUSH_ROWS || isFinished(after))) this.store.flushUsage();
    this.live.progressChanged();
    await syncBatchIndex(e.env, after, () => this.status());
    this.lastAlarm = { stage: after?.stage ?? "archived", subrequests: e.outbound.used, refused: e.outbound.refused, peak_in_flight: e.outbound.peakInFlight, ms: Date.now() - started };
    log("DO", "alarm", { batch_id: after?.batch_id ?? null, ...this.lastAlarm });
  }

  /** One step of the batch; returns when the next alarm should fire (null: nothing to do). */
  private async step(e: Engine, meta: BatchMeta): Promise<number | null> {
    switch (meta.stage) {
      case "discover":
        return await discover(e, meta);
      case "plan":
        return await plan(e, meta);
      case "run":
        return await run(e, meta);
      case "finalise": {
        const next = await finalise(e, meta);
        await settleWithFleet(e, this.store.getMeta()!);
        return next;
      }
      case "done":
      case "failed":
      case "error":
        return await finishedAlarm(e, meta, () => this.status(), this.ctx.storage);
    }
  }
}
