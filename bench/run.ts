// `npm run bench`: measures, prints and writes bench/RESULTS.md. Benchmarks assert nothing
// about speed; targets are printed next to the figures they concern.
//   1. Orchestrator scale and a task's whole life in rows (workerd)          bench/workerd/scale.bench-run.ts
//   2. Conversion: fly-worker pipeline vs the `vips` CLI; the encoder trade-off bench/conversion.ts
//   3. Makespan and all-in cost: the real engine + emulator in simulated time  bench/workerd/makespan.bench-run.ts
//   4. Real-stack makespan: local stack, 200 small TIFFs, single vs default    bench/stack-makespan.ts
//   5. PDF: the PDF job vs Debian's pdftoppm, text and scan pages, 1,000 pages  bench/pdf.ts
//   6. The fleet: batches at once, the real engine and fleet in simulated time bench/workerd/fleet.bench-run.ts
// BENCH_ONLY=conversion,scale,makespan,stack,pdf,fleet runs a subset (BENCH_PDF_PAGES, BENCH_PDF_LONG_PAGES size section 5; BENCH_ONLY=fleet
// rewrites section 6 of RESULTS.md alone, BENCH_FLEET_SCALE and BENCH_FLEET_SCENARIOS size it), BENCH_CONVERSION_SIZES=25 fewer scan sizes,
// BENCH_REPEATS=1 fewer runs, BENCH_MAKESPAN_SETS=main,small,sensitivity (or main-default) fewer simulations (RESULTS.md
// is written only for a full run at the default sizes).
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { stripVTControlCharacters } from "node:util";
import { join } from "node:path";
import sharp from "sharp";
import { runConversionBench, type ConversionFigure } from "./conversion.ts";
import { ensureVips } from "./vips.ts";
import { runStackMakespan, type StackFigures } from "./stack-makespan.ts";
import { fleetSection, type FleetFigures, writeFleetSection } from "./fleet-report.ts";
import { conversionSection } from "./report/conversion.ts";
import { encoderSection } from "./report/encoders.ts";
import { f } from "./report/format.ts";
import { makespanRuns, type ScanFigures, scansOf } from "./makespan-runs.ts";
import { makespanSection, type MakespanFigure } from "./report/makespan.ts";
import { callbackSection, lifeSection, type LifeFigure, type ScaleFigure } from "./report/scale.ts";
import { stackSection } from "./report/stack.ts";
import { ensurePdftoppm, pdfSection, runPdfBench } from "./pdf.ts";
import { NETWORK } from "../shared/cost-model.ts";

const ROOT = new URL("../", import.meta.url).pathname;
process.chdir(ROOT);

const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`npm run bench needs Node >= 22.18 (the node devDependency); this is ${process.version}. Run \`npm install\` first.`);
  process.exit(1);
}

const SECTIONS = ["conversion", "scale", "makespan", "stack", "pdf", "fleet"];
const only = new Set((process.env.BENCH_ONLY ?? SECTIONS.join(",")).split(",").map((s) => s.trim()));
const CONVERSION_SIZES = (process.env.BENCH_CONVERSION_SIZES ?? "25,100,300").split(",").map(Number);
if (CONVERSION_SIZES.some((mp) => !Number.isFinite(mp) || mp <= 0)) {
  console.error(`BENCH_CONVERSION_SIZES must be megapixels separated by commas, got "${process.env.BENCH_CONVERSION_SIZES}"`);
  process.exit(1);
}
const CONVERSION_REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const MAKESPAN_SETS = new Set((process.env.BENCH_MAKESPAN_SETS ?? "main,small,sensitivity").split(",").map((s) => s.trim()));
const BOOT_DELAY_MS = Number(process.env.BENCH_BOOT_DELAY_MS ?? 5_000);
/** A task's request round trips, 4 × ~50 ms: a pool task's lease, the input's GET, the output's presign and PUT (bench/workerd/sim-machines.ts roundTripS says which are in a download turn). */
const RTT_S = 0.2;
const STACK_TASKS = 200;

