// The engine: one BatchDO per batch. Alarms drive everything — discovery, planning a phase's
// tasks, expiring overdue machines, spawning ready tasks within the concurrency and create-rate
// budget, finishing phases and finalisation. Callbacks only record outcomes. The engine names
// no phase: it runs whatever the registry's phases declare.
import { DurableObject } from "cloudflare:workers";
import {
  type CallbackBody,
  describeZodError,
  type FileEntry,
  Manifest,
  type QueueMessage,
} from "../shared/contracts.ts";
import { signToken, callbackSubject } from "../shared/token.ts";
import { leaseSubject, type LeaseResponse } from "../shared/contracts.ts";
import { fileName } from "../shared/keys.ts";
import { syncBatchIndex } from "./batch-index.ts";
import { type Config, loadConfig } from "./config.ts";
import { errorMessage, log, logError } from "./log.ts";
import { type CreateOutcome, type FlyMachine, FlyMachines, guestForSlots } from "./machines.ts";
import { FIRST_PHASE, getPhase } from "./phases/index.ts";
import type { Phase, PhaseFile, TaskView } from "./phases/types.ts";
import { R2ObjectStore, S3ObjectStore, StorageError, type ObjectStore } from "./storage.ts";
import {
  type BatchMeta,
  BatchStore,
  type FileRow,
  type PhaseCounts,
  type Stage,
  type TaskRow,
  type TaskState,
  type WorkerRow,
} from "./store.ts";

/** Creates per alarm: each may take a few subrequests (regions, retries); Workers allow 1,000. */
const SPAWNS_PER_ALARM = 40;
const SUBREQUESTS_PER_ALARM = 800;
const LIST_PAGES_PER_ALARM = 20;
const LIST_PAGE_SIZE = 1000;
const PLAN_FILES_PER_ALARM = 5000;
const CHECKS_PER_ALARM = 50;
const ORPHANS_PER_ALARM = 50;
/** How long a create may stay without an answer before we look for its machine. */
const CREATE_ANSWER_MS = 60_000;
const RECHECK_MS = 5_000;
const MAX_STEP_FAILURES = 10;
const RECENT_FAILURES = 10;
/** A pool machine told `done` exits by itself; it is destroyed after this if it has not. */
const RETIRE_GRACE_MS = 30_000;

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
  started_at: string;
  updated_at: string;
  completed_at: string | null;
  error: string | null;
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

export interface CallbackReply {
  code: 200 | 404;
  body: {
    ok?: boolean;
    outcome?: "done" | "error_recorded" | "ignored";
    reason?: "duplicate" | "earlier_phase";
    task_status?: string;
    late?: boolean;
    error?: string;
    batch_id?: string;
    task_id?: string;
  };
}
export type ApiStatus = "pending" | "retrying" | "starting" | "running" | "done" | "failed";
const API_STATES: Record<ApiStatus, TaskState[]> = {
  pending: ["pending"],
  retrying: ["retrying"],
  starting: ["creating", "booting"],
  running: ["running"],
  done: ["done"],
  failed: ["failed"],
};

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
const open = (c: PhaseCounts) => c.pending + c.retrying + c.creating + c.booting + c.running;

