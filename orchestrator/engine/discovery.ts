// Discovery: the batch's file list, from its manifest or by listing its prefix, page by page
// across alarms with a cursor. Planning (planning.ts) then refuses any file outside the batch's place.
import { fileName, keyProblem } from "../../shared/keys.ts";
import { log } from "../log.ts";
import type { BatchMeta, NewFile } from "../store/index.ts";
import type { Engine } from "./context.ts";
import { underRoots } from "./outputs.ts";
import { MANIFEST_PAGE_BYTES, MANIFEST_PAGE_SIZE, MANIFEST_PAGES_PER_ALARM, type ManifestCursor, ManifestReader, parseManifestCursor } from "./manifest.ts";

const LIST_PAGES_PER_ALARM = 20;
const LIST_PAGE_SIZE = 1000;

/**
 * Why a queue message may not run here, or null. Checked before a batch is recorded (the queue and
 * HTTP paths checked the schema already; RPC callers reach this directly): its manifest key or
 * prefix must be canonical (shared/keys.ts keyProblem) and under the allowed roots.
 */
export function messageRefusal(message: { r2_prefix?: string; manifest_r2_key?: string }, roots: readonly string[]): string | null {
  const where = message.manifest_r2_key ?? message.r2_prefix;
  if (message.manifest_r2_key === undefined && message.r2_prefix === "") return "r2_prefix must not be empty (it would take the whole bucket)";
  const problem = message.manifest_r2_key !== undefined ? keyProblem(message.manifest_r2_key) : message.r2_prefix !== undefined ? keyProblem(message.r2_prefix, { prefix: true }) : null;
  if (problem) return `${message.manifest_r2_key !== undefined ? "manifest_r2_key" : "r2_prefix"} ${JSON.stringify(where)} is not canonical: ${problem}`;
  if (where !== undefined && !underRoots(where, roots)) {
    return `${message.manifest_r2_key !== undefined ? "manifest_r2_key" : "r2_prefix"} ${where} is outside the allowed roots (${roots.join(", ")}); see ALLOWED_PREFIXES`;
  }
  return null;
}

/** One discovery step; returns when to run the next. Moves the batch to plan (or error) when done. */
export async function discover(e: Engine, meta: BatchMeta): Promise<number | null> {
  const store = e.objects();
  const now = Date.now();
  if (meta.manifest_key !== null) {
    // The manifest is streamed a page at a time from the stored cursor, as listing is below.
    let cursor = parseManifestCursor(meta.discover_cursor);
    // One reader for the alarm's pages: a page starts in the ranged read the previous one stopped in.
    const reader = new ManifestReader(store, meta.manifest_key, meta.batch_id);
    try {
      // Bounded by count and by the alarm's time (its Outbound deadline): the rest is the next alarm's.
      for (let page = 0; page < MANIFEST_PAGES_PER_ALARM && typeof cursor !== "string" && (page === 0 || !e.outbound.overdue); page++) {
        const result = await manifestPage(reader, cursor);
        if (typeof result === "string") {
          cursor = result;
          break;
        }
        cursor = result.cursor;
        const next = cursor === null ? null : JSON.stringify(cursor);
        e.store.transaction(() => {
          // Each directory's header once (its processing_config is not copied onto its files).
          for (const d of result.directories) e.store.putDirectory(d.idx, d.path, d.config);
          e.store.insertFiles(result.files);
          e.store.updateMeta({ discover_cursor: next, ...(next === null ? { stage: "plan", plan_cursor: 0 } : {}) }, Date.now());
        });
        if (cursor === null) {
          log("DO", "discovered", { batch_id: meta.batch_id, source: "manifest", files: e.store.fileCount() });
          return Date.now();
        }
      }
    } finally {
      await reader.close();
    }
    if (typeof cursor === "string") {
      e.store.updateMeta({ stage: "error", error: cursor, completed_at: now }, now);
      log("DO", "discovery_failed", { batch_id: meta.batch_id, error: cursor });
      return null;
    }
    return Date.now();
  }
  // Prefix listing continues across alarms from the stored cursor.
  let cursor = meta.discover_cursor;
  for (let page = 0; page < LIST_PAGES_PER_ALARM && (page === 0 || !e.outbound.overdue); page++) {
    const result = await store.list(meta.prefix ?? "", cursor, LIST_PAGE_SIZE);
    const files = result.objects
      .filter((o) => !o.key.endsWith("/"))
      .map((o) => ({
        r2_key: o.key,
        logical_path: o.key.slice((meta.prefix ?? "").length).replace(/^\/+/, "") || fileName(o.key),
        file_name: fileName(o.key),
        file_size: o.size,
        content_type: o.contentType ?? guessContentType(o.key),
      }));
    cursor = result.cursor;
    e.store.transaction(() => {
      e.store.insertFiles(files);
      e.store.updateMeta({ discover_cursor: cursor }, Date.now());
    });
    if (cursor === null) {
      e.store.updateMeta({ stage: "plan", plan_cursor: 0 }, Date.now());
      log("DO", "discovered", { batch_id: meta.batch_id, source: "prefix", files: e.store.fileCount() });
      break;
    }
  }
  return Date.now();
}

/** The next page of the manifest's files, or a reason the batch cannot run. Storage outages throw (retried). */
async function manifestPage(
  reader: ManifestReader,
  cursor: ManifestCursor | null,
): Promise<{ files: NewFile[]; directories: { idx: number; path: string; config: unknown }[]; cursor: ManifestCursor | null } | string> {
  const page = await reader.page(cursor, MANIFEST_PAGE_SIZE, MANIFEST_PAGE_BYTES);
  if (page.error !== undefined) return page.error;
  const directories = new Map<number, { idx: number; path: string; config: unknown }>();
  const files = page.entries.map(({ file, directory, directory_path, processing_config }) => {
    const { r2_key, logical_path, file_name, file_size, content_type, ...rest } = file;
    const name = file_name ?? fileName(r2_key);
    if (!directories.has(directory)) directories.set(directory, { idx: directory, path: directory_path, config: processing_config });
    return {
      ...rest,
      r2_key,
      logical_path: logical_path ?? `${directory_path.replace(/\/+$/, "")}/${name}`,
      file_name: name,
      file_size: file_size ?? 0,
      content_type: content_type ?? guessContentType(r2_key),
      // The directory's processing_config is read from there by the phases (never sent downstream).
      directory,
    };
  });
  return { files, directories: [...directories.values()], cursor: page.cursor };
}

const CONTENT_TYPES: Record<string, string> = {
  tif: "image/tiff",
  tiff: "image/tiff",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  png: "image/png",
  pdf: "application/pdf",
  json: "application/json",
  txt: "text/plain",
  xml: "application/xml",
};
export function guessContentType(key: string): string {
  const ext = key.slice(key.lastIndexOf(".") + 1).toLowerCase();
  return CONTENT_TYPES[ext] ?? "application/octet-stream";
}
