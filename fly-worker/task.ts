// One task: download the TIFF, pick its full-resolution pages, convert and upload each, and
// build the success callback. Every failure surfaces as a TaskError for the error callback.
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import type { CallbackOutput, CallbackSuccess } from "../shared/contracts.ts";
import { fileName } from "../shared/keys.ts";
import { convertPage, defaultMaxInputPixels, planEncoder, type EncoderSettings } from "./convert.ts";
import { inspectPage, type PageKind } from "./kinds.ts";
import { preparePage } from "./prepare.ts";
import type { WorkerEnv } from "./env.ts";
import { TaskError } from "./errors.ts";
import { log, since } from "./log.ts";
import { taskStorage, whenDownloadFree } from "./storage.ts";
import { pageNumber, readTiff, selectPages, type TiffDirectory } from "./tiff.ts";

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

  const downloaded = await whenDownloadFree(async (queuedMs) => {
    log.info("TiffConversion", "download.start", { key: env.INPUT_R2_KEY, access: env.INPUT_URL ? "presigned" : "keys", queued_ms: queuedMs });
    const started = performance.now();
    const d = await storage.download(input);
    timings.download_time_ms = since(started);
    log.info("TiffConversion", "download.done", { bytes: d.bytes, content_type: d.contentType, duration_ms: timings.download_time_ms, peak_rss_mb: peakRssMb() });
    return d;
  });

  let t = performance.now();
  const { directories, broken } = await readTiff(input);
  const { convert, skipped } = selectPages(directories);
  const maxPixels = env.MAX_INPUT_PIXELS ?? defaultMaxInputPixels(env.memory.mb);
  // Pages that cannot be converted are skipped with their reason; the task fails only when none converts.
  const pagesSkipped: PageSkipped[] = broken.map((b) => ({ page: b.page, reason: b.reason }));
  const pages: { page: TiffDirectory; kind: PageKind; encoder: EncoderSettings }[] = [];
  const pageNotes: PageNote[] = [];
  for (const page of convert) {
    try {
      const kind = inspectPage(page, maxPixels);
      const encoder = planEncoder(page, { quality: env.JPEG_QUALITY, mozjpeg: env.MOZJPEG, chroma: env.JPEG_CHROMA, machineMb: env.memory.mb, machineMbSource: env.memory.source });
      pages.push({ page, kind, encoder });
    } catch (error) {
      // Too big for this machine is the machine's problem, not the page's: the whole task fails (and can be re-run bigger).
      if (!(error instanceof TaskError) || error.kind !== "input") throw error;
      pagesSkipped.push({ page: page.index + 1, reason: reasonOf(error, page) });
    }
  }
  timings.inspect_time_ms = since(t);
  log.info("TiffConversion", "inspect.done", {
    tiff_pages: directories.length + broken.length,
    pages: pages.map(({ page: d, kind }) => ({ page: d.index + 1, width: d.width, height: d.height, bits: d.bitsPerSample, samples: d.samplesPerPixel, orientation: d.orientation, ...kind })),
    skipped_pages: skipped,
    pages_skipped: pagesSkipped,
    max_input_pixels: maxPixels,
    duration_ms: timings.inspect_time_ms,
  });
  for (const s of skipped) log.warn("TiffConversion", "page.skipped", s);
  for (const s of pagesSkipped) log.warn("TiffConversion", "page.unconvertible", { ...s });

  // Every key this task may write is reserved by the orchestrator before it is written (one per
  // planned page; a page skipped at decode leaves its key unused, never another task's).
  const keys = pages.length > 0 ? await storage.reserve(pages.length) : [];
  const outputs: (CallbackOutput & { source_page: number; channels: 1 | 3; encoder?: EncoderSettings })[] = [];
  // The first output's settings (the first planned page may be skipped at decode).
  let firstEncoder: EncoderSettings | undefined;
  for (const { page, kind, encoder } of pages) {
    const outputPage = outputs.length + 1;
    const key = keys[outputPage - 1];
    const jpeg = join(workDir, `page-${outputPage}.jpg`);
    log.info("TiffConversion", "convert.start", { page: page.index + 1, output_page: outputPage, encoder });
    let converted;
    let prepared: { path: string } | undefined;
    const started = performance.now();
    try {
      // A page libvips cannot read as stored is rewritten first (prepare.ts); the rewrite is removed after.
      const p = kind.prepare ? await preparePage(input, page, kind, workDir, maxPixels) : undefined;
      prepared = p;
      if (p) log.info("TiffConversion", "prepare.done", { page: page.index + 1, steps: p.steps, duration_ms: since(started) });
      converted = await convertPage(p?.path ?? input, jpeg, p?.page ?? page, p?.kind ?? kind, encoder, maxPixels, env.JPEG_COLOUR);
      for (const note of [...(p?.notes ?? []), ...converted.notes]) pageNotes.push({ page: page.index + 1, note });
    } catch (error) {
      if (!(error instanceof TaskError) || error.kind !== "input") throw error;
      pagesSkipped.push({ page: page.index + 1, reason: reasonOf(error, page) });
      log.warn("TiffConversion", "page.unconvertible", { ...pagesSkipped.at(-1) });
      await rm(jpeg, { force: true });
      continue;
    } finally {
      if (prepared && prepared.path !== input) await rm(prepared.path, { force: true });
    }
    timings.conversion_time_ms += since(started);
    firstEncoder ??= encoder;
    log.info("TiffConversion", "convert.done", {
      page: page.index + 1,
      width: converted.width,
      height: converted.height,
      channels: converted.channels,
      bytes: converted.bytes,
      duration_ms: converted.conversion_time_ms,
      peak_rss_mb: peakRssMb(),
    });

    t = performance.now();
    const uploaded = await storage.upload(outputPage, jpeg, "image/jpeg");
    const uploadMs = since(t);
    timings.upload_time_ms += uploadMs;
    log.info("TiffConversion", "upload.done", { page: page.index + 1, key, bytes: uploaded.bytes, duration_ms: uploadMs });
    await rm(jpeg, { force: true }); // disk holds one page at a time

    outputs.push({
      r2_key: key,
      file_name: fileName(key),
      file_size: uploaded.bytes,
      content_type: "image/jpeg",
      page: outputPage,
      source_page: page.index + 1,
      width: converted.width,
      height: converted.height,
      channels: converted.channels,
      // Listed per page only where it differs from the first page's, keeping the callback small.
      encoder: outputPage > 1 && JSON.stringify(encoder) !== JSON.stringify(firstEncoder) ? encoder : undefined,
    });
  }
  storage.close();
  pagesSkipped.sort((a, b) => a.page - b.page);
  const first = outputs[0];
  if (!first || !firstEncoder) throw nothingConverted(pagesSkipped);
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
    encoder: firstEncoder,
    jpeg: { quality: firstEncoder.quality, chroma: firstEncoder.chroma_subsampling, mozjpeg: firstEncoder.mozjpeg, channels: first.channels },
    ...(pagesSkipped.length > 0 ? { pages_skipped: pagesSkipped } : {}),
    ...(pageNotes.length > 0 ? { page_notes: pageNotes } : {}),
    input: { r2_key: env.INPUT_R2_KEY, bytes: downloaded.bytes, tiff_pages: directories.length + broken.length, skipped_pages: skipped },
  };
}

