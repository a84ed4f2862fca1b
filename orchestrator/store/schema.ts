// Brings a batch's SQLite up to date with migrations.ts, and knows whether a batch has a schema
// at all (the reads of an unknown batch must answer "none" without creating one).
import { MIGRATIONS } from "./migrations.ts";
import { Queries } from "./sql.ts";

export class Schema extends Queries {
  #hasSchema = false;

  /** True once the batch's schema exists: reads of an unknown batch must not create it. */
  exists(): boolean {
    return this.db.sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").toArray().length > 0;
  }

  /** Applies the migrations this database has not seen yet. Call under blockConcurrencyWhile. */
  migrate(): void {
    const { sql, storage } = this.db;
    sql.exec("CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
    const row = sql.exec<{ v: number | null }>("SELECT MAX(version) AS v FROM _migrations").one();
    const applied = row.v ?? 0;
    for (let version = applied + 1; version <= MIGRATIONS.length; version++) {
      storage.transactionSync(() => {
        sql.exec(MIGRATIONS[version - 1]);
        sql.exec("INSERT INTO _migrations (version, applied_at) VALUES (?, ?)", version, Date.now());
      });
    }
    this.#hasSchema = true;
  }

  /** Forgets the remembered schema (its tables were deleted with the batch's storage). */
  forget(): void {
    this.#hasSchema = false;
  }

  /** Whether the schema exists, remembered once seen: an unknown batch's reads answer "none" without creating it. */
  ready(): boolean {
    if (!this.#hasSchema) {
      if (!this.exists()) return false;
      this.#hasSchema = true;
    }
    return true;
  }
}