const t0 = performance.now();
const loadAtStart = os.loadavg();
/** The 1-minute load sampled through the run: the 5/15-minute averages at start remember work done before it. */
const loadSamples = [loadAtStart[0]];
const loadSampler = setInterval(() => loadSamples.push(os.loadavg()[0]), 10_000);
loadSampler.unref();
const log = (line: string) => console.log(line);

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
      for (const raw of lines) {
        // vitest colours the first line after its "stdout |" header even with FORCE_COLOR=0: a full-scale
        // fleet run's figures were lost to it once (its BENCH_JSON line began with \x1b[22m\x1b[39m).
        const line = stripVTControlCharacters(raw);
        const m = /^BENCH_JSON (\S+) (.*)$/.exec(line.trim());
        if (m && m[1] === name) figures = JSON.parse(m[2]) as T;
        else if (/^\s+\(?(scale|makespan|fleet) /.test(line)) log(line);
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

let scale: { callbacks: ScaleFigure[]; lives: LifeFigure[] } = { callbacks: [], lives: [] };
let scaleS = 0;
if (only.has("scale")) {
  log("Orchestrator scale: 1,000 / 10,000 / 100,000 tasks in one BatchDO, and a task's whole life in rows (workerd)");
  const t = performance.now();
  scale = await vitestBench<typeof scale>("scale", "scale");
  scaleS = (performance.now() - t) / 1000;
}

/** The scans the makespan simulates: this run's contract conversions where measured (section 2), else the starting figures. */
const contract = (mp: number) => conversion.find((c) => Math.round(c.megapixels) === mp && c.setting === "contract" && c.side === "pipeline");
const scans: ScanFigures = { measured100: contract(100) ?? null, measured25: contract(25) ?? null };
let makespan: MakespanFigure[] = [];
let makespanS = 0;
const runs = makespanRuns(scans, MAKESPAN_SETS);
if (only.has("makespan")) {
  log(`Makespan: real engine + Fly emulator + Fly's CPU model in simulated time, ${runs.length} simulations, ${BOOT_DELAY_MS} ms boot`);
  const t = performance.now();
  makespan = await vitestBench<MakespanFigure[]>("makespan", "makespan", {
    BENCH_MAKESPAN_RUNS: JSON.stringify(runs),
    BENCH_BOOT_DELAY_MS: String(BOOT_DELAY_MS),
    BENCH_RTT_S: String(RTT_S),
  });
  // Kept whatever is written below, as the fleet's are: a subset's report is only printed.
  mkdirSync(join(ROOT, ".local"), { recursive: true });
  writeFileSync(join(ROOT, ".local", "bench-makespan.json"), JSON.stringify({ scans, makespan }));
  makespanS = (performance.now() - t) / 1000;
}

/** The fleet's batches are 100 MP scans as the makespan simulates them (measured in section 2 when it ran). */
const fleetScan = scansOf(scans)[100];
let fleet: FleetFigures | null = null;
let fleetS = 0;
if (only.has("fleet")) {
  log("The fleet: batches at once through the real engine and fleet, simulated time");
  const t = performance.now();
  fleet = await vitestBench<FleetFigures>("fleet", "fleet", {
    BENCH_CPU_S: String(fleetScan.cpuS),
    BENCH_BOOT_DELAY_MS: String(BOOT_DELAY_MS),
    BENCH_FILE_BYTES: String(Math.round(fleetScan.fileBytes)),
    BENCH_OUT_BYTES: String(Math.round(fleetScan.outBytes)),
    BENCH_NET_BYTES_PER_S: String(NETWORK.machineBytesPerS),
    BENCH_RTT_S: String(RTT_S),
  });
  // Kept whatever is written below: 30 minutes of figures are not printed only once.
  mkdirSync(join(ROOT, ".local"), { recursive: true });
  writeFileSync(join(ROOT, ".local", "bench-fleet.json"), JSON.stringify(fleet));
  fleetS = (performance.now() - t) / 1000;
}

let stack: StackFigures | null = null;
let stackS = 0;
if (only.has("stack")) {
  log(`Real-stack makespan: local stack, ${STACK_TASKS} small TIFFs, single-task vs the default, emulator create limit 1/s burst 3`);
  const t = performance.now();
  stack = await runStackMakespan({ tasks: STACK_TASKS, log });
  stackS = (performance.now() - t) / 1000;
}

let pdf: Awaited<ReturnType<typeof runPdfBench>> = { figures: [], long: [] };
let pdfS = 0;
const PDF = { dpi: 300, quality: 95, pages: Number(process.env.BENCH_PDF_PAGES ?? 20), longPages: Number(process.env.BENCH_PDF_LONG_PAGES ?? 1000) };
if (only.has("pdf")) {
  ensurePdftoppm(log);
  log(`PDF: the PDF job vs pdftoppm at ${PDF.dpi} DPI q${PDF.quality}, ${PDF.pages} text and ${PDF.pages} scan pages; ${PDF.longPages}-page PDFs through the whole job`);
  const t = performance.now();
  pdf = await runPdfBench({ ...PDF, repeats: CONVERSION_REPEATS, log });
  pdfS = (performance.now() - t) / 1000;
}

const totalS = (performance.now() - t0) / 1000;

// ---------------------------------------------------------------------------------------
// Report

function popplerVersion(): string {
  const r = spawnSync("pdftoppm", ["-v"], { encoding: "utf8" });
  return `${r.stderr}${r.stdout}`.match(/version ([0-9.]+)/)?.[0] ?? "poppler";
}

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
const meanLoad = loadSamples.reduce((a, b) => a + b, 0) / loadSamples.length;
const machine = [
  ...(busiest > cpus.length
    ? [`- **Warning: the 1-minute load average reached ${f(busiest, 1)} on ${cpus.length} cores during this run (mean ${f(meanLoad, 1)}): other work competed for the CPU, so timings (not row counts, sizes, CPU-seconds or the simulated makespan) are dominated by noise. Re-run on an idle machine before comparing timings.**`]
    : []),
  `- Date: ${new Date().toISOString()}`,
  `- Machine: ${cpus.length} × ${cpus[0]?.model ?? "unknown CPU"}, ${f(os.totalmem() / 1024 ** 3, 1)} GiB RAM, ${os.type()} ${os.release()} (${os.arch()})`,
  `- Load average (1/5/15 min) at start ${loadAtStart.map((x) => f(x, 2)).join(" / ")}, at end ${os.loadavg().map((x) => f(x, 2)).join(" / ")}; 1-minute load sampled every 10 s during the run: mean ${f(meanLoad, 2)}, max ${f(busiest, 2)} — the machine is shared, so figures are medians`,
  `- Node ${process.version}; sharp ${sharp.versions.sharp} (libvips ${sharp.versions.vips}); ${vips?.version ?? "vips CLI not run"}; vitest ${packageVersion("vitest")}, @cloudflare/vitest-plugin ${packageVersion("@cloudflare/vitest-plugin")}, wrangler ${packageVersion("wrangler")}`,
  `- Commit: ${git(["rev-parse", "--short", "HEAD"])}${git(["status", "--porcelain", "--untracked-files=no"]) ? " (with uncommitted changes in the tree)" : ""}`,
  `- \`npm run bench\` wall time: ${f(totalS / 60, 1)} min (conversion ${f(conversionS, 0)} s, scale ${f(scaleS, 0)} s, makespan ${f(makespanS, 0)} s, stack ${f(stackS, 0)} s, pdf ${f(pdfS, 0)} s, fleet ${f(fleetS, 0)} s)`,
].join("\n");

const report = `# fanout benchmarks

Written by \`npm run bench\` (bench/run.ts). Benchmarks measure; they assert nothing. Figures are medians of
repeated runs; every ratio compares figures measured in the same run.

${machine}

${callbackSection(scale.callbacks)}
${lifeSection(scale.lives, makespan)}
${conversionSection(conversion, CONVERSION_REPEATS)}
${encoderSection(conversion)}
${makespanSection(makespan, scans, stack)}
${stackSection(stack, STACK_TASKS)}
${pdfSection({ ...pdf, dpi: PDF.dpi, quality: PDF.quality, popplerVersion: only.has("pdf") ? popplerVersion() : "" })}
${fleet ? fleetSection(fleet, fleetScan.cpuS) : ""}`;

console.log(`\n${report}`);
if (SECTIONS.every((s) => only.has(s)) && process.env.BENCH_CONVERSION_SIZES === undefined && process.env.BENCH_MAKESPAN_SETS === undefined) {
  writeFileSync(join(ROOT, "bench/RESULTS.md"), report);
  log(`wrote bench/RESULTS.md (${f(totalS / 60, 1)} min)`);
} else if (only.size === 1 && fleet && (fleet.a || fleet.b || fleet.c) && (process.env.BENCH_FLEET_SCALE ?? "1") === "1") {
  writeFleetSection(join(ROOT, "bench/RESULTS.md"), fleetSection(fleet, fleetScan.cpuS));
  log("wrote section 6 of bench/RESULTS.md");
} else {
  log(`BENCH_ONLY=${[...only].join(",")}${process.env.BENCH_CONVERSION_SIZES ? `, BENCH_CONVERSION_SIZES=${process.env.BENCH_CONVERSION_SIZES}` : ""}${process.env.BENCH_MAKESPAN_SETS ? `, BENCH_MAKESPAN_SETS=${process.env.BENCH_MAKESPAN_SETS}` : ""}: bench/RESULTS.md not written`);
}
