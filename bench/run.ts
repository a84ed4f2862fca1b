// `npm run bench`: measures, prints and writes bench/RESULTS.md. Benchmarks assert nothing
// about speed; targets are printed next to the figures they concern.
//   1. Orchestrator scale (workerd, Fly API emulated at the fetch boundary)   bench/workerd/scale.bench-run.ts
//   2. Conversion: fly-worker pipeline vs the `vips` CLI                      bench/conversion.ts
//   3. Makespan: the real engine + emulator in simulated time                 bench/workerd/makespan.bench-run.ts
// BENCH_ONLY=conversion,scale,makespan runs a subset (RESULTS.md is written only for a full run).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { runConversionBench, SETTINGS, type ConversionFigure } from "./conversion.ts";
import { ensureVips } from "./vips.ts";

const ROOT = new URL("../", import.meta.url).pathname;
process.chdir(ROOT);

const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`npm run bench needs Node >= 22.18 (the node devDependency); this is ${process.version}. Run \`npm install\` first.`);
  process.exit(1);
}

const only = new Set((process.env.BENCH_ONLY ?? "conversion,scale,makespan").split(",").map((s) => s.trim()));
const CONVERSION_SIZES = [25, 100, 300];
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
  mode: "single" | "pool";
  tasks: number;
  machines_limit: number;
  /** Tasks each machine converts at once (its lease loops; 1 in single mode) and its CPUs. */
  slots: number;
  cpus: number;
  conversion_ms: number;
  boot_delay_ms: number;
  makespan_s: number;
  machine_s: number;
  /** Machine-seconds × the machine's config.guest.cpus, summed. */
  cpu_s: number;
  busy_s: number;
  busy_cpu_s: number;
  boot_s: number;
  boot_cpu_s: number;
  machines: number;
  lower_bound_s: number;
  create_bound_s: number;
  work_bound_s: number;
  ramp_bound_s: number | null;
  creates_429: number;
  alarms: number;
  pool: { leases: number; tasks: number; waits: number; heartbeats: number; leases_lost: number; exit_done: number; exit_idle: number; exit_refused: number; slot_done: number; slot_idle: number; slot_refused: number; tail_s: number; tail_max_s: number; peak_busy: { min: number; max: number } } | null;
  real_s: number;
}

