// The one SQL executor every table module of the store shares: it runs a statement on the
// BatchDO's SQLite and adds the rows it read and wrote to one `work` tally, whichever table
// the statement touched (the scale tests and benchmarks read it per callback).

/** Rows read and written by the queries of this store, for the scale tests and benchmarks. */
export interface SqlWork {
  rowsRead: number;
  rowsWritten: number;
}

export type SqlValue = string | number | null | ArrayBuffer;

/** Billed work counted since it was last added to meta (meta.ts flushes it with its writes). */
export interface PendingUsage {
  rowsWritten: number;
  requests: number;
  workerRequests: number;
}

/**
 * Durable Object SQLite limits (developers.cloudflare.com/durable-objects/platform/limits/,
 * "SQL storage limits"): 2 MB per string, BLOB or row; 100 KB per SQL statement; 100 bound
 * parameters per query. The store keeps every bound value under half the 2 MB so that a row of
 * several columns stays under it too; the workerd tests run every statement through a guard
 * (test/workers/support/sql-limits.ts) that refuses, loudly, anything past these.
 */
export const MAX_BOUND_VALUE_BYTES = 1_000_000;
export const MAX_STATEMENT_BYTES = 100_000;
export const MAX_BOUND_PARAMETERS = 100;

/** Wraps the SQL API of every store made after it is set (the workerd tests' limit guard); null in production. */
let wrapSql: ((sql: SqlStorage) => SqlStorage) | null = null;
export function setSqlWrapper(wrap: ((sql: SqlStorage) => SqlStorage) | null): void {
  wrapSql = wrap;
}

export class Sql {
  readonly work: SqlWork = { rowsRead: 0, rowsWritten: 0 };
  readonly usage: PendingUsage = { rowsWritten: 0, requests: 0, workerRequests: 0 };
  readonly storage: DurableObjectStorage;
  readonly sql: SqlStorage;

  constructor(storage: DurableObjectStorage) {
    this.storage = storage;
    this.sql = wrapSql ? wrapSql(storage.sql) : storage.sql;
  }

  /** The rows a query returns. */
  exec<T extends Record<string, SqlStorageValue>>(query: string, ...params: SqlValue[]): T[] {
    const cursor = this.sql.exec<T>(query, ...params);
    const rows = cursor.toArray();
    this.work.rowsRead += cursor.rowsRead;
    this.work.rowsWritten += cursor.rowsWritten;
    this.usage.rowsWritten += cursor.rowsWritten;
    return rows;
  }

  /** Runs a statement; returns the rows it wrote. */
  run(query: string, ...params: SqlValue[]): number {
    const cursor = this.sql.exec(query, ...params);
    cursor.toArray();
    this.work.rowsRead += cursor.rowsRead;
    this.work.rowsWritten += cursor.rowsWritten;
    this.usage.rowsWritten += cursor.rowsWritten;
    return cursor.rowsWritten;
  }

  /**
   * The earliest of `SELECT MIN(…) AS t … WHERE state = ?` run once per state (one index MIN
   * lookup each, where one query over all the states would scan), or null when all are empty.
   */
  earliest(query: string, states: readonly string[]): number | null {
    const times = states.map((state) => this.exec<{ t: number | null }>(query, state)[0].t).filter((t) => t !== null);
    return times.length > 0 ? Math.min(...times) : null;
  }

  /** `SET a = ?, b = ?` and its parameters, for an update of the given columns. */
  static sets(fields: Record<string, unknown>): { sets: string; values: SqlValue[] } {
    const entries = Object.entries(fields);
    return { sets: entries.map(([k]) => `${k} = ?`).join(", "), values: entries.map(([, v]) => v as SqlValue) };
  }
}

/** A table module: its queries run on the store's one executor. */
export abstract class Queries {
  protected readonly db: Sql;

  constructor(db: Sql) {
    this.db = db;
  }
}
