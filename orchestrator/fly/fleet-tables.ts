// The FlyBudget Durable Object's SQLite: a token bucket per API action, one row per batch of the
// fleet, and what the fleet has learned from quota refusals. The only code that writes its SQL.
import type { FleetRequest } from "./budget.ts";
import type { Learned, Resources } from "./fleet.ts";
import type { FlyAction } from "./rates.ts";

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
  /** A 429's Retry-After: no request of this action before then. */
  blocked_until: number;
}

/** A batch as the fleet knows it. */
export interface FleetRow {
  batch_id: string;
  weight: number;
  demand: number;
  guest: { cpus: number; memory_mb: number };
  live: Resources;
  joined_at: number;
  seen_at: number;
  /** When it was last granted create tokens (0: never): batches that need tokens take turns by it. */
  served_at: number;
  /** Creates it could have sent at its last report but for the create tokens (it takes turns for them while any). */
  unmet: number;
  waiting: boolean;
  /** The share it was last told (machines; -1 before any): a smaller one since means its surplus should drain now. */
  share: number;
}

type Row = Record<string, SqlStorageValue>;

export class FleetTables {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(
      `CREATE TABLE IF NOT EXISTS buckets (
         action TEXT PRIMARY KEY,
         tokens REAL NOT NULL,
         at INTEGER NOT NULL,
         blocked_until INTEGER NOT NULL
       ) WITHOUT ROWID;
       CREATE TABLE IF NOT EXISTS fleet (
         batch_id TEXT PRIMARY KEY,
         weight REAL NOT NULL,
         demand INTEGER NOT NULL,
         cpus INTEGER NOT NULL,
         memory_mb INTEGER NOT NULL,
         live_machines INTEGER NOT NULL,
         live_vcpus INTEGER NOT NULL,
         live_memory_mb INTEGER NOT NULL,
         joined_at INTEGER NOT NULL,
         seen_at INTEGER NOT NULL,
         served_at INTEGER NOT NULL DEFAULT 0,
         unmet INTEGER NOT NULL DEFAULT 0,
         waiting INTEGER NOT NULL DEFAULT 0
       ) WITHOUT ROWID;
       CREATE TABLE IF NOT EXISTS learned (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL);`,
    );
    // The share each batch was last told (added after the table): a fleet stored before it gets the column.
    const told = sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM pragma_table_info('fleet') WHERE name = 'share'").one().n;
    if (told === 0) sql.exec("ALTER TABLE fleet ADD COLUMN share INTEGER NOT NULL DEFAULT -1");
    // The create budget's bucket before every action had one: carried over once, so a deploy hands out no fresh burst.
    const old = sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'bucket'").one().n;
    if (old > 0) {
      sql.exec("INSERT OR IGNORE INTO buckets (action, tokens, at, blocked_until) SELECT 'create', tokens, at, blocked_until FROM bucket WHERE id = 1");
      sql.exec("DROP TABLE bucket");
    }
  }

  /** The stored bucket of `action`; one never used starts full. */
  bucket(action: FlyAction, now: number, burst: number): Bucket {
    const row = this.#sql.exec<Bucket & Row>("SELECT tokens, at, blocked_until FROM buckets WHERE action = ?", action).toArray()[0];
    return row ?? { tokens: burst, at: now, blocked_until: 0 };
  }

  saveBucket(action: FlyAction, b: Bucket): void {
    this.#sql.exec(
      `INSERT INTO buckets (action, tokens, at, blocked_until) VALUES (?, ?, ?, ?)
       ON CONFLICT (action) DO UPDATE SET tokens = excluded.tokens, at = excluded.at, blocked_until = excluded.blocked_until`,
      action,
      b.tokens,
      b.at,
      b.blocked_until,
    );
  }

  /** Every batch of the fleet; one not seen since `lostBefore` is dropped first. */
  batches(lostBefore = 0): FleetRow[] {
    if (lostBefore > 0) this.#sql.exec("DELETE FROM fleet WHERE seen_at < ?", lostBefore);
    return this.#sql.exec<Row>("SELECT * FROM fleet ORDER BY joined_at, batch_id").toArray().map(toFleetRow);
  }

  /** Records a batch's report (joining it when new) and answers every batch of the fleet. */
  upsertBatch(req: FleetRequest, now: number, lostBefore: number): FleetRow[] {
    this.#sql.exec(
      `INSERT INTO fleet (batch_id, weight, demand, cpus, memory_mb, live_machines, live_vcpus, live_memory_mb, joined_at, seen_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (batch_id) DO UPDATE SET weight = excluded.weight, demand = excluded.demand, cpus = excluded.cpus,
         memory_mb = excluded.memory_mb, live_machines = excluded.live_machines, live_vcpus = excluded.live_vcpus,
         live_memory_mb = excluded.live_memory_mb, seen_at = excluded.seen_at`,
      req.batch_id,
      req.weight,
      req.demand,
      req.guest.cpus,
      req.guest.memory_mb,
      req.live.machines,
      req.live.vcpus,
      req.live.memory_mb,
      now,
      now,
    );
    return this.batches(lostBefore);
  }

  /** After a grant: the machines granted count as held until the batch's next report. */
  afterGrant(batchId: string, holds: Resources, servedAt: number, unmet: number, waiting: boolean, share: number): void {
    this.#sql.exec(
      "UPDATE fleet SET live_machines = ?, live_vcpus = ?, live_memory_mb = ?, served_at = ?, unmet = ?, waiting = ?, share = ? WHERE batch_id = ?",
      holds.machines,
      holds.vcpus,
      holds.memory_mb,
      servedAt,
      unmet,
      waiting ? 1 : 0,
      share,
      batchId,
    );
  }

  /** Batches told their (smaller) share now, ahead of their next report. */
  setShares(shares: [string, number][]): void {
    for (const [batchId, share] of shares) this.#sql.exec("UPDATE fleet SET share = ? WHERE batch_id = ?", share, batchId);
  }

  setLive(batchId: string, live: Resources, now: number): void {
    this.#sql.exec(
      "UPDATE fleet SET live_machines = ?, live_vcpus = ?, live_memory_mb = ?, seen_at = ? WHERE batch_id = ?",
      live.machines,
      live.vcpus,
      live.memory_mb,
      now,
      batchId,
    );
  }

  deleteBatch(batchId: string): void {
    this.#sql.exec("DELETE FROM fleet WHERE batch_id = ?", batchId);
  }

  learned(): Learned | null {
    const row = this.#sql.exec<{ json: string }>("SELECT json FROM learned WHERE id = 1").toArray()[0];
    return row ? (JSON.parse(row.json) as Learned) : null;
  }

  saveLearned(learned: Learned): void {
    this.#sql.exec("INSERT INTO learned (id, json) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET json = excluded.json", JSON.stringify(learned));
  }
}

function toFleetRow(r: Row): FleetRow {
  return {
    batch_id: String(r.batch_id),
    weight: Number(r.weight),
    demand: Number(r.demand),
    guest: { cpus: Number(r.cpus), memory_mb: Number(r.memory_mb) },
    live: { machines: Number(r.live_machines), vcpus: Number(r.live_vcpus), memory_mb: Number(r.live_memory_mb) },
    joined_at: Number(r.joined_at),
    seen_at: Number(r.seen_at),
    served_at: Number(r.served_at),
    unmet: Number(r.unmet),
    waiting: Number(r.waiting) === 1,
    share: Number(r.share),
  };
}
