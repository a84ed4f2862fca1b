// Machines to destroy later: a destroy that failed, or a machine created after its task closed.
// Retried with backoff until Fly answers destroyed or not found.
import { Queries } from "./sql.ts";

/** A machine to be gone: looked at from `next_at`; destroyed once `destroy_at` has passed (0: at once). */
export interface OrphanRow {
  machine_id: string;
  tries: number;
  destroy_at: number;
}

export class OrphanQueries extends Queries {
  /**
   * A machine to be gone. `destroyAt` later than `now`: it was told to exit by itself (a retired pool
   * machine); until then it is only looked at, and destroyed once that passes if it is still there.
   */
  addOrphan(machineId: string, reason: string, now: number, destroyAt = now): void {
    this.db.run(
      "INSERT INTO orphan_machines (machine_id, reason, next_at, destroy_at) VALUES (?, ?, ?, ?) ON CONFLICT (machine_id) DO NOTHING",
      machineId,
      reason,
      now,
      destroyAt,
    );
  }

  /** Destroys `machineId` at the next alarm, even if it was due later (a machine caught lying). */
  orphanNow(machineId: string, reason: string, now: number): void {
    this.db.run(
      "INSERT INTO orphan_machines (machine_id, reason, next_at, destroy_at) VALUES (?, ?, ?, ?) ON CONFLICT (machine_id) DO UPDATE SET next_at = MIN(next_at, excluded.next_at), destroy_at = MIN(destroy_at, excluded.destroy_at)",
      machineId,
      reason,
      now,
      now,
    );
  }

  dueOrphans(now: number, limit: number): OrphanRow[] {
    return this.db.exec<OrphanRow & Record<string, SqlStorageValue>>(
      "SELECT machine_id, tries, destroy_at FROM orphan_machines WHERE next_at <= ? ORDER BY next_at LIMIT ?",
      now,
      limit,
    );
  }

  /** Looked at and still there: look again at `nextAt` (no try spent). */
  orphanRecheck(machineId: string, nextAt: number): void {
    this.db.run("UPDATE orphan_machines SET next_at = ? WHERE machine_id = ?", nextAt, machineId);
  }

  orphanDone(machineId: string): void {
    this.db.run("DELETE FROM orphan_machines WHERE machine_id = ?", machineId);
  }

  orphanRetry(machineId: string, nextAt: number): void {
    this.db.run("UPDATE orphan_machines SET tries = tries + 1, next_at = ? WHERE machine_id = ?", nextAt, machineId);
  }

  orphanCount(): number {
    return this.db.exec<{ n: number }>("SELECT COUNT(*) AS n FROM orphan_machines")[0].n;
  }

  /** When the next orphan is due (an index MIN lookup), or null. */
  earliestRetry(): number | null {
    return this.db.exec<{ t: number | null }>("SELECT MIN(next_at) AS t FROM orphan_machines")[0].t;
  }
}
