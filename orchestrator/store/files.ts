// The batch's file list (from discovery, a manifest, or earlier phases' outputs). Its size is
// kept with every insert and delete, so status never counts rows: in meta.files_total, except
// the files a task's callback adds, which its phase's tally row counts (counts.ts) in the same
// write as the task's move.
import type { FileEntry } from "../../shared/contracts.ts";
import { MAX_BOUND_VALUE_BYTES, Queries } from "./sql.ts";

export interface FileRow {
  id: number;
  r2_key: string;
  logical_path: string;
  file_name: string;
  file_size: number;
  content_type: string;
  cid: string | null;
  source_key: string | null;
  extra_json: string | null;
  /** The manifest directory the file came from (directories.idx): its processing_config is stored there, once. */
  dir_idx: number | null;
}

/** A file to add; `directory` names its manifest directory (store/directories.ts), whose config is not copied onto the file. */
export type NewFile = FileEntry & { directory?: number };

export class FileQueries extends Queries {
  /**
   * Adds files to the list; a key already present is kept as it was. Returns how many were new,
   * counted in meta.files_total unless `tallied` (the caller adds them to its phase's tally row).
   */
  insertFiles(files: NewFile[], opts: { tallied?: boolean } = {}): number {
    if (files.length === 0) return 0;
    // One statement per page, its rows as one JSON parameter: a statement per row grew workerd's
    // memory by ~150 MB over 60,000 manifest entries (one page per statement: ~55 MB). The
    // parameter is one SQLite value, so a page is cut into statements of at most half the bound
    // value ceiling (store/sql.ts), whatever its entries carry.
    let added = 0;
    let rows: string[] = [];
    let bytes = 0;
    const flush = () => {
      if (rows.length === 0) return;
      added += this.db.exec<{ id: number }>(
        `INSERT INTO files (r2_key, logical_path, file_name, file_size, content_type, cid, source_key, extra_json, dir_idx)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8
         FROM json_each(?) WHERE true ORDER BY key
         ON CONFLICT (r2_key) DO NOTHING RETURNING id`,
        `[${rows.join(",")}]`,
      ).length;
      rows = [];
      bytes = 0;
    };
    for (const f of files) {
      const { r2_key, logical_path, file_name, file_size, content_type, cid, source_r2_key, directory, ...extra } = f;
      const row = JSON.stringify([
        r2_key,
        logical_path,
        file_name,
        file_size,
        content_type,
        cid ?? null,
        source_r2_key ?? null,
        Object.keys(extra).length > 0 ? JSON.stringify(extra) : null,
        directory ?? null,
      ]);
      // UTF-16 length × 3 bounds the UTF-8 bytes without encoding the row.
      if (rows.length > 0 && (bytes + row.length) * 3 > MAX_BOUND_VALUE_BYTES / 2) flush();
      rows.push(row);
      bytes += row.length + 1;
    }
    flush();
    if (added > 0 && !opts.tallied) this.db.run("UPDATE meta SET files_total = files_total + ? WHERE id = 1", added);
    return added;
  }

  removeFile(key: string): void {
    if (this.db.run("DELETE FROM files WHERE r2_key = ?", key) > 0) {
      this.db.run("UPDATE meta SET files_total = files_total - 1 WHERE id = 1");
    }
  }

  /** Merges `fields` into the entry of file `key` as it goes downstream (its sha256, say); false when there is no such file. */
  annotateFile(key: string, fields: Record<string, string | number | boolean>): boolean {
    return this.db.run("UPDATE files SET extra_json = json_patch(COALESCE(extra_json, '{}'), ?) WHERE r2_key = ?", JSON.stringify(fields), key) > 0;
  }

  filesAfter(afterId: number, limit: number): FileRow[] {
    return this.db.exec<FileRow & Record<string, SqlStorageValue>>(
      "SELECT * FROM files WHERE id > ? ORDER BY id LIMIT ?",
      afterId,
      limit,
    );
  }

  fileCount(): number {
    return this.db.exec<{ n: number }>("SELECT files_total + (SELECT coalesce(SUM(files_added), 0) FROM phase_tally) AS n FROM meta WHERE id = 1")[0]?.n ?? 0;
  }
}
