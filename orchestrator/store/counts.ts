// phase_counts: tasks per phase and state, kept exact in the same transaction as every task
// change (tasks.ts is the only caller of bump), so status reads a handful of rows, never the tasks.
import { Queries } from "./sql.ts";
import type { TaskState } from "./tasks.ts";

export type PhaseCounts = Record<TaskState, number> & { phase: string; total: number };

export class CountQueries extends Queries {
  bump(phase: string, state: TaskState, delta: number): void {
    this.db.run(
      `INSERT INTO phase_counts (phase, state, n) VALUES (?, ?, ?)
       ON CONFLICT (phase, state) DO UPDATE SET n = n + excluded.n`,
      phase,
      state,
      delta,
    );
  }

  counts(): PhaseCounts[] {
    const rows = this.db.exec<{ phase: string; state: TaskState; n: number }>("SELECT phase, state, n FROM phase_counts");
    const byPhase = new Map<string, PhaseCounts>();
    for (const r of rows) {
      let c = byPhase.get(r.phase);
      if (!c) {
        c = { phase: r.phase, total: 0, pending: 0, retrying: 0, creating: 0, booting: 0, running: 0, done: 0, failed: 0 };
        byPhase.set(r.phase, c);
      }
      c[r.state] += r.n;
      c.total += r.n;
    }
    return [...byPhase.values()];
  }

  phaseCounts(phase: string): PhaseCounts {
    return (
      this.counts().find((c) => c.phase === phase) ?? {
        phase,
        total: 0,
        pending: 0,
        retrying: 0,
        creating: 0,
        booting: 0,
        running: 0,
        done: 0,
        failed: 0,
      }
    );
  }
}
