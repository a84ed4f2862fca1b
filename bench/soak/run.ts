// `npm run soak`: the whole fault matrix through the local stack — 1,000 small TIFFs (a few
// multi-page), create 429s, API 5xx, capacity refusals in the first region, silent machine
// deaths, duplicate, late and stale callbacks, one eviction of the create budget's DO and one
// orchestrator SIGKILL + restart — in single-task mode, then pool mode. Seeded (--seed N).
// Prints progress while it runs, fails on lack of progress, and writes bench/SOAK.md.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { OrchestratorClient, type BatchStatus } from "../../local/api.ts";
import { REPO_ROOT } from "../../local/paths.ts";
import { generateSamples, SAMPLE_KINDS, type GeneratedSample } from "../../local/samples.ts";
import { startStack, type Stack } from "../../local/stack.ts";
import { s3Client, submitBatch } from "../../local/submit.ts";
import { startCallbackFaults, type CallbackFaults } from "./callback-faults.ts";
import { collect, type SoakEvidence } from "./collect.ts";
import { check, markdown, type ModeResult } from "./report.ts";
import { SOAK, soakVars } from "./config.ts";
import { startEventTap } from "./event-tap.ts";
import { startS3Tap, type S3Tap } from "./s3-tap.ts";
import { soakFleet } from "./fleet.ts";

const Args = z.object({
  tasks: z.coerce.number().int().min(10, "--tasks must be at least 10").max(100_000),
  seed: z.coerce.number().int().min(0),
  mode: z.enum(["single", "pool", "both", "fleet", "all"], { message: "--mode must be single, pool, both (single then pool), fleet or all (single, pool, fleet)" }),
  "stall-seconds": z.coerce.number().int().min(10),
  out: z.string(),
});


async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      tasks: { type: "string", default: "1000" },
      seed: { type: "string", default: "1" },
      mode: { type: "string", default: "all" },
      "stall-seconds": { type: "string", default: "180" },
      out: { type: "string", default: join(REPO_ROOT, "bench", "SOAK.md") },
    },
  });
  const parsed = Args.safeParse(values);
  if (!parsed.success) {
    console.error(`[Soak] ${parsed.error.issues.map((i) => i.message).join("; ")}`);
    process.exit(2);
  }
  const args = parsed.data;
  const modes: ("single" | "pool" | "fleet")[] = args.mode === "both" ? ["single", "pool"] : args.mode === "all" ? ["single", "pool", "fleet"] : [args.mode];
  const workDir = await mkdtemp(join(tmpdir(), "fanout-soak-"));
  const started = Date.now();
  console.log(`[Soak] ${args.tasks} TIFFs, seed ${args.seed}, modes ${modes.join(" then ")}; work dir ${workDir}`);
  try {
    const sampleDir = join(workDir, "samples");
    const samples = await generateSamples(sampleDir, { count: args.tasks, width: 64, height: 48, perFolder: 100, kinds: soakKinds() });
    console.log(`[Soak] generated ${samples.length} TIFFs (${samples.filter((s) => s.pages > 1).length} multi-page) in ${secs(Date.now() - started)}`);
    const results: ModeResult[] = [];
    let md = "";
    for (const mode of modes) {
      if (mode === "fleet") results.push(...(await soakFleet(args, samples, sampleDir, workDir, soakKinds())));
      else results.push(await soakMode(mode, args, samples, sampleDir, join(workDir, mode)));
      // Written after each mode, so a long run leaves its first half's figures if stopped.
      md = markdown(results, { tasks: args.tasks, seed: args.seed, mode: args.mode, wallMs: Date.now() - started, config: SOAK });
      await writeFile(args.out, md);
    }
    console.log(`\n${md}`);
    console.log(`[Soak] report written to ${args.out}`);
    const failed = results.filter((r) => r.problems.length > 0);
    if (failed.length > 0) {
      console.error(`[Soak] FAILED (${failed.map((r) => `${r.mode}: ${r.problems.length} problem(s)`).join(", ")}); reproduce with --seed ${args.seed} --tasks ${args.tasks}`);
      process.exitCode = 1;
    } else console.log("[Soak] PASSED");
  } catch (error) {
    process.exitCode = 1;
    throw error;
  } finally {
    // A failed run keeps its logs (orchestrator, every machine) for the post-mortem.
    if (process.exitCode === undefined || process.exitCode === 0) await rm(workDir, { recursive: true, force: true });
    else console.error(`[Soak] logs kept in ${workDir} (orchestrator: <mode>/logs/orchestrator.log, machines: <mode>/logs/machines/)`);
  }
}

