// The program every Fly Machine runs: `node fly-worker/main.ts`. With POOL_MODE=true the
// machine leases task after task from its batch (pool.ts); otherwise it converts the one TIFF
// named by its env, calls back, and exits with a code that says what happened (exit-codes.ts).
import { configureSharp } from "./convert.ts";
import { parseEnv } from "./env.ts";
import { errorMessage } from "./errors.ts";
import { EXIT, type ExitCode } from "./exit-codes.ts";
import { log, registerSecrets, setLogContext, since } from "./log.ts";
import { runPool } from "./pool.ts";
import { convertTask, reportBadEnv } from "./run.ts";

export async function main(source: NodeJS.ProcessEnv = process.env): Promise<ExitCode> {
  return isPoolMode(source) ? runPool(source) : runSingle(source);
}

export function isPoolMode(source: NodeJS.ProcessEnv): boolean {
  return source.POOL_MODE === "true";
}

/** Single-task mode: the contract existing worker images speak (one machine, one task). */
async function runSingle(source: NodeJS.ProcessEnv): Promise<ExitCode> {
  // Scrub every secret-looking variable, parsed or not, before anything is logged.
  registerSecrets([source.R2_SECRET_ACCESS_KEY, source.R2_ACCESS_KEY_ID, source.CALLBACK_TOKEN, source.INPUT_URL, source.OUTPUT_URL]);
  setLogContext({ machine_id: source.FLY_MACHINE_ID ?? null, batch_id: source.BATCH_ID ?? null, task_id: source.TASK_ID ?? null });
  const parsed = parseEnv(source);
  if (!parsed.ok) {
    log.error("Env", "env.invalid", { message: `the machine's environment is unusable: ${parsed.problems.join("; ")}`, problems: parsed.problems });
    if (parsed.callback) {
      await reportBadEnv(parsed.callback, parsed.problems);
    } else {
      log.error("Env", "env.no_callback", { message: "no error callback sent: CALLBACK_URL, CALLBACK_TOKEN, BATCH_ID or TASK_ID is unusable" });
    }
    return EXIT.BAD_ENV;
  }

  const env = parsed.env;
  setLogContext({ batch_id: env.BATCH_ID, task_id: env.TASK_ID, machine_id: env.FLY_MACHINE_ID ?? null });
  configureSharp();
  // total_time_ms counts from process start: the machine's whole run for its one task.
  const outcome = await convertTask(env, 0);
  return outcome.code;
}

// Run only as the entry point, so tests can import main() without starting a task.
if (import.meta.filename === process.argv[1] || process.argv[1]?.endsWith("fly-worker/main.ts")) {
  const pool = isPoolMode(process.env);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      const message = pool
        ? "pool machine is stopping; a task in progress gets no callback and returns to the batch when its lease lapses"
        : "machine is stopping before the task finished; no callback sent";
      log.warn(pool ? "Pool" : "FlyWorker", "signal", { signal, message, uptime_ms: since(0) });
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
