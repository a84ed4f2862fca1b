// Every output key reserved before it is written: a key is a task's (by page) or a file's,
// never both and never two tasks', so no machine overwrites another's output or an input.
import { Queries } from "./sql.ts";

export class OutputQueries extends Queries {
  /** True when `key` is already a file of the batch or reserved as a task's output. */
  keyTaken(key: string): boolean {
    return this.db.exec("SELECT 1 FROM files WHERE r2_key = ? UNION ALL SELECT 1 FROM outputs WHERE key = ? LIMIT 1", key, key).length > 0;
  }

  /** Reserves `key` as page `page` of `taskId`'s outputs; false when it is taken (by a file or any task). */
  reserveOutput(key: string, taskId: string, page: number): boolean {
    if (this.keyTaken(key)) return false;
    return this.insert(key, taskId, page);
  }

  /** Records `key` as page `page` of `taskId` (a new task's first output, checked by the planner); false when already there. */
  insert(key: string, taskId: string, page: number): boolean {
    return this.db.run("INSERT INTO outputs (key, task_id, page) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", key, taskId, page) > 0;
  }

  /** The key reserved as page `page` of a task, or null (one lookup on outputs_task_page). */
  outputOf(taskId: string, page: number): string | null {
    return this.db.exec<{ key: string }>("SELECT key FROM outputs WHERE task_id = ? AND page = ?", taskId, page)[0]?.key ?? null;
  }

  /** The highest page reserved for a task (0 when none): one lookup on outputs_task_page. */
  lastPageOf(taskId: string): number {
    return this.db.exec<{ p: number | null }>("SELECT MAX(page) AS p FROM outputs WHERE task_id = ?", taskId)[0]?.p ?? 0;
  }

  /** The keys reserved for a task, by page. */
  outputsOf(taskId: string): { key: string; page: number }[] {
    return this.db.exec<{ key: string; page: number }>("SELECT key, page FROM outputs WHERE task_id = ? ORDER BY page", taskId);
  }
}
