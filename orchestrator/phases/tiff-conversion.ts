// TIFF_CONVERSION: every TIFF of the batch becomes a JPEG (one per page) next to it.
// The original TIFF stays in the file list; its JPEG(s) are added.
import { CallbackBody, type FileEntry } from "../../shared/contracts.ts";
import { fileName, isTiff, jpegKeyCandidates, pageKey, splitExtension } from "../../shared/keys.ts";
import type { Phase, TaskView } from "./types.ts";

const MB = 1024 * 1024;

/**
 * Machine size from the input size. sharp with mozjpeg holds the decoded image and the
 * encoder's buffers (~765 MB for a 100 MP scan); a TIFF's bytes are a fair lower bound of
 * its pixels, so memory grows with the file and the worker picks lighter encoder settings
 * when even the largest machine is too small.
 */
export function guestFor(sizeBytes: number): { cpu_kind: "shared" | "performance"; cpus: number; memory_mb: number } {
  const wantMb = 512 + Math.ceil((sizeBytes * 3) / MB);
  if (wantMb <= 1024) return { cpu_kind: "shared", cpus: 1, memory_mb: 1024 };
  if (wantMb <= 2048) return { cpu_kind: "shared", cpus: 1, memory_mb: 2048 };
  if (wantMb <= 4096) return { cpu_kind: "performance", cpus: 1, memory_mb: 4096 };
  return { cpu_kind: "performance", cpus: 2, memory_mb: 8192 };
}

function outputsOf(task: TaskView, cb: Extract<CallbackBody, { status: "success" }>): FileEntry[] {
  const dir = task.output_key.slice(0, task.output_key.lastIndexOf("/") + 1);
  const listed = cb.outputs && cb.outputs.length > 0
    ? cb.outputs
    : [{ r2_key: cb.output_r2_key, file_name: cb.output_file_name, file_size: cb.output_file_size }];
  return listed.map((o) => ({
    r2_key: o.r2_key,
    logical_path: dir + fileName(o.r2_key),
    file_name: o.file_name,
    file_size: o.file_size,
    content_type: "image/jpeg",
    source_r2_key: task.input_key,
  }));
}

export const tiffConversion: Phase<CallbackBody> = {
  name: "TIFF_CONVERSION",
  slug: "tiff",
  next: null,
  limits: { bootTimeoutMs: 10 * 60_000, runTimeoutMs: 15 * 60_000 },

  plan(file) {
    if (!isTiff(file.r2_key, file.content_type)) return null;
    return { input_key: file.r2_key, output_key_candidates: jpegKeyCandidates(file.r2_key), size_bytes: file.file_size };
  },

  guest: guestFor,

  machine(task) {
    const guest = guestFor(task.size_bytes);
    return {
      env: {
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
    return { ok: true, add: outputs };
  },
};
