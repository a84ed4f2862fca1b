// Finalisation: the final file list written to R2 as an NDJSON object (engine/file-list.ts, part
// by part across alarms), then its key, counts and checksum POSTed downstream — a body of a few
// hundred bytes whatever the batch (shared/finalisation.ts) — retried with backoff, with an
// Idempotency-Key the receiver can deduplicate a repeated POST on. A redrive writes a new object
// and sends it under a new key.
import { backoffMs } from "../../shared/backoff.ts";
import { type FinalisedBatch, MAX_FINALISATION_BODY_BYTES } from "../../shared/finalisation.ts";
import { errorMessage, log } from "../log.ts";
import { OutboundRefused } from "../outbound.ts";
import type { BatchMeta } from "../store/index.ts";
import { type Engine, iso } from "./context.ts";
import { FILE_LIST_CONTENT_TYPE, type WrittenFileList, writeFileList } from "./file-list.ts";

/** Stable per batch: a POST repeated after a crash or a timeout carries the same key. */
export const idempotencyKey = (batchId: string, redrives = 0) => `fanout:${batchId}:final${redrives > 0 ? `:redrive-${redrives}` : ""}`;

/** How long the downstream has to answer, from when the POST is sent. */
const FINALISE_TIMEOUT_MS = 30_000;

export async function finalise(e: Engine, meta: BatchMeta): Promise<number | null> {
  const list = await writeFileList(e, meta);
  if (list === null) return Date.now(); // more parts to write: the next alarm goes on at once
  const url = e.config.WORKER_URL;
  if (!url) return done(e, meta, list);
  const target = `${url.replace(/\/+$/, "")}/api/batches/${encodeURIComponent(meta.batch_id)}/enqueue-processed`;
  const body = JSON.stringify(finalisedBody(e, meta, list));
  if (body.length > MAX_FINALISATION_BODY_BYTES) throw new Error(`finalisation body of ${body.length} bytes is over ${MAX_FINALISATION_BODY_BYTES}`);
  let error: string;
  try {
    const status = await e.outbound.exchange(
      target,
      { method: "POST", headers: { "content-type": "application/json", "idempotency-key": idempotencyKey(meta.batch_id, meta.redrives) }, body },
      FINALISE_TIMEOUT_MS,
      async (res) => {
        await res.body?.cancel();
        return res.status;
      },
    );
    if (status >= 200 && status < 300) return done(e, meta, list);
    error = `downstream answered ${status}`;
  } catch (err) {
    if (err instanceof OutboundRefused) return Date.now() + 1000; // the alarm's time is up: the next one sends it
    error = `downstream unreachable: ${errorMessage(err)}`;
  }
  const attempts = meta.finalise_attempts + 1;
  const retryAt = Date.now() + backoffMs(attempts, 1000, 600_000);
  e.store.updateMeta({ finalise_attempts: attempts, finalise_error: error }, Date.now());
  log("DO", "finalise_retry", { batch_id: meta.batch_id, attempts, error, retry_at: iso(retryAt) });
  return retryAt;
}

function done(e: Engine, meta: BatchMeta, list: WrittenFileList): null {
  // Once: an alarm that read the batch before another finished it (the list and the POST are
  // awaited) must not end it, and emit `done`, a second time.
  if (e.store.getMeta()?.stage === "done") return null;
  const now = Date.now();
  e.store.updateMeta({ stage: "done", completed_at: now, finalise_error: null }, now);
  log("DO", "batch_done", { batch_id: meta.batch_id, files: list.entries, file_list: list.key, finalise_attempts: meta.finalise_attempts + 1 });
  e.emit("done", { files: list.entries, file_list: list.key });
  return null;
}

/** The downstream body: the list's object, counts and checksum (shared/finalisation.ts). */
export function finalisedBody(e: Engine, meta: BatchMeta, list: WrittenFileList): FinalisedBatch {
  const counts = e.store.counts();
  const sum = (f: (c: (typeof counts)[number]) => number) => counts.reduce((n, c) => n + f(c), 0);
  return {
    batch_id: meta.batch_id,
    status: "DONE",
    redrive: meta.redrives,
    file_list: {
      bucket: e.config.R2_BUCKET,
      key: list.key,
      content_type: FILE_LIST_CONTENT_TYPE,
      entries: list.entries,
      bytes: list.bytes,
      etag: list.etag,
      checksum: { algorithm: "SHA-256", type: "COMPOSITE", value: list.checksum, part_bytes: list.part_bytes },
    },
    counts: { files: list.entries, tasks_total: sum((c) => c.total), tasks_completed: sum((c) => c.done), tasks_failed: sum((c) => c.failed) },
  };
}
