// `npm run bench`: measures, prints and writes bench/RESULTS.md. Benchmarks assert nothing
// about speed; targets are printed next to the figures they concern.
//   1. Orchestrator scale (workerd, Fly API emulated at the fetch boundary)   bench/workerd/scale.bench-run.ts
//   2. Conversion: fly-worker pipeline vs the `vips` CLI                      bench/conversion.ts
//   3. Makespan: the real engine + emulator in simulated time, Fly's CPU model bench/workerd/makespan.bench-run.ts
//   4. Real-stack makespan: local stack, 200 small TIFFs, single vs default    bench/stack-makespan.ts
// BENCH_ONLY=conversion,scale,makespan,stack runs a subset, BENCH_CONVERSION_SIZES=25 fewer scan sizes and
// BENCH_REPEATS=1 fewer runs (RESULTS.md is written only for a full run at the default sizes).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { runConversionBench, SETTINGS, type ConversionFigure } from "./conversion.ts";
import { ensureVips } from "./vips.ts";
import { runStackMakespan, type StackFigures } from "./stack-makespan.ts";
import { FLY_CPU, FLY_PRICES, pricePerSecond, type Guest } from "../shared/fly-model.ts";
import { COST_MARGIN } from "../orchestrator/engine/sizing.ts";
import { MOZJPEG_CPU_S_PER_MP } from "../orchestrator/phases/tiff-conversion.ts";

const ROOT = new URL("../", import.meta.url).pathname;
process.chdir(ROOT);

const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`npm run bench needs Node >= 22.18 (the node devDependency); this is ${process.version}. Run \`npm install\` first.`);
  process.exit(1);
}

const only = new Set((process.env.BENCH_ONLY ?? "conversion,scale,makespan,stack").split(",").map((s) => s.trim()));
const CONVERSION_SIZES = (process.env.BENCH_CONVERSION_SIZES ?? "25,100,300").split(",").map(Number);
if (CONVERSION_SIZES.some((mp) => !Number.isFinite(mp) || mp <= 0)) {
  console.error(`BENCH_CONVERSION_SIZES must be megapixels separated by commas, got "${process.env.BENCH_CONVERSION_SIZES}"`);
  process.exit(1);
}
const CONVERSION_REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
/** The makespan's machines convert the 100 MP scan, with the contract's settings. */
const MAKESPAN_IMAGE_MP = 100;
const BOOT_DELAY_MS = Number(process.env.BENCH_BOOT_DELAY_MS ?? 5_000);

const t0 = performance.now();
const loadAtStart = os.loadavg();
/** The 1-minute load sampled through the run: the 5/15-minute averages at start remember work done before it. */
const loadSamples = [loadAtStart[0]];
const loadSampler = setInterval(() => loadSamples.push(os.loadavg()[0]), 10_000);
loadSampler.unref();
const log = (line: string) => console.log(line);

interface ScaleFigure {
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

interface MakespanFigure {
  mode: "baseline" | "single" | "pool";
  tasks: number;
  machines_limit: number;
  guest: Guest;
  slots: number;
  cpu_s_per_task: number;
  io_mb_per_task: number;
  net_mb_per_s: number;
  rtt_s: number;
  boot_delay_ms: number;
  makespan_s: number;
  machine_s: number;
  cost_usd: number;
  cpu_spent_s: number;
  throttled_machine_s: number;
  machines: number;
  lower_bound_s: number;
  creates_429: number;
  alarms: number;
  pool: { leases: number; waits: number; heartbeats: number; tail_s: number; peak_busy: { min: number; max: number } } | null;
  real_s: number;
}

/** Runs one workerd bench project and returns the figures it printed as `BENCH_JSON name …`. */
function vitestBench<T>(project: string, name: string, env: Record<string, string> = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    // On this Node (checked above), not the first `node` on PATH: run directly, that was Node 20.
    const vitest = join(ROOT, "node_modules/vitest/vitest.mjs");
    const child = spawn(process.execPath, [vitest, "run", "--config", "bench/vitest.bench.config.ts", "--project", project], {
      env: { ...process.env, ...env, FORCE_COLOR: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let figures: T | undefined;
    let tail = "";
    let buffered = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        const m = /^BENCH_JSON (\S+) (.*)$/.exec(line.trim());
        if (m && m[1] === name) figures = JSON.parse(m[2]) as T;
        else if (/^\s+(scale|makespan) /.test(line)) log(line);
        tail = (tail + line + "\n").slice(-4000);
      }
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      tail = (tail + chunk).slice(-4000);
    });
    child.on("close", (code) => {
      if (code === 0 && figures !== undefined) resolve(figures);
      else reject(new Error(`the ${project} bench failed (exit ${code}):\n${tail}`));
    });
  });
}

