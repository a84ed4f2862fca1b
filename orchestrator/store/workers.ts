// Machines (the workers table), whatever the mode: a single-task machine is a row with its task
// assigned at create, a pool machine leases tasks. A machine that ends adds its time and cost
// to the batch's totals in meta, once, so status never sums rows.
import { type Guest, pricePerSecond } from "../../shared/fly-model.ts";
import { Queries, Sql } from "./sql.ts";

/**
 * A machine, whatever the mode. `creating`: create sent, answer not yet known; `booting`: created,
 * not yet seen started; `live`: started; `gone`: exited, destroyed or given up on. A single-task
 * machine has its task (and attempt) assigned at create; a pool machine leases tasks.
 */
export const WORKER_STATES = ["creating", "booting", "live", "gone"] as const;
export type WorkerState = (typeof WORKER_STATES)[number];
export interface WorkerRow {
  worker_id: string;
  phase: string;
  machine_id: string | null;
  state: WorkerState;
  created_at: number;
  check_at: number;
  limit_at: number;
  leases: number;
  last_seen: number | null;
  /** Single-task machine: its task and attempt. Null for a pool machine. */
  task_id: string | null;
  attempt: number;
  slots: number;
  /** The size it was created with (null for rows from before migration 6). */
  cpu_kind: "shared" | "performance" | null;
  cpus: number;
  memory_mb: number;
  /** When it was first seen started, and when it ended (exited, was destroyed or given up on). */
  started_at: number | null;
  ended_at: number | null;
  /** Where Fly created it (prices are per region); null before the create's answer (and before migration 12). */
  region: string | null;
}

