// One task from a parsed env: run its phase's job (TIFF conversion; the checksum mode when
// PHASE=CHECKSUM; the PDF job when PHASE=PDF_SPLITTING), call back, and say what happened as an exit code. Single-task mode runs it
// once for the machine's env; pool mode once per leased task.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { z } from "zod";
import { CHECKSUM_PHASE, ChecksumCallback } from "../shared/checksum.ts";
import { CallbackBody, type CallbackError } from "../shared/contracts.ts";
import { PDF_PHASE, PdfCallback } from "../shared/pdf.ts";
import { sendCallback, type CallbackOptions, type SendableBody } from "./callback.ts";
import { runChecksum } from "./checksum.ts";
import { cpuLedger } from "./cpu.ts";
import { describeEnv, type CallbackTarget, type WorkerEnv } from "./env.ts";
import { TaskError, errorMessage } from "./errors.ts";
import { EXIT, type ExitCode } from "./exit-codes.ts";
import { log, type Component } from "./log.ts";
import { runPdf } from "./pdf.ts";
import { peakRssMb, runTask, type TaskProgress, type Timings } from "./task.ts";

const ERROR_MAX_CHARS = 4000;

export interface TaskOutcome {
  /** What this task's exit code would be in single-task mode. */
  code: ExitCode;
  status: CallbackBody["status"];
  delivered: boolean;
}

/** What a machine does for a task of a phase: the work, its log component, and its callback's schema. */
interface Job {
  component: Component;
  /** The phase's callback schema: a body is checked against it before it is sent. */
  schema: z.ZodType;
  run(env: WorkerEnv, workDir: string, progress: TaskProgress): Promise<SendableBody & { status: "success" }>;
  /** The fields of the task's result worth a log line. */
  summary(success: Record<string, unknown>): Record<string, unknown>;
}

const TIFF_JOB: Job = {
  component: "TiffConversion",
  schema: CallbackBody,
  run: runTask,
  summary: (s) => ({ pages: s.pages, output_r2_key: s.output_r2_key }),
};
const CHECKSUM_JOB: Job = {
  component: "Checksum",
  schema: ChecksumCallback,
  run: runChecksum,
  summary: (s) => ({ sha256: s.sha256, output_r2_key: s.output_r2_key }),
};

const PDF_JOB: Job = {
  component: "PdfSplitting",
  schema: PdfCallback,
  run: runPdf,
  summary: (s) => ({ pages: s.pages, pages_skipped: s.pages_skipped, output_r2_key: s.output_r2_key }),
};

const JOBS = { checksum: CHECKSUM_JOB, pdf: PDF_JOB, tiff: TIFF_JOB } as const;

/** PHASE=CHECKSUM is the checksum mode, PHASE=PDF_SPLITTING the PDF job; any other phase (or none: the old contract) converts a TIFF. */
export function jobOf(env: Pick<WorkerEnv, "PHASE">): keyof typeof JOBS {
  return env.PHASE === CHECKSUM_PHASE ? "checksum" : env.PHASE === PDF_PHASE ? "pdf" : "tiff";
}

/**
 * Runs the task `env` names, in a temp dir of its own (removed after), and delivers the
 * callback. `startedAt` (a performance.now() value) is where total_time_ms counts from.
 */
