// Conversion: the fly-worker pipeline (sharp) against the `vips` command line on generated
// 25, 100 and 300 MP TIFFs. Every run is its own process, timed and measured by GNU time
// (wall seconds, peak RSS); figures are medians of REPEATS runs, interleaved so that noise
// from other work on the machine spreads over all of them.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { guestFor } from "../orchestrator/phases/tiff-conversion.ts";
import sharp from "sharp";

export const SETTINGS = {
  baseline: { label: "Q95 4:2:0, Huffman optimisation off (streaming)", vips: ["--Q", "95", "--subsample-mode", "on", "--strip"] },
  optimised: { label: "Q95 4:2:0, Huffman optimisation on", vips: ["--Q", "95", "--subsample-mode", "on", "--strip", "--optimize-coding"] },
  trellis: { label: "Q95 4:2:0, trellis quantisation only (with Huffman optimisation)", vips: null },
  contract: { label: "contract: mozjpeg Q95, as planEncoder picks for the guestFor machine", vips: null },
} as const;
export type SettingName = keyof typeof SETTINGS;

export interface ConversionFigure {
  megapixels: number;
  width: number;
  height: number;
  tiff_bytes: number;
  guest: { cpu_kind: string; cpus: number; memory_mb: number };
  setting: SettingName;
  side: "pipeline" | "vips";
  runs: number;
  /** Median wall time of the process (GNU time). */
  process_s: number;
  /** Median CPU time of the process, user + system (GNU time): what a CPU quota is charged. */
  cpu_s: number;
  /** Pipeline only: median time inside the process, from reading the TIFF header to the JPEG on disk. */
  in_process_s: number | null;
  mp_per_s: number;
  peak_rss_mb: number;
  output_bytes: number;
  /** Pipeline only: the encoder the pipeline chose (contract setting) and why. */
  encoder: string | null;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** 3:2 scans of about `mp` megapixels. */
export function sizeFor(mp: number): { width: number; height: number } {
  const width = Math.round(Math.sqrt((mp * 1e6 * 3) / 2));
  return { width, height: Math.round((mp * 1e6) / width) };
}

/**
 * A scan-like TIFF: a colour ramp upscaled from a small noisy seed (as the test corpus makes
 * its large scan) overlaid with film grain, LZW-compressed. Without the grain a JPEG encoder
 * has almost nothing to do; with it, file and JPEG sizes per pixel are those of real scans
 * (~2.5 B/px TIFF, ~0.35 B/px JPEG at Q95), so encoder time is too.
 */
export async function generateScan(path: string, width: number, height: number): Promise<void> {
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const sw = Math.ceil(width / 10);
  const sh = Math.ceil(height / 10);
  const ramp = Buffer.alloc(sw * sh * 3);
  for (let y = 0; y < sh; y++) {
    for (let x = 0; x < sw; x++) {
      ramp.set([Math.floor((x * 255) / sw), Math.floor((y * 255) / sh), 110 + Math.floor(random() * 40)], (y * sw + x) * 3);
    }
  }
  const T = 1021; // a prime, so the grain tile's seams do not line up with 8×8 JPEG blocks
  const grain = Buffer.alloc(T * T * 3);
  for (let i = 0; i < grain.length; i++) grain[i] = Math.max(0, Math.min(255, Math.round(128 + (random() + random() + random() - 1.5) * 20)));
  const tile = await sharp(grain, { raw: { width: T, height: T, channels: 3 } }).png().toBuffer();
  await sharp(ramp, { raw: { width: sw, height: sh, channels: 3 } })
    .resize(width, height, { kernel: "cubic" })
    .composite([{ input: tile, tile: true, blend: "overlay" }])
    .removeAlpha()
    .tiff({ compression: "lzw", predictor: "horizontal" })
    .toFile(path);
}

/** GNU time around a command: wall seconds, CPU seconds (user + system) and peak RSS (MiB) of that process. */
export function timed(command: string[], env: NodeJS.ProcessEnv): { wall_s: number; cpu_s: number; rss_mb: number; stdout: string } {
  const stats = join(tmpdir(), `fanout-bench-time-${process.pid}.txt`);
  const r = spawnSync("/usr/bin/time", ["-f", "%e %U %S %M", "-o", stats, ...command], { encoding: "utf8", env, maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`${command.join(" ")} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const [wall, user, system, rssKb] = readFileSync(stats, "utf8").trim().split(/\s+/).slice(-4).map(Number);
  rmSync(stats, { force: true });
  return { wall_s: wall, cpu_s: user + system, rss_mb: rssKb / 1024, stdout: r.stdout };
}

export async function runConversionBench(opts: {
  sizes: number[];
  repeats: number;
  log: (line: string) => void;
}): Promise<{ figures: ConversionFigure[]; workDir: string }> {
  const workDir = join(tmpdir(), "fanout-bench");
  mkdirSync(workDir, { recursive: true });
  const node = process.execPath;
  // The machine's env (fly-worker/Dockerfile): MALLOC_ARENA_MAX lets sharp use every core.
  const env = { ...process.env, MALLOC_ARENA_MAX: "2", NODE_ENV: "production" };

  const figures: ConversionFigure[] = [];
  for (const mp of opts.sizes) {
    const { width, height } = sizeFor(mp);
    const tiff = join(workDir, `grain-${width}x${height}.tif`);
    if (!existsSync(tiff)) {
      const t = performance.now();
      await generateScan(`${tiff}.partial.tif`, width, height);
      renameSync(`${tiff}.partial.tif`, tiff);
      opts.log(`  generated ${mp} MP TIFF ${width}×${height} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    }
    const tiffBytes = statSync(tiff).size;
    const guest = guestFor(tiffBytes);
    const out = join(workDir, "out.jpg");
    type Sample = { wall_s: number; cpu_s: number; rss_mb: number; in_s: number | null; bytes: number; encoder: string | null };
    const samples = new Map<string, Sample[]>();
    const jobs: { setting: SettingName; side: "pipeline" | "vips" }[] = [];
    for (const setting of Object.keys(SETTINGS) as SettingName[]) {
      jobs.push({ setting, side: "pipeline" });
      if (SETTINGS[setting].vips) jobs.push({ setting, side: "vips" });
    }
    for (let rep = 0; rep < opts.repeats; rep++) {
      for (const job of jobs) {
        rmSync(out, { force: true });
        let sample: Sample;
        if (job.side === "pipeline") {
          const r = timed([node, "bench/convert-one.ts", tiff, out, job.setting, String(guest.memory_mb)], env);
          const json = JSON.parse(r.stdout.trim().split("\n").pop()!) as { wall_ms: number; bytes: number; settings: { mozjpeg: boolean; optimise_coding: boolean; reason: string } };
          const s = json.settings;
          sample = {
            wall_s: r.wall_s,
            cpu_s: r.cpu_s,
            rss_mb: r.rss_mb,
            in_s: json.wall_ms / 1000,
            bytes: json.bytes,
            encoder: `${s.mozjpeg ? "mozjpeg" : "libjpeg-turbo-compatible"}, optimise_coding ${s.optimise_coding} (${s.reason})`,
          };
        } else {
          const r = timed(["vips", "jpegsave", tiff, out, ...SETTINGS[job.setting].vips!], env);
          sample = { wall_s: r.wall_s, cpu_s: r.cpu_s, rss_mb: r.rss_mb, in_s: null, bytes: statSync(out).size, encoder: null };
        }
        const key = `${job.setting}/${job.side}`;
        samples.set(key, [...(samples.get(key) ?? []), sample]);
      }
    }
    rmSync(out, { force: true });
    for (const job of jobs) {
      const s = samples.get(`${job.setting}/${job.side}`)!;
      const inProcess = job.side === "pipeline" ? median(s.map((x) => x.in_s!)) : null;
      const processS = median(s.map((x) => x.wall_s));
      const fig: ConversionFigure = {
        megapixels: (width * height) / 1e6,
        width,
        height,
        tiff_bytes: tiffBytes,
        guest,
        setting: job.setting,
        side: job.side,
        runs: s.length,
        process_s: processS,
        cpu_s: median(s.map((x) => x.cpu_s)),
        in_process_s: inProcess,
        mp_per_s: (width * height) / 1e6 / (inProcess ?? processS),
        peak_rss_mb: median(s.map((x) => x.rss_mb)),
        output_bytes: median(s.map((x) => x.bytes)),
        encoder: s[0].encoder,
      };
      figures.push(fig);
      opts.log(
        `  ${mp} MP ${job.setting.padEnd(9)} ${job.side.padEnd(8)} ${(inProcess ?? processS).toFixed(2)} s  ${fig.peak_rss_mb.toFixed(0)} MB RSS  ${(fig.output_bytes / 1e6).toFixed(1)} MB out`,
      );
    }
  }
  return { figures, workDir };
}
