// Makespan: the real engine (BatchDO, its alarms, create budget, concurrency limit, leases) and
// the Fly Machines API emulator, run as a discrete-event simulation, once per size in each mode:
// single-task (one machine per TIFF) and pool (machines lease task after task, in as many
// lease loops at once as the batch's pool_tasks_per_machine gives them). Virtual time
// drives everything: Date is faked (the DO runs in this isolate) and starts in 2100, so the
// runtime never fires an alarm by itself; this file fires each alarm when virtual time reaches
// it, and each emulator timer (boot, conversion end, lease retry, heartbeat, auto-destroy)
// through the emulator's Clock.
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { inject, it, vi } from "vitest";
import { z } from "zod";
import { ManualClock, machineProcessEnv, type MachineRunner, type RunnerEvents, type RunnerMachine } from "../../local/fly-emulator/core.ts";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { LeaseResponse } from "../../shared/contracts.ts";
import { getStatus, installWorld, stub } from "../../test/workers/support/engine.ts";
import { callBack, callBackWith, progress, putManifest, quietEngineLogs, report } from "./support.ts";

declare module "vitest" {
  export interface ProvidedContext {
    makespan: { conversionMs: number; bootDelayMs: number; sizes: number[]; fileBytes: number; modes: Mode[]; machines: number; slots: number };
  }
}

export type Mode = "single" | "pool";

const START = Date.UTC(2100, 0, 1);
const CREATE = { perSecond: 1, burst: 3 }; // Fly's documented create limit per app

/** The emulator's manual clock, with the isolate's Date following it (the DO reads Date.now()). */
class SimClock extends ManualClock {
  constructor() {
    super(START);
  }
  override set(now: number): void {
    super.set(now);
    vi.setSystemTime(now);
  }
}

/** Machines whose HTTP work (callbacks, leases) the simulation awaits before time moves on. */
interface SimRunner extends MachineRunner {
  settle(): Promise<boolean>;
}

/** Tracks the async work a timer started, so the simulation can wait for it at this instant. */
class InFlight {
  readonly #set = new Set<Promise<void>>();
  add(p: Promise<void>): void {
    this.#set.add(p);
    void p.finally(() => this.#set.delete(p));
  }
  async settle(): Promise<boolean> {
    if (this.#set.size === 0) return false;
    while (this.#set.size > 0) await Promise.all([...this.#set]);
    return true;
  }
}

/** Single-task mode: each machine converts for `durationMs` (the measured time), calls back, exits. */
class TimedRunner implements SimRunner {
  readonly #inFlight = new InFlight();
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
      this.#inFlight.add(callBack(machine).then((code) => events.exit(code === 200 ? 0 : 2)));
    }, this.#durationMs);
    this.#timers.set(machine.id, timer);
  }
  kill(id: string): void {
    this.#clock.clearTimeout(this.#timers.get(id));
    this.#timers.delete(id);
  }
  settle(): Promise<boolean> {
    return this.#inFlight.settle();
  }
}

type TaskLease = Extract<LeaseResponse, { kind: "task" }>;

/** Why a lease loop ended: told `done`, idle for IDLE_TIMEOUT_MS, or refused by the lease endpoint. */
type LoopEnd = "done" | "idle" | "refused";

interface PoolMachine {
  env: Record<string, string>;
  events: RunnerEvents;
  idleTimeoutMs: number;
  bootedAt: number;
  /** Timers of all its loops (lease retries, conversions, heartbeats): a kill clears them all. */
  timers: Set<unknown>;
  /** Lease loops still running; the machine exits when the last one ends. */
  loops: number;
  /** The first non-zero code a loop ended with (fly-worker's exit code), else 0. */
  code: number;
  lastTaskEnd: number | null;
  /** Tasks in flight now, and the most it ever had at once (did all its slots work together?). */
  busy: number;
  peakBusy: number;
  exited: boolean;
}

/** One of a machine's POOL_CONCURRENCY lease loops, with its own idle clock and heartbeat. */
interface PoolSlot {
  machine: PoolMachine;
  idleSince: number;
  heartbeat: unknown;
}

/**
 * Pool mode: each machine runs fly-worker/pool.ts in virtual time — POOL_CONCURRENCY lease
 * loops side by side, each leasing via the Worker's POST /lease/:batchId (its signed
 * LEASE_TOKEN), converting for the measured time while heartbeating every heartbeat_ms, calling
 * back and leasing again; a loop ends on `done`, after IDLE_TIMEOUT_MS of `wait` answers (never
 * sleeping past its idle deadline) or a refused lease, and the machine exits when all have ended.
 */
class SimPoolRunner implements SimRunner {
  /** Per machine: exits by the reason its last loop ended. Per loop: slot_*. */
  readonly stats = {
    leases: 0,
    tasks: 0,
    waits: 0,
    heartbeats: 0,
    leases_lost: 0,
    exit_done: 0,
    exit_idle: 0,
    exit_refused: 0,
    slot_done: 0,
    slot_idle: 0,
    slot_refused: 0,
  };
  /** Per machine: virtual time from its last callback to its exit (or its kill by the engine). */
  readonly tailMs: number[] = [];
  readonly #inFlight = new InFlight();
  readonly #clock: SimClock;
  readonly #conversionMs: number;
  readonly #machines = new Map<string, PoolMachine>();
  constructor(clock: SimClock, conversionMs: number) {
    this.#clock = clock;
    this.#conversionMs = conversionMs;
  }

