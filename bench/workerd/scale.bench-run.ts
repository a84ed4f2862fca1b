// Orchestrator scale: one BatchDO with 1,000, 10,000 and 100,000 tasks, discovered from a
// manifest in R2 by the real alarm loop, with the Fly Machines API emulated at the fetch
// boundary. Callbacks go through the Worker's HTTP entry (token check, routing, DO RPC) for
// machines the engine really created; the engine spawns a replacement after each.
import { exports } from "cloudflare:workers";
import { it } from "vitest";
import { getStatus, installWorld, stub, withStore } from "../../test/workers/support/engine.ts";
import { callBack, HeldRunner, median, percentile, progress, putManifest, quietEngineLogs, report } from "./support.ts";

const SIZES = [1_000, 10_000, 100_000];
/** Runs per size (each a new batch); every figure reported is the median over them. */
const REPEATS = 3;
/** Timed callbacks per size, equal at every size so the figures compare (see RESULTS.md). */
const SEQUENTIAL = 400;
const CONCURRENT = 400;
const IN_FLIGHT = 16;
const STATUS_READS = 200;
const LIVE = 200; // MAX_CONCURRENT_MACHINES of the scale project

const ms = (t0: number) => performance.now() - t0;

async function measure(n: number, run: string) {
  const batchId = `scale-${n}-${run}`;
  const runner = new HeldRunner();
  const world = installWorld({ runner, maxLiveMachines: 10_000 });
  try {
    const manifestKey = await putManifest(batchId, n);

    // Discovery: queue message → manifest read → files → tasks planned (stage "run").
    const t0 = performance.now();
    await stub(batchId).start({ batch_id: batchId, manifest_r2_key: manifestKey });
    for (;;) {
      const s = await getStatus(batchId);
      if (s.stage === "run" || s.stage === "error") {
        if (s.stage === "error") throw new Error(`discovery failed: ${s.error}`);
        if (s.progress.tasks_total !== n) throw new Error(`planned ${s.progress.tasks_total} tasks, expected ${n}`);
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const discoveryMs = ms(t0);

    // Warm-up: the engine fills its machine budget.
    const until = Date.now() + 60_000;
    while (runner.waiting.length < Math.min(LIVE, n) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));

    const workBefore = await withStore(batchId, (store) => ({ ...store.work }));
    // Sequential callbacks: latency of one callback while the engine keeps spawning.
    const latencies: number[] = [];
    const t2 = performance.now();
    for (let i = 0; i < SEQUENTIAL; i++) {
      const { machine, events } = await runner.take();
      const t = performance.now();
      const code = await callBack(machine);
      latencies.push(ms(t));
      if (code !== 200) throw new Error(`callback answered ${code}`);
      events.exit(0);
    }
    const sequentialMs = ms(t2);
    // Concurrent callbacks: throughput with IN_FLIGHT machines calling back at once.
    const loaded: number[] = [];
    let left = CONCURRENT;
    const t1 = performance.now();
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (left > 0) {
          left--;
          const { machine, events } = await runner.take();
          const t = performance.now();
          const code = await callBack(machine);
          loaded.push(ms(t));
          if (code !== 200) throw new Error(`callback answered ${code}`);
          events.exit(0);
        }
      }),
    );
    const concurrentMs = ms(t1);
    const workAfter = await withStore(batchId, (store) => ({ ...store.work }));
    const callbacks = SEQUENTIAL + CONCURRENT;

    // Status reads, one at a time.
    const statusMs: number[] = [];
    for (let i = 0; i < STATUS_READS; i++) {
      const t = performance.now();
      const res = await exports.default.fetch(`http://orchestrator.test/status/${batchId}`);
      await res.json();
      statusMs.push(ms(t));
    }
    const status = await getStatus(batchId);
    if (status.progress.tasks_completed !== callbacks) throw new Error(`expected ${callbacks} completed, got ${status.progress.tasks_completed}`);
    const dbBytes = await withStore(batchId, (store) => store.databaseSize());

    return {
      tasks: n,
      discovery_source: "manifest",
      discovery_ms: discoveryMs,
      timed_callbacks: callbacks,
      callback_p50_ms: median(latencies),
      callback_p99_ms: percentile(latencies, 99),
      callback_mean_ms: sequentialMs / SEQUENTIAL,
      callback_loaded_p50_ms: median(loaded),
      callback_loaded_p99_ms: percentile(loaded, 99),
      callbacks_per_s: CONCURRENT / (concurrentMs / 1000),
      in_flight: IN_FLIGHT,
      status_p50_ms: median(statusMs),
      status_p99_ms: percentile(statusMs, 99),
      db_bytes: dbBytes,
      rows_written_per_callback: (workAfter.rowsWritten - workBefore.rowsWritten) / callbacks,
      rows_read_per_callback: (workAfter.rowsRead - workBefore.rowsRead) / callbacks,
      machines_created: runner.started,
    };
  } finally {
    await world.restore();
  }
}

it("orchestrator scale", async () => {
  const restore = quietEngineLogs();
  try {
    await measure(1_000, "warmup"); // JIT and SQLite caches: not reported
    const runs: Awaited<ReturnType<typeof measure>>[][] = SIZES.map(() => []);
    for (let rep = 0; rep < REPEATS; rep++) {
      for (const [i, n] of SIZES.entries()) {
        const r = await measure(n, `r${rep}`);
        progress(`  scale ${n} run ${rep + 1}/${REPEATS}: discovery ${r.discovery_ms} ms, callback p50 ${r.callback_p50_ms} ms, ${r.callbacks_per_s.toFixed(0)} callbacks/s`);
        runs[i].push(r);
      }
    }
    // Median of each figure over the runs of a size.
    const results = runs.map((rs) => {
      const out: Record<string, number | string> = {};
      for (const [k, v] of Object.entries(rs[0])) out[k] = typeof v === "number" ? median(rs.map((r) => r[k as keyof typeof r] as number)) : v;
      return { ...out, runs: rs.length };
    });
    report("scale", results);
  } finally {
    restore();
  }
});
