// Events: what a live stream (SSE) resumes from, by id; only the latest few thousand are kept.
import { Queries } from "./sql.ts";

export class EventQueries extends Queries {
  /** Appends an event; keeps the latest `keep` so the table never grows with the batch. */
  addEvent(type: string, data: unknown, now: number, keep = 5000): number {
    this.db.run("INSERT INTO events (type, data, at) VALUES (?, ?, ?)", type, JSON.stringify(data), now);
    const id = this.db.exec<{ id: number }>("SELECT last_insert_rowid() AS id")[0].id;
    if (id % 100 === 0) this.db.run("DELETE FROM events WHERE id <= ?", id - keep);
    return id;
  }

  eventsAfter(id: number, limit: number): { id: number; type: string; data: string }[] {
    return this.db.exec<{ id: number; type: string; data: string }>("SELECT id, type, data FROM events WHERE id > ? ORDER BY id LIMIT ?", id, limit);
  }

  lastEventId(): number {
    return this.db.exec<{ id: number | null }>("SELECT MAX(id) AS id FROM events")[0].id ?? 0;
  }
}
