// Makespan: the real engine (BatchDO, its alarms, create budget and concurrency limit) and the
// Fly Machines API emulator, run as a discrete-event simulation. Virtual time drives both:
// Date is faked (the DO runs in this isolate) and starts in 2100, so the runtime never fires
// an alarm by itself; this file fires each alarm when virtual time reaches it, and each
// emulator timer (boot, machine run, auto-destroy) through the emulator's Clock.
import { runInDurableObject } from "cloudflare:test";
import { inject, it, vi } from "vitest";
import type { Clock, RunnerEvents, RunnerMachine, MachineRunner } from "../../local/fly-emulator/core.ts";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { getStatus, installWorld, stub } from "../../test/workers/support/engine.ts";
import { callBack, progress, putManifest, quietEngineLogs, report } from "./support.ts";

declare module "vitest" {
  export interface ProvidedContext {
    makespan: { conversionMs: number; bootDelayMs: number; sizes: number[]; fileBytes: number };
  }
}

const START = Date.UTC(2100, 0, 1);
const MACHINES = 50; // MAX_CONCURRENT_MACHINES of the makespan project (wrangler.jsonc's value)
const CREATE = { perSecond: 1, burst: 3 }; // Fly's documented create limit per app

/** A clock that moves only when the simulation moves it, and says when its next timer is due. */
class SimClock implements Clock {
  #now = START;
  #timers = new Map<number, { at: number; fn: () => void }>();
  #next = 1;
  now(): number {
    return this.#now;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  nextAt(): number | null {
    let at: number | null = null;
    for (const t of this.#timers.values()) if (at === null || t.at < at) at = t.at;
    return at;
  }
  set(now: number): void {
    this.#now = now;
    vi.setSystemTime(now);
  }
  /** Fires every timer due by now, in time order (timers they set for now fire too). */
  fireDue(): void {
    for (;;) {
      let due: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) if (entry[1].at <= this.#now && (!due || entry[1].at < due[1].at)) due = entry;
      if (!due) return;
      this.#timers.delete(due[0]);
      due[1].fn();
    }
  }
}

/** Each machine converts for `durationMs` (the measured conversion time), then calls back. */
class TimedRunner implements MachineRunner {
  readonly inFlight = new Set<Promise<void>>();
  readonly #clock: SimClock;
  readonly #durationMs: number;
  readonly #timers = new Map<string, unknown>();
  constructor(clock: SimClock, durationMs: number) {
    this.#clock = clock;
    this.#durationMs = durationMs;
  }
  start(machine: RunnerMachine, events: RunnerEvents): void {
    const timer = this.#clock.setTimeout(() => {
      this.#timers.delete(machine.id);
      const p = callBack(machine).then((code) => events.exit(code === 200 ? 0 : 2));
      this.inFlight.add(p);
      void p.finally(() => this.inFlight.delete(p));
    }, this.#durationMs);
    this.#timers.set(machine.id, timer);
  }
  kill(id: string): void {
    this.#clock.clearTimeout(this.#timers.get(id));
    this.#timers.delete(id);
  }
  async settle(): Promise<boolean> {
    if (this.inFlight.size === 0) return false;
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
    return true;
  }
}

/** Runs the DO's alarm if it is due at virtual `now`; returns when the next one is set. */
function alarmStep(batchId: string, now: number): Promise<{ ran: boolean; next: number | null }> {
  return runInDurableObject(stub(batchId), async (instance: BatchDO, state) => {
    const at = await state.storage.getAlarm();
    if (at === null || at > now) return { ran: false, next: at };
    await state.storage.deleteAlarm();
    await instance.alarm();
    return { ran: true, next: await state.storage.getAlarm() };
  });
}

async function simulate(n: number, conversionMs: number, bootDelayMs: number, fileBytes: number) {
  const batchId = `makespan-${n}`;
  const clock = new SimClock();
  clock.set(START);
  const runner = new TimedRunner(clock, conversionMs);
  const world = installWorld({
    runner,
    clock,
    rateLimits: { create: CREATE, read: { perSecond: 5, burst: 10 }, other: { perSecond: 1, burst: 3 } },
    faults: { bootDelayMs },
  });
  const real0 = performance.now();
  let alarms = 0;
  try {
    const manifestKey = await putManifest(batchId, n, fileBytes);
    await stub(batchId).start({ batch_id: batchId, manifest_r2_key: manifestKey });
    let alarmAt: number | null = clock.now();
    for (;;) {
      const emulatorAt = clock.nextAt();
      const at = Math.min(alarmAt ?? Infinity, emulatorAt ?? Infinity);
      if (at === Infinity) break;
      clock.set(Math.max(clock.now(), at));
      if (emulatorAt !== null && emulatorAt <= clock.now()) {
        clock.fireDue();
        // Callbacks reach the DO (and may bring its alarm forward): let them land first.
        if (await runner.settle()) alarmAt = (await alarmStep(batchId, -1)).next;
        continue;
      }
      const step = await alarmStep(batchId, clock.now());
      if (step.ran) alarms++;
      alarmAt = step.next;
    }
    const status = await getStatus(batchId);
    if (status.status !== "DONE" || status.progress.tasks_completed !== n) {
      throw new Error(`simulation ended with the batch ${status.status}: ${JSON.stringify(status.progress)}`);
    }
    const makespanMs = Date.parse(status.completed_at!) - Date.parse(status.started_at);
    // Billed time of each machine: from create until it stopped (auto_destroy follows at once).
    let machineMs = 0;
    let machines = 0;
    for (const m of world.fly.machines()) {
      const events = m.events as { status: string; timestamp: number }[];
      const created = Math.min(...events.map((e) => e.timestamp));
      const stopped = events.filter((e) => e.status === "stopped" || e.status === "destroyed").map((e) => e.timestamp);
      machineMs += Math.min(...stopped) - created;
      machines++;
    }
    const creates = world.fly.requests.filter((r) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]));
    const createMs = ((n - CREATE.burst) / CREATE.perSecond) * 1000;
    const workMs = (n * conversionMs) / MACHINES;
    return {
      tasks: n,
      machines_limit: MACHINES,
      conversion_ms: conversionMs,
      boot_delay_ms: bootDelayMs,
      makespan_s: makespanMs / 1000,
      machine_s: machineMs / 1000,
      machines,
      lower_bound_s: Math.max(createMs, workMs) / 1000,
      create_bound_s: createMs / 1000,
      work_bound_s: workMs / 1000,
      creates_429: creates.filter((r) => r.status === 429).length,
      alarms,
      real_s: (performance.now() - real0) / 1000,
    };
  } finally {
    await world.restore();
  }
}

it("makespan", async () => {
  const { conversionMs, bootDelayMs, sizes, fileBytes } = inject("makespan");
  const restore = quietEngineLogs();
  vi.useFakeTimers({ toFake: ["Date"] });
  try {
    const results = [];
    for (const n of sizes) {
      const r = await simulate(n, conversionMs, bootDelayMs, fileBytes);
      progress(`  makespan ${n} tasks: ${r.makespan_s.toFixed(0)} s simulated in ${r.real_s.toFixed(1)} s (lower bound ${r.lower_bound_s.toFixed(0)} s)`);
      results.push(r);
    }
    report("makespan", results);
  } finally {
    vi.useRealTimers();
    restore();
  }
});
