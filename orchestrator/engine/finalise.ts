// Finalisation: the final file list POSTed downstream, streamed from SQLite a page at a time,
// retried with backoff, with an Idempotency-Key the receiver can deduplicate a repeated POST on.
import type { FileEntry } from "../../shared/contracts.ts";
import { backoffMs } from "../../shared/backoff.ts";
import { errorMessage, log } from "../log.ts";
import type { BatchMeta, BatchStore, FileRow } from "../store/index.ts";
import { type Engine, iso } from "./context.ts";

/** Stable per batch: a POST repeated after a crash or a timeout carries the same key. */
export const idempotencyKey = (batchId: string, redrives = 0) => `fanout:${batchId}:final${redrives > 0 ? `:redrive-${redrives}` : ""}`;

export async function finalise(e: Engine, meta: BatchMeta): Promise<number | null> {
  const url = e.config.WORKER_URL;
  const now = Date.now();
  if (!url) {
    e.store.updateMeta({ stage: "done", completed_at: now }, now);
    log("DO", "batch_done", { batch_id: meta.batch_id, files: e.store.fileCount() });
    e.emit("done", { files: e.store.fileCount() });
    return null;
  }
  const target = `${url.replace(/\/+$/, "")}/api/batches/${encodeURIComponent(meta.batch_id)}/enqueue-processed`;
  let error: string;
  try {
    const res = await fetch(target, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": idempotencyKey(meta.batch_id, meta.redrives) },
      body: fileListBody(e.store),
    });
    await res.body?.cancel();
    if (res.ok) {
      const done = Date.now();
      e.store.updateMeta({ stage: "done", completed_at: done, finalise_error: null }, done);
      log("DO", "batch_done", { batch_id: meta.batch_id, files: e.store.fileCount(), finalise_attempts: meta.finalise_attempts + 1 });
      e.emit("done", { files: e.store.fileCount() });
      return null;
    }
    error = `downstream answered ${res.status}`;
  } catch (err) {
    error = `downstream unreachable: ${errorMessage(err)}`;
  }
  const attempts = meta.finalise_attempts + 1;
  const retryAt = Date.now() + backoffMs(attempts, 1000, 600_000);
  e.store.updateMeta({ finalise_attempts: attempts, finalise_error: error }, Date.now());
  log("DO", "finalise_retry", { batch_id: meta.batch_id, attempts, error, retry_at: iso(retryAt) });
  return retryAt;
}

/** `{ "files": [...] }` streamed from SQLite a page at a time: never the whole list in memory. */
function fileListBody(store: BatchStore): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  let after = 0;
  let first = true;
  let finished = false;
  return new ReadableStream<Uint8Array>({
    pull: (controller) => {
      if (finished) return;
      const rows = store.filesAfter(after, 1000);
      const parts = rows.map((r) => JSON.stringify(toFileEntry(r)));
      let chunk = (first ? '{"files":[' : "") + (parts.length > 0 && !first ? "," : "") + parts.join(",");
      first = false;
      if (rows.length > 0) after = rows[rows.length - 1].id;
      if (rows.length < 1000) {
        chunk += "]}";
        finished = true;
      }
      controller.enqueue(encoder.encode(chunk));
      if (finished) controller.close();
    },
  });
}

function toFileEntry(f: FileRow): FileEntry {
  // processing_config travels with a file only so its phases can read it; downstream gets the file.
  const { processing_config: _config, ...extra } = f.extra_json ? (JSON.parse(f.extra_json) as Record<string, unknown>) : {};
  return {
    ...extra,
    r2_key: f.r2_key,
    logical_path: f.logical_path,
    file_name: f.file_name,
    file_size: f.file_size,
    content_type: f.content_type,
    ...(f.cid ? { cid: f.cid } : {}),
    ...(f.source_key ? { source_r2_key: f.source_key } : {}),
  };
}
