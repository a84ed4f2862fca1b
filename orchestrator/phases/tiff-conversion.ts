// TIFF_CONVERSION: every TIFF of the batch becomes a JPEG (one per page) next to it.
// The original TIFF stays in the file list; its JPEG(s) are added.
import { z } from "zod";
import { CallbackBody, type FileEntry } from "../../shared/contracts.ts";
import { fileName, isTiff, jpegKeyCandidates, pageKey, splitExtension } from "../../shared/keys.ts";
import type { GuestSize } from "../fly/api.ts";
import { chooseGuest, type TaskWork } from "../engine/sizing.ts";
import type { Phase, TaskView, WorkRates } from "./types.ts";

const MB = 1024 * 1024;

/**
 * The one starting figure for what a conversion costs, shared by the sizing and by the makespan
 * bench's simulated machines: CPU-seconds per megapixel of the contract encoder (mozjpeg Q95) on
 * one thread, from the latest `npm run bench` (bench/RESULTS.md section 2, the 100 MP contract
 * run: 27.57 CPU-s, GNU time user + system, less the process start, over 100 MP, at d802233).
 * After the first tasks of a phase the engine sizes from what the batch's machines measured.
 */
export const CONVERSION_CPU_S_PER_MP = 0.273;
/** Node start and loading sharp, CPU-seconds (the same bench: a 25 MP run less its pixels). */
export const PROCESS_START_CPU_S = 0.3;
/** Pixels per TIFF byte of the bench's LZW scans (100 MP in 242.6 MiB); uncompressed 8-bit RGB is 0.33. */
export const PIXELS_PER_TIFF_BYTE = 0.39;
/** JPEG bytes per pixel at Q95 with mozjpeg (24.7 MiB for 100 MP). */
export const JPEG_BYTES_PER_PIXEL = 0.26;

/**
 * What converting a TIFF of `sizeBytes` takes: CPU-seconds from its pixels at the conversion's
 * rate (the starting figure, or the batch's measured one), memory for the decoded image and the
 * encoder's buffers (~765 MB for a 100 MP scan; a TIFF's bytes are a fair bound of that), bytes
 * in and out.
 */
export function tiffWork(sizeBytes: number, rates: WorkRates = {}): TaskWork {
  const pixels = sizeBytes * (rates.pixelsPerByte ?? PIXELS_PER_TIFF_BYTE);
  return {
    cpuS: PROCESS_START_CPU_S + (pixels / 1e6) * (rates.cpuSPerMp ?? CONVERSION_CPU_S_PER_MP),
    parallelism: 1,
    memoryMb: 512 + Math.ceil((sizeBytes * 3) / MB),
    inBytes: sizeBytes,
    outBytes: pixels * JPEG_BYTES_PER_PIXEL,
  };
}

/**
 * Machine size from the input size: the Fly guest the objective picks for one task on its own
 * machine (engine/sizing.ts chooseGuest). Small scans fit a shared vCPU's burst balance; large
 * ones run cheaper and faster on a performance vCPU.
 */
export function guestFor(sizeBytes: number): GuestSize {
  return chooseGuest(tiffWork(sizeBytes)).guest;
}

/** The JPEG settings a manifest directory's processing_config may ask for; unknown keys are ignored. */
const ProcessingConfig = z.looseObject({
  jpeg_quality: z.number({ message: "jpeg_quality must be a number" }).int("jpeg_quality must be a whole number").min(1, "jpeg_quality must be 1–100").max(100, "jpeg_quality must be 1–100").optional(),
  chroma_subsampling: z.enum(["4:2:0", "4:4:4"], { message: "chroma_subsampling must be \"4:2:0\" or \"4:4:4\"" }).optional(),
  colour: z.enum(["auto", "rgb"], { message: "colour must be \"auto\" or \"rgb\"" }).optional(),
});

/** The machine env vars that carry conversion settings; task params with these names pass through. */
export const CONVERSION_ENV = ["JPEG_QUALITY", "MOZJPEG", "JPEG_CHROMA", "JPEG_COLOUR"] as const;
export type ConversionEnv = Partial<Record<(typeof CONVERSION_ENV)[number], string>>;

/**
 * A manifest directory's `processing_config` as machine env (only what it sets; the worker's
 * defaults are quality 95, mozjpeg, 4:2:0, colour "auto"), or a clear error naming what is wrong.
 */