  start(machine: RunnerMachine, events: RunnerEvents): void {
    const env = machineProcessEnv(machine);
    const slots = Number(env.POOL_CONCURRENCY ?? "1");
    const m: PoolMachine = {
      env,
      events,
      idleTimeoutMs: Number(env.IDLE_TIMEOUT_MS),
      bootedAt: this.#clock.now(),
      timers: new Set(),
      loops: slots,
      code: 0,
      lastTaskEnd: null,
      busy: 0,
      peakBusy: 0,
      exited: false,
    };
    this.#machines.set(machine.id, m);
    for (let i = 0; i < slots; i++) {
      const slot: PoolSlot = { machine: m, idleSince: m.bootedAt, heartbeat: undefined };
      this.#after(m, 0, () => this.#lease(slot));
    }
  }

  kill(id: string): void {
    const m = this.#machines.get(id);
    if (m) this.#stop(m);
  }

  settle(): Promise<boolean> {
    return this.#inFlight.settle();
  }

  /** The fewest and most tasks any machine had in flight at once. */
  peakBusy(): { min: number; max: number } {
    const peaks = [...this.#machines.values()].map((m) => m.peakBusy);
    return { min: Math.min(...peaks), max: Math.max(...peaks) };
  }

  #after(m: PoolMachine, ms: number, step: () => Promise<void>): unknown {
    const handle = this.#clock.setTimeout(() => {
      m.timers.delete(handle);
      if (m.exited) return;
      this.#inFlight.add(
        step().catch((error: unknown) => {
          m.events.log(`simulated pool loop crashed: ${error instanceof Error ? error.message : String(error)}`, "stderr");
          this.#exit(m, 70);
        }),
      );
    }, ms);
    m.timers.add(handle);
    return handle;
  }

  #post(url: string, token: string, body: unknown): Promise<Response> {
    return exports.default.fetch(
      new Request(url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify(body) }),
    );
  }

  async #lease(s: PoolSlot): Promise<void> {
    const m = s.machine;
    const res = await this.#post(m.env.LEASE_URL, m.env.LEASE_TOKEN, { worker_id: m.env.WORKER_ID, machine_id: m.env.FLY_MACHINE_ID });
    this.stats.leases++;
    if (res.status !== 200) {
      m.events.log(`lease refused: HTTP ${res.status} ${await res.text()}`, "stderr");
      return this.#endLoop(m, "refused", 78);
    }
    const answer = LeaseResponse.parse(await res.json());
    if (m.exited) return;
    if (answer.kind === "done") return this.#endLoop(m, "done", 0);
    if (answer.kind === "wait") {
      this.stats.waits++;
      const idleMs = this.#clock.now() - s.idleSince;
      if (idleMs >= m.idleTimeoutMs) return this.#endLoop(m, "idle", 0);
      this.#after(m, Math.max(1, Math.min(answer.wait_ms, m.idleTimeoutMs - idleMs)), () => this.#lease(s));
      return;
    }
    this.stats.tasks++;
    m.peakBusy = Math.max(m.peakBusy, ++m.busy);
    this.#keepLease(s, answer);
    this.#after(m, this.#conversionMs, async () => {
      this.#clock.clearTimeout(s.heartbeat);
      m.timers.delete(s.heartbeat);
      m.busy--;
      const code = await callBackWith({ ...answer.env, ...m.env });
      if (code !== 200) m.events.log(`callback answered ${code}`, "stderr");
      s.idleSince = m.lastTaskEnd = this.#clock.now();
      await this.#lease(s);
    });
  }

  /** Heartbeats every heartbeat_ms while the slot's task runs; a lost lease (409) ends them. */
  #keepLease(s: PoolSlot, lease: TaskLease): void {
    const m = s.machine;
    s.heartbeat = this.#after(m, lease.heartbeat_ms, async () => {
      const res = await this.#post(`${m.env.LEASE_URL}/heartbeat`, m.env.LEASE_TOKEN, { worker_id: m.env.WORKER_ID, task_id: lease.task_id });
      await res.body?.cancel();
      this.stats.heartbeats++;
      if (res.status === 200) this.#keepLease(s, lease);
      else this.stats.leases_lost++;
    });
  }

  /** One loop ended; the machine exits with fly-worker's code once its last loop has. */
  #endLoop(m: PoolMachine, why: LoopEnd, code: number): void {
    if (m.exited) return;
    this.stats[`slot_${why}`]++;
    if (m.code === 0) m.code = code;
    if (--m.loops > 0) return;
    this.stats[`exit_${why}`]++;
    this.#exit(m, m.code);
  }

  #stop(m: PoolMachine): void {
    if (m.exited) return;
    m.exited = true;
    for (const t of m.timers) this.#clock.clearTimeout(t);
    m.timers.clear();
    this.tailMs.push(this.#clock.now() - (m.lastTaskEnd ?? m.bootedAt));
  }

  #exit(m: PoolMachine, code: number): void {
    if (m.exited) return;
    this.#stop(m);
    m.events.exit(code);
  }
}

