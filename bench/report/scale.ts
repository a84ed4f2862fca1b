// Section 1 of RESULTS.md: the orchestrator's cost per callback at 1,000 to 100,000 tasks, and a
// task's whole life in Durable Object rows written (the scale bench's two parts).
import { f, mb, n0 } from "./format.ts";

export interface ScaleFigure {
  tasks: number;
  discovery_source: string;
  discovery_ms: number;
  timed_callbacks: number;
  callback_p50_ms: number;
  callback_p99_ms: number;
  callback_mean_ms: number;
  callback_loaded_mean_ms: number;
  task_ids_lowest: number;
  task_ids_highest: number;
  task_ids_median: number;
  callback_loaded_p50_ms: number;
  callback_loaded_p99_ms: number;
  callbacks_per_s: number;
  in_flight: number;
  status_p50_ms: number;
  status_p99_ms: number;
  db_bytes: number;
  rows_written_per_callback: number;
  rows_read_per_callback: number;
  runs: number;
}


export function callbackSection(scale: ScaleFigure[]): string {
  if (scale.length === 0) return "";
  const first = scale[0];
  const last = scale[scale.length - 1];
  const rows = scale.map(
    (s) =>
      `| ${n0(s.tasks)} | ${n0(s.discovery_ms)} ms | ${n0(s.callbacks_per_s)} | **${f(s.callback_mean_ms, 3)} ms** | ${f(s.callback_p50_ms, 0)} / ${f(s.callback_p99_ms, 0)} ms | ${f(s.callback_loaded_mean_ms, 2)} / ${f(s.callback_loaded_p50_ms, 0)} / ${f(s.callback_loaded_p99_ms, 0)} ms | ${f(s.status_p50_ms, 0)} / ${f(s.status_p99_ms, 0)} ms | ${mb(s.db_bytes)} MiB | ${f(s.rows_written_per_callback, 1)} | ${f(s.rows_read_per_callback, 1)} | ${n0(s.task_ids_lowest)} / ${n0(s.task_ids_median)} / ${n0(s.task_ids_highest)} |`,
  );
  const p50Ratio = last.callback_p50_ms / first.callback_p50_ms;
  const meanRatio = last.callback_mean_ms / first.callback_mean_ms;
  return `## 1. Orchestrator scale (workerd, Fly Machines API emulated at the fetch boundary)

| tasks | discovery | callbacks/s (${first.in_flight} in flight) | callback mean (runs of 100, one at a time) | callback p50 / p99 (whole ms) | callback mean / p50 / p99 (${first.in_flight} in flight) | status p50 / p99 | DO storage | rows written / callback | rows read / callback | task ids called back (lowest / median / highest) |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${rows.join("\n")}

**Target: callback latency at ${n0(last.tasks)} within 1.5× of ${n0(first.tasks)}.** Measured mean ratio (runs of 100 callbacks timed as a whole, sub-millisecond resolution) **${f(meanRatio, 2)}×**; the p50 ratio ${f(p50Ratio, 2)}× is whole milliseconds (workerd's clock step) and says little on its own.

How it is measured (\`bench/workerd/scale.bench-run.ts\`): for each size a manifest of N TIFFs is put in the R2
binding and \`BatchDO.start\` is called; **discovery** is the time until GET /status shows the batch in stage
\`run\` with N tasks: the real alarm loop reads and validates the manifest, inserts the files and plans every task
(the manifest path is used at every size: seeding 100,000 objects for a prefix listing takes ~100 s in miniflare's
R2, the manifest one put). The engine then creates machines against the Fly Machines API emulator
(\`local/fly-emulator/\`, routed from \`fetch\` to http://fly.test) with MAX_CONCURRENT_MACHINES 200 and a
create budget that never binds; the machines wait until the bench makes them call back. Each callback is a
signed POST through the Worker's \`fetch\` (token check, routing, DO RPC) for a machine the engine created, and
the engine spawns a replacement after each. The tasks' \`next_at\` is scrambled after planning (a multiplicative
permutation of the ids) and the first machines' callbacks are untimed, so the timed callbacks land on tasks spread over
the whole range (lowest / median / highest task id in the table), not only on the lowest ids. ${first.timed_callbacks} callbacks are timed per size (equal at every size, so
the figures compare): ${first.timed_callbacks / 2} one at a time (latency), then ${first.timed_callbacks / 2} with ${first.in_flight} in flight (callbacks/s and loaded
latency). **Rows written/read per callback** are the DO's SQLite \`rowsWritten\`/\`rowsRead\` (\`BatchStore.work\`) over
the timed callbacks divided by their number, so they include the alarm work each callback triggers (creating the
next machine), not only the callback's own transaction. **DO storage** is \`sql.databaseSize\` with all N tasks
planned. **Status** is ${"`GET /status/:batchId`"}, 200 reads one at a time. Every figure is the median of ${first.runs} runs per size
(a new batch each), after one unreported warm-up run. workerd's clock advances in whole milliseconds (a Spectre
mitigation), so per-callback percentiles are whole ms; the **mean** is each run of 100 back-to-back callbacks (machines
already waiting) timed as a whole, divided by the callbacks. The engine's JSON
info logs are dropped during the bench (in vitest they cost an RPC to Node per line).
`;
}


