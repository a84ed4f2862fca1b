// phase_tally: one row per phase with its tasks by state, kept exact in the same transaction as
// every task change (tasks.ts is the only caller of move/add), so status reads a handful of
// rows, never the tasks. A task's move rewrites that one row (a row per state would be two: DO
// SQLite bills each, developers.cloudflare.com/durable-objects/platform/pricing). The same row
// keeps what the phase's callbacks added to the file list and what its machines measured.
import { Queries } from "./sql.ts";
import type { TaskState } from "./tasks.ts";

export type PhaseCounts = Record<TaskState, number> & { phase: string; total: number };

/** What a phase's machines reported of the tasks they converted: sizing learns from it. */
export interface PhaseMeasured {
  phase: string;
  /** Tasks that reported both figures. */
  tasks: number;
  cpuS: number;
  megapixels: number;
  /** Input bytes of those tasks. */
  bytes: number;
}

/** Added to a phase's row with a task's move: files its callback added, its outputs, what its machine measured. */
export interface TallyExtra {
  files?: number;
  outputs?: { count: number; bytes: number };
  measured?: { cpuS: number; megapixels: number; bytes: number };
}

/** What a phase's tasks used that is billed per use: attempts (each downloads its input), outputs (each a PUT and a ranged GET of its first bytes) and their bytes. */
export interface PhaseUsage {
  attempts: number;
  outputs: number;
  outputBytes: number;
}

const STATES: readonly TaskState[] = ["pending", "retrying", "creating", "booting", "running", "done", "failed"];

export class CountQueries extends Queries {
  /** `n` tasks enter `state` (planned) or move `from` → `to`; one row written either way. */
  move(phase: string, from: TaskState | null, to: TaskState, n: number, extra: TallyExtra = {}): void {
    const sets = [`${to} = ${to} + ?`];
    const values: (number | string)[] = [n];
    if (from && from !== to) {
      sets.push(`${from} = ${from} - ?`);
      values.push(n);
    }
    // A task leaving pending or retrying for a machine begins an attempt (its input is downloaded once).
    if ((from === "pending" || from === "retrying") && to !== "failed" && to !== "done") {
      sets.push("attempts = attempts + ?");
      values.push(n);
    }
    if (extra.outputs) {
      sets.push("outputs = outputs + ?", "output_bytes = output_bytes + ?");
      values.push(extra.outputs.count, extra.outputs.bytes);
    }
    if (extra.files) {
      sets.push("files_added = files_added + ?");
      values.push(extra.files);
    }
    if (extra.measured) {
      sets.push("measured_tasks = measured_tasks + 1", "measured_cpu_s = measured_cpu_s + ?", "measured_megapixels = measured_megapixels + ?", "measured_bytes = measured_bytes + ?");
      values.push(extra.measured.cpuS, extra.measured.megapixels, extra.measured.bytes);
    }
    if (!STATES.includes(to) || (from && !STATES.includes(from))) throw new Error(`unknown task state ${from} → ${to}`);
    const changed = this.db.run(`UPDATE phase_tally SET ${sets.join(", ")} WHERE phase = ?`, ...values, phase);
    if (changed === 0) {
      this.db.run("INSERT INTO phase_tally (phase) VALUES (?)", phase);
      this.db.run(`UPDATE phase_tally SET ${sets.join(", ")} WHERE phase = ?`, ...values, phase);
    }
  }

  counts(): PhaseCounts[] {
    const rows = this.db.exec<Record<TaskState, number> & { phase: string }>(`SELECT phase, ${STATES.join(", ")} FROM phase_tally`);
    return rows.map((r) => ({ ...r, total: STATES.reduce((n, s) => n + r[s], 0) }));
  }

  phaseCounts(phase: string): PhaseCounts {
    const empty = { phase, total: 0, pending: 0, retrying: 0, creating: 0, booting: 0, running: 0, done: 0, failed: 0 };
    return this.counts().find((c) => c.phase === phase) ?? empty;
  }

  /** Files the phases' callbacks added to the list (the rest of the count is in meta.files_total). */
  filesAdded(): number {
    return this.db.exec<{ n: number | null }>("SELECT SUM(files_added) AS n FROM phase_tally")[0].n ?? 0;
  }

  /** What each phase's tasks used (its R2 operations and egress): one tally row a phase. */
  usage(): (PhaseUsage & { phase: string })[] {
    return this.db
      .exec<{ phase: string; a: number; o: number; b: number }>("SELECT phase, attempts AS a, outputs AS o, output_bytes AS b FROM phase_tally")
      .map((r) => ({ phase: r.phase, attempts: r.a, outputs: r.o, outputBytes: r.b }));
  }

  measured(phase: string): PhaseMeasured {
    const row = this.db.exec<{ t: number; c: number; m: number; b: number }>(
      "SELECT measured_tasks AS t, measured_cpu_s AS c, measured_megapixels AS m, measured_bytes AS b FROM phase_tally WHERE phase = ?",
      phase,
    )[0];
    return { phase, tasks: row?.t ?? 0, cpuS: row?.c ?? 0, megapixels: row?.m ?? 0, bytes: row?.b ?? 0 };
  }
}
