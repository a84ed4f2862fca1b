// The program every Fly Machine runs: `node fly-worker/main.ts`. Converts one TIFF named by
// the machine's env, calls back, and exits with a code that says what happened (exit-codes.ts).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CallbackBody, CallbackError } from "../shared/contracts.ts";
import { sendCallback, type CallbackOptions } from "./callback.ts";
import { configureSharp } from "./convert.ts";
import { describeEnv, parseEnv } from "./env.ts";
import { TaskError, errorMessage } from "./errors.ts";
import { EXIT, type ExitCode } from "./exit-codes.ts";
import { log, registerSecrets, setLogContext, since } from "./log.ts";
import { peakRssMb, runTask, type Timings } from "./task.ts";

const ERROR_MAX_CHARS = 4000;

export async function main(source: NodeJS.ProcessEnv = process.env): Promise<ExitCode> {
  // Scrub every secret-looking variable, parsed or not, before anything is logged.
  registerSecrets([source.R2_SECRET_ACCESS_KEY, source.R2_ACCESS_KEY_ID, source.CALLBACK_TOKEN]);
  setLogContext({ machine_id: source.FLY_MACHINE_ID ?? null, batch_id: source.BATCH_ID ?? null, task_id: source.TASK_ID ?? null });
  const parsed = parseEnv(source);
  if (!parsed.ok) {
    log.error("Env", "env.invalid", { message: `the machine's environment is unusable: ${parsed.problems.join("; ")}`, problems: parsed.problems });
    if (parsed.callback) {
      const { url, token, batchId, taskId } = parsed.callback;
      const body: CallbackError = {
        task_id: taskId,
        batch_id: batchId,
        status: "error",
        error: truncate(`fly-worker environment is invalid: ${parsed.problems.join("; ")}`),
        error_kind: "config",
        retryable: false,
      };
      await deliver(url, token, body, { maxAttempts: 3, backoffMs: 500, timeoutMs: 10_000 });
    } else {
      log.error("Env", "env.no_callback", { message: "no error callback sent: CALLBACK_URL, CALLBACK_TOKEN, BATCH_ID or TASK_ID is unusable" });
    }
    return EXIT.BAD_ENV;
  }

  const env = parsed.env;
  setLogContext({ batch_id: env.BATCH_ID, task_id: env.TASK_ID, machine_id: env.FLY_MACHINE_ID ?? null });
  configureSharp();
  log.info("TiffConversion", "task.start", { env: describeEnv(env), node: process.version, region: env.FLY_REGION ?? null });
  const callbackOptions: CallbackOptions = { maxAttempts: env.CALLBACK_MAX_ATTEMPTS, backoffMs: env.CALLBACK_BACKOFF_MS, timeoutMs: env.CALLBACK_TIMEOUT_MS };
  const timings: Timings = { download_time_ms: 0, inspect_time_ms: 0, conversion_time_ms: 0, upload_time_ms: 0 };
  const performanceNow = () => ({ total_time_ms: Math.round(performance.now()), ...roundAll(timings), peak_rss_mb: peakRssMb() });

  const workDir = await mkdtemp(join(tmpdir(), `fanout-${env.TASK_ID}-`));
  let body: CallbackBody;
  let failureExit: ExitCode = EXIT.SUCCESS;
  try {
    const success = await runTask(env, workDir, { timings });
    body = { ...success, performance: performanceNow(), machine_id: env.FLY_MACHINE_ID };
    log.info("TiffConversion", "task.converted", { pages: success.pages, output_r2_key: success.output_r2_key, performance: body.performance });
  } catch (error) {
    const known = error instanceof TaskError;
    failureExit = known && error.kind !== "internal" ? EXIT.TASK_FAILED : EXIT.INTERNAL_ERROR;
    const message = known ? error.message : `internal error in fly-worker: ${errorMessage(error)}`;
    log.error("TiffConversion", "task.failed", {
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
    await rm(workDir, { recursive: true, force: true });
  }

  const delivered = await deliver(env.CALLBACK_URL, env.CALLBACK_TOKEN, body, callbackOptions);
  const code = !delivered ? EXIT.CALLBACK_UNDELIVERABLE : failureExit;
  log.info("TiffConversion", "task.exit", { exit_code: code, status: body.status, total_time_ms: Math.round(performance.now()), peak_rss_mb: peakRssMb() });
  return code;
}

async function deliver(url: string, token: string, body: CallbackBody, options: CallbackOptions): Promise<boolean> {
  const outcome = await sendCallback(url, token, body, options);
  if (!outcome.delivered) {
    log.error("Callback", "callback.undeliverable", { status: body.status, attempts: outcome.attempts, http_status: outcome.status ?? null, reason: outcome.reason });
  }
  return outcome.delivered;
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

// Run only as the entry point, so tests can import main() without starting a task.
if (import.meta.filename === process.argv[1] || process.argv[1]?.endsWith("fly-worker/main.ts")) {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      log.warn("FlyWorker", "signal", { signal, message: "machine is stopping before the task finished; no callback sent", uptime_ms: since(0) });
      process.exit(signal === "SIGINT" ? 130 : 143);
    });
  }
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      log.error("FlyWorker", "crash", { error: errorMessage(error), stack: error instanceof Error ? error.stack : undefined });
      process.exit(EXIT.INTERNAL_ERROR);
    },
  );
}
