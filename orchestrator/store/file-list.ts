// The final file list as it is written to R2 (engine/file-list.ts): one row per redrive (0 = the
// first finalisation) with where the writing stands, and one row per part sent. The parts are kept
// in their own table so no value grows with the batch (10,000 parts at most: R2's limit).
import { Queries } from "./sql.ts";

export interface FileListRow {
  redrive: number;
  key: string;
  upload_id: string | null;
  /** files.id of the last file whose line has been started. */
  after_id: number;
  /** The bytes of that line that did not fit the last part sent (they begin the next). */
  carry: ArrayBuffer | null;
  entries: number;
  bytes: number;
  parts: number;
  /** Set once the object is complete. */
  etag: string | null;
  checksum: string | null;
  written_at: number | null;
}

export class FileListQueries extends Queries {
  fileList(redrive: number): FileListRow | null {
    return (this.db.exec<FileListRow & Record<string, SqlStorageValue>>("SELECT * FROM file_lists WHERE redrive = ?", redrive)[0] as FileListRow) ?? null;
  }

  /** Records where redrive `redrive`'s list will be written (once: a second call keeps the first key). */
  startFileList(redrive: number, key: string): void {
    this.db.run("INSERT INTO file_lists (redrive, key) VALUES (?, ?) ON CONFLICT (redrive) DO NOTHING", redrive, key);
  }

  setUploadId(redrive: number, uploadId: string): void {
    this.db.run("UPDATE file_lists SET upload_id = ? WHERE redrive = ?", uploadId, redrive);
  }

  /** Part `part` was sent: its ETag and SHA-256, and where the writing now stands. Call in a transaction. */
  partWritten(
    redrive: number,
    part: { part: number; etag: string; sha256: ArrayBuffer },
    at: { after_id: number; carry: ArrayBuffer | null; entries: number; bytes: number },
  ): void {
    this.db.run(
      "INSERT INTO file_list_parts (redrive, part, etag, sha256) VALUES (?, ?, ?, ?) ON CONFLICT (redrive, part) DO UPDATE SET etag = excluded.etag, sha256 = excluded.sha256",
      redrive,
      part.part,
      part.etag,
      part.sha256,
    );
    this.db.run(
      "UPDATE file_lists SET after_id = ?, carry = ?, entries = ?, bytes = ?, parts = ? WHERE redrive = ?",
      at.after_id,
      at.carry,
      at.entries,
      at.bytes,
      part.part,
      redrive,
    );
  }

  /** The parts sent, in order, `limit` from `afterPart` (completing an upload reads them in pages). */
  fileListParts(redrive: number, afterPart: number, limit: number): { part: number; etag: string; sha256: ArrayBuffer }[] {
    return this.db.exec<{ part: number; etag: string; sha256: ArrayBuffer }>(
      "SELECT part, etag, sha256 FROM file_list_parts WHERE redrive = ? AND part > ? ORDER BY part LIMIT ?",
      redrive,
      afterPart,
      limit,
    );
  }

  fileListWritten(redrive: number, fields: { etag: string; checksum: string; entries: number; bytes: number; parts: number }, now: number): void {
    this.db.run(
      "UPDATE file_lists SET etag = ?, checksum = ?, entries = ?, bytes = ?, parts = ?, carry = NULL, written_at = ? WHERE redrive = ?",
      fields.etag,
      fields.checksum,
      fields.entries,
      fields.bytes,
      fields.parts,
      now,
      redrive,
    );
  }
}