/**
 * Pool mode's lower bound with the ramp: machine i can start converting only once created at
 * the create limit and booted, and then works `slots` tasks at once, so the earliest end T
 * solves Σ slots × max(0, T − ready_i) = total conversion time.
 */
function rampBoundMs(poolSize: number, slots: number, workMs: number, bootDelayMs: number): number {
  const ready = Array.from({ length: poolSize }, (_, i) => (Math.max(0, i + 1 - CREATE.burst) / CREATE.perSecond) * 1000 + bootDelayMs);
  const capacity = (t: number) => slots * ready.reduce((sum, r) => sum + Math.max(0, t - r), 0);
  let lo = 0;
  let hi = ready[ready.length - 1] + workMs;
  while (hi - lo > 1) {
    const mid = (lo + hi) / 2;
    if (capacity(mid) >= workMs) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** What the bench reads of an emulated machine: its size, its env as created, its state changes. */
const MachineView = z.object({
  id: z.string(),
  state: z.string(),
  config: z.object({ guest: z.object({ cpus: z.number().int().positive() }), env: z.record(z.string(), z.string()) }),
  events: z.array(z.object({ status: z.string(), timestamp: z.number() })),
});

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

async function simulate(mode: Mode, n: number, machinesLimit: number, slots: number, conversionMs: number, bootDelayMs: number, fileBytes: number) {
  const batchId = `makespan-${mode}-${n}-${machinesLimit}-${slots}`;
  // Every simulation starts at the same virtual time: the app-wide create budget (in memory in
  // its Durable Object) must not carry the previous simulation's spent tokens into this one.
  await evictDurableObject(env.FLY_BUDGET.getByName(env.FLY_APP_NAME)).catch(() => undefined);
  const clock = new SimClock();
  clock.set(START);
  const pool = mode === "pool" ? new SimPoolRunner(clock, conversionMs) : null;
  const runner: SimRunner = pool ?? new TimedRunner(clock, conversionMs);
  const world = installWorld({
    runner,
    clock,
    rateLimits: { create: CREATE, read: { perSecond: 5, burst: 10 }, other: { perSecond: 1, burst: 3 } },
    faults: { bootDelayMs },
    maxLiveMachines: 10_000, // Fly's capacity is not what is measured (the emulator's default is 100)
  });
  const real0 = performance.now();
  let alarms = 0;
  try {
    const manifestKey = await putManifest(batchId, n, fileBytes);
    await stub(batchId).start({ batch_id: batchId, manifest_r2_key: manifestKey, ...(pool ? { pool: true, pool_tasks_per_machine: slots } : {}) });
    let alarmAt: number | null = clock.now();
    for (;;) {
      const emulatorAt = clock.nextAt();
      const at = Math.min(alarmAt ?? Infinity, emulatorAt ?? Infinity);
      if (at === Infinity) break;
      clock.set(Math.max(clock.now(), at));
      if (emulatorAt !== null && emulatorAt <= clock.now()) {
        clock.fireDue();
        // Callbacks and leases reach the DO (a callback may bring its alarm forward): let them land first.
        if (await runner.settle()) alarmAt = (await alarmStep(batchId, -1)).next;
        continue;
      }
      const step = await alarmStep(batchId, clock.now());
      if (step.ran) alarms++;
      alarmAt = step.next;
    }
    const status = await getStatus(batchId);
    if (status.status !== "DONE" || status.progress.tasks_completed !== n) {
      throw new Error(`simulation (${mode}) ended with the batch ${status.status}: ${JSON.stringify(status.progress)}`);
    }
    const end = clock.now();
    const makespanMs = Date.parse(status.completed_at!) - Date.parse(status.started_at);
    // Billed time of each machine: from create until it stopped (auto_destroy follows at once),
    // and the same times its CPUs as the create request sized it (config.guest.cpus).
    let machineMs = 0;
    let cpuMs = 0;
    let bootCpuMs = 0;
    let machines = 0;
    let lastStop = 0;
    const sizes = new Set<string>();
    for (const view of world.fly.machines()) {
      const m = MachineView.parse(view);
      const created = Math.min(...m.events.map((e) => e.timestamp));
      const stopped = m.events.filter((e) => e.status === "stopped" || e.status === "destroyed").map((e) => e.timestamp);
      if (stopped.length === 0) throw new Error(`machine ${m.id} still ${m.state} when the simulation ended`);
      const cpus = m.config.guest.cpus;
      const machineSlots = Number(m.config.env.POOL_CONCURRENCY ?? "1");
      if (pool && machineSlots !== slots) throw new Error(`machine ${m.id} runs ${machineSlots} lease loops (POOL_CONCURRENCY), the batch asked for ${slots}`);
      sizes.add(`${cpus}/${machineSlots}`);
      machineMs += Math.min(...stopped) - created;
      cpuMs += (Math.min(...stopped) - created) * cpus;
      bootCpuMs += bootDelayMs * cpus;
      lastStop = Math.max(lastStop, Math.min(...stopped));
      machines++;
    }
    if (sizes.size !== 1) throw new Error(`machines of ${sizes.size} sizes (cpus/slots: ${[...sizes].join(", ")}); the figures assume one`);
    const [cpusPerMachine, slotsPerMachine] = [...sizes][0].split("/").map(Number);
    const creates = world.fly.requests.filter((r) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]));
    // Lower bound. Single: one create per task at the create limit, or all conversions on
    // MAX_CONCURRENT_MACHINES at once. Pool: create the pool (a slot per task at most) at the create
    // limit and boot it, or all conversions spread over the pool's slots.
    const poolSize = pool ? Math.min(machinesLimit, Math.ceil(n / slots)) : Math.min(machinesLimit, n);
    const createMs = ((pool ? poolSize : n) - CREATE.burst) / CREATE.perSecond * 1000 + (pool ? bootDelayMs : 0);
    const workMs = (n * conversionMs) / (poolSize * slotsPerMachine);
    const busyMs = n * conversionMs;
    return {
      mode,
      tasks: n,
      machines_limit: machinesLimit,
      slots: slotsPerMachine,
      cpus: cpusPerMachine,
      conversion_ms: conversionMs,
      boot_delay_ms: bootDelayMs,
      makespan_s: makespanMs / 1000,
      machine_s: machineMs / 1000,
      cpu_s: cpuMs / 1000,
      busy_s: busyMs / 1000,
      // Each conversion holds one slot's share of the machine's CPUs.
      busy_cpu_s: (busyMs * cpusPerMachine) / slotsPerMachine / 1000,
      boot_s: (machines * bootDelayMs) / 1000,
      boot_cpu_s: bootCpuMs / 1000,
      machines,
      lower_bound_s: Math.max(createMs, workMs) / 1000,
      create_bound_s: createMs / 1000,
      ramp_bound_s: pool ? rampBoundMs(poolSize, slotsPerMachine, busyMs, bootDelayMs) / 1000 : null,
      work_bound_s: workMs / 1000,
      creates_429: creates.filter((r) => r.status === 429).length,
      alarms,
      last_machine_stop_s: (lastStop - START) / 1000,
      simulation_end_s: (end - START) / 1000,
      pool: pool
        ? {
            ...pool.stats,
            tail_s: pool.tailMs.reduce((a, b) => a + b, 0) / 1000,
            tail_max_s: Math.max(0, ...pool.tailMs) / 1000,
            peak_busy: pool.peakBusy(),
          }
        : null,
      real_s: (performance.now() - real0) / 1000,
    };
  } finally {
    await world.restore();
  }
}

it("makespan", async () => {
  const { conversionMs, bootDelayMs, sizes, fileBytes, modes, machines, slots } = inject("makespan");
  const restore = quietEngineLogs();
  vi.useFakeTimers({ toFake: ["Date"] });
  try {
    const results = [];
    for (const n of sizes) {
      for (const mode of modes) {
        const r = await simulate(mode, n, machines, mode === "pool" ? slots : 1, conversionMs, bootDelayMs, fileBytes);
        progress(
          `  makespan ${mode} ${n} tasks, ${machines} machines max, ${r.slots} slot(s) each: ${r.makespan_s.toFixed(0)} s simulated in ${r.real_s.toFixed(1)} s (lower bound ${r.lower_bound_s.toFixed(0)} s, ${r.machines} machines, ${r.machine_s.toFixed(0)} machine-s, ${r.cpu_s.toFixed(0)} CPU-s)`,
        );
        results.push(r);
      }
    }
    report("makespan", results);
  } finally {
    vi.useRealTimers();
    restore();
  }
});