export function conversionSettings(processingConfig: unknown): { ok: true; env: ConversionEnv } | { ok: false; error: string } {
  if (processingConfig === undefined || processingConfig === null) return { ok: true, env: {} };
  const parsed = ProcessingConfig.safeParse(processingConfig);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => (i.path.length === 0 ? "processing_config must be an object" : i.message));
    return { ok: false, error: `processing_config is invalid: ${[...new Set(problems)].join("; ")}` };
  }
  const env: ConversionEnv = {};
  const { jpeg_quality, chroma_subsampling, colour } = parsed.data;
  if (jpeg_quality !== undefined) env.JPEG_QUALITY = String(jpeg_quality);
  if (chroma_subsampling !== undefined) env.JPEG_CHROMA = chroma_subsampling;
  if (colour !== undefined) env.JPEG_COLOUR = colour;
  return { ok: true, env };
}

/**
 * The callback's JPEGs as file entries: named by their keys (which the engine checks are reserved
 * for the task), never by a name the machine sent; the reported size and dimensions are checked
 * against the objects themselves before they count (engine/verify.ts).
 */
function outputsOf(task: TaskView, cb: Extract<CallbackBody, { status: "success" }>): FileEntry[] {
  const dir = task.output_key.slice(0, task.output_key.lastIndexOf("/") + 1);
  const listed = cb.outputs && cb.outputs.length > 0
    ? cb.outputs
    : [{ r2_key: cb.output_r2_key, file_size: cb.output_file_size, width: cb.width, height: cb.height }];
  return listed.map((o) => ({
    r2_key: o.r2_key,
    logical_path: dir + fileName(o.r2_key),
    file_name: fileName(o.r2_key),
    file_size: o.file_size,
    content_type: "image/jpeg",
    source_r2_key: task.input_key,
    ...(o.width !== undefined && o.height !== undefined ? { width: o.width, height: o.height } : {}),
  }));
}

export const tiffConversion: Phase<CallbackBody> = {
  name: "TIFF_CONVERSION",
  slug: "tiff",
  outputContentType: "image/jpeg",
  limits: { bootTimeoutMs: 10 * 60_000, runTimeoutMs: 15 * 60_000 },

  plan(file) {
    if (!isTiff(file.r2_key, file.content_type)) return null;
    const base = { input_key: file.r2_key, output_key_candidates: jpegKeyCandidates(file.r2_key), size_bytes: file.file_size };
    // The manifest directory's processing_config asks for quality, chroma or colour; a bad one fails the file, saying why.
    const settings = conversionSettings(file.processing_config);
    return settings.ok ? { ...base, params: settings.env } : { ...base, error: settings.error };
  },

  guest: guestFor,
  work: tiffWork,

  machine(task) {
    const guest = guestFor(task.size_bytes);
    const conversion: Record<string, string> = {};
    for (const name of CONVERSION_ENV) if (task.params[name] !== undefined) conversion[name] = String(task.params[name]);
    return {
      env: {
        ...conversion,
        INPUT_R2_KEY: task.input_key,
        OUTPUT_R2_KEY: task.output_key,
        MEMORY_MB: String(guest.memory_mb),
      },
    };
  },

  callback: CallbackBody,

  /** `scan-p002.jpg`; when that is taken (a file `scan-p002.tif` exists), `scan-p002-2.jpg`, … */
  *pageKeyCandidates(outputKey, page) {
    const first = pageKey(outputKey, page);
    yield first;
    const { stem, ext } = splitExtension(first);
    for (let n = 2; n < 1000; n++) yield `${stem}-${n}${ext}`;
  },

  result(task, cb) {
    if (cb.status === "error") {
      const retryable = (cb as { retryable?: unknown }).retryable;
      return { ok: false, error: cb.error, retryable: retryable !== false };
    }
    const outputs = outputsOf(task, cb);
    // Page 1 is the key the task was given; the engine checks every key is reserved for the task.
    if (outputs[0]?.r2_key !== task.output_key || cb.output_r2_key !== task.output_key) {
      return { ok: false, error: `callback listed output ${cb.output_r2_key}, but this task writes ${task.output_key}`, retryable: false };
    }
    const warnings = [...(cb.pages_skipped ?? []).map((s) => `page ${s.page} skipped: ${s.reason}`), ...(cb.page_notes ?? []).map((n) => `page ${n.page}: ${n.note}`)];
    return warnings.length > 0 ? { ok: true, add: outputs, warnings } : { ok: true, add: outputs };
  },
};