// ---------------------------------------------------------------------------------------

const vips = only.has("conversion") ? ensureVips(log) : null;
let conversion: ConversionFigure[] = [];
let conversionS = 0;
if (only.has("conversion")) {
  log(`Conversion: fly-worker pipeline vs ${vips!.version}, ${CONVERSION_SIZES.join("/")} MP, ${CONVERSION_REPEATS} runs each`);
  const t = performance.now();
  conversion = (await runConversionBench({ sizes: CONVERSION_SIZES, repeats: CONVERSION_REPEATS, log })).figures;
  conversionS = (performance.now() - t) / 1000;
}
const makespanImage = conversion.find((f) => Math.round(f.megapixels) === MAKESPAN_IMAGE_MP && f.setting === "contract" && f.side === "pipeline");

let scale: ScaleFigure[] = [];
let scaleS = 0;
if (only.has("scale")) {
  log("Orchestrator scale: 1,000 / 10,000 / 100,000 tasks in one BatchDO (workerd)");
  const t = performance.now();
  scale = await vitestBench<ScaleFigure[]>("scale", "scale");
  scaleS = (performance.now() - t) / 1000;
}

let makespan: MakespanFigure[] = [];
let makespanS = 0;
/** CPU-seconds of one 100 MP conversion: measured (GNU time user + system of the contract run) when section 2 ran. */
const makespanCpuS = makespanImage ? makespanImage.cpu_s : Number(process.env.BENCH_CPU_S ?? 14.3);
/** Assumed R2 ↔ Fly machine throughput: ~800 Mbit/s (third-party 1 GB download benchmarks from R2 in US East, 2026). */
const NET_BYTES_PER_S = Number(process.env.BENCH_NET_BYTES_PER_S ?? 100e6);
/** Lease + presign + storage request round trips per task (4 × ~50 ms). */
const RTT_S = 0.2;
if (only.has("makespan")) {
  log(`Makespan: real engine + Fly emulator + Fly's CPU model in simulated time, ${makespanCpuS.toFixed(2)} CPU-s per conversion, ${BOOT_DELAY_MS} ms boot`);
  const t = performance.now();
  const env = {
    BENCH_CPU_S: String(makespanCpuS),
    BENCH_BOOT_DELAY_MS: String(BOOT_DELAY_MS),
    BENCH_FILE_BYTES: String(makespanImage?.tiff_bytes ?? 254_000_000),
    BENCH_OUT_BYTES: String(makespanImage?.output_bytes ?? 26_000_000),
    BENCH_NET_BYTES_PER_S: String(NET_BYTES_PER_S),
    BENCH_RTT_S: String(RTT_S),
  };
  makespan = await vitestBench<MakespanFigure[]>("makespan", "makespan", { ...env, BENCH_MAKESPAN_SIZES: "1000,10000", BENCH_MAKESPAN_MODES: "baseline,single,pool" });
  makespanS = (performance.now() - t) / 1000;
}

let stack: StackFigures | null = null;
let stackS = 0;
const STACK_TASKS = 200;
if (only.has("stack")) {
  log(`Real-stack makespan: local stack, ${STACK_TASKS} small TIFFs, single-task vs default pool, emulator create limit 1/s burst 3`);
  const t = performance.now();
  stack = await runStackMakespan({ tasks: STACK_TASKS, log });
  stackS = (performance.now() - t) / 1000;
}

