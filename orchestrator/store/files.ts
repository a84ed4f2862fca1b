// The batch's file list (from discovery, a manifest, or earlier phases' outputs). Its size is
// kept with every insert and delete, so status never counts rows: in meta.files_total, except
// the files a task's callback adds, which its phase's tally row counts (counts.ts) in the same
// write as the task's move.
import type { FileEntry } from "../../shared/contracts.ts";
import { Queries } from "./sql.ts";

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
}

export class FileQueries extends Queries {
  /**
   * Adds files to the list; a key already present is kept as it was. Returns how many were new,
   * counted in meta.files_total unless `tallied` (the caller adds them to its phase's tally row).
   */
  insertFiles(files: FileEntry[], opts: { tallied?: boolean } = {}): number {
    if (files.length === 0) return 0;
    // One statement per page, its rows as one JSON parameter: a statement per row grew workerd's
    // memory by ~150 MB over 60,000 manifest entries (one page per statement: ~55 MB).
    const rows = files.map((f) => {
      const { r2_key, logical_path, file_name, file_size, content_type, cid, source_r2_key, ...extra } = f;
      return [r2_key, logical_path, file_name, file_size, content_type, cid ?? null, source_r2_key ?? null, Object.keys(extra).length > 0 ? JSON.stringify(extra) : null];
    });
    const added = this.db.exec<{ id: number }>(
      `INSERT INTO files (r2_key, logical_path, file_name, file_size, content_type, cid, source_key, extra_json)
       SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7
       FROM json_each(?) WHERE true ORDER BY key
       ON CONFLICT (r2_key) DO NOTHING RETURNING id`,
      JSON.stringify(rows),
    ).length;
    if (added > 0 && !opts.tallied) this.db.run("UPDATE meta SET files_total = files_total + ? WHERE id = 1", added);
    return added;
  }

  removeFile(key: string): void {
    if (this.db.run("DELETE FROM files WHERE r2_key = ?", key) > 0) {
      this.db.run("UPDATE meta SET files_total = files_total - 1 WHERE id = 1");
    }
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
