// Checksum mode (PHASE=CHECKSUM): stream the input through SHA-256 — never on disk, never whole in
// memory — write the `sha256sum` sidecar to the key the orchestrator reserved, and build the callback.
import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { SIDECAR_CONTENT_TYPE, sidecarText, type ChecksumSuccess } from "../shared/checksum.ts";
import { fileName } from "../shared/keys.ts";
import type { WorkerEnv } from "./env.ts";
import { TaskError, errorMessage } from "./errors.ts";
import { log, since } from "./log.ts";
import { taskStorage } from "./storage.ts";
import { peakRssMb, type TaskProgress } from "./task.ts";

/** Runs the checksum task `env` names; `progress.timings` stays readable when it throws. */
export async function runChecksum(env: WorkerEnv, workDir: string, progress: TaskProgress): Promise<ChecksumSuccess> {
  const timings = progress.timings;
  const storage = taskStorage(env);
  const key = env.INPUT_R2_KEY;
  try {
    let t = performance.now();
    log.info("Checksum", "read.start", { key, access: env.INPUT_URL ? "presigned" : "keys" });
    const input = await storage.openInput();
    const hash = createHash("sha256");
    let bytes = 0;
    try {
      // The stream's backpressure holds memory at a few chunks whatever the object's size.
      await pipeline(input.body, async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) {
          hash.update(chunk);
          bytes += chunk.length;
        }
      });
    } catch (error) {
      throw new TaskError("storage", `download of ${key} failed after ${bytes} bytes: ${errorMessage(error)}`, { cause: error });
    }
    if (input.expectedBytes !== undefined && bytes !== input.expectedBytes) {
      throw new TaskError("storage", `download of ${key} was cut short: got ${bytes} of ${input.expectedBytes} bytes`);
    }
    const sha256 = hash.digest("hex");
    timings.download_time_ms = since(t);
    log.info("Checksum", "read.done", { bytes, sha256, duration_ms: timings.download_time_ms, peak_rss_mb: peakRssMb() });

    t = performance.now();
    // The sidecar goes to the one key the orchestrator reserved for this task (OUTPUT_R2_KEY).
    const [outputKey] = await storage.reserve(1);
    const sidecar = join(workDir, "sidecar.sha256");
    const text = sidecarText(sha256, key);
    await writeFile(sidecar, text);
    const uploaded = await storage.upload(1, sidecar, SIDECAR_CONTENT_TYPE);
    timings.upload_time_ms = since(t);
    log.info("Checksum", "upload.done", { key: outputKey, bytes: uploaded.bytes, duration_ms: timings.upload_time_ms });
    return {
      task_id: env.TASK_ID,
      batch_id: env.BATCH_ID,
      status: "success",
      output_r2_key: outputKey,
      output_file_name: fileName(outputKey),
      output_file_size: uploaded.bytes,
      content_type: SIDECAR_CONTENT_TYPE,
      sha256,
      sidecar_sha256: createHash("sha256").update(text).digest("hex"),
      input: { r2_key: key, bytes },
    };
  } finally {
    storage.close();
  }
}