export async function convertTask(env: WorkerEnv, startedAt = 0): Promise<TaskOutcome> {
  const job = JOBS[jobOf(env)];
  const component = job.component;
  log.info(component, "task.start", { env: describeEnv(env), job: jobOf(env), node: process.version, region: env.FLY_REGION ?? null });
  const callbackOptions: CallbackOptions = { maxAttempts: env.CALLBACK_MAX_ATTEMPTS, backoffMs: env.CALLBACK_BACKOFF_MS, timeoutMs: env.CALLBACK_TIMEOUT_MS };
  const timings: Timings = { download_time_ms: 0, inspect_time_ms: 0, conversion_time_ms: 0, upload_time_ms: 0 };
  const totalMs = () => Math.round(performance.now() - startedAt);
  const performanceNow = () => ({ total_time_ms: totalMs(), ...roundAll(timings), peak_rss_mb: peakRssMb() });

  const cpu = cpuLedger.begin();
  const workDir = await mkdtemp(join(tmpdir(), `fanout-${env.TASK_ID}-`));
  let body: SendableBody;
  let failureExit: ExitCode = EXIT.SUCCESS;
  try {
    const success = await job.run(env, workDir, { timings });
    // What the orchestrator sizes from: the process's CPU-seconds for this task and the megapixels it converted.
    const performance = { ...performanceNow(), cpu_s: round3(cpuLedger.end(cpu)), ...megapixelsOf(success) };
    body = { ...success, performance, machine_id: env.FLY_MACHINE_ID };
    log.info(component, job === TIFF_JOB ? "task.converted" : "task.done", { ...job.summary(success), performance });
  } catch (error) {
    const known = error instanceof TaskError;
    failureExit = known && error.kind !== "internal" ? EXIT.TASK_FAILED : EXIT.INTERNAL_ERROR;
    const message = known ? error.message : `internal error in fly-worker: ${errorMessage(error)}`;
    log.error(component, "task.failed", {
      error: message,
      kind: known ? error.kind : "internal",
      stack: known ? undefined : error instanceof Error ? error.stack : undefined,
      performance: performanceNow(),
    });
    body = {
      task_id: env.TASK_ID,
      batch_id: env.BATCH_ID,
      status: "error",
      error: truncate(message),
      error_kind: known ? error.kind : "internal",
      retryable: known ? error.retryable : true,
      machine_id: env.FLY_MACHINE_ID,
      performance: performanceNow(),
    };
  } finally {
    cpuLedger.end(cpu); // a failed task's CPU is its own (a second end of a finished task changes nothing)
    await rm(workDir, { recursive: true, force: true });
  }

  const delivered = await deliver(env.CALLBACK_URL, env.CALLBACK_TOKEN, body, callbackOptions, job.schema);
  const code = !delivered ? EXIT.CALLBACK_UNDELIVERABLE : failureExit;
  log.info(component, "task.exit", { exit_code: code, status: body.status, total_time_ms: totalMs(), peak_rss_mb: peakRssMb() });
  return { code, status: body.status, delivered };
}

/** The error callback for a task whose env is unusable: it cannot run anywhere as it is. */
export async function reportBadEnv(target: CallbackTarget, problems: string[]): Promise<boolean> {
  const body: CallbackError = {
    task_id: target.taskId,
    batch_id: target.batchId,
    status: "error",
    error: truncate(`fly-worker environment is invalid: ${problems.join("; ")}`),
    error_kind: "config",
    retryable: false,
  };
  return deliver(target.url, target.token, body, { maxAttempts: 3, backoffMs: 500, timeoutMs: 10_000 });
}

async function deliver(url: string, token: string, body: SendableBody, options: CallbackOptions, schema: z.ZodType = CallbackBody): Promise<boolean> {
  const outcome = await sendCallback(url, token, body, options, schema);
  if (!outcome.delivered) {
    log.error("Callback", "callback.undeliverable", { status: body.status, attempts: outcome.attempts, http_status: outcome.status ?? null, reason: outcome.reason });
  }
  return outcome.delivered;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/** Every output page's width × height, in megapixels (absent for a job that converts no image). */
function megapixelsOf(success: Record<string, unknown>): { megapixels?: number } {
  const outputs = (success.outputs ?? []) as { width?: number; height?: number }[];
  const pixels = outputs.reduce((n, o) => n + (o.width ?? 0) * (o.height ?? 0), 0);
  return pixels > 0 ? { megapixels: pixels / 1e6 } : {};
}

function truncate(message: string): string {
  return message.length > ERROR_MAX_CHARS ? `${message.slice(0, ERROR_MAX_CHARS - 1)}…` : message;
}

function roundAll(timings: Timings): Timings {
  return {
    download_time_ms: Math.round(timings.download_time_ms),
    inspect_time_ms: Math.round(timings.inspect_time_ms),
    conversion_time_ms: Math.round(timings.conversion_time_ms),
    upload_time_ms: Math.round(timings.upload_time_ms),
  };
}