/** Runs one workerd bench project and returns the figures it printed as `BENCH_JSON name …`. */
function vitestBench<T>(project: string, name: string, env: Record<string, string> = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const vitest = join(ROOT, "node_modules/.bin/vitest");
    const child = spawn(vitest, ["run", "--config", "bench/vitest.bench.config.ts", "--project", project], {
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
const conversionMs = makespanImage ? Math.round(makespanImage.in_process_s! * 1000) : Number(process.env.BENCH_CONVERSION_MS ?? 12_900);

let scale: ScaleFigure[] = [];
let scaleS = 0;
if (only.has("scale")) {
  log("Orchestrator scale: 1,000 / 10,000 / 100,000 tasks in one BatchDO (workerd)");
  const t = performance.now();
  scale = await vitestBench<ScaleFigure[]>("scale", "scale");
  scaleS = (performance.now() - t) / 1000;
}

let makespan: MakespanFigure[] = [];
let makespanWide: MakespanFigure[] = [];
let makespanSlots: MakespanFigure[] = [];
let makespanS = 0;
/** The pool size that minimises the ramp-aware bound at 10,000 TIFFs: ≈ √(2 × work × create rate). */
const WIDE_TASKS = 10_000;
/** Tasks per machine in the slots row (its pool is production's 50 machines). */
const SLOTS = Number(process.env.BENCH_SLOTS ?? 8);
const wideMachines = Math.round(Math.sqrt(2 * WIDE_TASKS * (conversionMs / 1000) * 1));
if (only.has("makespan")) {
  log(`Makespan: real engine + Fly emulator in simulated time, ${conversionMs} ms per conversion, ${BOOT_DELAY_MS} ms boot`);
  const t = performance.now();
  const env = {
    BENCH_CONVERSION_MS: String(conversionMs),
    BENCH_BOOT_DELAY_MS: String(BOOT_DELAY_MS),
    BENCH_FILE_BYTES: String(makespanImage?.tiff_bytes ?? 256_000_000),
  };
  makespan = await vitestBench<MakespanFigure[]>("makespan", "makespan", { ...env, BENCH_MAKESPAN_SIZES: "1000,10000", BENCH_MAKESPAN_MODES: "single,pool" });
  makespanWide = await vitestBench<MakespanFigure[]>("makespan-wide", "makespan", { ...env, BENCH_WIDE_SIZES: String(WIDE_TASKS), BENCH_WIDE_MACHINES: String(wideMachines) });
  makespanSlots = await vitestBench<MakespanFigure[]>("makespan-slots", "makespan", { ...env, BENCH_SLOTS_SIZES: String(WIDE_TASKS), BENCH_SLOTS_MACHINES: "50", BENCH_SLOTS: String(SLOTS) });
  makespanS = (performance.now() - t) / 1000;
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
  `- \`npm run bench\` wall time: ${f(totalS / 60, 1)} min (conversion ${f(conversionS, 0)} s, scale ${f(scaleS, 0)} s, makespan ${f(makespanS, 0)} s)`,
].join("\n");

function scaleSection(): string {
  if (scale.length === 0) return "";
  const first = scale[0];
  const last = scale[scale.length - 1];
  const rows = scale.map(
    (s) =>
      `| ${n0(s.tasks)} | ${n0(s.discovery_ms)} ms | ${n0(s.callbacks_per_s)} | ${f(s.callback_p50_ms, 0)} / ${f(s.callback_p99_ms, 0)} ms | ${f(s.callback_mean_ms, 2)} ms | ${f(s.callback_loaded_p50_ms, 0)} / ${f(s.callback_loaded_p99_ms, 0)} ms | ${f(s.status_p50_ms, 0)} / ${f(s.status_p99_ms, 0)} ms | ${mb(s.db_bytes)} MiB | ${f(s.rows_written_per_callback, 1)} | ${f(s.rows_read_per_callback, 1)} |`,
  );
  const p50Ratio = last.callback_p50_ms / first.callback_p50_ms;
  const meanRatio = last.callback_mean_ms / first.callback_mean_ms;
  return `## 1. Orchestrator scale (workerd, Fly Machines API emulated at the fetch boundary)

| tasks | discovery | callbacks/s (${first.in_flight} in flight) | callback p50 / p99 (one at a time) | callback mean | callback p50 / p99 (${first.in_flight} in flight) | status p50 / p99 | DO storage | rows written / callback | rows read / callback |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${rows.join("\n")}

**Target: p50 callback latency at ${n0(last.tasks)} within 1.5× of ${n0(first.tasks)}.** Measured p50 ratio ${f(p50Ratio, 2)}× (mean ratio ${f(meanRatio, 2)}×).

How it is measured (\`bench/workerd/scale.bench-run.ts\`): for each size a manifest of N TIFFs is put in the R2
binding and \`BatchDO.start\` is called; **discovery** is the time until GET /status shows the batch in stage
\`run\` with N tasks: the real alarm loop reads and validates the manifest, inserts the files and plans every task
(the manifest path is used at every size: seeding 100,000 objects for a prefix listing takes ~100 s in miniflare's
R2, the manifest one put). The engine then creates machines against the Fly Machines API emulator
(\`local/fly-emulator/core.ts\`, routed from \`fetch\` to http://fly.test) with MAX_CONCURRENT_MACHINES 200 and a
create budget that never binds; the machines wait until the bench makes them call back. Each callback is a
signed POST through the Worker's \`fetch\` (token check, routing, DO RPC) for a machine the engine created, and
the engine spawns a replacement after each. ${first.timed_callbacks} callbacks are timed per size (equal at every size, so
the figures compare): ${first.timed_callbacks / 2} one at a time (latency), then ${first.timed_callbacks / 2} with ${first.in_flight} in flight (callbacks/s and loaded
latency). **Rows written/read per callback** are the DO's SQLite \`rowsWritten\`/\`rowsRead\` (\`BatchStore.work\`) over
the timed callbacks divided by their number, so they include the alarm work each callback triggers (creating the
next machine), not only the callback's own transaction. **DO storage** is \`sql.databaseSize\` with all N tasks
planned. **Status** is ${"`GET /status/:batchId`"}, 200 reads one at a time. Every figure is the median of ${first.runs} runs per size
(a new batch each), after one unreported warm-up run. workerd's clock advances in whole milliseconds (a Spectre
mitigation), so per-callback percentiles are whole ms; the mean is total time / callbacks. The engine's JSON
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
      "| settings | side | wall time | MP/s | peak RSS | fits the machine | output | time vs vips (same settings) |",
      "|---|---|---:|---:|---:|---|---:|---:|",
    );
    for (const c of at) {
      const vipsSame = at.find((x) => x.setting === c.setting && x.side === "vips");
      const vipsRef = at.find((x) => x.setting === "optimised" && x.side === "vips")!;
      const time = c.in_process_s ?? c.process_s;
      let ratio = "";
      if (c.side === "pipeline" && vipsSame) ratio = `**${f(time / vipsSame.process_s, 2)}×**`;
      else if (c.side === "pipeline") ratio = `(${f(time / vipsRef.process_s, 1)}× vips Huffman-optimised; not the same settings)`;
      const timeText = c.side === "pipeline" ? `${f(time, 2)} s (process ${f(c.process_s, 2)} s)` : `${f(time, 2)} s`;
      const fits = c.peak_rss_mb <= c.guest.memory_mb ? `yes (${n0(c.guest.memory_mb)} MB)` : `**no** (${n0(c.guest.memory_mb)} MB)`;
      lines.push(
        `| ${SETTINGS[c.setting].label}${c.encoder && c.setting === "contract" ? `<br>chosen: ${c.encoder}` : ""} | ${c.side === "pipeline" ? "fly-worker pipeline" : "vips CLI"} | ${timeText} | ${n0(c.mp_per_s)} | ${n0(c.peak_rss_mb)} MiB | ${fits} | ${mb(c.output_bytes)} MiB | ${ratio} |`,
      );
    }
    lines.push("");
  }
  const same = conversion.filter((c) => c.side === "pipeline" && SETTINGS[c.setting].vips);
  const worst = Math.max(
    ...same.map((c) => c.in_process_s! / conversion.find((x) => x.megapixels === c.megapixels && x.setting === c.setting && x.side === "vips")!.process_s),
  );
  const overRss = conversion.filter((c) => c.side === "pipeline" && c.peak_rss_mb > c.guest.memory_mb);
  return `## 2. Conversion: fly-worker pipeline vs \`vips\` CLI

**Target: within 1.1× of \`vips\` at identical settings; peak RSS within the machine \`guestFor\` picks.** Worst
time ratio at identical settings: ${f(worst, 2)}×. Pipeline runs over their machine's memory: ${overRss.length === 0 ? "none" : overRss.map((c) => `${f(c.megapixels, 0)} MP ${c.setting}`).join(", ")}.

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
mozjpeg, so that row has no same-settings comparison. Inputs are generated once per machine (cached in
${"`$TMPDIR/fanout-bench/`"}): a colour ramp overlaid with film grain, LZW-compressed, so that TIFF and JPEG bytes per
pixel are those of real scans.
`;
}

function makespanSection(): string {
  if (makespan.length === 0) return "";
  const m0 = makespan[0];
  const machineText = (m: MakespanFigure) => `${m.slots} / ${m.cpus}`;
  const row = (m: MakespanFigure) => {
    const bound = m.mode === "pool"
      ? `${n0(m.lower_bound_s)} s (pool ${n0(m.create_bound_s)} s, work ${n0(m.work_bound_s)} s)`
      : `${n0(m.lower_bound_s)} s (creates ${n0(m.create_bound_s)} s, work ${n0(m.work_bound_s)} s)`;
    return `| ${n0(m.tasks)} | ${m.mode} | ${n0(m.machines_limit)} | ${machineText(m)} | ${n0(m.makespan_s)} s (${f(m.makespan_s / 3600, 2)} h) | ${bound} | ${f(m.makespan_s / m.lower_bound_s, 3)}× | ${m.ramp_bound_s === null ? "—" : `${n0(m.ramp_bound_s)} s, ${f(m.makespan_s / m.ramp_bound_s, 3)}×`} | ${n0(m.machine_s)} s | ${f(m.machine_s / m.tasks, 2)} s | ${n0(m.cpu_s)} s | ${f(m.cpu_s / m.tasks, 2)} s | ${n0(m.machines)} | ${m.creates_429} | ${n0(m.alarms)} | ${f(m.real_s, 1)} s |`;
  };
  const all = [...makespan, ...makespanWide, ...makespanSlots];
  const sizes = [...new Set(makespan.map((m) => m.tasks))];
  const compare = sizes.flatMap((n) => {
    const single = makespan.find((m) => m.tasks === n && m.mode === "single");
    return all
      .filter((m) => m.tasks === n && m.mode === "pool")
      .flatMap((pool) =>
        single
          ? [
              `| ${n0(n)} | ${n0(pool.machines_limit)} | ${machineText(pool)} | **${f(single.makespan_s / pool.makespan_s, 2)}×** | ${f(pool.makespan_s / pool.lower_bound_s, 3)}× | ${f(single.machine_s / single.tasks, 2)} s → ${f(pool.machine_s / pool.tasks, 2)} s (${f(pool.machine_s / single.machine_s, 3)}×) | ${f(single.cpu_s / single.tasks, 2)} s → ${f(pool.cpu_s / pool.tasks, 2)} s (${f(pool.cpu_s / single.cpu_s, 3)}×) | ${n0(single.machines)} → ${n0(pool.machines)} |`,
            ]
          : [],
      );
  });
  const pools = all.filter((m) => m.pool);
  const poolDetail = pools.map((m) => {
    const idle = m.cpu_s - m.busy_cpu_s - m.boot_cpu_s;
    const p = m.pool!;
    return `| ${n0(m.tasks)} | ${n0(m.machines_limit)} | ${machineText(m)} | ${n0(p.leases)} | ${n0(p.waits)} | ${n0(p.heartbeats)} | ${n0(m.busy_cpu_s)} s | ${n0(m.boot_cpu_s)} s | ${n0(idle)} s (${f((100 * idle) / m.cpu_s, 2)}%) | ${n0(p.tail_s)} s (≤ ${f(p.tail_max_s, 1)} s each) | ${p.peak_busy.min}–${p.peak_busy.max} | ${p.exit_done} / ${p.exit_idle} / ${m.machines - p.exit_done - p.exit_idle - p.exit_refused} |`;
  });
  const wide = makespanWide[0];
  const slotted = makespanSlots[0];
  return `## 3. Makespan in both modes (real engine + Fly emulator, simulated time) — issue 6's yardstick

Each machine boots in ${f(m0.boot_delay_ms / 1000, 1)} s and converts for ${f(m0.conversion_ms / 1000, 2)} s (the measured median pipeline time of the
${MAKESPAN_IMAGE_MP} MP scan with the contract's settings, section 2); Fly's documented create limit of 1 request/s, burst 3, enforced by the
emulator and budgeted by the engine. **single**: one machine per TIFF (the engine's default). **pool**: the batch starts with
\`{ pool: true, pool_tasks_per_machine: N }\`; each machine runs N lease loops side by side (N slots) on a guest N times one
task's (CPUs and memory × N), and each slot leases task after task. The three pool rows at ${n0(WIDE_TASKS)} TIFFs: 1-slot machines
with wrangler.jsonc's MAX_CONCURRENT_MACHINES of 50; 1-slot machines with ${wide ? n0(wide.machines_limit) : "—"}, the pool size that minimises the
ramp-aware bound (≈ √(2 × conversion time × tasks × create rate)); and ${slotted ? `${slotted.slots}-slot machines (${slotted.cpus} CPUs each)` : "N-slot machines"} with 50, which
gives ${slotted ? n0(slotted.machines_limit * slotted.slots) : "50 × N"} slots from 50 creates. A slot's conversion time is the measured single-thread figure (mozjpeg encodes on one
thread) and each slot has a CPU of its own, so slots do not slow each other down in this model.

| TIFFs | mode | machines max | tasks at once / CPUs per machine | makespan | lower bound | makespan / bound | ramp-aware bound, makespan / it | machine-seconds | per scan | CPU-seconds | per scan | machines created | creates answered 429 | alarms run | real time |
|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${all.map(row).join("\n")}

**Issue 6's target at 10,000 TIFFs: ≥ 20× shorter makespan than one machine per TIFF, within 1.25× of the lower bound, fewer
machine-seconds per scan.** Machine-seconds are judged here as **CPU-seconds** (machine-seconds × the machine's
\`config.guest.cpus\`): Fly prices a machine by its CPUs and memory, both N times larger on an N-slot machine, so a
machine-second of an ${slotted ? slotted.cpus : "N"}-CPU machine is not a machine-second of a 1-CPU one. Plain machine-seconds per scan are shown too;
on N-slot machines they fall about N-fold by construction, which is not a saving.

| TIFFs | pool machines max | tasks at once / CPUs per machine | speed-up single ÷ pool | pool makespan / bound | machine-seconds per scan, single → pool | CPU-seconds per scan, single → pool | machines created, single → pool |
|---:|---:|---:|---:|---:|---:|---:|---:|
${compare.join("\n")}

Where pool machines' CPU-seconds go (busy = conversions, one slot's CPUs each; boot = every machine's CPUs during boot;
idle = the rest: CPUs of slots with no task, almost all of it the tail below; tail = each machine's time from its last
callback to its exit, summed; slots busy together = the fewest and most tasks any one machine had in flight at once;
exits: told \`done\` / idle timeout / destroyed by the engine when the phase finished):

| TIFFs | machines max | tasks at once / CPUs per machine | leases | \`wait\` answers | heartbeats | busy | boot | idle | tail | slots busy together (min–max per machine) | exits done / idle / destroyed |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${poolDetail.join("\n")}

How it is built (\`bench/workerd/makespan.bench-run.ts\`): not a model — the real BatchDO (discovery, planning,
alarm loop, create-rate token bucket, concurrency limit, machine and pool-machine checks, leases, callbacks through
the Worker's \`fetch\`) and the real emulator core (documented rate limits, boot delay, auto-destroy), run as a
discrete-event simulation. \`Date\` is faked in the test isolate (the DO runs there) and starts in 2100, so the
runtime never fires an alarm on its own; the bench advances virtual time to the earlier of the DO's next alarm and
the emulator's next timer, runs that alarm (exactly as \`runDurableObjectAlarm\` does) or fires those timers and
waits for the HTTP work they start, and repeats until the batch is DONE and every machine has stopped. A single-mode
machine converts, calls back and exits. A pool machine does what \`fly-worker/pool.ts\` does: after boot it starts
POOL_CONCURRENCY lease loops; each POSTs \`/lease/:batchId\` with the machine's signed LEASE_TOKEN, converts for the
measured time while heartbeating every \`heartbeat_ms\` (${f(m0.conversion_ms / 1000, 2)} s is under the default 20 s, so no heartbeat is due),
calls back, leases again; a loop ends on \`done\`, or when \`wait\` answers have kept it idle for IDLE_TIMEOUT_MS (60 s),
never sleeping past that deadline, and the machine exits when its last loop has ended.
**Lower bound** — single: max(creating every machine at the create limit, (N − 3 burst)/1 s; all conversion time over
MAX_CONCURRENT_MACHINES); pool: max(creating the pool, min(MAX_CONCURRENT_MACHINES, ⌈tasks / slots⌉) machines, at the
create limit + one boot; all conversion time over machines × slots). When those two are close, machines join the pool
one per second and the bound cannot be met: the **ramp-aware bound** is the earliest T at which machine i, ready at
create_i + boot and converting on all its slots from then on, could have done all the work,
Σ slots × max(0, T − ready_i) = N × conversion time. Machine-seconds are each machine's time from create to stop (boot +
conversions + idle; billing granularity ignored); CPU-seconds multiply each by the CPUs its create request asked for
(\`config.guest.cpus\`, as the emulator recorded it). Download and upload are not simulated (on an N-slot machine they
would share one network interface). No randomness is left (no faults, no retries), so one run per row is reported.
`;
}

const report = `# fanout benchmarks

Written by \`npm run bench\` (bench/run.ts). Benchmarks measure; they assert nothing. Figures are medians of
repeated runs; every ratio compares figures measured in the same run.

${machine}

${scaleSection()}
${conversionSection()}
${makespanSection()}`;

console.log(`\n${report}`);
if (only.size === 3) {
  writeFileSync(join(ROOT, "bench/RESULTS.md"), report);
  log(`wrote bench/RESULTS.md (${f(totalS / 60, 1)} min)`);
} else {
  log(`BENCH_ONLY=${[...only].join(",")}: bench/RESULTS.md not written`);
}