function soakKinds() {
  // One multi-page TIFF in 25; the rest cycle through the single-page kinds.
  const single = SAMPLE_KINDS.filter((k) => k.pages === 1);
  const multi = SAMPLE_KINDS.find((k) => k.pages > 1)!;
  return Array.from({ length: 25 }, (_, i) => (i === 12 ? multi : single[i % single.length]));
}

async function soakMode(
  mode: "single" | "pool",
  args: z.infer<typeof Args>,
  samples: GeneratedSample[],
  sampleDir: string,
  stateDir: string,
): Promise<ModeResult> {
  const batchId = `soak-${mode}-s${args.seed}`;
  let tap: S3Tap | undefined;
  let faults: CallbackFaults | undefined;
  const began = Date.now();
  console.log(`\n[Soak] ${mode} mode: starting the local stack (batch ${batchId})`);
  const stack: Stack = await startStack({
    stateDir,
    fresh: true,
    seed: args.seed,
    vars: soakVars({ POOL_MODE: String(mode === "pool"), MAX_CONCURRENT_MACHINES: String(SOAK.maxMachines) }),
    emulator: { createLimit: { perSecond: SOAK.createRate, burst: SOAK.createBurst }, faults: { ...SOAK.faults } },
    // Callbacks retried quickly, so the orchestrator restart is bridged within seconds.
    machineEnv: { CALLBACK_BACKOFF_MS: "500", CALLBACK_MAX_ATTEMPTS: "10" },
    wrapS3Endpoint: async (endpoint) => (tap = await startS3Tap(endpoint, "fanout-archive")),
    callbackProxy: async (target) =>
      (faults = await startCallbackFaults({
        target,
        rates: SOAK.callbacks,
        seed: args.seed * 7919 + (mode === "pool" ? 1 : 0),
        maxAttempts: SOAK.maxAttempts,
        maxHoldMs: 5 * 60_000,
      })),
  });
  const api = new OrchestratorClient({ url: stack.orchestratorUrl, adminToken: stack.adminToken });
  const events: { evictedAt: number | null; killedAt: number | null; restartedAt: number | null } = { evictedAt: null, killedAt: null, restartedAt: null };
  try {
    const s3 = s3Client({ endpoint: stack.s3.endpoint, bucket: stack.bucket, ...stack.s3.credentials });
    const submitted = await submitBatch(api, s3, stack.bucket, { dir: sampleDir, batchId });
    console.log(`[Soak] ${mode}: ${submitted.files.length} TIFFs uploaded and the batch enqueued`);
    // Followed from the start like an operator's `status --watch`, across the SIGKILL.
    const eventTap = startEventTap(api, batchId);
    const final = await drive(mode, args, stack, api, batchId, faults!, events);
    const stream = await eventTap.stop(30_000);
    const evidence: SoakEvidence = await collect({ stack, api, s3, batchId, prefix: submitted.prefix, manifestKey: submitted.manifestKey, tap: tap!, faults: faults!, final, samples });
    // Kept with the logs when the soak fails (the work dir is removed when it passes).
    await writeFile(join(stateDir, "..", `${mode}-evidence.json`), JSON.stringify({ events, flyRequests: evidence.flyRequests, held: evidence.held, duplicates: evidence.duplicates, writes: evidence.writes }));
    const wallMs = Date.now() - began;
    return check(mode, batchId, evidence, { ...events, wallMs, config: SOAK, stream });
  } finally {
    await stack.stop();
  }
}

