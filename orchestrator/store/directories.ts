// A manifest directory's header, stored once: its path and processing_config (up to 64 KiB of
// JSON). Its files point at it (files.dir_idx) instead of each carrying a copy: a copy on every
// entry made a 250-entry page one SQLite value of 250 × the config, past the 2 MB limit
// (developers.cloudflare.com/durable-objects/platform/limits/) at about 8 KB of config.
import { Queries } from "./sql.ts";

export class DirectoryQueries extends Queries {
  /** Records directory `idx` (its index in the manifest) once; later calls for it change nothing. */
  putDirectory(idx: number, path: string, config: unknown): void {
    this.db.run(
      "INSERT INTO directories (idx, path, config_json) VALUES (?, ?, ?) ON CONFLICT (idx) DO NOTHING",
      idx,
      path,
      config === undefined ? null : JSON.stringify(config),
    );
  }

  /** Directory `idx`'s processing_config (undefined when it has none or is unknown). */
  directoryConfig(idx: number): unknown {
    const row = this.db.exec<{ config_json: string | null }>("SELECT config_json FROM directories WHERE idx = ?", idx)[0];
    return row?.config_json == null ? undefined : (JSON.parse(row.config_json) as unknown);
  }
}
