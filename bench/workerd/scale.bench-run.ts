// Orchestrator scale: one BatchDO with 1,000, 10,000 and 100,000 tasks, discovered from a
// manifest in R2 by the real alarm loop, with the Fly Machines API emulated at the fetch
// boundary. Callbacks go through the Worker's HTTP entry (token check, routing, DO RPC) for
// machines the engine really created; the engine spawns a replacement after each.
import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { inject, it } from "vitest";

declare module "vitest" {
  export interface ProvidedContext {
    scaleParts: string[];
  }
}
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";
import { getStatus, installWorld, stub, TestRunner, waitForStatus, withStore } from "../../test/workers/support/engine.ts";
import { callBack, countRows, HeldRunner, InstantPoolRunner, median, percentile, progress, putManifest, quietEngineLogs, report, type Tally, uploadOutput } from "./support.ts";

const SIZES = [1_000, 10_000, 100_000];
/** Runs per size (each a new batch); every figure reported is the median over them. */
const REPEATS = 3;
/** Timed callbacks per size, equal at every size so the figures compare (see RESULTS.md). */
const SEQUENTIAL = 400;
const CONCURRENT = 400;
const IN_FLIGHT = 16;
/** Sequential callbacks are timed as runs of this many back to back. */
const RUN = 100;
const STATUS_READS = 200;
const LIVE = 200; // MAX_CONCURRENT_MACHINES of the scale project
/** Tasks of each whole-life run (a batch from its manifest to DONE). */
const LIFE_TASKS = 2_000;

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

    // Spread the work over the whole task range: the engine takes ready tasks by next_at, so
    // scrambling next_at (a multiplicative permutation of the ids, all in the past) makes the
    // machines it creates, and so the timed callbacks, land on tasks anywhere in 1…n, not only
    // on the lowest ids (the friendliest pages for SQLite's cache).
    await withStore(batchId, (_store, sql) => {
      sql.exec("UPDATE tasks SET next_at = 1 + ((id * 40503) % ?) WHERE state = 'pending'", n);
    });
    // Warm-up: the engine fills its machine budget; those first machines (created before the
    // scramble, low ids) call back untimed, so every timed callback is for a scattered task.
    const until = Date.now() + 60_000;
    while (runner.waiting.length < Math.min(LIVE, n) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    const warmUps = Math.min(LIVE, n - SEQUENTIAL - CONCURRENT);
    for (let i = 0; i < warmUps; i++) {
      const { machine, events } = await runner.take();
      if ((await callBack(machine)) !== 200) throw new Error("warm-up callback failed");
      events.exit(0);
    }
    const spread: number[] = [];

    const workBefore = await withStore(batchId, (store) => ({ ...store.work }));
    // Sequential callbacks: latency of one callback while the engine keeps spawning. Timed one by
    // one (whole-ms percentiles) and as runs of RUN back-to-back callbacks with machines already
    // waiting (the mean, resolved well below workerd's 1 ms clock step).
    const latencies: number[] = [];
    const t2 = performance.now();
    let runsMs = 0;
    for (let done = 0; done < SEQUENTIAL; done += RUN) {
      const ready = Date.now() + 60_000;
      while (runner.waiting.length < RUN && Date.now() < ready) await new Promise((r) => setTimeout(r, 5));
      const taken = [];
      for (let i = 0; i < RUN; i++) taken.push(await runner.take());
      // The machines' uploads are theirs, not the orchestrator's: done before the run is timed.
      for (const { machine } of taken) await uploadOutput(machineProcessEnv(machine));
      const tr = performance.now();
      for (const { machine, events } of taken) {
        spread.push(Number(/(\d+)$/.exec(machine.metadata.fanout_task ?? "")?.[1] ?? NaN));
        const t = performance.now();
        const code = await callBack(machine, { uploaded: true });
        latencies.push(ms(t));
        if (code !== 200) throw new Error(`callback answered ${code}`);
        events.exit(0);
      }
      runsMs += ms(tr);
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
          await uploadOutput(machineProcessEnv(machine));
          const t = performance.now();
          const code = await callBack(machine, { uploaded: true });
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
    if (status.progress.tasks_completed !== warmUps + callbacks) {
      throw new Error(`expected ${warmUps} warm-up + ${callbacks} timed callbacks completed, got ${status.progress.tasks_completed}`);
    }
    const dbBytes = await withStore(batchId, (store) => store.databaseSize());

    return {
      tasks: n,
      discovery_source: "manifest",
      discovery_ms: discoveryMs,
      timed_callbacks: callbacks,
      callback_p50_ms: median(latencies),
      callback_p99_ms: percentile(latencies, 99),
      // workerd's clock moves in whole ms: a mean over the run's 400 callbacks resolves well below that.
      callback_mean_ms: runsMs / SEQUENTIAL,
      callback_loaded_mean_ms: loaded.reduce((a, b) => a + b, 0) / loaded.length,
      sequential_run_ms: sequentialMs,
      task_ids_lowest: Math.min(...spread),
      task_ids_highest: Math.max(...spread),
      task_ids_median: median(spread),
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

/**
 * A task's whole life, discovery to DONE, in rows written to Durable Objects: the batch's (its
 * own count, setAlarm included, as /status prices it) and the app's create budget's. Machines
 * convert instantly; a pool task sends `heartbeats` heartbeats (a task of that many heartbeat periods).
 */
async function life(n: number, mode: "pool" | "single", heartbeats: number) {
  const batchId = `life-${mode}-${n}-${heartbeats}`;
  const pool = mode === "pool" ? new InstantPoolRunner(heartbeats) : null;
  const world = installWorld({ runner: pool ?? new TestRunner(), maxLiveMachines: 10_000 });
  const tally: Tally = new Map();
  const budget: Tally = new Map();
  try {
    await runInDurableObject(stub(batchId), (_i, state) => countRows(state.storage.sql, tally));
    await runInDurableObject(env.FLY_BUDGET.getByName(env.FLY_APP_NAME), (_b, state) => countRows(state.storage.sql, budget));
    const manifestKey = await putManifest(batchId, n);
    const t0 = performance.now();
    await stub(batchId).start({ batch_id: batchId, manifest_r2_key: manifestKey, pool: mode === "pool" });
    const status = await waitForStatus(batchId, (x) => x.status === "DONE" || x.status === "ERROR" || x.status === "FAILED", 1_800_000);
    if (status.status !== "DONE" || status.progress.tasks_completed !== n) throw new Error(`life ${mode} ${n}: ${status.status} ${JSON.stringify(status.progress)}`);
    const counted = await withStore(batchId, (store) => store.usageSoFar(store.getMeta()!));
    const sum = (t: Tally) => [...t.values()].reduce((a, b) => a + b, 0);
    const setAlarms = counted.rowsWritten - sum(tally);
    return {
      mode,
      tasks: n,
      heartbeats_per_task: heartbeats,
      machines: pool ? pool.started : n,
      rows_written_per_task: (counted.rowsWritten + sum(budget)) / n,
      batch_rows_per_task: counted.rowsWritten / n,
      set_alarm_per_task: setAlarms / n,
      budget_rows_per_task: sum(budget) / n,
      do_requests_per_task: counted.requests / n,
      by_statement: Object.fromEntries([...tally.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, v / n])),
      real_s: (performance.now() - t0) / 1000,
    };
  } finally {
    await world.restore();
  }
}

it("orchestrator scale", async () => {
  const restore = quietEngineLogs();
  const parts = inject("scaleParts");
  try {
    if (parts.includes("callbacks")) await measure(1_000, "warmup"); // JIT and SQLite caches: not reported
    const runs: Awaited<ReturnType<typeof measure>>[][] = SIZES.map(() => []);
    for (let rep = 0; rep < (parts.includes("callbacks") ? REPEATS : 0); rep++) {
      for (const [i, n] of SIZES.entries()) {
        const r = await measure(n, `r${rep}`);
        progress(`  scale ${n} run ${rep + 1}/${REPEATS}: discovery ${r.discovery_ms} ms, callback p50 ${r.callback_p50_ms} ms, ${r.callbacks_per_s.toFixed(0)} callbacks/s`);
        runs[i].push(r);
      }
    }
    // Median of each figure over the runs of a size.
    const results = runs.filter((rs) => rs.length > 0).map((rs) => {
      const out: Record<string, number | string> = {};
      for (const [k, v] of Object.entries(rs[0])) out[k] = typeof v === "number" ? median(rs.map((r) => r[k as keyof typeof r] as number)) : v;
      return { ...out, runs: rs.length };
    });
    // A task's whole life, in rows written: pool mode with 0, 1 and 2 heartbeats per task, single-task mode.
    const lives = [];
    for (const [mode, heartbeats] of parts.includes("life") ? ([["pool", 0], ["pool", 1], ["pool", 2], ["single", 0]] as const) : []) {
      const r = await life(LIFE_TASKS, mode, heartbeats);
      progress(`  scale life ${mode} ${r.tasks} tasks, ${heartbeats} heartbeat(s) each: ${r.rows_written_per_task.toFixed(2)} rows written per task (${r.machines} machines, ${r.real_s.toFixed(1)} s)`);
      lives.push(r);
    }
    report("scale", { callbacks: results, lives });
  } finally {
    restore();
  }
});