/** Watches the batch to the end: progress every few seconds, the eviction and the restart on cue, stall detection. */
async function drive(
  mode: string,
  args: z.infer<typeof Args>,
  stack: Stack,
  api: OrchestratorClient,
  batchId: string,
  faults: CallbackFaults,
  events: { evictedAt: number | null; killedAt: number | null; restartedAt: number | null },
): Promise<BatchStatus> {
  const started = Date.now();
  let lastChange = Date.now();
  let lastSig = "";
  let lastPrint = 0;
  let last: BatchStatus | null = null;
  for (;;) {
    let s: BatchStatus | null = null;
    try {
      s = await api.status(batchId);
    } catch {
      // not recorded yet, or the orchestrator is restarting
    }
    const now = Date.now();
    if (s) {
      last = s;
      const p = s.progress;
      const finished = p.tasks_completed + p.tasks_failed;
      const sig = [s.status, p.tasks_completed, p.tasks_failed, p.pending, p.starting, p.running, p.retrying].join("/");
      if (sig !== lastSig) {
        lastSig = sig;
        lastChange = now;
      }
      if (now - lastPrint >= 5000 || s.status === "DONE" || s.status === "ERROR") {
        lastPrint = now;
        const fly = stack.emulator.core;
        console.log(
          `[Soak] ${mode} ${secs(now - started).padStart(6)}  ${s.status}  done ${p.tasks_completed}/${p.tasks_total} · failed ${p.tasks_failed} · running ${p.running} · starting ${p.starting} · retrying ${p.retrying} · pending ${p.pending}` +
            `  | machines ${fly.machines().length} (live ${fly.liveMachineCount()}) · held callbacks ${faults.pending()}/${faults.held().length} · duplicates ${faults.duplicates().length}`,
        );
      }
      if (s.status === "DONE" || s.status === "ERROR") return s;
      if (p.tasks_total > 0 && events.evictedAt === null && finished >= SOAK.evictAt * p.tasks_total) {
        events.evictedAt = Date.now();
        const res = await fetch(`${stack.orchestratorUrl}/admin/debug/evict-fly-budget`, { method: "POST", headers: { authorization: `Bearer ${stack.adminToken}` } });
        console.log(`[Soak] ${mode}: evicted the FlyBudget DO at ${finished}/${p.tasks_total} finished (HTTP ${res.status} ${await res.text()})`);
        if (!res.ok) throw new Error(`the FlyBudget eviction hook answered HTTP ${res.status}`);
      }
      if (p.tasks_total > 0 && events.killedAt === null && finished >= SOAK.restartAt * p.tasks_total) {
        events.killedAt = Date.now();
        console.log(`[Soak] ${mode}: SIGKILL of the orchestrator at ${finished}/${p.tasks_total} finished`);
        await stack.stopOrchestrator("SIGKILL");
        await stack.startOrchestrator();
        events.restartedAt = Date.now();
        console.log(`[Soak] ${mode}: orchestrator restarted on its persisted state in ${secs(events.restartedAt - events.killedAt)}`);
        lastChange = Date.now();
      }
    }
    if (now - lastChange > args["stall-seconds"] * 1000) {
      const p = last?.progress;
      throw new Error(
        `no progress for ${args["stall-seconds"]}s in ${mode} mode (batch ${batchId}, seed ${args.seed}): status ${last?.status ?? "unknown"}, ` +
          (p ? `done ${p.tasks_completed}, failed ${p.tasks_failed}, running ${p.running}, starting ${p.starting}, retrying ${p.retrying}, pending ${p.pending} of ${p.tasks_total}` : "no status read yet") +
          `; held callbacks not delivered: ${faults.pending()}; live machines: ${stack.emulator.core.liveMachineCount()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

await main().catch((error: unknown) => {
  console.error(`[Soak] ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
