// Where a batch reads and writes, and how an attempt may write its reserved outputs. A batch reads
// only canonical keys under its own place — its manifest's directory or its r2_prefix (READ_SCOPE
// widens that to ALLOWED_PREFIXES on purpose) — and its outputs go beside their inputs. It never
// replaces an object it did not write unless its message says `"overwrite": true`: every PUT URL
// signs the content type, the writer (x-amz-meta-fanout-writer: batch/task) and a condition storage
// enforces itself — If-None-Match: * while there is no object, If-Match: "<etag>" when the object
// is this same task's earlier upload (a retry after a lost callback replaces exactly that).
import { directoryOf, keyProblem, underPlace, WRITER_METADATA } from "../../shared/keys.ts";
import type { Config } from "../config.ts";
import { StorageError } from "../storage.ts";
import type { BatchMeta, TaskRow } from "../store/index.ts";
import type { Phase } from "../phases/types.ts";
import type { Engine } from "./context.ts";

export { WRITER_METADATA } from "../../shared/keys.ts";

/** True when `key` lies under one of the configured roots ("/" allows the whole bucket). */
export function underRoots(key: string, roots: readonly string[]): boolean {
  return roots.some((r) => r === "/" || key.startsWith(r));
}

/** The batch's own place: its manifest's directory, or its r2_prefix (both end with `/`). */
export function placeOf(meta: Pick<BatchMeta, "manifest_key" | "prefix">): string {
  return meta.manifest_key !== null ? directoryOf(meta.manifest_key) : (meta.prefix ?? "");
}

/** Why this batch may not read `key`, or null: not canonical, outside the roots, or outside its place. */
export function inputRefusal(config: Config, meta: Pick<BatchMeta, "manifest_key" | "prefix">, key: string): string | null {
  const problem = keyProblem(key);
  if (problem) return `${JSON.stringify(key.length > 300 ? `${key.slice(0, 300)}…` : key)} is not a canonical object key: ${problem}`;
  const roots = config.ALLOWED_PREFIXES;
  if (!underRoots(key, roots)) return `${key} is outside the allowed roots (${roots.join(", ")})`;
  const place = placeOf(meta);
  if (config.READ_SCOPE === "batch" && !underPlace(key, place)) {
    return `${key} is outside this batch's place ${place}: a batch reads only under its manifest's directory or its r2_prefix (READ_SCOPE=allowed-prefixes widens that to ALLOWED_PREFIXES)`;
  }
  return null;
}

/** The batch's message asked to replace outputs that already exist (an operator re-running a folder on purpose). */
export function overwrites(meta: Pick<BatchMeta, "message_json">): boolean {
  // The message was checked (QueueMessage) before the batch was recorded.
  return (JSON.parse(meta.message_json) as { overwrite?: unknown }).overwrite === true;
}

export const writerOf = (meta: Pick<BatchMeta, "batch_id">, task: Pick<TaskRow, "task_id">) => `${meta.batch_id}/${task.task_id}`;

export function takenReason(key: string): string {
  return `output ${key} already exists in storage and was not written by this batch; it was left as it is (to replace it on purpose, send the batch again with "overwrite": true)`;
}

/** The content type output `page` of a task of `phase` is written with (and its PUT URL signs). */
export function outputContentTypeOf(phase: Pick<Phase, "outputContentType" | "pageContentType">, page: number): string {
  return phase.pageContentType?.(page) ?? phase.outputContentType;
}

/** How an attempt may write an output: the headers signed into its PUT URL, or why it may not. */
export type OutputAccess = { ok: true; headers: Record<string, string> } | { ok: false; reason: string; retryable: boolean };

/**
 * How the current attempt of `task` may write `key` (one HEAD): no object → If-None-Match: *;
 * this task's own earlier upload → If-Match: its ETag; any other object → refused, unless the
 * batch overwrites (then no condition). `known` skips the HEAD when the caller has just seen no object.
 */
export async function outputAccess(e: Engine, meta: BatchMeta, task: TaskRow, key: string, contentType: string, known?: "absent"): Promise<OutputAccess> {
  const writer = writerOf(meta, task);
  const headers = { "content-type": contentType, [`x-amz-meta-${WRITER_METADATA}`]: writer };
  if (overwrites(meta)) return { ok: true, headers };
  if (known === "absent") return { ok: true, headers: { ...headers, "if-none-match": "*" } };
  let head;
  try {
    head = await e.objects().head(key);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { ok: false, reason: `checking output ${key} in storage failed: ${message}`, retryable: !(error instanceof StorageError) || error.retryable };
  }
  if (head === null) return { ok: true, headers: { ...headers, "if-none-match": "*" } };
  if (head.metadata[WRITER_METADATA] === writer) return { ok: true, headers: { ...headers, "if-match": `"${head.etag}"` } };
  if (e.config.MACHINE_STORAGE === "legacy-keys" && task.attempt > 1) {
    // The old contract writes with the key pair and no writer metadata: after a first attempt the
    // object may be this task's own upload, which cannot be told from another's.
    return { ok: true, headers };
  }
  return { ok: false, reason: takenReason(key), retryable: false };
}
