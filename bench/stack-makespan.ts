// Real-stack makespan: the local stack (wrangler dev, the Fly Machines API emulator running each
// machine as a real fly-worker process, local S3), the same 200 small TIFFs converted twice in
// one run: single-task mode (`"pool": false`, one machine per TIFF) and the default (no pool
// settings: the engine chooses), with the emulator enforcing Fly's create limit (1/s, burst 3). Also measures the
// local S3's throughput (one 64 MiB PUT and GET), the figure the makespan model is given beside
// its assumed R2 throughput.
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UPLOAD_PART_BYTES } from "../fly-worker/s3.ts";
import { OrchestratorClient } from "../local/api.ts";
import { generateSamples } from "../local/samples.ts";
import { startStack } from "../local/stack.ts";
import { s3Client, uploadBatch } from "../local/submit.ts";

export interface StackRun {
  mode: "single" | "pool";
  tasks: number;
  wall_s: number;
  status: string;
  completed: number;
  failed: number;
  machines_created: number;
  machine_seconds: number | null;
  estimated_cost_usd: number | null;
  /** What the engine ran (the default may choose either) and its plan, from /status. */
  engine_mode: string | null;
  plan: string | null;
  cost_all_in_usd: number | null;
}

export interface StackFigures {
  runs: StackRun[];
  s3: { put_mb_per_s: number; get_mb_per_s: number; bytes: number };
  max_concurrent_machines: string;
  tiff_bytes: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runStackMakespan(opts: { tasks: number; log: (line: string) => void }): Promise<StackFigures> {
  const workDir = await mkdtemp(join(tmpdir(), "fanout-stack-bench-"));
  const stack = await startStack({
    stateDir: join(workDir, "stack"),
    fresh: true,
    // Production's create limit on both sides: the engine budgets it, the emulator enforces it.
    vars: { FLY_CREATE_RATE_PER_SECOND: "1", FLY_CREATE_BURST: "3", MACHINE_CHECK_INTERVAL_MS: "1000" },
    emulator: { createLimit: { perSecond: 1, burst: 3 } },
  });
  try {
    const api = new OrchestratorClient({ url: stack.orchestratorUrl, adminToken: stack.adminToken });
    const client = s3Client({ endpoint: stack.s3.endpoint, bucket: stack.bucket, ...stack.s3.credentials });

    // Local S3 throughput: one 64 MiB object up and down (loopback, fauxqs), uploaded the way
    // fly-worker uploads (multipart, 8 MiB parts, two in flight: fauxqs refuses bodies over 11 MiB).
    const body = Buffer.alloc(64 * 1024 * 1024, 7);
    let t = performance.now();
    await new Upload({ client, params: { Bucket: stack.bucket, Key: "bench/throughput.bin", Body: body }, partSize: UPLOAD_PART_BYTES, queueSize: 2 }).done();
    const putS = (performance.now() - t) / 1000;
    t = performance.now();
    const got = await client.send(new GetObjectCommand({ Bucket: stack.bucket, Key: "bench/throughput.bin" }));
    const bytes = (await got.Body!.transformToByteArray()).length;
    const getS = (performance.now() - t) / 1000;
    opts.log(`  local S3: PUT ${(body.length / 1e6 / putS).toFixed(0)} MB/s, GET ${(bytes / 1e6 / getS).toFixed(0)} MB/s`);

    const dir = join(workDir, "samples");
    const samples = await generateSamples(dir, { count: opts.tasks, width: 96, height: 72, perFolder: 50 });
    const runs: StackRun[] = [];
    let tiffBytes = 0;
    for (const mode of ["single", "pool"] as const) {
      const batchId = `stack-bench-${mode}`;
      const submitted = await uploadBatch(client, stack.bucket, { dir, batchId });
      const tiffs = submitted.files.filter((f) => /\.tiff?$/i.test(f.key));
      tiffBytes = tiffs.reduce((n, f) => n + f.size, 0) / Math.max(1, tiffs.length);
      const createsBefore = stack.emulator.core.requests.filter((r) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]) && r.status === 200).length;
      const t0 = performance.now();
      await api.enqueue({ batch_id: batchId, manifest_r2_key: submitted.manifestKey, ...(mode === "single" ? { pool: false } : {}) });
      let s = await api.status(batchId).catch(() => null);
      let lastDone = -1;
      let lastProgressAt = performance.now();
      let lastLogAt = performance.now();
      // Waits on progress, not on one budget: gives up only after 5 minutes without a task finishing.
      while (!s || (s.status !== "DONE" && s.status !== "ERROR")) {
        await sleep(500);
        s = await api.status(batchId).catch(() => s);
        const done = s ? s.progress.tasks_completed + s.progress.tasks_failed : 0;
        if (done !== lastDone) [lastDone, lastProgressAt] = [done, performance.now()];
        if (performance.now() - lastLogAt > 15_000) {
          lastLogAt = performance.now();
          opts.log(`    (stack ${mode}: ${((performance.now() - t0) / 1000).toFixed(0)} s, ${s?.status ?? "not yet recorded"}, ${done}/${samples.length} tasks finished)`);
        }
        if (performance.now() - lastProgressAt > 300_000) throw new Error(`${batchId}: no task finished for 5 minutes; last status ${JSON.stringify(s)}`);
      }
      const wallS = (performance.now() - t0) / 1000;
      // Let machine ends land (single-task machines end at their callback, pool machines when retired).
      for (let i = 0; i < 60 && ((await api.status(batchId)).machines?.running ?? 0) > 0; i++) await sleep(1000);
      s = await api.status(batchId);
      const created =
        stack.emulator.core.requests.filter((r) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]) && r.status === 200).length - createsBefore;
      runs.push({
        mode,
        tasks: samples.length,
        wall_s: wallS,
        status: s.status,
        completed: s.progress.tasks_completed,
        failed: s.progress.tasks_failed,
        machines_created: created,
        machine_seconds: s.machines?.machine_seconds ?? null,
        estimated_cost_usd: s.machines?.estimated_cost_usd ?? null,
        engine_mode: s.mode ?? null,
        plan: s.sizing?.plan ?? null,
        cost_all_in_usd: s.cost?.total_usd ?? null,
      });
      opts.log(`  stack ${mode}: ${samples.length} TIFFs ${s.status} in ${wallS.toFixed(1)} s, ${created} machines created`);
    }
    return {
      runs,
      s3: { put_mb_per_s: body.length / 1e6 / putS, get_mb_per_s: bytes / 1e6 / getS, bytes: body.length },
      max_concurrent_machines: stack.vars.MAX_CONCURRENT_MACHINES ?? stack.vars.FLEET_MAX_MACHINES,
      tiff_bytes: tiffBytes,
    };
  } finally {
    await stack.stop();
    await rm(workDir, { recursive: true, force: true });
  }
}