/** Exponential backoff with jitter: ~2 s, 4 s, 8 s … capped at 5 minutes. */
export function backoffMs(attempt: number, baseMs = 2000, capMs = 300_000): number {
  const exp = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

/**
 * A Fly machine name: deterministic, DNS-safe, ≤ 63 chars. `suffix` names what the machine
 * is for: `tiff-000042-a1` (one attempt of one task) or `pool-0003` (a pool machine).
 */
export function machineName(batchId: string, suffix: string): string {
  let b = batchId.toLowerCase().replace(/[^a-z0-9-]/g, "-");
  const tail = `-${suffix}`;
  if (b.length + tail.length + 3 > 63) {
    let h = 0x811c9dc5;
    for (const ch of batchId) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    b = `${b.slice(0, 63 - tail.length - 3 - 9)}-${h.toString(16).padStart(8, "0")}`;
  }
  return `fo-${b}${tail}`;
}

/**
 * The batch's machines as one list per alarm, instead of one read per machine: Fly's read
 * limit (5/s, burst 10) would otherwise be met by a batch with many live machines. A machine
 * missing from the list is confirmed with a single read before it is taken for gone.
 */
class MachineCensus {
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

export class BatchDO extends DurableObject<Env> {
  private readonly store: BatchStore;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.store = new BatchStore(ctx.storage);
    ctx.blockConcurrencyWhile(async () => this.store.migrate());
  }

  private get config(): Config {
    return loadConfig(this.env);
  }

  // ---- RPC: queue ---------------------------------------------------------------------

  /** Records the batch (once) and starts its alarm loop. Redelivery changes nothing. */
  async start(message: QueueMessage, options: { firstPhase?: string } = {}): Promise<{ created: boolean; status: string }> {
    const existing = this.store.getMeta();
    if (existing) return { created: false, status: this.apiStatus(existing) };
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
    if (message.pool ?? this.config.POOL_MODE) this.store.updateMeta({ pool: 1, pool_slots: message.pool_tasks_per_machine ?? 0 }, now);
    await this.ctx.storage.setAlarm(now);
    await syncBatchIndex(this.env, this.store.getMeta(), () => this.status());
    log("DO", "batch_started", { batch_id: message.batch_id, phase: phase.name });
    return { created: true, status: phase.name };
  }

  /** A message that failed validation: the batch exists in ERROR so that /status explains it. */
  async recordInvalid(batchId: string, error: string, messageJson: string): Promise<{ created: boolean }> {
    if (this.store.getMeta()) return { created: false };
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

  // ---- RPC: callbacks ----------------------------------------------------------------------

  async callback(taskId: string, body: CallbackBody): Promise<CallbackReply> {
    const meta = this.store.getMeta();
    if (!meta) return { code: 404, body: { error: "unknown batch", batch_id: body.batch_id } };
    const task = this.store.getTask(taskId);
    if (!task) return { code: 404, body: { error: "unknown task", batch_id: meta.batch_id, task_id: taskId } };
    const fields = { batch_id: meta.batch_id, task_id: taskId, phase: task.phase, machine_id: task.machine_id };
    if (task.state === "done" || task.state === "failed") {
      const reason = task.phase === meta.phase ? "duplicate" : "earlier_phase";
      log("Callback", "ignored", { ...fields, reason, state: task.state });
      return { code: 200, body: { ok: true, outcome: "ignored", reason, task_status: task.state } };
    }
    const phase = getPhase(task.phase);
    const now = Date.now();
    const outcome = phase.result(this.view(meta, task), body);
    const reportedMachine = (body as { machine_id?: unknown }).machine_id;
    this.store.transaction(() => {
      if (outcome.ok) {
        this.store.moveTask(task, "done", { error: null, finished_at: now, deadline_at: 0 }, now);
        this.store.endAttempt(task.task_id, task.attempt, "done", null, now);
        for (const key of outcome.remove ?? []) this.store.removeFile(key);
        this.store.insertFiles(outcome.add);
      } else {
        this.failAttempt(meta, task, outcome.error, outcome.retryable, now);
      }
      // A late callback from an earlier attempt settles the task: the current machine is moot.
      if (!task.worker_id && task.machine_id && typeof reportedMachine === "string" && reportedMachine !== task.machine_id) {
        this.store.addOrphan(task.machine_id, "task settled by an earlier attempt", now);
      }
    });
    log("Callback", outcome.ok ? "task_done" : "task_error", {
      ...fields,
      attempt: task.attempt,
      ...(outcome.ok ? { outputs: outcome.add.length } : { error: outcome.error, retryable: outcome.retryable }),
    });
    await this.wakeSoon(meta);
    return { code: 200, body: { ok: true, outcome: outcome.ok ? "done" : "error_recorded", late: task.state === "retrying" } };
  }

  /** Brings the alarm forward when a callback freed a slot or closed the phase. */
  private async wakeSoon(meta: BatchMeta): Promise<void> {
    const counts = this.store.phaseCounts(meta.phase);
    // Pool machines lease the next task themselves; single-task mode spawns for it.
    const spawnable = meta.pool ? 0 : counts.pending + counts.retrying;
    if (spawnable === 0 && open(counts) > 0) return;
    const now = Date.now();
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > now + 50) await this.ctx.storage.setAlarm(now);
  }

  // ---- RPC: status and tasks -----------------------------------------------------------------

  async status(): Promise<StatusBody | null> {
    const meta = this.store.getMeta();
    if (!meta) return null;
    const counts = this.store.counts();
    const sum = (f: (c: PhaseCounts) => number) => counts.reduce((n, c) => n + f(c), 0);
    return {
      batch_id: meta.batch_id,
      status: this.apiStatus(meta),
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
      phases: counts.map((c) => ({ name: c.phase, total: c.total, done: c.done, failed: c.failed, open: open(c) })),
      files_total: this.store.fileCount(),
      mode: meta.pool ? "pool" : "single",
      workers: meta.pool ? this.workerSummary(meta) : null,
      started_at: iso(meta.started_at)!,
      updated_at: iso(meta.updated_at)!,
      completed_at: iso(meta.completed_at),
      error: meta.error,
      finalisation:
        meta.finalise_attempts > 0 ? { attempts: meta.finalise_attempts, last_error: meta.finalise_error } : null,
      recent_failures: this.store.recentFailures(RECENT_FAILURES).map((a) => ({
        task_id: a.task_id,
        attempt: a.attempt,
        machine_id: a.machine_id,
        region: a.region,
        error: a.error,
        at: iso(a.ended_at),
        logs: this.logsCommand(a.machine_id),
      })),
    };
  }

  async tasks(opts: { status: ApiStatus | null; cursor: number; limit: number }) {
    const meta = this.store.getMeta();
    if (!meta) return null;
    const rows = this.store.tasksPage({
      states: opts.status ? API_STATES[opts.status] : null,
      afterId: opts.cursor,
      limit: opts.limit,
    });
    return {
      batch_id: meta.batch_id,
      tasks: rows.map((t) => this.taskView(t)),
      next_cursor: rows.length === opts.limit ? String(rows[rows.length - 1].id) : null,
    };
  }

  private logsCommand(machineId: string | null): string | null {
    return machineId ? `fly logs -a ${this.env.FLY_APP_NAME} -i ${machineId} --no-tail` : null;
  }

  private taskView(t: TaskRow) {
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
      updated_at: iso(t.updated_at),
      logs: this.logsCommand(t.machine_id),
    };
  }

  /** One task with every attempt: the machine each ran on, how it ended and why. */
  async task(taskId: string) {
    const meta = this.store.getMeta();
    const task = meta ? this.store.getTask(taskId) : null;
    if (!meta || !task) return null;
    return {
      batch_id: meta.batch_id,
      ...this.taskView(task),
      attempts: this.store.attemptsOf(taskId).map((a) => ({
        attempt: a.attempt,
        machine_name: a.machine_name,
        machine_id: a.machine_id,
        region: a.region,
        outcome: a.outcome ?? "open",
        error: a.error,
        started_at: iso(a.started_at),
        ended_at: iso(a.ended_at),
        logs: this.logsCommand(a.machine_id),
      })),
    };
  }

  // ---- RPC: reset --------------------------------------------------------------------------

  async reset(): Promise<
    | { ok: true; batch_id: string; status: "ERROR"; tasks_failed: number; machines_destroyed: number; machines_pending: number }
    | { ok: false; code: 404 | 409; error: string }
  > {
    const meta = this.store.getMeta();
    if (!meta) return { ok: false, code: 404, error: "unknown batch" };
    if (meta.stage === "done") return { ok: false, code: 409, error: "batch is DONE; there is nothing to reset" };
    const now = Date.now();
    const live = this.store.liveTasks(10_000);
    const failed = this.store.transaction(() => {
      for (const t of live) if (t.machine_id) this.store.addOrphan(t.machine_id, "batch reset", now);
      this.retireWorkers("batch reset", now);
      const n = this.store.failOpenTasks("batch reset by admin", now);
      this.store.updateMeta({ stage: "error", error: "reset by admin", completed_at: meta.completed_at ?? now }, now);
      return n;
    });
    await this.ctx.storage.deleteAlarm();
    const fly = this.fly();
    // Machines whose create outcome was never learned are found by their metadata.
    try {
      for (const m of await fly.listMachines({ fanout_batch: meta.batch_id })) {
        if (m.state !== "destroyed") this.store.addOrphan(m.id, "batch reset", now);
      }
    } catch (error) {
      logError("DO", "reset_list_failed", error, { batch_id: meta.batch_id });
    }
    const destroyed = await this.destroyOrphans(fly, now);
    const pending = this.store.orphanCount();
    if (pending > 0) await this.ctx.storage.setAlarm(now + RECHECK_MS);
    await syncBatchIndex(this.env, this.store.getMeta(), () => this.status());
    log("DO", "batch_reset", { batch_id: meta.batch_id, tasks_failed: failed, machines_destroyed: destroyed, machines_pending: pending });
    return { ok: true, batch_id: meta.batch_id, status: "ERROR", tasks_failed: failed, machines_destroyed: destroyed, machines_pending: pending };
  }

  // ---- the alarm loop ------------------------------------------------------------------------

  async alarm(): Promise<void> {
    let next: number | null = null;
    const meta = this.store.getMeta();
    if (!meta) return;
    try {
      next = await this.step(meta);
      if (meta.step_failures > 0) this.store.updateMeta({ step_failures: 0 }, Date.now());
    } catch (error) {
      next = this.stepFailed(meta, error);
    } finally {
      // Always re-arm while work remains, whatever the step did.
      const after = this.store.getMeta();
      if (after && (after.stage === "done" || after.stage === "error")) next = this.store.earliestDeadline();
      if (next !== null) await this.ctx.storage.setAlarm(Math.max(next, Date.now()));
      await syncBatchIndex(this.env, after, () => this.status());
    }
  }

  private stepFailed(meta: BatchMeta, error: unknown): number | null {
    const failures = meta.step_failures + 1;
    const message = errorMessage(error);
    const retryable = !(error instanceof StorageError) || error.retryable;
    logError("DO", "step_failed", error, { batch_id: meta.batch_id, stage: meta.stage, failures });
    const now = Date.now();
    if (meta.stage === "discover" && (!retryable || failures >= MAX_STEP_FAILURES)) {
      this.store.updateMeta({ stage: "error", error: `discovery failed: ${message}`, completed_at: now, step_failures: failures }, now);
      return null;
    }
    this.store.updateMeta({ step_failures: failures }, now);
    return now + backoffMs(failures, 1000, 60_000);
  }

  /** One step of the batch; returns when the next alarm should fire (null: nothing to do). */
  private async step(meta: BatchMeta): Promise<number | null> {
    switch (meta.stage) {
      case "discover":
        return await this.discover(meta);
      case "plan":
        return this.plan(meta);
      case "run":
        return await this.run(meta);
      case "finalise":
        return await this.finalise(meta);
      case "done":
      case "error":
        await this.destroyOrphans(this.fly(), Date.now());
        return this.store.earliestDeadline();
    }
  }

  // ---- discovery ------------------------------------------------------------------------------

  private objectStore(): ObjectStore {
    const c = this.config;
    if (c.R2_ENDPOINT) {
      return new S3ObjectStore({
        endpoint: c.R2_ENDPOINT,
        bucket: c.R2_BUCKET,
        accessKeyId: c.R2_ACCESS_KEY_ID,
        secretAccessKey: c.R2_SECRET_ACCESS_KEY,
      });
    }
    return new R2ObjectStore(this.env.BUCKET);
  }

  private async discover(meta: BatchMeta): Promise<number | null> {
    const store = this.objectStore();
    const now = Date.now();
    if (meta.manifest_key !== null) {
      const files = await this.readManifest(store, meta);
      if (typeof files === "string") {
        this.store.updateMeta({ stage: "error", error: files, completed_at: now }, now);
        log("DO", "discovery_failed", { batch_id: meta.batch_id, error: files });
        return null;
      }
      for (let i = 0; i < files.length; i += 1000) {
        this.store.transaction(() => this.store.insertFiles(files.slice(i, i + 1000)));
      }
      this.store.updateMeta({ stage: "plan", plan_cursor: 0 }, Date.now());
      log("DO", "discovered", { batch_id: meta.batch_id, source: "manifest", files: files.length });
      return Date.now();
    }
    // Prefix listing continues across alarms from the stored cursor.
    let cursor = meta.discover_cursor;
    for (let page = 0; page < LIST_PAGES_PER_ALARM; page++) {
      const result = await store.list(meta.prefix ?? "", cursor, LIST_PAGE_SIZE);
      const files = result.objects
        .filter((o) => !o.key.endsWith("/"))
        .map((o) => ({
          r2_key: o.key,
          logical_path: o.key.slice((meta.prefix ?? "").length).replace(/^\/+/, "") || fileName(o.key),
          file_name: fileName(o.key),
          file_size: o.size,
          content_type: o.contentType ?? guessContentType(o.key),
        }));
      cursor = result.cursor;
      this.store.transaction(() => {
        this.store.insertFiles(files);
        this.store.updateMeta({ discover_cursor: cursor }, Date.now());
      });
      if (cursor === null) {
        this.store.updateMeta({ stage: "plan", plan_cursor: 0 }, Date.now());
        log("DO", "discovered", { batch_id: meta.batch_id, source: "prefix", files: this.store.fileCount() });
        break;
      }
    }
    return Date.now();
  }

  /** The manifest's files, or a reason the batch cannot run. Storage outages throw (retried). */
  private async readManifest(store: ObjectStore, meta: BatchMeta): Promise<FileEntry[] | string> {
    const key = meta.manifest_key!;
    const text = await store.getText(key);
    if (text === null) return `manifest ${key} not found`;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      return `manifest ${key} is not valid JSON: ${errorMessage(error)}`;
    }
    const parsed = Manifest.safeParse(json);
    if (!parsed.success) return `manifest ${key} is invalid: ${describeZodError(parsed.error)}`;
    if (parsed.data.batch_id !== meta.batch_id) {
      return `manifest ${key} is for batch ${parsed.data.batch_id}, not ${meta.batch_id}`;
    }
    return parsed.data.directories.flatMap((dir) =>
      dir.files.map(({ r2_key, logical_path, file_name, file_size, content_type, ...rest }) => {
        const name = file_name ?? fileName(r2_key);
        return {
          ...rest,
          r2_key,
          logical_path: logical_path ?? `${dir.directory_path.replace(/\/+$/, "")}/${name}`,
          file_name: name,
          file_size: file_size ?? 0,
          content_type: content_type ?? guessContentType(r2_key),
        };
      }),
    );
  }

  // ---- planning a phase's tasks -------------------------------------------------------------

  private plan(meta: BatchMeta): number {
    const phase = getPhase(meta.phase);
    const now = Date.now();
    const files = this.store.filesAfter(meta.plan_cursor, PLAN_FILES_PER_ALARM);
    this.store.transaction(() => {
      let seq = meta.next_seq;
      let maxSize = meta.max_task_size;
      for (const f of files) {
        const plan = phase.plan(toPhaseFile(f));
        if (!plan) continue;
        maxSize = Math.max(maxSize, plan.size_bytes);
        let output: string | undefined;
        for (const candidate of plan.output_key_candidates) {
          if (!this.store.keyTaken(candidate)) {
            output = candidate;
            break;
          }
        }
        this.store.insertTask({
          task_id: `${phase.slug}-${String(seq++).padStart(6, "0")}`,
          phase: phase.name,
          file_id: f.id,
          input_key: plan.input_key,
          output_key: output!,
          size_bytes: plan.size_bytes,
          params_json: JSON.stringify(plan.params ?? {}),
          now,
        });
      }
      const done = files.length < PLAN_FILES_PER_ALARM;
      this.store.updateMeta(
        { next_seq: seq, max_task_size: maxSize, plan_cursor: files.length > 0 ? files[files.length - 1].id : meta.plan_cursor, ...(done ? { stage: "run" } : {}) },
        now,
      );
      if (done) log("DO", "phase_planned", { batch_id: meta.batch_id, phase: phase.name, tasks: this.store.phaseCounts(phase.name).total });
    });
    return Date.now();
  }

  // ---- running a phase ----------------------------------------------------------------------

  private fly(): FlyMachines {
    const c = this.config;
    return new FlyMachines({
      apiHostname: c.FLY_API_HOSTNAME,
      apiToken: c.FLY_API_TOKEN,
      appName: c.FLY_APP_NAME,
      maxRequests: SUBREQUESTS_PER_ALARM,
    });
  }

  private limits(phase: Phase) {
    const c = this.config;
    return {
      bootTimeoutMs: c.BOOT_TIMEOUT_MS ?? phase.limits.bootTimeoutMs,
      runTimeoutMs: c.RUN_TIMEOUT_MS ?? phase.limits.runTimeoutMs,
      maxAttempts: phase.limits.maxAttempts ?? c.MAX_RETRY_ATTEMPTS,
      maxLive: Math.min(c.MAX_CONCURRENT_MACHINES, phase.limits.maxConcurrentMachines ?? Infinity),
    };
  }

  private async run(meta: BatchMeta): Promise<number | null> {
    const phase = getPhase(meta.phase);
    const fly = this.fly();
    await this.destroyOrphans(fly, Date.now());
    const census = new MachineCensus(fly, meta.batch_id);
    await this.checkOverdue(meta, phase, census);
    let fresh = this.store.getMeta()!;
    if (fresh.stage !== "run") return this.store.earliestDeadline();
    if (fresh.pool) {
      await this.checkWorkers(fresh, phase, census);
      fresh = this.store.getMeta()!;
      await this.tendPool(fresh, phase, fly);
    } else {
      await this.spawn(fresh, phase, fly);
    }

    const now = Date.now();
    const counts = this.store.phaseCounts(phase.name);
    if (open(counts) === 0) return this.finishPhase(fresh, phase, counts);
    const after = this.store.getMeta()!;
    const maxLive = this.limits(phase).maxLive;
    const canSpawn = after.pool
      ? this.poolTarget(after, counts, maxLive) > this.liveWorkerCount()
      : counts.creating + counts.booting + counts.running < maxLive;
    let next = this.store.earliestDeadline() ?? now + this.config.MACHINE_CHECK_INTERVAL_MS;
    if (canSpawn && counts.pending + counts.retrying > 0) {
      // The next create: once a task is ready (pool mode: a machine is wanted now), a create
      // token is there and any Retry-After the API asked for has passed.
      const readyAt = after.pool ? now : (this.store.earliestReady() ?? now);
      next = Math.min(next, Math.max(readyAt, after.bucket_at, after.fly_blocked_until));
    }
    return next;
  }

  private finishPhase(meta: BatchMeta, phase: Phase, counts: PhaseCounts): number {
    const now = Date.now();
    log("DO", "phase_finished", { batch_id: meta.batch_id, phase: phase.name, done: counts.done, failed: counts.failed });
    if (meta.pool) this.retireWorkers("phase finished", now);
    if (phase.next) {
      this.store.updateMeta({ stage: "plan", phase: getPhase(phase.next).name, plan_cursor: 0, max_task_size: 0 }, now);
    } else {
      this.store.updateMeta({ stage: "finalise" }, now);
    }
    return now;
  }

  /** Creates machines for ready tasks within concurrency, the create-rate budget and Retry-After. */
  private async spawn(meta: BatchMeta, phase: Phase, fly: FlyMachines): Promise<void> {
    const now = Date.now();
    if (meta.fly_blocked_until > now) return;
    const limits = this.limits(phase);
    const counts = this.store.phaseCounts(phase.name);
    const free = limits.maxLive - (counts.creating + counts.booting + counts.running);
    const c = this.config;
    if (free <= 0) return;
    const candidates = this.store.readyTasks(now, Math.min(free, SPAWNS_PER_ALARM));
    if (candidates.length === 0) return;
    const ready = candidates.slice(0, await this.takeCreates(candidates.length));
    const launches = this.store.transaction(() => {
      const moved: TaskRow[] = [];
      for (const task of ready) {
        const attempt = task.attempt + 1;
        const name = machineName(meta.batch_id, `${task.task_id}-a${attempt}`);
        const set = { attempt, machine_name: name, machine_id: null, region: null, deadline_at: now + CREATE_ANSWER_MS };
        if (this.store.moveTask(task, "creating", set, now)) {
          this.store.startAttempt({ task_id: task.task_id, attempt, machine_name: name, now });
          moved.push({ ...task, ...set, state: "creating" });
        }
      }
      return moved;
    });
    if (launches.length === 0) return;
    const env = await Promise.all(launches.map((t) => this.machineEnv(meta, phase, t)));
    const outcomes = await Promise.all(
      launches.map((t, i) => {
        const req = phase.machine(this.view(meta, t));
        return fly.createMachine({
          name: t.machine_name!,
          image: req.image ?? c.FLY_IMAGE,
          guest: req.guest,
          env: { ...req.env, ...env[i] },
          metadata: {
            fanout_batch: meta.batch_id,
            fanout_task: t.task_id,
            fanout_phase: phase.name,
            fanout_attempt: String(t.attempt),
          },
          regions: c.FLY_REGIONS,
        });
      }),
    );
    const after = Date.now();
    this.store.transaction(() => {
      launches.forEach((t, i) => this.applyCreate(meta, phase, t, outcomes[i], after));
    });
    await this.shareRetryAfter(outcomes, after);
  }

  private budget() {
    return this.env.FLY_BUDGET.getByName(this.config.FLY_APP_NAME);
  }

  /** Create tokens from the app-wide budget (Fly's documented create limit), up to `want`. */
  private async takeCreates(want: number): Promise<number> {
    const c = this.config;
    const grant = await this.budget().take(want, c.FLY_CREATE_RATE_PER_SECOND, c.FLY_CREATE_BURST);
    this.store.updateMeta({ bucket_at: grant.next_at }, Date.now());
    return grant.granted;
  }

  /** A 429 holds back every batch of the app, not just this one. */
  private async shareRetryAfter(outcomes: CreateOutcome[], now: number): Promise<void> {
    const waits = outcomes.flatMap((o) => (o.kind === "rate_limited" ? [o.retryAfterMs] : []));
    if (waits.length > 0) await this.budget().block(now + Math.max(...waits));
  }

  /** The machine contract env (see DESIGN.md), on top of the phase's own. */
  private async machineEnv(meta: BatchMeta, phase: Phase, task: TaskRow): Promise<Record<string, string>> {
    const c = this.config;
    const base = c.CALLBACK_BASE_URL.replace(/\/+$/, "");
    const env: Record<string, string> = {
      TASK_ID: task.task_id,
      BATCH_ID: meta.batch_id,
      PHASE: phase.name,
      R2_ACCOUNT_ID: c.R2_ACCOUNT_ID,
      R2_ACCESS_KEY_ID: c.R2_ACCESS_KEY_ID,
      R2_SECRET_ACCESS_KEY: c.R2_SECRET_ACCESS_KEY,
      R2_BUCKET: c.R2_BUCKET,
      CALLBACK_URL: `${base}/callback/${encodeURIComponent(meta.batch_id)}/${task.task_id}`,
      CALLBACK_TOKEN: await signToken(c.CALLBACK_SECRET, callbackSubject(meta.batch_id, task.task_id)),
    };
    if (c.R2_ENDPOINT) env.R2_ENDPOINT = c.R2_ENDPOINT;
    return env;
  }

  private applyCreate(meta: BatchMeta, phase: Phase, launched: TaskRow, outcome: CreateOutcome, now: number): void {
    const task = this.store.getTask(launched.task_id);
    if (!task) return;
    const ours = task.state === "creating" && task.attempt === launched.attempt;
    const fields = { batch_id: meta.batch_id, task_id: task.task_id, phase: phase.name, attempt: launched.attempt };
    switch (outcome.kind) {
      case "created": {
        this.store.recordMachine(task.task_id, launched.attempt, outcome.machineId, outcome.region);
        if (ours) {
          const limitAt = now + this.limits(phase).bootTimeoutMs;
          this.store.moveTask(
            task,
            "booting",
            { machine_id: outcome.machineId, region: outcome.region, limit_at: limitAt, deadline_at: Math.min(now + this.config.MACHINE_CHECK_INTERVAL_MS, limitAt) },
            now,
          );
          log("DO", "machine_created", { ...fields, machine_id: outcome.machineId, region: outcome.region });
        } else if (task.attempt !== launched.attempt || task.state === "failed") {
          // The task moved on while the create was in flight (reset, late callback): not needed.
          this.store.addOrphan(outcome.machineId, "created after its task closed", now);
        }
        return;
      }
      case "rate_limited":
      case "budget": {
        // Nothing was created: the attempt never happened.
        if (!ours) return;
        const wait = outcome.kind === "rate_limited" ? outcome.retryAfterMs : 0;
        this.store.dropAttempt(task.task_id, task.attempt);
        this.store.moveTask(
          task,
          task.attempt > 1 ? "retrying" : "pending",
          { attempt: task.attempt - 1, machine_name: null, deadline_at: 0, next_at: now + wait },
          now,
        );
        if (outcome.kind === "rate_limited") {
          const blocked = Math.max(this.store.getMeta()!.fly_blocked_until, now + wait);
          this.store.updateMeta({ fly_blocked_until: blocked, bucket_at: blocked }, now);
          log("DO", "rate_limited", { ...fields, retry_after_ms: wait });
        }
        return;
      }
      case "no_capacity":
        if (ours) this.failAttempt(meta, task, `no capacity: ${outcome.message}`, true, now);
        return;
      case "invalid":
        if (ours) this.failAttempt(meta, task, `Fly API rejected the machine (${outcome.status}): ${outcome.message}`, false, now);
        return;
      case "unknown":
        // The machine may exist: look for it by metadata before creating again.
        if (ours) this.store.moveTask(task, "creating", { deadline_at: now + RECHECK_MS }, now);
        log("DO", "create_outcome_unknown", { ...fields, error: outcome.message });
        return;
    }
  }

  /** Ends the task's current attempt as failed: retried with backoff, or FAILED for good. */
  private failAttempt(meta: BatchMeta, task: TaskRow, error: string, retryable: boolean, now: number): void {
    const limits = this.limits(getPhase(task.phase));
    this.store.endAttempt(task.task_id, task.attempt, "failed", error, now);
    const fields = { batch_id: meta.batch_id, task_id: task.task_id, phase: task.phase, attempt: task.attempt, machine_id: task.machine_id, error };
    if (retryable && task.attempt < limits.maxAttempts) {
      this.store.moveTask(task, "retrying", { error, deadline_at: 0, worker_id: null, next_at: now + backoffMs(task.attempt) }, now);
      log("DO", "task_retry", fields);
    } else {
      const reason = retryable ? `${error} (after ${task.attempt} attempts)` : error;
      this.store.moveTask(task, "failed", { error: reason, deadline_at: 0, finished_at: now }, now);
      log("DO", "task_failed", fields);
    }
  }

  /** Looks at live tasks whose deadline passed: unknown creates, boot and run timeouts, dead machines. */
  private async checkOverdue(meta: BatchMeta, phase: Phase, census: MachineCensus): Promise<void> {
    const now = Date.now();
    const overdue = this.store.overdueTasks(now, CHECKS_PER_ALARM);
    if (overdue.length === 0) return;
    const limits = this.limits(phase);
    await Promise.all(
      overdue.map(async (task) => {
        try {
          if (task.worker_id) this.leaseOverdue(meta, task, limits);
          else if (task.state === "creating") await this.reconcileCreate(meta, phase, task, census);
          else await this.checkMachine(meta, task, census, limits);
        } catch (error) {
          logError("DO", "check_failed", error, { batch_id: meta.batch_id, task_id: task.task_id });
          this.store.moveTask(task, task.state, { deadline_at: Date.now() + RECHECK_MS }, Date.now());
        }
      }),
    );
  }

  private async reconcileCreate(meta: BatchMeta, phase: Phase, task: TaskRow, census: MachineCensus): Promise<void> {
    const machine = await census.find({ fanout_task: task.task_id, fanout_attempt: String(task.attempt) });
    const now = Date.now();
    const current = this.store.getTask(task.task_id);
    if (!current || current.state !== "creating" || current.attempt !== task.attempt) return;
    this.store.transaction(() => {
      if (machine) {
        this.applyCreate(meta, phase, current, { kind: "created", machineId: machine.id, name: machine.name, region: machine.region, state: machine.state }, now);
        log("DO", "create_reconciled", { batch_id: meta.batch_id, task_id: task.task_id, machine_id: machine.id });
      } else {
        this.failAttempt(meta, current, "machine create got no answer and no machine was found", true, now);
      }
    });
  }

  private async checkMachine(
    meta: BatchMeta,
    task: TaskRow,
    census: MachineCensus,
    limits: { bootTimeoutMs: number; runTimeoutMs: number },
  ): Promise<void> {
    const machineId = task.machine_id!;
    const machine = await census.byId(machineId);
    const now = Date.now();
    const current = this.store.getTask(task.task_id);
    if (!current || current.state !== task.state || current.attempt !== task.attempt) return;
    const state = machine?.state ?? "destroyed";
    const nextCheck = (limitAt: number) => Math.min(now + this.config.MACHINE_CHECK_INTERVAL_MS, limitAt);
    let failure: string | null = null;
    if (state === "stopped" || state === "destroyed" || state === "destroying" || state === "failed") {
      failure = `machine ${machineId} ${state === "failed" ? "failed" : "exited"} without calling back`;
    } else if (state === "started" && current.state === "booting") {
      const limitAt = now + limits.runTimeoutMs;
      this.store.moveTask(current, "running", { limit_at: limitAt, deadline_at: nextCheck(limitAt) }, now);
      return;
    } else if (now >= current.limit_at) {
      failure =
        current.state === "running"
          ? `machine ${machineId} ran longer than ${Math.round(limits.runTimeoutMs / 1000)}s`
          : `machine ${machineId} did not start within ${Math.round(limits.bootTimeoutMs / 1000)}s (state: ${state})`;
    }
    if (failure === null) {
      this.store.moveTask(current, current.state, { deadline_at: nextCheck(current.limit_at) }, now);
      return;
    }
    this.store.transaction(() => {
      if (state !== "destroyed") this.store.addOrphan(machineId, failure, now);
      this.failAttempt(meta, current, failure, true, now);
    });
  }

  /** Destroys machines that are no longer wanted; a failed destroy is retried on later alarms. */
  private async destroyOrphans(fly: FlyMachines, now: number): Promise<number> {
    const due = this.store.dueOrphans(now, ORPHANS_PER_ALARM);
    let destroyed = 0;
    await Promise.all(
      due.map(async (o) => {
        const result = await fly.destroyMachine(o.machine_id).catch(() => "failed" as const);
        if (result === "failed") this.store.orphanRetry(o.machine_id, Date.now() + backoffMs(o.tries + 1, 1000, 60_000));
        else {
          this.store.orphanDone(o.machine_id);
          if (result === "destroyed") destroyed++;
        }
      }),
    );
    return destroyed;
  }

  // ---- pool mode ---------------------------------------------------------------------------
  // A pool machine leases a task, converts it, calls back like any machine, and leases again.
  // Tasks move exactly as in single-task mode (the same states, counters and callbacks); only
  // who starts them differs. A lease is kept by heartbeats; one that lapses returns its task.

  /** RPC: the next task for pool machine `workerId`, or wait, or done (the machine exits). */
  async lease(workerId: string, machineId: string | null): Promise<LeaseResponse | null> {
    const meta = this.store.getMeta();
    if (!meta) return null;
    if (meta.stage === "done" || meta.stage === "error" || meta.stage === "finalise") {
      return { kind: "done", reason: `batch is ${this.apiStatus(meta)}` };
    }
    const worker = this.store.getWorker(workerId);
    if (!worker || worker.state === "gone") return { kind: "done", reason: "this machine has been retired" };
    if (worker.phase !== meta.phase) return { kind: "done", reason: `phase ${worker.phase} is finished` };
    const now = Date.now();
    this.store.updateWorker(workerId, {
      state: "live",
      last_seen: now,
      machine_id: worker.machine_id ?? machineId,
      check_at: Math.max(worker.check_at, now + this.config.MACHINE_CHECK_INTERVAL_MS),
    });
    if (meta.stage !== "run") return { kind: "wait", wait_ms: 1000 };
    const phase = getPhase(meta.phase);
    const limits = this.limits(phase);
    const leaseMs = this.config.LEASE_TIMEOUT_MS;
    const [ready] = this.store.readyTasks(now, 1);
    if (!ready) {
      const counts = this.store.phaseCounts(phase.name);
      // Leave when the other slots cover every open task, the same count poolTarget creates
      // machines by (so a machine is never retired only to be replaced); stay while they do not,
      // e.g. while a retry's backoff runs.
      const open = counts.pending + counts.retrying + counts.running;
      if (open > this.liveWorkerCount() * this.poolSlots(meta) - 1) {
        const nextAt = this.store.earliestReady() ?? now + 1000;
        return { kind: "wait", wait_ms: Math.min(5000, Math.max(200, nextAt - now)) };
      }
      // The machine is retired once its last slot is told done (its other slots may still work).
      if (this.store.leasedBy(workerId).length === 0) {
        this.store.transaction(() => {
          this.store.updateWorker(workerId, { state: "gone" });
          // It exits by itself; destroy it later in case it does not.
          const machine = worker.machine_id ?? machineId;
          if (machine) this.store.addOrphan(machine, "retired: no work left", now + RETIRE_GRACE_MS);
        });
        log("DO", "pool_machine_retired", { batch_id: meta.batch_id, worker_id: workerId, machine_id: worker.machine_id ?? machineId, leases: worker.leases });
      }
      return { kind: "done", reason: "no work left for this machine" };
    }
    const attempt = ready.attempt + 1;
    const task: TaskRow = {
      ...ready,
      state: "running",
      attempt,
      worker_id: workerId,
      machine_id: worker.machine_id ?? machineId,
      machine_name: workerId,
    };
    this.store.transaction(() => {
      this.store.moveTask(
        ready,
        "running",
        {
          attempt,
          worker_id: workerId,
          machine_id: task.machine_id,
          machine_name: workerId,
          region: null,
          deadline_at: now + leaseMs,
          limit_at: now + limits.runTimeoutMs,
        },
        now,
      );
      this.store.startAttempt({ task_id: task.task_id, attempt, machine_name: workerId, now });
      if (task.machine_id) this.store.recordMachine(task.task_id, attempt, task.machine_id, null);
      this.store.updateWorker(workerId, { leases: worker.leases + 1 });
    });
    log("DO", "task_leased", { batch_id: meta.batch_id, task_id: task.task_id, phase: phase.name, attempt, worker_id: workerId, machine_id: task.machine_id });
    const req = phase.machine(this.view(meta, task));
    const env = { ...req.env, ...(await this.machineEnv(meta, phase, task)) };
    for (const secret of ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"]) delete env[secret]; // the machine has them already
    return { kind: "task", task_id: task.task_id, env, lease_ms: leaseMs, heartbeat_ms: Math.max(500, Math.floor(leaseMs / 3)) };
  }

  /** RPC: renews the lease of a task a pool machine is working on. */
  async heartbeat(workerId: string, taskId: string): Promise<{ ok: boolean; reason?: string } | null> {
    const meta = this.store.getMeta();
    if (!meta) return null;
    const task = this.store.getTask(taskId);
    if (!task || task.state !== "running" || task.worker_id !== workerId) {
      return { ok: false, reason: task ? `lease lost: task is ${task.state}${task.worker_id && task.worker_id !== workerId ? ` (leased to ${task.worker_id})` : ""}` : "unknown task" };
    }
    const now = Date.now();
    this.store.moveTask(task, "running", { deadline_at: Math.min(now + this.config.LEASE_TIMEOUT_MS, task.limit_at) }, now);
    this.store.updateWorker(workerId, { last_seen: now });
    return { ok: true };
  }

  private liveWorkerCount(): number {
    const w = this.store.workerCounts();
    return w.creating + w.booting + w.live;
  }

  /** Tasks one pool machine converts at once. */
  private poolSlots(meta: BatchMeta): number {
    return meta.pool_slots || this.config.POOL_TASKS_PER_MACHINE;
  }

  /** Machines worth having: a slot per open task, at most the phase's concurrency. */
  private poolTarget(meta: BatchMeta, counts: PhaseCounts, maxLive: number): number {
    return Math.min(maxLive, Math.ceil((counts.pending + counts.retrying + counts.running) / this.poolSlots(meta)));
  }

  private workerSummary(meta: BatchMeta) {
    const w = this.store.workerCounts();
    return { starting: w.creating + w.booting, live: w.live, created: meta.worker_seq };
  }

  /** Marks every live pool machine gone and queues its machine for destruction. */
  private retireWorkers(reason: string, now: number): void {
    for (const w of this.store.liveWorkers()) {
      if (w.machine_id) this.store.addOrphan(w.machine_id, reason, now);
      this.store.updateWorker(w.worker_id, { state: "gone" });
    }
  }

  /** Pool mode: creates machines up to the target, within the create budget. */
  private async tendPool(meta: BatchMeta, phase: Phase, fly: FlyMachines): Promise<void> {
    const now = Date.now();
    if (meta.fly_blocked_until > now) return;
    const counts = this.store.phaseCounts(phase.name);
    const want = Math.min(this.poolTarget(meta, counts, this.limits(phase).maxLive) - this.liveWorkerCount(), SPAWNS_PER_ALARM);
    if (want <= 0) return;
    const n = await this.takeCreates(want);
    if (n <= 0) return;
    meta = this.store.getMeta()!;
    const c = this.config;
    const limits = this.limits(phase);
    // One size for the pool: the machine the largest task of the phase needs, once per slot.
    const sizing = phase.machine({ task_id: "sizing", batch_id: meta.batch_id, input_key: "", output_key: "", size_bytes: meta.max_task_size, attempt: 0, params: {} });
    const slots = this.poolSlots(meta);
    const { guest, perSlotMb } = guestForSlots(sizing.guest, slots);
    const ids = Array.from({ length: n }, (_, i) => `pool-${String(meta.worker_seq + i + 1).padStart(4, "0")}`);
    this.store.transaction(() => {
      for (const id of ids) this.store.insertWorker({ worker_id: id, phase: phase.name, now, check_at: now + CREATE_ANSWER_MS, limit_at: now + limits.bootTimeoutMs });
      this.store.updateMeta({ worker_seq: meta.worker_seq + n }, now);
    });
    const base = c.CALLBACK_BASE_URL.replace(/\/+$/, "");
    const outcomes = await Promise.all(
      ids.map(async (id) => {
        const env: Record<string, string> = {
          POOL_MODE: "true",
          BATCH_ID: meta.batch_id,
          PHASE: phase.name,
          WORKER_ID: id,
          LEASE_URL: `${base}/lease/${encodeURIComponent(meta.batch_id)}`,
          LEASE_TOKEN: await signToken(c.CALLBACK_SECRET, leaseSubject(meta.batch_id, id)),
          IDLE_TIMEOUT_MS: String(c.POOL_IDLE_TIMEOUT_MS),
          POOL_CONCURRENCY: String(slots),
          // Per slot: what one conversion may use.
          MEMORY_MB: String(perSlotMb),
          R2_ACCOUNT_ID: c.R2_ACCOUNT_ID,
          R2_ACCESS_KEY_ID: c.R2_ACCESS_KEY_ID,
          R2_SECRET_ACCESS_KEY: c.R2_SECRET_ACCESS_KEY,
          R2_BUCKET: c.R2_BUCKET,
          ...(c.R2_ENDPOINT ? { R2_ENDPOINT: c.R2_ENDPOINT } : {}),
        };
        return fly.createMachine({
          name: machineName(meta.batch_id, id),
          image: sizing.image ?? c.FLY_IMAGE,
          guest,
          env,
          metadata: { fanout_batch: meta.batch_id, fanout_phase: phase.name, fanout_worker: id },
          regions: c.FLY_REGIONS,
        });
      }),
    );
    const after = Date.now();
    this.store.transaction(() => ids.forEach((id, i) => this.applyWorkerCreate(meta, phase, id, outcomes[i], after)));
    await this.shareRetryAfter(outcomes, after);
  }

  private applyWorkerCreate(meta: BatchMeta, phase: Phase, workerId: string, outcome: CreateOutcome, now: number): void {
    const worker = this.store.getWorker(workerId);
    const fields = { batch_id: meta.batch_id, phase: phase.name, worker_id: workerId };
    if (!worker) return;
    switch (outcome.kind) {
      case "created":
        if (worker.state === "gone") {
          this.store.addOrphan(outcome.machineId, "pool machine created after the pool closed", now);
        } else {
          this.store.updateWorker(workerId, {
            state: worker.state === "live" ? "live" : "booting",
            machine_id: outcome.machineId,
            check_at: now + this.config.MACHINE_CHECK_INTERVAL_MS,
          });
        }
        log("DO", "pool_machine_created", { ...fields, machine_id: outcome.machineId, region: outcome.region });
        return;
      case "rate_limited":
      case "budget": {
        this.store.deleteWorker(workerId);
        if (outcome.kind === "rate_limited") {
          const blocked = Math.max(this.store.getMeta()!.fly_blocked_until, now + outcome.retryAfterMs);
          this.store.updateMeta({ fly_blocked_until: blocked, bucket_at: blocked }, now);
        }
        return;
      }
      case "no_capacity":
        this.store.deleteWorker(workerId);
        this.store.updateMeta({ fly_blocked_until: now + backoffMs(1, 5000, 60_000) }, now);
        log("DO", "pool_no_capacity", { ...fields, error: outcome.message });
        return;
      case "invalid": {
        // Every pool machine of the phase has this config: no task can run.
        this.store.deleteWorker(workerId);
        const reason = `Fly API rejected the pool machine (${outcome.status}): ${outcome.message}`;
        const failed = this.store.failOpenTasks(reason, now);
        log("DO", "pool_invalid", { ...fields, error: reason, tasks_failed: failed });
        return;
      }
      case "unknown":
        this.store.updateWorker(workerId, { check_at: now + RECHECK_MS });
        log("DO", "create_outcome_unknown", { ...fields, error: outcome.message });
        return;
    }
  }

  /** Pool machines due a look: unknown creates reconciled, dead or stuck machines retired. */
  private async checkWorkers(meta: BatchMeta, phase: Phase, census: MachineCensus): Promise<void> {
    const due = this.store.workersDue(Date.now(), CHECKS_PER_ALARM);
    await Promise.all(
      due.map(async (w) => {
        try {
          await this.checkWorker(meta, phase, w, census);
        } catch (error) {
          logError("DO", "worker_check_failed", error, { batch_id: meta.batch_id, worker_id: w.worker_id });
          this.store.updateWorker(w.worker_id, { check_at: Date.now() + RECHECK_MS });
        }
      }),
    );
  }

  private async checkWorker(meta: BatchMeta, phase: Phase, w: WorkerRow, census: MachineCensus): Promise<void> {
    if (w.state === "creating" && !w.machine_id) {
      const machine = await census.find({ fanout_worker: w.worker_id });
      const now = Date.now();
      if (machine) this.applyWorkerCreate(meta, phase, w.worker_id, { kind: "created", machineId: machine.id, name: machine.name, region: machine.region, state: machine.state }, now);
      else this.store.deleteWorker(w.worker_id); // never created
      return;
    }
    const machineId = w.machine_id!;
    const machine = await census.byId(machineId);
    const now = Date.now();
    const current = this.store.getWorker(w.worker_id);
    if (!current || current.state === "gone") return;
    const state = machine?.state ?? "destroyed";
    const interval = this.config.MACHINE_CHECK_INTERVAL_MS;
    let gone: string | null = null;
    if (state === "stopped" || state === "destroyed" || state === "destroying" || state === "failed") {
      gone = `pool machine ${machineId} exited`;
    } else if (state === "started") {
      this.store.updateWorker(w.worker_id, { state: current.state === "booting" ? "live" : current.state, check_at: now + interval });
      return;
    } else if (current.state !== "live" && now >= current.limit_at) {
      gone = `pool machine ${machineId} did not start within ${Math.round(this.limits(phase).bootTimeoutMs / 1000)}s (state: ${state})`;
    }
    if (gone === null) {
      this.store.updateWorker(w.worker_id, { check_at: now + interval });
      return;
    }
    this.store.transaction(() => {
      this.store.updateWorker(w.worker_id, { state: "gone" });
      if (state !== "destroyed") this.store.addOrphan(machineId, gone, now);
      // Its task need not wait for the lease to lapse.
      for (const t of this.store.leasedBy(w.worker_id)) this.failAttempt(meta, t, `${gone} while holding the lease`, true, now);
    });
    log("DO", "pool_machine_gone", { batch_id: meta.batch_id, worker_id: w.worker_id, machine_id: machineId, reason: gone });
  }

  /** A leased task past its deadline: the lease lapsed, or the run limit passed. */
  private leaseOverdue(meta: BatchMeta, task: TaskRow, limits: { runTimeoutMs: number }): void {
    const now = Date.now();
    this.store.transaction(() => {
      if (now >= task.limit_at) {
        // Heartbeats kept coming but the work did not finish: the machine is stuck.
        const worker = task.worker_id ? this.store.getWorker(task.worker_id) : null;
        if (worker?.machine_id && worker.state !== "gone") {
          this.store.addOrphan(worker.machine_id, "stuck on a task", now);
          this.store.updateWorker(worker.worker_id, { state: "gone" });
        }
        this.failAttempt(meta, task, `task ran longer than ${Math.round(limits.runTimeoutMs / 1000)}s on ${task.worker_id}`, true, now);
      } else {
        // A machine that stopped heartbeating is dead or hung: it must not keep counting as pool capacity.
        const worker = task.worker_id ? this.store.getWorker(task.worker_id) : null;
        if (worker && worker.state !== "gone") {
          if (worker.machine_id) this.store.addOrphan(worker.machine_id, "stopped heartbeating", now);
          this.store.updateWorker(worker.worker_id, { state: "gone" });
        }
        this.failAttempt(meta, task, `lease expired: ${task.worker_id} stopped heartbeating`, true, now);
      }
    });
  }

  // ---- finalisation ---------------------------------------------------------------------

  private async finalise(meta: BatchMeta): Promise<number | null> {
    const url = this.config.WORKER_URL;
    const now = Date.now();
    if (!url) {
      this.store.updateMeta({ stage: "done", completed_at: now }, now);
      log("DO", "batch_done", { batch_id: meta.batch_id, files: this.store.fileCount() });
      return null;
    }
    const target = `${url.replace(/\/+$/, "")}/api/batches/${encodeURIComponent(meta.batch_id)}/enqueue-processed`;
    let error: string;
    try {
      const res = await fetch(target, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: this.fileListBody(),
      });
      await res.body?.cancel();
      if (res.ok) {
        const done = Date.now();
        this.store.updateMeta({ stage: "done", completed_at: done, finalise_error: null }, done);
        log("DO", "batch_done", { batch_id: meta.batch_id, files: this.store.fileCount(), finalise_attempts: meta.finalise_attempts + 1 });
        return null;
      }
      error = `downstream answered ${res.status}`;
    } catch (e) {
      error = `downstream unreachable: ${errorMessage(e)}`;
    }
    const attempts = meta.finalise_attempts + 1;
    const retryAt = Date.now() + backoffMs(attempts, 1000, 600_000);
    this.store.updateMeta({ finalise_attempts: attempts, finalise_error: error }, Date.now());
    log("DO", "finalise_retry", { batch_id: meta.batch_id, attempts, error, retry_at: iso(retryAt) });
    return retryAt;
  }

  /** `{ "files": [...] }` streamed from SQLite a page at a time: never the whole list in memory. */
  private fileListBody(): ReadableStream<Uint8Array> {
    const encoder = new TextEncoder();
    let after = 0;
    let first = true;
    let finished = false;
    return new ReadableStream<Uint8Array>({
      pull: (controller) => {
        if (finished) return;
        const rows = this.store.filesAfter(after, 1000);
        const parts = rows.map((r) => JSON.stringify(toFileEntry(r)));
        let chunk = (first ? '{"files":[' : "") + (parts.length > 0 && !first ? "," : "") + parts.join(",");
        first = false;
        if (rows.length > 0) after = rows[rows.length - 1].id;
        if (rows.length < 1000) {
          chunk += "]}";
          finished = true;
        }
        controller.enqueue(encoder.encode(chunk));
        if (finished) controller.close();
      },
    });
  }

  // ---- helpers ---------------------------------------------------------------------------

  private apiStatus(meta: BatchMeta): string {
    if (meta.stage === "done") return "DONE";
    if (meta.stage === "error") return "ERROR";
    return meta.phase;
  }

  private view(meta: BatchMeta, task: TaskRow): TaskView {
    return {
      task_id: task.task_id,
      batch_id: meta.batch_id,
      input_key: task.input_key,
      output_key: task.output_key,
      size_bytes: task.size_bytes,
      attempt: task.attempt,
      params: JSON.parse(task.params_json) as TaskView["params"],
    };
  }
}

function toPhaseFile(f: FileRow): PhaseFile {
  return { r2_key: f.r2_key, logical_path: f.logical_path, file_name: f.file_name, file_size: f.file_size, content_type: f.content_type };
}

function toFileEntry(f: FileRow): FileEntry {
  return {
    ...(f.extra_json ? (JSON.parse(f.extra_json) as Record<string, unknown>) : {}),
    r2_key: f.r2_key,
    logical_path: f.logical_path,
    file_name: f.file_name,
    file_size: f.file_size,
    content_type: f.content_type,
    ...(f.cid ? { cid: f.cid } : {}),
    ...(f.source_key ? { source_r2_key: f.source_key } : {}),
  };
}

const CONTENT_TYPES: Record<string, string> = {
  tif: "image/tiff",
  tiff: "image/tiff",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  png: "image/png",
  pdf: "application/pdf",
  json: "application/json",
  txt: "text/plain",
  xml: "application/xml",
};
function guessContentType(key: string): string {
  const ext = key.slice(key.lastIndexOf(".") + 1).toLowerCase();
  return CONTENT_TYPES[ext] ?? "application/octet-stream";
}
