// Every output key reserved before it is written: a key is a task's (by page) or a file's,
// never both and never two tasks', so no machine overwrites another's output or an input.
// Page 1 is the task's own output_key (a unique column of tasks, reserved when it is planned);
// pages 2… are rows here, reserved when the machine asks for them.
import { Queries } from "./sql.ts";

export class OutputQueries extends Queries {
  /** True when `key` is already a file of the batch, a task's output or a reserved page. */
  keyTaken(key: string): boolean {
    return (
      this.db.exec(
        "SELECT 1 FROM files WHERE r2_key = ? UNION ALL SELECT 1 FROM tasks WHERE output_key = ? UNION ALL SELECT 1 FROM outputs WHERE key = ? LIMIT 1",
        key,
        key,
        key,
      ).length > 0
    );
  }

  /** Reserves `key` as page `page` of `taskId`'s outputs; false when it is taken (by a file or any task). */
  reserveOutput(key: string, taskId: string, page: number): boolean {
    if (this.keyTaken(key)) return false;
    return this.db.run("INSERT INTO outputs (key, task_id, page) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", key, taskId, page) > 0;
  }

  /** The key reserved as page `page` of a task, or null: page 1 is its output_key, pages 2… rows here (outputs_task_page). */
  outputOf(taskId: string, page: number): string | null {
    // Page 1 is the task's own column (one row by its key), not a read of every page it reserved: a
    // 4,000-page task asks for each page's URL in turn.
    if (page === 1) return this.db.exec<{ key: string }>("SELECT output_key AS key FROM tasks WHERE task_id = ? AND output_key NOT LIKE '(none:%'", taskId)[0]?.key ?? null;
    return this.db.exec<{ key: string }>("SELECT key FROM outputs WHERE task_id = ? AND page = ?", taskId, page)[0]?.key ?? null;
  }

  /** The keys reserved for a task, by page: its output_key (page 1), then the pages it reserved. */
  outputsOf(taskId: string): { key: string; page: number }[] {
    // Batches planned before migration 12 also kept page 1 here: the task's column is the one that counts.
    return this.db.exec<{ key: string; page: number }>(
      `SELECT output_key AS key, 1 AS page FROM tasks WHERE task_id = ? AND output_key NOT LIKE '(none:%'
       UNION ALL SELECT key, page FROM outputs WHERE task_id = ? AND page > 1 ORDER BY page`,
      taskId,
      taskId,
    );
  }
}
