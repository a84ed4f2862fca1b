// The real local stack for end-to-end tests: startStack() from local/stack.ts in a temp state
// dir, with short timeouts so faults resolve in seconds, plus helpers to read what happened.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { OrchestratorClient, type BatchStatus } from "../../../local/api.ts";
import { watchBatch, WatchError } from "../../../local/progress.ts";
import { startStack, type Stack, type StackOptions } from "../../../local/stack.ts";
import { generateSamples, type GeneratedSample, type SampleOptions } from "../../../local/samples.ts";
import { getBytes, listObjects, s3Client, submitBatch, type Submitted } from "../../../local/submit.ts";

export interface E2EStack extends Stack {
  api: OrchestratorClient;
  s3client: ReturnType<typeof s3Client>;
  workDir: string;
  /** Stops the stack and removes its temp state. */
  dispose(): Promise<void>;
}

export async function startE2EStack(options: StackOptions = {}): Promise<E2EStack> {
  const workDir = await mkdtemp(join(tmpdir(), "fanout-e2e-"));
  const stack = await startStack({
    ...options,
    stateDir: join(workDir, "stack"),
    fresh: true,
    vars: {
      BOOT_TIMEOUT_MS: "15000",
      RUN_TIMEOUT_MS: "60000",
      MACHINE_CHECK_INTERVAL_MS: "1000",
      MAX_CONCURRENT_MACHINES: "6",
      // These suites were written for single-task mode; pool.test.ts sets POOL_MODE=true (the production default).
      POOL_MODE: "false",
      ...options.vars,
    },
    // Callbacks retried quickly, so an orchestrator restart is bridged within seconds.
    machineEnv: { CALLBACK_BACKOFF_MS: "500", CALLBACK_MAX_ATTEMPTS: "8", ...options.machineEnv },
  });
  return {
    ...stack,
    api: new OrchestratorClient({ url: stack.orchestratorUrl, adminToken: stack.adminToken }),
    s3client: s3Client({ endpoint: stack.s3.endpoint, bucket: stack.bucket, ...stack.s3.credentials }),
    workDir,
    dispose: async () => {
      await stack.stop();
      await rm(workDir, { recursive: true, force: true });
    },
  };
}

/**
 * A long e2e waits on progress, not on a wall clock sized for an idle machine: it fails when no
 * task changed state for this long (a loaded 2-core machine is slow, a stuck batch is still).
 */
export const STALL_MS = Number(process.env.FANOUT_E2E_STALL_MS ?? 120_000);
/** Vitest's own limit for such a test: only a backstop, far above any progressing run. */
export const BACKSTOP_MS = 60 * 60_000;

/**
 * Watches the batch to DONE/ERROR, or until it stalls for STALL_MS. Never throws for a stall:
 * `stalled` says where it stood (counts by state), and `final` is the last status seen, so the
 * caller can write its figures either way before it asserts.
 */
export async function watchToEnd(stack: E2EStack, batchId: string, intervalMs = 1000): Promise<{ final: BatchStatus; stalled: string | null }> {
  try {
    return { final: await watchBatch(stack.api, batchId, { intervalMs, stallMs: STALL_MS }), stalled: null };
  } catch (error) {
    if (error instanceof WatchError) return { final: error.last, stalled: error.message };
    throw error;
  }
}

export async function submitSamples(
  stack: E2EStack,
  batchId: string,
  options: SampleOptions,
): Promise<{ samples: GeneratedSample[]; submitted: Submitted }> {
  const dir = join(stack.workDir, "samples", batchId);
  const samples = await generateSamples(dir, options);
  const submitted = await submitBatch(stack.api, stack.s3client, stack.bucket, { dir, batchId });
  return { samples, submitted };
}

/** Every `[Component] {json}` line the orchestrator printed, parsed. */
export function orchestratorEvents(stack: Stack): { component: string; event: string; [k: string]: unknown }[] {
  const out: { component: string; event: string; [k: string]: unknown }[] = [];
  for (const line of stack.orchestratorLines) {
    const m = /\[([A-Za-z]+)\] (\{.*\})/.exec(line);
    if (!m) continue;
    try {
      const json = JSON.parse(m[2]) as { event?: unknown };
      if (typeof json.event === "string") out.push({ component: m[1], ...json, event: json.event });
    } catch {
      // not one of ours
    }
  }
  return out;
}

/** Waits until the emulator has no live machine and no machine process is left. */
export async function waitNoLiveMachines(stack: Stack, timeoutMs = 20_000): Promise<{ live: number; pids: number[] }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const live = stack.emulator.core.liveMachineCount();
    const pids = stack.machines.pids();
    if ((live === 0 && pids.length === 0) || Date.now() > deadline) return { live, pids };
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** What the Fly Machines API saw. */
export function flyFigures(stack: Stack) {
  const requests = stack.emulator.core.requests;
  const creates = requests.filter((r) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]));
  return {
    api_requests: requests.length,
    create_requests: creates.length,
    create_429: creates.filter((r) => r.status === 429).length,
    create_capacity_422: creates.filter((r) => r.status === 422).length,
    responses_5xx: requests.filter((r) => r.status >= 500).length,
    machines_created: stack.emulator.core.machines().length,
  };
}

/** Checks that every key is a decodable JPEG; returns problems. */
export async function checkJpegs(stack: E2EStack, keys: string[]): Promise<string[]> {
  const problems: string[] = [];
  for (const key of keys) {
    try {
      const bytes = await getBytes(stack.s3client, stack.bucket, key);
      const meta = await sharp(bytes).metadata();
      if (meta.format !== "jpeg") problems.push(`${key}: format ${meta.format}`);
      // Decoding every pixel proves the file is whole, not just its header.
      const { info } = await sharp(bytes).raw().toBuffer({ resolveWithObject: true });
      if (info.width < 1 || info.height < 1) problems.push(`${key}: empty image`);
    } catch (error) {
      problems.push(`${key}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return problems;
}

export async function jpegKeys(stack: E2EStack, prefix: string): Promise<string[]> {
  return (await listObjects(stack.s3client, stack.bucket, prefix)).map((o) => o.key).filter((k) => k.endsWith(".jpg"));
}

export { expectedJpegKeys } from "../../../local/samples.ts";