const totalS = (performance.now() - t0) / 1000;

// ---------------------------------------------------------------------------------------
// Report

const f = (x: number, digits = 1) => x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const mb = (bytes: number) => f(bytes / 1024 / 1024, 1);
const n0 = (x: number) => Math.round(x).toLocaleString("en-US");

function git(args: string[]): string {
  try {
    return execFileSync("git", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "unknown";
  }
}

function packageVersion(name: string): string {
  const path = join(ROOT, "node_modules", name, "package.json");
  return existsSync(path) ? (JSON.parse(readFileSync(path, "utf8")) as { version: string }).version : "?";
}

const cpus = os.cpus();
clearInterval(loadSampler);
loadSamples.push(os.loadavg()[0]);
const busiest = Math.max(...loadSamples);
const machine = [
  ...(busiest > cpus.length
    ? [`- **Warning: the 1-minute load average reached ${f(busiest, 1)} on ${cpus.length} cores during this run: other work competed for the CPU, so timings (not row counts, sizes or the simulated makespan) are dominated by noise. Re-run on an idle machine before comparing timings.**`]
    : []),
  `- Date: ${new Date().toISOString()}`,
  `- Machine: ${cpus.length} × ${cpus[0]?.model ?? "unknown CPU"}, ${f(os.totalmem() / 1024 ** 3, 1)} GiB RAM, ${os.type()} ${os.release()} (${os.arch()})`,
  `- Load average (1/5/15 min) at start ${loadAtStart.map((x) => f(x, 2)).join(" / ")}, at end ${os.loadavg().map((x) => f(x, 2)).join(" / ")}; 1-minute load sampled every 10 s during the run: max ${f(busiest, 2)} — the machine is shared, so figures are medians`,
  `- Node ${process.version}; sharp ${sharp.versions.sharp} (libvips ${sharp.versions.vips}); ${vips?.version ?? "vips CLI not run"}; vitest ${packageVersion("vitest")}, @cloudflare/vitest-plugin ${packageVersion("@cloudflare/vitest-plugin")}, wrangler ${packageVersion("wrangler")}`,
  `- Commit: ${git(["rev-parse", "--short", "HEAD"])}${git(["status", "--porcelain", "--untracked-files=no"]) ? " (with uncommitted changes in the tree)" : ""}`,
  `- \`npm run bench\` wall time: ${f(totalS / 60, 1)} min (conversion ${f(conversionS, 0)} s, scale ${f(scaleS, 0)} s, makespan ${f(makespanS, 0)} s, stack ${f(stackS, 0)} s)`,
].join("\n");

function scaleSection(): string {
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

function conversionSection(): string {
  if (conversion.length === 0) return "";
  const sizes = [...new Set(conversion.map((c) => c.megapixels))];
  const lines: string[] = [];
  for (const mp of sizes) {
    const at = conversion.filter((c) => c.megapixels === mp);
    const c0 = at[0];
    lines.push(
      `### ${f(mp, 1)} MP (${c0.width}×${c0.height}, LZW TIFF ${mb(c0.tiff_bytes)} MiB; \`guestFor\` picks ${c0.guest.cpu_kind}-cpu-${c0.guest.cpus}x, ${c0.guest.memory_mb} MB)`,
      "",
      "| settings | side | wall time | CPU time | MP/s | peak RSS | fits the machine | output | vs vips, pipeline in-process ÷ vips process | vs vips, process ÷ process |",
      "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    );
    for (const c of at) {
      const vipsSame = at.find((x) => x.setting === c.setting && x.side === "vips");
      const vipsRef = at.find((x) => x.setting === "optimised" && x.side === "vips")!;
      const time = c.in_process_s ?? c.process_s;
      let ratio = "";
      let ratioProcess = "";
      if (c.side === "pipeline" && vipsSame) {
        ratio = `**${f(time / vipsSame.process_s, 2)}×**`;
        ratioProcess = `**${f(c.process_s / vipsSame.process_s, 2)}×**`;
      } else if (c.side === "pipeline") ratio = `(${f(time / vipsRef.process_s, 1)}× vips Huffman-optimised; not the same settings)`;
      const timeText = c.side === "pipeline" ? `${f(time, 2)} s (process ${f(c.process_s, 2)} s)` : `${f(time, 2)} s`;
      const fits = c.peak_rss_mb <= c.guest.memory_mb ? `yes (${n0(c.guest.memory_mb)} MB)` : `**no** (${n0(c.guest.memory_mb)} MB)`;
      lines.push(
        `| ${SETTINGS[c.setting].label}${c.encoder && c.setting === "contract" ? `<br>chosen: ${c.encoder}` : ""} | ${c.side === "pipeline" ? "fly-worker pipeline" : "vips CLI"} | ${timeText} | ${f(c.cpu_s, 2)} s | ${n0(c.mp_per_s)} | ${n0(c.peak_rss_mb)} MiB | ${fits} | ${mb(c.output_bytes)} MiB | ${ratio} | ${ratioProcess} |`,
      );
    }
    lines.push("");
  }
  const same = conversion.filter((c) => c.side === "pipeline" && SETTINGS[c.setting].vips);
  const worst = Math.max(
    ...same.map((c) => c.in_process_s! / conversion.find((x) => x.megapixels === c.megapixels && x.setting === c.setting && x.side === "vips")!.process_s),
  );
  const worstProcess = Math.max(
    ...same.map((c) => c.process_s / conversion.find((x) => x.megapixels === c.megapixels && x.setting === c.setting && x.side === "vips")!.process_s),
  );
  const contract = conversion.filter((c) => c.side === "pipeline" && c.setting === "contract");
  const cpuPerMp = contract.map((c) => `${f(c.megapixels, 0)} MP ${f(c.cpu_s / c.megapixels, 3)}`).join(", ");
  const overRss = conversion.filter((c) => c.side === "pipeline" && c.peak_rss_mb > c.guest.memory_mb);
  return `## 2. Conversion: fly-worker pipeline vs \`vips\` CLI

**Target: within 1.1× of \`vips\` at identical settings; peak RSS within the machine \`guestFor\` picks.** Worst
time ratio at identical settings, two honest figures for two questions: **${f(worst, 2)}×** with the pipeline timed inside
its process (what a pool machine, which starts Node once, pays per task) and **${f(worstProcess, 2)}×** process to process
(what a single-task machine, which starts Node and loads sharp for every task, pays). Pipeline runs over their machine's memory: ${overRss.length === 0 ? "none" : overRss.map((c) => `${f(c.megapixels, 0)} MP ${c.setting}`).join(", ")}.

${lines.join("\n")}
How it is measured (\`bench/conversion.ts\`, \`bench/convert-one.ts\`): each run is its own process under GNU
\`time\` (wall time, peak RSS of that process), ${CONVERSION_REPEATS} runs per cell, interleaved, medians reported. The pipeline side
runs fly-worker's own code — \`readTiffDirectories\`, \`selectPages\`, \`planEncoder\`, \`convertPage\` (file input,
\`sequentialRead\`, autoOrient, flatten, sRGB, JPEG) — with the machine's env (\`MALLOC_ARENA_MAX=2\`, as in
fly-worker/Dockerfile); its **wall time** is measured inside the process from reading the TIFF header to the JPEG
on disk (the process time, which adds Node start and loading sharp, is shown beside it); its peak RSS is the
whole Node process. The vips side is \`vips jpegsave IN OUT --Q 95 --subsample-mode on --strip
[--optimize-coding]\` (Debian's libvips-tools, libjpeg-turbo), its wall time the whole process. Both use
every core (2 threads here). Download and upload are not included. The contract row is what a machine of the
\`guestFor\` size runs by default (JPEG_QUALITY 95, MOZJPEG true): \`planEncoder\` keeps mozjpeg when its memory
model says it fits that machine and falls back to the streaming encoder when it does not; Debian's vips has no
mozjpeg, so that row has no same-settings comparison. **CPU time** is the process's user + system time (GNU time): the figure Fly's CPU quota is charged, and the rate
the sizing uses (contract encoder, CPU-seconds per megapixel, whole process: ${cpuPerMp}; \`tiff-conversion.ts\` assumes
${MOZJPEG_CPU_S_PER_MP} + 0.3 s process start, from the idle run at 667b496). Inputs are generated once per machine (cached in
${"`$TMPDIR/fanout-bench/`"}): a colour ramp overlaid with film grain, LZW-compressed, so that TIFF and JPEG bytes per
pixel are those of real scans.
`;
}

const guestText = (g: Guest) => `${g.cpu_kind === "shared" ? "shared-cpu" : "performance"}-${g.cpus}x ${n0(g.memory_mb)} MB`;
const usd = (x: number, digits = 2) => `$${x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })}`;

function makespanSection(): string {
  if (makespan.length === 0) return "";
  const m0 = makespan[0];
  const label = { baseline: "baseline: one shared-cpu-1x 1 GB machine per scan", single: "`\"pool\": false`: one machine per scan, sized by guestFor", pool: "default: pool mode, auto-sized" };
  const rows = makespan.map(
    (m) =>
      `| ${n0(m.tasks)} | ${label[m.mode]} | ${guestText(m.guest)} × ${n0(m.machines)}, ${m.slots} slot(s) | ${n0(m.makespan_s)} s (${f(m.makespan_s / 3600, 2)} h) | ${n0(m.lower_bound_s)} s | ${f(m.makespan_s / m.lower_bound_s, 3)}× | ${n0(m.machine_s)} s | ${usd(m.cost_usd)} | ${usd(m.cost_usd / m.tasks, 5)} | ${n0(m.cpu_spent_s)} s | ${n0(m.throttled_machine_s)} s | ${m.creates_429} | ${n0(m.alarms)} | ${f(m.real_s, 1)} s |`,
  );
  const sizes = [...new Set(makespan.map((m) => m.tasks))];
  const targets = sizes.flatMap((n) => {
    const base = makespan.find((m) => m.tasks === n && m.mode === "baseline");
    const pool = makespan.find((m) => m.tasks === n && m.mode === "pool");
    const single = makespan.find((m) => m.tasks === n && m.mode === "single");
    if (!base || !pool) return [];
    return [
      `| ${n0(n)} | **${f(base.makespan_s / pool.makespan_s, 1)}×** | **${f(pool.makespan_s / pool.lower_bound_s, 3)}×** | **${usd(base.cost_usd / n, 5)} → ${usd(pool.cost_usd / n, 5)}** (${f(pool.cost_usd / base.cost_usd, 3)}×) | ${single ? `${n0(single.makespan_s)} s, ${usd(single.cost_usd / n, 5)} per scan` : "—"} |`,
    ];
  });
  const p = (g: Guest) => usd(pricePerSecond(g) * 3600, 4);
  return `## 3. Makespan under Fly's CPU quota, create limit, network and prices (real engine + emulator, simulated time)

**Targets at ${n0(10_000)} scans of 100 MP (issue 14): the default settings ≥ 20× shorter makespan than one shared-cpu-1x 1 GB
machine per scan (what the replaced system runs), within 1.25× of the ramp-aware bound, and a lower estimated cost per scan.**

| scans | speed-up, baseline ÷ default | default makespan ÷ ramp-aware bound | cost per scan, baseline → default | \`"pool": false\` (guestFor per scan) |
|---:|---:|---:|---:|---:|
${targets.join("\n")}

| scans | configuration | machines (size × count, slots each) | makespan | bound | makespan ÷ bound | machine-seconds | estimated cost | per scan | CPU-seconds spent | machine-seconds throttled | creates answered 429 | alarms | real time |
|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${rows.join("\n")}

The model's assumptions, one line each:

| assumption | value | source |
|---|---|---|
| CPU quota, shared vCPU | ${FLY_CPU.shared.quotaMs} ms per ${FLY_CPU.periodMs} ms (6.25%) per vCPU, pooled across the machine's vCPUs; 100% while a burst balance lasts | ${FLY_CPU.source} |
| burst balance | ${FLY_CPU.shared.initialBalanceS} s at start (per machine, not per vCPU: the docs do not say it scales), accrues unused quota up to ${FLY_CPU.shared.maxBalanceSPerCpu} s per vCPU | Fly staff, community.fly.io "CPU Quotas Update" (2025-01), via issue 14; max: the docs |
| CPU quota, performance vCPU | 100% | ${FLY_CPU.source} |
| prices | shared ${usd(FLY_PRICES.perCpuMonth.shared)}/CPU-month with ${FLY_PRICES.includedMbPerCpu.shared} MB, performance ${usd(FLY_PRICES.perCpuMonth.performance)}/CPU-month with ${FLY_PRICES.includedMbPerCpu.performance} MB, RAM ${usd(FLY_PRICES.extraRamGbMonth)}/GB-month; e.g. shared-cpu-1x 1 GB ${p({ cpu_kind: "shared", cpus: 1, memory_mb: 1024 })}/h, performance-1x 2 GB ${p({ cpu_kind: "performance", cpus: 1, memory_mb: 2048 })}/h | ${FLY_PRICES.source} |
| one conversion | ${f(m0.cpu_s_per_task, 2)} CPU-seconds on one thread (${makespanImage ? "measured: section 2's contract run of the 100 MP scan, GNU time user + system, median" : "BENCH_CPU_S"}) | section 2 |
| bytes per scan | ${f(m0.io_mb_per_task, 0)} MB in + out (section 2's 100 MP TIFF and its JPEG), sharing the machine's network | section 2 |
| network, machine ↔ R2 | ${f(m0.net_mb_per_s, 0)} MB/s per machine, shared by its slots (assumed: ~800 Mbit/s, third-party 1 GB download benchmarks from R2 in US East, 2026; the local S3 measured ${stack ? `${n0(stack.s3.get_mb_per_s)} MB/s GET, ${n0(stack.s3.put_mb_per_s)} MB/s PUT on loopback` : "—"}, section 4) | assumption |
| round trips per task | ${f(m0.rtt_s, 1)} s (lease, presign and storage requests, 4 × ~50 ms) | assumption |
| boot | ${f(m0.boot_delay_ms / 1000, 1)} s from create to started | assumption (as before) |
| create limit | 1 request/s, burst 3, per app; enforced by the emulator, budgeted by the engine | TOOLCHAIN.md (community.fly.io) |
| machines at once | MAX_CONCURRENT_MACHINES ${n0(m0.machines_limit)} (wrangler.jsonc) | — |
| billing | each machine from its create request to its stop, per second, at its size's price | ${FLY_PRICES.source} |

How it is built (\`bench/workerd/makespan.bench-run.ts\`): the real BatchDO (discovery, planning, alarm loop, create
budget, concurrency limit, machine checks, leases, callbacks through the Worker's \`fetch\`) and the real emulator core,
run as a discrete-event simulation in virtual time (\`Date\` faked; the bench fires each alarm and each emulator timer).
Each machine is \`MachineModel\` (shared/fly-model.ts): a fluid model in which its running tasks share its CPUs (each up to
one thread), its quota (a shared machine runs at 100% while its pooled balance lasts, then at 6.25% per vCPU) and its
network (evenly); a task is its round trips, download, conversion and upload. **baseline** runs the same engine in
single-task mode with every machine run and billed as shared-cpu-1x 1 GB (the replaced system's size; the engine's own
choice is the \`"pool": false\` row). **default** starts the batch with no pool settings: pool mode, and the engine sizes
the pool (\`orchestrator/engine/sizing.ts\`: for 1–16 slots per machine on shared or performance vCPUs, the pool the
create limit and MAX_CONCURRENT_MACHINES allow, its makespan from the ramp and the CPU model and its cost at Fly's prices;
the shortest makespan within ${f(COST_MARGIN * 100, 0)}% of the cheapest configuration that does not run throttled).
**Bound** — single: max(every create at the create limit, all tasks' machine time over MAX_CONCURRENT_MACHINES); pool:
the ramp-aware bound, the earliest T with Σ rate × max(0, T − ready_i) = tasks, machine i ready at its create (at the
create limit) + boot and completing tasks at rate = min(slots ÷ (round trips + transfer at full network speed + CPU time),
network ÷ bytes per task). Machine-seconds are each machine's time from create to stop; its cost that time at its size's
per-second price. No randomness is left (no faults), so one run per row is reported.
`;
}

function stackSection(): string {
  if (!stack) return "";
  const single = stack.runs.find((r) => r.mode === "single");
  const pool = stack.runs.find((r) => r.mode === "pool");
  const rows = stack.runs.map(
    (r) =>
      `| ${r.mode === "single" ? "`\"pool\": false` (one machine per TIFF)" : "default (pool, auto-sized)"} | ${n0(r.tasks)} | ${r.status} (${n0(r.completed)} done, ${n0(r.failed)} failed) | **${f(r.wall_s, 1)} s** | ${n0(r.machines_created)} | ${r.machine_seconds === null ? "—" : `${f(r.machine_seconds, 0)} s`} | ${r.estimated_cost_usd === null ? "—" : usd(r.estimated_cost_usd, 5)} |`,
  );
  return `## 4. Real-stack makespan: the local stack, ${n0(single?.tasks ?? STACK_TASKS)} small TIFFs, single-task vs the default pool

Measured in one run (\`bench/stack-makespan.ts\`): \`npm start\`'s stack — the orchestrator under \`wrangler dev\`, the Fly
Machines API emulator starting each machine as a real fly-worker process, the local S3 — with the emulator enforcing Fly's
create limit (1/s, burst 3) and the engine budgeting it, MAX_CONCURRENT_MACHINES ${stack.max_concurrent_machines} (the local default).
The same ${n0(single?.tasks ?? STACK_TASKS)} TIFFs (${f(stack.tiff_bytes / 1024, 1)} KiB each on average, the sample generator's kinds) are uploaded twice and
converted first with \`"pool": false\`, then with no pool settings (the default). Wall time is from enqueue to DONE.

| mode | TIFFs | outcome | wall time | machines created | machine-seconds (status) | estimated cost at Fly's prices (status) |
|---|---:|---|---:|---:|---:|---:|
${rows.join("\n")}

**Speed-up, single ÷ default: ${single && pool && [single, pool].every((r) => r.status === "DONE" && r.completed === r.tasks) ? `${f(single.wall_s / pool.wall_s, 2)}×` : "— (a run did not end DONE with every TIFF converted)"}.** Single-task mode needs a create per TIFF, so
it cannot finish before (${n0(single?.tasks ?? STACK_TASKS)} − 3) s at 1 create/s; the pool needs a handful of creates. Local S3 throughput (one
${f(stack.s3.bytes / 1024 / 1024, 0)} MiB object over loopback): PUT ${n0(stack.s3.put_mb_per_s)} MB/s, GET ${n0(stack.s3.get_mb_per_s)} MB/s. The processes share this
machine's ${os.cpus().length} cores with the orchestrator and the emulator (no CPU quota here: that is section 3's model).
`;
}

const report = `# fanout benchmarks

Written by \`npm run bench\` (bench/run.ts). Benchmarks measure; they assert nothing. Figures are medians of
repeated runs; every ratio compares figures measured in the same run.

${machine}

${scaleSection()}
${conversionSection()}
${makespanSection()}
${stackSection()}`;

console.log(`\n${report}`);
if (only.size === 4 && process.env.BENCH_CONVERSION_SIZES === undefined) {
  writeFileSync(join(ROOT, "bench/RESULTS.md"), report);
  log(`wrote bench/RESULTS.md (${f(totalS / 60, 1)} min)`);
} else {
  log(`BENCH_ONLY=${[...only].join(",")}${process.env.BENCH_CONVERSION_SIZES ? `, BENCH_CONVERSION_SIZES=${process.env.BENCH_CONVERSION_SIZES}` : ""}: bench/RESULTS.md not written`);
}