/** Something the operator should know about a converted page (a range rule applied, a profile ignored). */
export interface PageNote {
  page: number;
  note: string;
}

export interface PageSkipped {
  /** 1-based page of the TIFF (its directory in the chain). */
  page: number;
  reason: string;
}

/** A page's TaskError as a skip reason: the "page N" it starts with is said by the list entry. */
function reasonOf(error: TaskError, page: TiffDirectory): string {
  return error.message.replace(new RegExp(`^page ${pageNumber(page)} `), "");
}

/** "1–3, 5 and 9": consecutive pages as ranges. */
export function pageList(pages: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < pages.length; ) {
    let j = i;
    while (j + 1 < pages.length && pages[j + 1] === pages[j] + 1) j++;
    parts.push(j > i + 1 ? `${pages[i]}–${pages[j]}` : j === i + 1 ? `${pages[i]}, ${pages[j]}` : `${pages[i]}`);
    i = j + 1;
  }
  return parts.length > 1 ? `${parts.slice(0, -1).join(", ")} and ${parts.at(-1)}` : (parts[0] ?? "");
}

/** The task's error when no page converted: the one reason, or each distinct reason once with its pages. */
function nothingConverted(skipped: PageSkipped[]): TaskError {
  if (skipped.length === 1) {
    const [only] = skipped;
    const message = /^(could not|input )/.test(only.reason) ? only.reason : `page ${only.page} ${only.reason}`;
    return new TaskError("input", message, { retryable: false });
  }
  // A reason is said once with its pages ("pages 1–15 (15): has …"), never once per page.
  const byReason = new Map<string, number[]>();
  for (const s of skipped) {
    const reason = s.reason.replace(/^could not decode page \d+ \(\d+×\d+\): /, "could not be decoded: ");
    byReason.set(reason, [...(byReason.get(reason) ?? []), s.page]);
  }
  const parts = [...byReason].map(([reason, pages]) => `${pages.length === 1 ? "page" : "pages"} ${pageList(pages)}${pages.length > 2 ? ` (${pages.length})` : ""}: ${reason}`);
  return new TaskError("input", `no page could be converted: ${parts.join("; ")}`, { retryable: false });
}
