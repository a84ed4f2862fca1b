// The scheduler is a pure function: decide(state, now) → how many machines to create, whether
// the phase is finished, and when to look again. No workerd needed.
import { describe, expect, it } from "vitest";
import { decide, poolRoom, type SchedulerState } from "../../orchestrator/engine/schedule.ts";

const NOW = 1_000_000;
const base: SchedulerState = {
  mode: "single",
  counts: { pending: 0, retrying: 0, creating: 0, booting: 0, running: 0 },
  poolMachines: 0,
  poolStale: 0,
  poolSlots: 0,
  planMachines: 20,
  slots: 1,
  maxLive: 20,
  ready: 0,
  readyAt: null,
  blockedUntil: 0,
  budgetAt: 0,
  earliestDeadline: null,
  checkIntervalMs: 30_000,
  spawnsPerAlarm: 40,
};
const state = (over: Partial<SchedulerState>, counts: Partial<SchedulerState["counts"]> = {}): SchedulerState => ({ ...base, ...over, counts: { ...base.counts, ...counts } });

describe("decide", () => {
  it("finishes a phase with no open task", () => {
    expect(decide(state({}), NOW)).toEqual({ phaseFinished: true, create: 0, nextAt: NOW });
  });

  it("single-task mode: one machine per ready task, within the concurrency and the per-alarm cap", () => {
    expect(decide(state({ ready: 30 }, { pending: 30 }), NOW).create).toBe(20);
    expect(decide(state({ ready: 30, maxLive: 100 }, { pending: 30 }), NOW).create).toBe(30);
    expect(decide(state({ ready: 100, maxLive: 100 }, { pending: 100 }), NOW).create).toBe(40);
    expect(decide(state({ ready: 5 }, { pending: 5, running: 18 }), NOW).create).toBe(2);
    // Tasks still in their backoff get no machine yet; the next look is when the first is ready.
    const waiting = decide(state({ ready: 0, readyAt: NOW + 4000 }, { retrying: 3 }), NOW);
    expect(waiting).toMatchObject({ create: 0, nextAt: NOW + 4000 });
  });

  it("creates nothing while the API's Retry-After holds, and wakes when it passes (or the budget refills)", () => {
    expect(decide(state({ ready: 5, blockedUntil: NOW + 7000 }, { pending: 5 }), NOW)).toMatchObject({ create: 0, nextAt: NOW + 7000 });
    expect(decide(state({ ready: 5, budgetAt: NOW + 900 }, { pending: 5 }), NOW).nextAt).toBe(NOW + 900);
  });

  it("pool mode: machines for one slot per open task, never more than the concurrency", () => {
    // 12 open tasks, 4 slots a machine, nothing live: 3 machines.
    expect(poolRoom({ counts: { ...base.counts, pending: 10, running: 2 }, slots: 4, maxLive: 20, poolMachines: 0, poolStale: 0, poolSlots: 0, planMachines: 20 })).toBe(3);
    // One 4-slot machine live: 8 tasks uncovered, 2 more.
    expect(decide(state({ mode: "pool", slots: 4, poolMachines: 1, poolSlots: 4 }, { pending: 10, running: 2 }), NOW).create).toBe(2);
    expect(decide(state({ mode: "pool", slots: 1, poolMachines: 0, maxLive: 5 }, { pending: 50 }), NOW).create).toBe(5);
    // The plan wants 4 machines though 20 are allowed: 4.
    expect(decide(state({ mode: "pool", slots: 1, planMachines: 4 }, { pending: 50 }), NOW).create).toBe(4);
    // A re-sized phase: two 8-slot machines of the old plan take no new task and cover only the 8
    // tasks they run; 22 more need ceil(22 / 4) = 6 new 4-slot machines, the plan wanting 5: 5.
    expect(decide(state({ mode: "pool", slots: 4, poolMachines: 2, poolStale: 2, poolSlots: 8, planMachines: 5 }, { pending: 22, running: 8 }), NOW).create).toBe(5);
    // Twelve old machines hold 12 of the 20 allowed: 8 more at most, whatever the plan wants.
    expect(decide(state({ mode: "pool", slots: 1, poolMachines: 12, poolStale: 12, poolSlots: 0, planMachines: 9 }, { pending: 9 }), NOW).create).toBe(8);
    // Enough machines: none created; look again at the earliest deadline.
    expect(decide(state({ mode: "pool", slots: 2, poolMachines: 3, poolSlots: 6, earliestDeadline: NOW + 1500 }, { pending: 2, running: 4 }), NOW)).toEqual({
      phaseFinished: false,
      create: 0,
      nextAt: NOW + 1500,
    });
  });

  it("with nothing to create it looks again at the earliest deadline, or after the check interval", () => {
    expect(decide(state({ earliestDeadline: NOW + 2500 }, { running: 3 }), NOW).nextAt).toBe(NOW + 2500);
    expect(decide(state({}, { running: 3 }), NOW).nextAt).toBe(NOW + 30_000);
  });
});
