// What every engine module works with: the batch's store, its validated config, the Fly client,
// the object store, and the phase limits. Built once per RPC or alarm by the DO shell.
import type { Config } from "../config.ts";
import { FlyMachines } from "../fly/client.ts";
import type { Phase, TaskView } from "../phases/types.ts";
import { Outbound } from "../outbound.ts";
import { type ObjectStore, type ObjectWriter, R2ObjectStore, S3ObjectStore } from "../storage.ts";
import type { BatchMeta, BatchStore, PhaseCounts, TaskRow } from "../store/index.ts";
import { SUBREQUESTS_PER_ALARM } from "./constants.ts";

export { CREATE_ANSWER_MS, CREDENTIAL_GRACE_MS, RECHECK_MS, RETIRE_GRACE_MS, SPAWNS_PER_ALARM, SUBREQUESTS_PER_ALARM } from "./constants.ts";

export interface Limits {
  bootTimeoutMs: number;
  runTimeoutMs: number;
  maxAttempts: number;
  maxLive: number;
}

export interface Engine {
  readonly store: BatchStore;
  readonly config: Config;
  /** The Worker's env with every binding call counted by `outbound` (this invocation's subrequests). */
  readonly env: Env;
  /** This RPC's or alarm's outbound requests: counted, six waiting at once, each timed from when it is sent. */
  readonly outbound: Outbound;
  /** The Fly client of this RPC or alarm (its requests go through `outbound`). */
  fly(): FlyMachines;
  objects(): ObjectStore & ObjectWriter;
  limits(phase: Phase): Limits;
  /** Brings the alarm forward (a callback freed a slot or closed the phase). */
  wake(at: number): Promise<void>;
  /** Records an event for live streams (task_failed, phase, redrive, done, failed, error), tagged with the batch's run. */
  emit(type: string, data: Record<string, unknown>): void;
}

export function makeEngine(
  store: BatchStore,
  config: Config,
  env: Env,
  wake: (at: number) => Promise<void>,
  onEvent: (id: number, type: string, data: Record<string, unknown>) => void = () => {},
  outbound: Outbound = new Outbound(),
): Engine {
  let fly: FlyMachines | undefined;
  let objects: (ObjectStore & ObjectWriter) | undefined;
  const counted = outbound.env(env);
  return {
    store,
    config,
    env: counted,
    outbound,
    wake,
    emit: (type, data) => {
      // Which run of the batch the event belongs to (0: the first, N: redrive N), so that a
      // follower never ends on an earlier run's done/failed/error replayed from the stream.
      const event = { ...data, run: store.getMeta()?.redrives ?? 0 };
      onEvent(store.addEvent(type, event, Date.now()), type, event);
    },
    fly: () =>
      (fly ??= new FlyMachines({
        apiHostname: config.FLY_API_HOSTNAME,
        apiToken: config.FLY_API_TOKEN,
        appName: config.FLY_APP_NAME,
        maxRequests: SUBREQUESTS_PER_ALARM,
        exchange: outbound.exchange,
      })),
    objects: () => (objects ??= objectStore(config, counted, outbound)),
    limits: (phase) => ({
      bootTimeoutMs: config.BOOT_TIMEOUT_MS ?? phase.limits.bootTimeoutMs,
      runTimeoutMs: config.RUN_TIMEOUT_MS ?? phase.limits.runTimeoutMs,
      maxAttempts: phase.limits.maxAttempts ?? config.MAX_RETRY_ATTEMPTS,
      maxLive: Math.min(config.MAX_CONCURRENT_MACHINES, phase.limits.maxConcurrentMachines ?? Infinity),
    }),
  };
}

/** The batch's objects: the R2 binding of `env`, or the S3 API when R2_ENDPOINT is set (its requests through `outbound`). */
export function objectStore(config: Config, env: Env, outbound?: Outbound): ObjectStore & ObjectWriter {
  if (config.R2_ENDPOINT) {
    return new S3ObjectStore({
      endpoint: config.R2_ENDPOINT,
      bucket: config.R2_BUCKET,
      accessKeyId: config.R2_ACCESS_KEY_ID,
      secretAccessKey: config.R2_SECRET_ACCESS_KEY,
      ...(outbound ? { fetch: (request: Request) => outbound.fetch(request) } : {}),
    });
  }
  return new R2ObjectStore(env.BUCKET);
}

export const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
export const openCount = (c: PhaseCounts) => c.pending + c.retrying + c.creating + c.booting + c.running;

export function apiStatus(meta: BatchMeta): string {
  if (meta.stage === "done") return "DONE";
  if (meta.stage === "failed") return "FAILED";
  if (meta.stage === "error") return "ERROR";
  return meta.phase;
}

export function taskView(meta: BatchMeta, task: TaskRow): TaskView {
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

/** The batch has ended: DONE, FAILED or ERROR (a redrive may start it again). */
export const isFinished = (meta: BatchMeta) => meta.stage === "done" || meta.stage === "failed" || meta.stage === "error";

/**
 * A Fly machine name: deterministic, DNS-safe, ≤ 63 chars. `suffix` names what the machine is
 * for: `tiff-000042-a1` (one attempt of one task) or `pool-0003`. Batch ids that differ only in
 * case or punctuation (`Batch_1`, `batch.1`) get different names: a hash of the exact id is
 * added whenever the id is not already its own DNS-safe form.
 */
export function machineName(batchId: string, suffix: string): string {
  const safe = batchId.toLowerCase().replace(/[^a-z0-9-]/g, "-");
  const tail = `-${suffix}`;
  const hashed = safe !== batchId || safe.length + tail.length + 3 > 63;
  if (!hashed) return `fo-${safe}${tail}`;
  let h = 0x811c9dc5;
  for (const ch of batchId) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  const hash = h.toString(16).padStart(8, "0");
  return `fo-${safe.slice(0, 63 - tail.length - 3 - 9)}-${hash}${tail}`;
}
