// One task: download the TIFF, pick its full-resolution pages, convert and upload each, and
// build the success callback. Every failure surfaces as a TaskError for the error callback.
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import type { CallbackOutput, CallbackSuccess } from "../shared/contracts.ts";
import { fileName } from "../shared/keys.ts";
import { checkSupported, convertPage, defaultMaxInputPixels, planEncoder, type EncoderSettings } from "./convert.ts";
import type { WorkerEnv } from "./env.ts";
import { log, since } from "./log.ts";
import { taskStorage } from "./storage.ts";
import { readTiffDirectories, selectPages } from "./tiff.ts";

export interface Timings {
  download_time_ms: number;
  inspect_time_ms: number;
  conversion_time_ms: number;
  upload_time_ms: number;
}

export interface TaskProgress {
  timings: Timings;
}

/**
 * This process's peak RSS in MB. VmHWM, not getrusage's maxRSS: Linux carries maxRSS across
 * execve, so a worker spawned by a big parent (a test runner, an emulator) would report its parent's.
 */
export function peakRssMb(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) return Math.round(Number(m[1]) / 1024);
  } catch {
    // not Linux: fall back to getrusage
  }
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

/** Runs the task in `workDir`; `progress.timings` stays readable when it throws. */
export async function runTask(env: WorkerEnv, workDir: string, progress: TaskProgress): Promise<CallbackSuccess> {
  const timings = progress.timings;
  const storage = taskStorage(env);
  const input = join(workDir, "input.tif");

  let t = performance.now();
  log.info("TiffConversion", "download.start", { key: env.INPUT_R2_KEY, access: env.INPUT_URL ? "presigned" : "keys" });
  const downloaded = await storage.download(input);
  timings.download_time_ms = since(t);
  log.info("TiffConversion", "download.done", { bytes: downloaded.bytes, content_type: downloaded.contentType, duration_ms: timings.download_time_ms, peak_rss_mb: peakRssMb() });

  t = performance.now();
  const directories = await readTiffDirectories(input);
  const { convert, skipped } = selectPages(directories);
  const maxPixels = env.MAX_INPUT_PIXELS ?? defaultMaxInputPixels(env.memory.mb);
  for (const page of convert) checkSupported(page, maxPixels);
  const plans = convert.map((page) => planEncoder(page, { quality: env.JPEG_QUALITY, mozjpeg: env.MOZJPEG, machineMb: env.memory.mb, machineMbSource: env.memory.source }));
  timings.inspect_time_ms = since(t);
  log.info("TiffConversion", "inspect.done", {
    tiff_pages: directories.length,
    pages: convert.map((d) => ({ page: d.index + 1, width: d.width, height: d.height, bits: d.bitsPerSample, samples: d.samplesPerPixel, orientation: d.orientation })),
    skipped_pages: skipped,
    max_input_pixels: maxPixels,
    duration_ms: timings.inspect_time_ms,
  });
  for (const s of skipped) log.warn("TiffConversion", "page.skipped", s);

  // Every key this task writes is reserved by the orchestrator before it is written.
  const keys = await storage.reserve(convert.length);
  const outputs: (CallbackOutput & { source_page: number; encoder?: EncoderSettings })[] = [];
  for (const [i, page] of convert.entries()) {
    const key = keys[i];
    const jpeg = join(workDir, `page-${i + 1}.jpg`);
    const encoder = plans[i];
    log.info("TiffConversion", "convert.start", { page: page.index + 1, output_page: i + 1, encoder });
    const converted = await convertPage(input, jpeg, page, encoder, maxPixels);
    timings.conversion_time_ms += converted.conversion_time_ms;
    log.info("TiffConversion", "convert.done", {
      page: page.index + 1,
      width: converted.width,
      height: converted.height,
      bytes: converted.bytes,
      duration_ms: converted.conversion_time_ms,
      peak_rss_mb: peakRssMb(),
    });

    t = performance.now();
    const uploaded = await storage.upload(i + 1, jpeg, "image/jpeg");
    const uploadMs = since(t);
    timings.upload_time_ms += uploadMs;
    log.info("TiffConversion", "upload.done", { page: page.index + 1, key, bytes: uploaded.bytes, duration_ms: uploadMs });
    await rm(jpeg, { force: true }); // disk holds one page at a time

    outputs.push({
      r2_key: key,
      file_name: fileName(key),
      file_size: uploaded.bytes,
      content_type: "image/jpeg",
      page: i + 1,
      source_page: page.index + 1,
      width: converted.width,
      height: converted.height,
      // Listed per page only where it differs from page 1's, keeping the callback small.
      encoder: i > 0 && JSON.stringify(encoder) !== JSON.stringify(plans[0]) ? encoder : undefined,
    });
  }
  storage.close();

  const first = outputs[0];
  return {
    task_id: env.TASK_ID,
    batch_id: env.BATCH_ID,
    status: "success",
    output_r2_key: first.r2_key,
    output_file_name: first.file_name,
    output_file_size: first.file_size,
    outputs,
    pages: outputs.length,
    width: first.width,
    height: first.height,
    encoder: plans[0],
    input: { r2_key: env.INPUT_R2_KEY, bytes: downloaded.bytes, tiff_pages: directories.length, skipped_pages: skipped },
  };
}
