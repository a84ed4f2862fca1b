// Runs the fly-worker as a real child process with a machine's env, the way a Fly Machine
// (or the local Machines emulator) does, and collects its exit code, log lines and peak RSS.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { callbackSubject, signToken } from "../../../shared/token.ts";
import type { LocalS3 } from "../../../local/s3.ts";

export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const WORKER_ENTRY = fileURLToPath(new URL("../../../fly-worker/main.ts", import.meta.url));

export interface MachineEnvInput {
  batchId: string;
  taskId: string;
  inputKey: string;
  outputKey: string;
  bucket: string;
  /** The local S3 (its endpoint and its one key pair). */
  s3: Pick<LocalS3, "endpoint" | "credentials">;
  callbackUrl: string;
  /** The orchestrator's CALLBACK_SECRET; CALLBACK_TOKEN is derived from it. */
  callbackSecret: string;
  /** Extra or overriding variables (MEMORY_MB, JPEG_QUALITY, CALLBACK_BACKOFF_MS, …). */
  extra?: Record<string, string>;
}

/** The env the orchestrator gives a machine for one task. */
export async function machineEnv(input: MachineEnvInput): Promise<Record<string, string>> {
  return {
    TASK_ID: input.taskId,
    BATCH_ID: input.batchId,
    INPUT_R2_KEY: input.inputKey,
    OUTPUT_R2_KEY: input.outputKey,
    R2_ACCOUNT_ID: "local",
    R2_ACCESS_KEY_ID: input.s3.credentials.accessKeyId,
    R2_SECRET_ACCESS_KEY: input.s3.credentials.secretAccessKey,
    R2_BUCKET: input.bucket,
    R2_ENDPOINT: input.s3.endpoint,
    CALLBACK_URL: input.callbackUrl,
    CALLBACK_TOKEN: await signToken(input.callbackSecret, callbackSubject(input.batchId, input.taskId)),
    FLY_MACHINE_ID: `local-${input.taskId}`,
    ...input.extra,
  };
}

export interface LogLine {
  component: string;
  fields: Record<string, unknown>;
}

export interface WorkerRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Every `[Component] {json}` line, in order, from stdout and stderr. */
  logs: LogLine[];
  /** Highest VmHWM seen while polling /proc (the worker also reports its own maxRSS). */
  peakRssMb: number;
  durationMs: number;
  /** With `measureCpu`: the process's user + system CPU-seconds at exit, as GNU time reports them (independent of the worker). */
  cpuS?: number;
}

export function parseLogLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split("\n")) {
    const m = /^\[([A-Za-z]+)\] (\{.*\})$/.exec(line);
    if (!m) continue;
    try {
      out.push({ component: m[1], fields: JSON.parse(m[2]) as Record<string, unknown> });
    } catch {
      // a non-JSON line is reported by the tests that check the log format
    }
  }
  return out;
}

async function vmHwmMb(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const m = /VmHWM:\s+(\d+) kB/.exec(status);
    return m ? Math.round(Number(m[1]) / 1024) : 0;
  } catch {
    return 0; // exited between polls
  }
}

/**
 * Starts `node fly-worker/main.ts` with exactly `env` (plus PATH, TMPDIR and the Dockerfile's
 * MALLOC_ARENA_MAX) — nothing leaks in from the test runner's environment.
 */
export async function runWorker(env: Record<string, string>, options: { timeoutMs?: number; measureCpu?: boolean } = {}): Promise<WorkerRun> {
  const started = Date.now();
  // GNU time (Debian's `time` package) writes the child's rusage to a file of its own, not to the worker's stderr.
  const timeFile = options.measureCpu ? join(await mkdtemp(join(tmpdir(), "fanout-time-")), "cpu") : null;
  const [command, args] = timeFile ? ["/usr/bin/time", ["-o", timeFile, "-f", "%U %S", process.execPath, WORKER_ENTRY]] : [process.execPath, [WORKER_ENTRY]];
  const child = spawn(command, args, {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", TMPDIR: process.env.TMPDIR ?? "/tmp", MALLOC_ARENA_MAX: "2", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  let peak = 0;
  const poll = setInterval(() => {
    if (child.pid) void vmHwmMb(child.pid).then((mb) => (peak = Math.max(peak, mb)));
  }, 25);
  const timeout = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 90_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on("close", (c, s) => resolve([c, s])),
  );
  clearInterval(poll);
  clearTimeout(timeout);
  const run: WorkerRun = { code, signal, stdout, stderr, logs: parseLogLines(`${stdout}\n${stderr}`), peakRssMb: peak, durationMs: Date.now() - started };
  if (timeFile) {
    const [user, system] = (await readFile(timeFile, "utf8")).trim().split(/\s+/).slice(-2).map(Number);
    run.cpuS = user + system;
    await rm(dirname(timeFile), { recursive: true, force: true });
  }
  return run;
}