export class WorkerQueries extends Queries {
  insertWorker(w: {
    worker_id: string;
    phase: string;
    now: number;
    check_at: number;
    limit_at: number;
    task_id?: string;
    attempt?: number;
    slots?: number;
    guest?: Guest;
  }): void {
    this.db.run(
      `INSERT INTO workers (worker_id, phase, state, created_at, check_at, limit_at, task_id, attempt, slots, cpu_kind, cpus, memory_mb)
       VALUES (?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      w.worker_id,
      w.phase,
      w.now,
      w.check_at,
      w.limit_at,
      w.task_id ?? null,
      w.attempt ?? 0,
      w.slots ?? 1,
      w.guest?.cpu_kind ?? null,
      w.guest?.cpus ?? 0,
      w.guest?.memory_mb ?? 0,
    );
  }

  getWorker(workerId: string): WorkerRow | null {
    return (this.db.exec<WorkerRow & Record<string, SqlStorageValue>>("SELECT * FROM workers WHERE worker_id = ?", workerId)[0] as WorkerRow) ?? null;
  }

  updateWorker(workerId: string, set: Partial<Omit<WorkerRow, "worker_id" | "phase">>): void {
    const before = set.state === "gone" || set.state === "live" ? this.getWorker(workerId) : null;
    if (before && before.state !== "gone" && set.state === "gone") {
      // A machine ends once: its time from create to now (the DO's clock) goes into the batch's totals.
      const now = Date.now();
      const ms = Math.max(0, now - before.created_at);
      set = { ...set, ended_at: now };
      const cost = before.cpu_kind ? (ms / 1000) * pricePerSecond({ cpu_kind: before.cpu_kind, cpus: before.cpus, memory_mb: before.memory_mb }, set.region ?? before.region) : 0;
      this.db.run(
        "UPDATE meta SET machine_ms = machine_ms + ?, machine_cost_usd = machine_cost_usd + ?, machines_ended = machines_ended + 1 WHERE id = 1",
        ms,
        cost,
      );
      this.db.run(
        `INSERT INTO phase_costs (phase, machine_ms, cost_usd, ended, last_guest) VALUES (?, ?, ?, 1, ?)
         ON CONFLICT (phase) DO UPDATE SET machine_ms = machine_ms + excluded.machine_ms, cost_usd = cost_usd + excluded.cost_usd,
           ended = ended + 1, last_guest = COALESCE(excluded.last_guest, last_guest)`,
        before.phase,
        ms,
        cost,
        before.cpu_kind ? JSON.stringify({ cpu_kind: before.cpu_kind, cpus: before.cpus, memory_mb: before.memory_mb }) : null,
      );
    }
    if (before && before.started_at === null && set.state === "live") set = { ...set, started_at: Date.now() };
    if (Object.keys(set).length === 0) return;
    const { sets, values } = Sql.sets(set);
    this.db.run(`UPDATE workers SET ${sets} WHERE worker_id = ?`, ...values, workerId);
  }

  deleteWorker(workerId: string): void {
    this.db.run("DELETE FROM workers WHERE worker_id = ?", workerId);
  }

  /** Live machines (creating, booting, live): at most MAX_CONCURRENT_MACHINES rows. */
  liveWorkers(): WorkerRow[] {
    return this.db.exec<WorkerRow & Record<string, SqlStorageValue>>("SELECT * FROM workers WHERE state IN ('creating', 'booting', 'live')");
  }

  workersDue(now: number, limit: number): WorkerRow[] {
    const rows: WorkerRow[] = [];
    for (const state of ["creating", "booting", "live"] as const) {
      rows.push(
        ...this.db.exec<WorkerRow & Record<string, SqlStorageValue>>(
          "SELECT * FROM workers WHERE state = ? AND check_at <= ? ORDER BY check_at LIMIT ?",
          state,
          now,
          limit,
        ),
      );
    }
    return rows.slice(0, limit);
  }

  /**
   * Pool machines only (single-task machines have their task), per live state, and the open tasks
   * their slots cover: every slot of a machine of `shape` (the phase's plan), and only the running
   * tasks of a machine of another (a plan re-made from measurements: it takes no new task).
   */
  poolMachineCounts(shape?: { slots: number; cpu_kind: string; cpus: number; memory_mb: number }): { creating: number; booting: number; live: number; slots: number; stale: number } {
    const count = (state: WorkerState) =>
      this.db.exec<{ n: number; s: number | null }>("SELECT COUNT(*) AS n, SUM(slots) AS s FROM workers WHERE state = ? AND task_id IS NULL", state)[0];
    const [c, b, l] = [count("creating"), count("booting"), count("live")];
    let slots = (c.s ?? 0) + (b.s ?? 0) + (l.s ?? 0);
    let staleMachines = 0;
    if (shape) {
      const other = "task_id IS NULL AND state IN ('creating', 'booting', 'live') AND cpu_kind IS NOT NULL AND NOT (slots = ? AND cpu_kind = ? AND cpus = ? AND memory_mb = ?)";
      const args = [shape.slots, shape.cpu_kind, shape.cpus, shape.memory_mb];
      const stale = this.db.exec<{ n: number; s: number | null }>(`SELECT COUNT(*) AS n, SUM(slots) AS s FROM workers WHERE ${other}`, ...args)[0];
      staleMachines = stale.n;
      if (stale.n > 0) {
        const held = this.db.exec<{ n: number }>(
          `SELECT COUNT(*) AS n FROM tasks WHERE state = 'running' AND worker_id IN (SELECT worker_id FROM workers WHERE ${other})`,
          ...args,
        )[0].n;
        slots += held - (stale.s ?? 0);
      }
    }
    return { creating: c.n, booting: b.n, live: l.n, slots, stale: staleMachines };
  }

  /**
   * What the batch's machines may hold of the fleet: every machine not yet known gone — creating,
   * booting or live, and every one waiting to be seen gone or destroyed (an orphan). `unsized`:
   * orphans of no known size (found by a listing, never created by this batch's rows).
   */
  fleetUsage(): { machines: number; vcpus: number; memory_mb: number; unsized: number; rows: number } {
    const live = this.db.exec<{ n: number; cpus: number | null; memory: number | null }>(
      "SELECT COUNT(*) AS n, SUM(cpus) AS cpus, SUM(memory_mb) AS memory FROM workers WHERE state IN ('creating', 'booting', 'live')",
    )[0];
    const orphans = this.db.exec<{ n: number; cpus: number | null; memory: number | null; unsized: number | null }>(
      `SELECT COUNT(*) AS n, SUM(w.cpus) AS cpus, SUM(w.memory_mb) AS memory,
              SUM(CASE WHEN w.cpus IS NULL OR w.cpus = 0 THEN 1 ELSE 0 END) AS unsized
       FROM orphan_machines o LEFT JOIN workers w ON w.machine_id = o.machine_id AND w.state = 'gone'`,
    )[0];
    return {
      machines: live.n + orphans.n,
      vcpus: (live.cpus ?? 0) + (orphans.cpus ?? 0),
      memory_mb: (live.memory ?? 0) + (orphans.memory ?? 0),
      unsized: orphans.unsized ?? 0,
      /** Of `machines`, those still rows (creating, booting, live): what counts against the batch's share. */
      rows: live.n,
    };
  }

  /**
   * The `n` pool machines to drain first when the batch holds more than its share: those that will be
   * free soonest. A machine leaves when its last slot's task ends, so: machines not yet leasing
   * (creating, booting: nothing to finish), then by the start of the newest task they run, oldest
   * first (one whose slots all started long ago is nearly through them; a pool's slots tend to run in
   * step, so this is often seconds away rather than a whole task). Stable while draining: a draining
   * machine starts no task, so its newest start only ages. Ties: the newest machine.
   */
  poolMachinesToDrain(n: number): string[] {
    if (n <= 0) return [];
    return this.db
      .exec<{ worker_id: string }>(
        // One pass over the running tasks (by the state index), not one per machine: a lease runs this
        // while the batch is over its share, and tasks has no index by worker.
        `SELECT w.worker_id FROM workers w
         LEFT JOIN (SELECT worker_id, MAX(attempt_started_at) AS newest FROM tasks WHERE state = 'running' GROUP BY worker_id) t
           ON t.worker_id = w.worker_id
         WHERE w.task_id IS NULL AND w.state IN ('creating', 'booting', 'live')
         ORDER BY w.state = 'live', COALESCE(t.newest, 0), w.worker_id DESC
         LIMIT ?`,
        n,
      )
      .map((r) => r.worker_id);
  }

  /** Machines not yet ended (at most MAX_CONCURRENT_MACHINES rows): for the running part of the cost. */
  unendedMachines(): { phase: string; created_at: number; cpu_kind: "shared" | "performance" | null; cpus: number; memory_mb: number; region: string | null }[] {
    return this.db.exec<{ phase: string; created_at: number; cpu_kind: "shared" | "performance" | null; cpus: number; memory_mb: number; region: string | null }>(
      "SELECT phase, created_at, cpu_kind, cpus, memory_mb, region FROM workers WHERE state IN ('creating', 'booting', 'live')",
    );
  }

  /** Each phase's ended machines: their time from create to end and its estimated cost (one row per phase). */
  phaseCosts(): { phase: string; machine_ms: number; cost_usd: number; ended: number; last_guest: string | null }[] {
    return this.db.exec<{ phase: string; machine_ms: number; cost_usd: number; ended: number; last_guest: string | null }>(
      "SELECT phase, machine_ms, cost_usd, ended, last_guest FROM phase_costs",
    );
  }

  /** When the next machine check is due (index MIN lookups), or null. */
  earliestCheck(): number | null {
    return this.db.earliest("SELECT MIN(check_at) AS t FROM workers WHERE state = ?", ["creating", "booting", "live"]);
  }
}