/** A task's whole life, discovery to DONE, in Durable Object rows (the scale bench's second part). */
export interface LifeFigure {
  mode: "pool" | "single";
  tasks: number;
  heartbeats_per_task: number;
  machines: number;
  rows_written_per_task: number;
  batch_rows_per_task: number;
  set_alarm_per_task: number;
  budget_rows_per_task: number;
  do_requests_per_task: number;
  by_statement: Record<string, number>;
  real_s: number;
}

/** The part of a makespan figure this section quotes: the simulated default's own count of rows. */
interface SimulatedRows {
  name: string;
  mode: string;
  tasks: number;
  rows_written_per_task: number;
  pool: { heartbeats: number; tasks: number };
}

export function lifeSection(lives: LifeFigure[], simulated: SimulatedRows[]): string {
  if (lives.length === 0) return "";
  const rows = lives.map((l) => {
    const top = Object.entries(l.by_statement)
      .filter(([, v]) => v >= 0.05)
      .map(([k, v]) => `${k} ${f(v, 2)}`)
      .join(", ");
    return `| ${l.mode === "pool" ? "pool" : "one machine per task"} | ${n0(l.tasks)} | ${l.heartbeats_per_task} | **${f(l.rows_written_per_task, 2)}** | ${f(l.set_alarm_per_task, 2)} | ${f(l.budget_rows_per_task, 2)} | ${f(l.do_requests_per_task, 2)} | ${n0(l.machines)} | ${top} |`;
  });
  const big = simulated.find((s) => s.mode === "default" && s.tasks === 10_000 && /main/.test(s.name));
  const hb = big && big.pool.tasks > 0 ? big.pool.heartbeats / big.pool.tasks : null;
  const poolAt = (h: number) => lives.find((l) => l.mode === "pool" && l.heartbeats_per_task === h)?.rows_written_per_task;
  const expected = hb === null ? null : (poolAt(0) ?? 0) + hb * ((poolAt(1) ?? 0) - (poolAt(0) ?? 0));
  return `### A task's whole life in Durable Object rows written

**Target (issue 23): a pool task's whole life, discovery to done, writes at most 20 rows.** DO SQLite bills every row
and index entry a write changes, and each \`setAlarm\` as a row ($1.00 per million). Measured here per task, in
batches of ${n0(lives[0].tasks)} tasks from a manifest to DONE with machines that convert instantly (a pool task sends the
given number of heartbeats; a task of ~20–40 s sends one, the lease being renewed every 20 s):

| mode | tasks | heartbeats a task | rows written a task (batch + create budget) | of them setAlarm | create budget's rows | DO requests a task | machines | rows by statement, a task |
|---|---:|---:|---:|---:|---:|---:|---:|---|
${rows.join("\n")}
${
  big
    ? `
In section 3's simulation of 10,000 scans the default's machines sent ${f(hb ?? 0, 2)} heartbeats a task, so a task's life here
comes to ${f(expected ?? 0, 2)} rows; the simulated batch itself counted **${f(big.rows_written_per_task, 2)} rows a task**, its own alarms,
machine checks and heartbeats included (the engine's count, as \`/status\` prices it).`
    : ""
}

Where the rows go (migration 12 of \`orchestrator/store/migrations.ts\`): a file is its row and its unique key (2); a task its
row and five index entries (6: task id, output key, pending, state, phase and file); a lease and a callback rewrite the
task's row and its state index entry (2 each) and the phase's one tally row (1 each: counters, the files a callback adds
and what its machine measured); an attempt that did not finish its task is one row and its attempts_failed entry (2),
written when it ends, and the one that finished it is the task row itself, listed for the timeline by its tasks_done
entry (1); the output file is 2. A heartbeat rewrites
the task's deadline only (1). How it is measured (\`bench/workerd/scale.bench-run.ts\`, \`life\`): the batch's own count
(\`meta.do_rows_written\`, every statement's \`rowsWritten\` plus a row per \`setAlarm\`), the create budget's rows counted
by wrapping its SQLite handle, both divided by the tasks.
`;
}
