// Which simulations the makespan bench runs and with what scans: pure, shared by bench/run.ts
// (which sends them to the workerd bench as JSON) and the report that reads their figures.
import type { ConversionFigure } from "./conversion.ts";
import { CONVERSION_CPU_S_PER_MP, PROCESS_START_CPU_S } from "../orchestrator/phases/tiff-conversion.ts";
import { NETWORK } from "../shared/cost-model.ts";

/** One simulation: the replaced system or the default, a batch of `tasks` scans. */
export interface RunSpec {
  name: string;
  mode: "baseline" | "default";
  tasks: number;
  megapixels: number;
  /** The TIFF's bytes (the manifest says so: the engine sizes from it) and its JPEG's. */
  fileBytes: number;
  outBytes: number;
  /** CPU-seconds one conversion really takes on the simulated machines. */
  cpuS: number;
  netBytesPerS: number;
}

export interface ScanFigures {
  measured100: ConversionFigure | null;
  measured25: ConversionFigure | null;
}

/** A scan as simulated: its bytes in and out and the CPU-seconds it really takes. */
interface Scan {
  megapixels: number;
  fileBytes: number;
  outBytes: number;
  cpuS: number;
}

/** The scans: 100 and 25 MP as section 2 measured them this run (else the starting figures), 5 MP from 25 MP's bytes per pixel and 100 MP's CPU rate. */
export function scansOf(s: ScanFigures): Record<5 | 25 | 100, Scan> {
  const m100 = s.measured100;
  const big: Scan = m100
    ? { megapixels: m100.megapixels, fileBytes: m100.tiff_bytes, outBytes: m100.output_bytes, cpuS: m100.cpu_s }
    : { megapixels: 100, fileBytes: 100e6 / 0.39, outBytes: 26e6, cpuS: PROCESS_START_CPU_S + 100 * CONVERSION_CPU_S_PER_MP };
  const rate = (big.cpuS - PROCESS_START_CPU_S) / big.megapixels;
  const m25 = s.measured25;
  const mid: Scan = m25
    ? { megapixels: m25.megapixels, fileBytes: m25.tiff_bytes, outBytes: m25.output_bytes, cpuS: m25.cpu_s }
    : { megapixels: 25, fileBytes: (big.fileBytes / big.megapixels) * 25, outBytes: (big.outBytes / big.megapixels) * 25, cpuS: PROCESS_START_CPU_S + 25 * rate };
  const small: Scan = { megapixels: 5, fileBytes: (mid.fileBytes / mid.megapixels) * 5, outBytes: (mid.outBytes / mid.megapixels) * 5, cpuS: PROCESS_START_CPU_S + 5 * rate };
  return { 5: small, 25: mid, 100: big };
}

const spec = (name: string, mode: RunSpec["mode"], tasks: number, scan: Scan, over: Partial<RunSpec> = {}): RunSpec => ({
  name,
  mode,
  tasks,
  megapixels: scan.megapixels,
  fileBytes: Math.round(scan.fileBytes),
  outBytes: Math.round(scan.outBytes),
  cpuS: scan.cpuS,
  netBytesPerS: NETWORK.machineBytesPerS,
  ...over,
});

/** The simulations: `main` (10,000 × 100 MP, both; `main-default` the default alone), `small` (10/200/1,000 × 5 and 25 MP, both), `sensitivity` (the default at 14 and 28 CPU-s, 25 and 50 MB/s). */
export function makespanRuns(s: ScanFigures, sets: Set<string>): RunSpec[] {
  const scans = scansOf(s);
  const runs: RunSpec[] = [];
  if (sets.has("main")) runs.push(spec("main baseline", "baseline", 10_000, scans[100]), spec("main default", "default", 10_000, scans[100]));
  // The default alone (its replaced system's simulation is the longest by far: ~10,000 throttled machines).
  if (sets.has("main-default") && !sets.has("main")) runs.push(spec("main default", "default", 10_000, scans[100]));
  if (sets.has("small")) {
    for (const mp of [5, 25] as const) for (const n of [10, 200, 1000]) runs.push(spec(`small ${n}x${mp} baseline`, "baseline", n, scans[mp]), spec(`small ${n}x${mp} default`, "default", n, scans[mp]));
  }
  if (sets.has("sensitivity")) {
    for (const cpuS of [14, 28]) runs.push(spec(`cpu ${cpuS} default`, "default", 10_000, { ...scans[100], cpuS }));
    for (const mbps of [25, 50]) runs.push(spec(`net ${mbps} default`, "default", 10_000, scans[100], { netBytesPerS: mbps * 1e6 }));
  }
  return runs;
}

