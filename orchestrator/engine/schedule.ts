// Scheduling, as a pure function: from the phase's counts, the machines and the budgets, how
// many machines to create now, whether the phase is finished, and when to look again.

export interface SchedulerState {
  mode: "single" | "pool";
  /** The current phase's tasks by state. */
  counts: { pending: number; retrying: number; creating: number; booting: number; running: number };
  /**
   * Pool mode: pool machines creating, booting or live, of them those of an earlier plan (a phase
   * re-sized from measurements: they finish their tasks and leave), and the open tasks their slots cover.
   */
  poolMachines: number;
  poolStale: number;
  poolSlots: number;
  /** Pool mode: machines the phase's plan wants (maxLive is the hard limit on all of them). */
  planMachines: number;
  /** Pool mode: tasks one new machine runs at once. */
  slots: number;
  maxLive: number;
  /** Tasks whose backoff has passed (single mode spawns for them), counted up to the per-alarm cap. */
  ready: number;
  /** When the next waiting task's backoff passes. */
  readyAt: number | null;
  /** No create before this (a Retry-After the API asked for). */
  blockedUntil: number;
  /** When the app's create budget next has a token. */
  budgetAt: number;
  /** The earliest deadline of a task, machine check or orphan destroy. */
  earliestDeadline: number | null;
  checkIntervalMs: number;
  spawnsPerAlarm: number;
}

export interface Decision {
  phaseFinished: boolean;
  /** Machines to create now (each still needs a create token). */
  create: number;
  nextAt: number;
}

/** Pool machines worth creating: a slot per open task the live machines' slots do not cover, within the plan's machines and the phase's concurrency. */
export function poolRoom(s: Pick<SchedulerState, "counts" | "slots" | "maxLive" | "poolMachines" | "poolStale" | "poolSlots" | "planMachines">): number {
  const uncovered = s.counts.pending + s.counts.retrying + s.counts.running - s.poolSlots;
  return Math.min(s.maxLive - s.poolMachines, s.planMachines - (s.poolMachines - s.poolStale), Math.ceil(uncovered / s.slots));
}

export function decide(s: SchedulerState, now: number): Decision {
  const c = s.counts;
  const waiting = c.pending + c.retrying;
  if (waiting + c.creating + c.booting + c.running === 0) return { phaseFinished: true, create: 0, nextAt: now };
  const blocked = Math.max(s.blockedUntil, now) > now;
  let room: number;
  let wantsMore: boolean;
  if (s.mode === "pool") {
    room = poolRoom(s);
    wantsMore = room > 0;
  } else {
    room = Math.min(s.maxLive - (c.creating + c.booting + c.running), s.ready);
    wantsMore = c.creating + c.booting + c.running < s.maxLive && waiting > 0;
  }
  const create = blocked ? 0 : Math.max(0, Math.min(room, s.spawnsPerAlarm));
  let nextAt = s.earliestDeadline ?? now + s.checkIntervalMs;
  if (wantsMore && waiting > 0) {
    // The next create: once a task is ready (pool mode: a machine is wanted now), a create
    // token is there and any Retry-After has passed.
    const readyAt = s.mode === "pool" ? now : (s.readyAt ?? now);
    nextAt = Math.min(nextAt, Math.max(readyAt, s.budgetAt, s.blockedUntil));
  }
  return { phaseFinished: false, create, nextAt };
}
