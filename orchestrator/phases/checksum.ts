// CHECKSUM: the SHA-256 of every file of the batch — its inputs and every earlier phase's outputs —
// in the downstream file list (`sha256` on each entry), and a `sha256sum` sidecar beside each, written
// by the fly-worker's checksum mode. Opt-in: a batch runs it when its message's `phases` names it.
import { CHECKSUM_PHASE, ChecksumCallback, SIDECAR_CONTENT_TYPE, sidecarKeyCandidates } from "../../shared/checksum.ts";
import { fileName } from "../../shared/keys.ts";
import type { Phase, PhaseFile } from "./types.ts";

/** A sidecar this phase wrote (a redrive plans the phase again over a list that has them). */
export function isSidecar(file: Pick<PhaseFile, "r2_key" | "source_r2_key">): boolean {
  return file.source_r2_key !== undefined && file.r2_key === `${file.source_r2_key}.sha256`;
}

export const checksum: Phase<ChecksumCallback> = {
  name: CHECKSUM_PHASE,
  slug: "sum",
  outputContentType: SIDECAR_CONTENT_TYPE,
  optIn: true,
  // Hashing streams at network speed: a minute covers a few GB; the boot limit is the image pull's.
  limits: { bootTimeoutMs: 10 * 60_000, runTimeoutMs: 5 * 60_000 },

  plan: (file) => (isSidecar(file) ? null : { input_key: file.r2_key, output_key_candidates: sidecarKeyCandidates(file.r2_key), size_bytes: file.file_size }),

  // Memory does not grow with the input (streamed): the smallest machine does.
  guest: () => ({ cpu_kind: "shared", cpus: 1, memory_mb: 256 }),

  machine: (task) => ({ env: { INPUT_R2_KEY: task.input_key, OUTPUT_R2_KEY: task.output_key, MEMORY_MB: "256" } }),

  callback: ChecksumCallback,

  result(task, cb) {
    if (cb.status === "error") return { ok: false, error: cb.error, retryable: cb.retryable !== false };
    if (cb.output_r2_key !== task.output_key) {
      return { ok: false, error: `callback listed output ${cb.output_r2_key}, but this task writes ${task.output_key}`, retryable: false };
    }
    if (cb.input.r2_key !== task.input_key) {
      return { ok: false, error: `callback hashed ${cb.input.r2_key}, but this task's input is ${task.input_key}`, retryable: false };
    }
    const dir = task.output_key.slice(0, task.output_key.lastIndexOf("/") + 1);
    return {
      ok: true,
      add: [
        {
          r2_key: task.output_key,
          logical_path: dir + fileName(task.output_key),
          file_name: fileName(task.output_key),
          file_size: cb.output_file_size,
          content_type: "text/plain",
          source_r2_key: task.input_key,
          ...(cb.sidecar_sha256 ? { sha256: cb.sidecar_sha256 } : {}),
        },
      ],
      // The hashed file's own entry carries its digest downstream (fixity, as archives record it).
      inputFields: { sha256: cb.sha256 },
    };
  },
};
