// Makespan: the real engine (BatchDO, its alarms, create budget, concurrency limit, leases) and
// the Fly Machines API emulator, run as a discrete-event simulation, once per size in each mode:
// baseline (one shared-cpu-1x 1 GB machine per TIFF, as the replaced system ran), single (one
// machine per TIFF sized by guestFor: `"pool": false`) and pool (the default: no pool settings,
// auto-sized by the engine). Each machine is Fly's CPU model (shared/fly-model.ts MachineModel):
// its tasks share its CPUs, quota and network; a task is round trips, download, CPU, upload. Virtual time
// drives everything: Date is faked (the DO runs in this isolate) and starts in 2100, so the
// runtime never fires an alarm by itself; this file fires each alarm when virtual time reaches
// it, and each emulator timer (boot, conversion end, lease retry, heartbeat, auto-destroy)
// through the emulator's Clock.
import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { inject, it, vi } from "vitest";
import { z } from "zod";
import { ManualClock } from "../../local/fly-emulator/clock.ts";
import { machineProcessEnv, type MachineRunner, type RunnerEvents, type RunnerMachine } from "../../local/fly-emulator/runner.ts";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { LeaseResponse } from "../../shared/contracts.ts";
import { type Guest, MachineModel, pricePerSecond, type Stage } from "../../shared/fly-model.ts";
import { getStatus, installWorld, stub } from "../../test/workers/support/engine.ts";
import { callBack, callBackWith, progress, putManifest, quietEngineLogs, report } from "./support.ts";

declare module "vitest" {
  export interface ProvidedContext {
    makespan: {
      cpuS: number;
      bootDelayMs: number;
      sizes: number[];
      fileBytes: number;
      outBytes: number;
      netBytesPerS: number;
      rttS: number;
      modes: Mode[];
      machines: number;
    };
  }
}

export type Mode = "baseline" | "single" | "pool";
/** What the replaced system ran: one shared-cpu-1x 1 GB machine per scan. */
const BASELINE_GUEST: Guest = { cpu_kind: "shared", cpus: 1, memory_mb: 1024 };

/** One task as a machine runs it: lease/API and storage round trips, download, conversion, upload. */
interface TaskShape {
  cpuS: number;
  inBytes: number;
  outBytes: number;
  netBytesPerS: number;
  rttS: number;
}
const stagesOf = (t: TaskShape): Stage[] => [...downloadOf(t), ...afterDownloadOf(t)];
/** A task's round trips and download, which a pool machine's slots take in turns (fly-worker/storage.ts). */
const downloadOf = (t: TaskShape): Stage[] => [
  { kind: "wait", s: t.rttS },
  { kind: "net", bytes: t.inBytes },
];
const afterDownloadOf = (t: TaskShape): Stage[] => [
  { kind: "cpu", cpuS: t.cpuS, parallelism: 1 },
  { kind: "net", bytes: t.outBytes },
];

/** The guest a machine runs as: its create request's, or the baseline's. */
function guestOf(machine: RunnerMachine, baseline: boolean): Guest {
  if (baseline) return BASELINE_GUEST;
  const g = machine.guest;
  return { cpu_kind: g.cpu_kind === "performance" ? "performance" : "shared", cpus: g.cpus, memory_mb: g.memory_mb };
}

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

/** Single-task mode: each machine runs its one task on Fly's CPU model, calls back, exits. */
class TimedRunner implements SimRunner {
  readonly #inFlight = new InFlight();
  readonly #clock: SimClock;
  readonly #task: TaskShape;
  readonly #baseline: boolean;
  readonly #timers = new Map<string, unknown>();
  /** CPU-seconds spent and seconds run throttled, over all machines. */
  readonly cpu = { spentS: 0, throttledS: 0 };
  constructor(clock: SimClock, task: TaskShape, baseline: boolean) {
    this.#clock = clock;
    this.#task = task;
    this.#baseline = baseline;
  }
  start(machine: RunnerMachine, events: RunnerEvents): void {
    const now = (this.#clock.now() - START) / 1000;
    const model = new MachineModel(guestOf(machine, this.#baseline), { netBytesPerS: this.#task.netBytesPerS, nowS: now });
    model.add("task", stagesOf(this.#task), now);
    let endS = now;
    for (let t = model.nextEventS(); t !== null; t = model.nextEventS()) {
      model.advance(t);
      endS = t;
      model.takeFinished();
    }
    this.cpu.spentS += model.cpuSpentS;
    this.cpu.throttledS += model.throttledS;
    const timer = this.#clock.setTimeout(() => {
      this.#timers.delete(machine.id);
      this.#inFlight.add(callBack(machine).then((code) => events.exit(code === 200 ? 0 : 2)));
    }, Math.round((endS - now) * 1000));
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
  /** Fly's CPU model of this machine; its tasks by id, each with what to do when it ends. */
  model: MachineModel;
  tasks: Map<string, () => Promise<void>>;
  modelTimer: unknown;
  /** Downloads wait for the one in progress (fly-worker's pool runs one at a time). */
  downloading: boolean;
  downloadQueue: string[];
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
 * LEASE_TOKEN), downloading when no other loop of the machine is (fly-worker takes turns),
 * converting for the measured time while heartbeating every heartbeat_ms, calling
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
  readonly #task: TaskShape;
  readonly #machines = new Map<string, PoolMachine>();
  constructor(clock: SimClock, task: TaskShape) {
    this.#clock = clock;
    this.#task = task;
  }

  /** CPU-seconds spent and seconds run throttled, over all machines. */
  cpu(): { spentS: number; throttledS: number } {
    let spentS = 0;
    let throttledS = 0;
    for (const m of this.#machines.values()) {
      m.model.advance(Math.max((this.#clock.now() - START) / 1000, 0));
      spentS += m.model.cpuSpentS;
      throttledS += m.model.throttledS;
    }
    return { spentS, throttledS };
  }

  /** (Re)arms the machine's one timer at its model's next event: a stage ends or the balance runs out. */
  #arm(m: PoolMachine): void {
    if (m.modelTimer !== undefined) {
      this.#clock.clearTimeout(m.modelTimer);
      m.timers.delete(m.modelTimer);
      m.modelTimer = undefined;
    }
    const at = m.model.nextEventS();
    if (at === null || m.exited) return;
    const handle = this.#clock.setTimeout(() => {
      m.timers.delete(handle);
      m.modelTimer = undefined;
      if (m.exited) return;
      m.model.advance((this.#clock.now() - START) / 1000);
      for (const id of m.model.takeFinished()) {
        const then = m.tasks.get(id)!;
        m.tasks.delete(id);
        this.#inFlight.add(
          then().catch((error: unknown) => {
            m.events.log(`simulated pool loop crashed: ${error instanceof Error ? error.message : String(error)}`, "stderr");
            this.#exit(m, 70);
          }),
        );
      }
      this.#arm(m);
    }, Math.max(0, Math.ceil(at * 1000 + START - this.#clock.now())));
    m.modelTimer = handle;
    m.timers.add(handle);
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
      model: new MachineModel(guestOf(machine, false), { netBytesPerS: this.#task.netBytesPerS, nowS: (this.#clock.now() - START) / 1000 }),
      tasks: new Map(),
      modelTimer: undefined,
      downloading: false,
      downloadQueue: [],
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
    m.tasks.set(answer.task_id, async () => {
      this.#clock.clearTimeout(s.heartbeat);
      m.timers.delete(s.heartbeat);
      m.busy--;
      const code = await callBackWith({ ...answer.env, ...m.env });
      if (code !== 200) m.events.log(`callback answered ${code}`, "stderr");
      s.idleSince = m.lastTaskEnd = this.#clock.now();
      await this.#lease(s);
    });
    m.downloadQueue.push(answer.task_id);
    this.#nextDownload(m);
    this.#arm(m);
  }

  /** Starts the next queued download when none is in progress; the task runs on once it is in. */
  #nextDownload(m: PoolMachine): void {
    if (m.downloading) return;
    const id = m.downloadQueue.shift();
    if (id === undefined) return;
    m.downloading = true;
    m.tasks.set(`${id}:download`, () => {
      m.downloading = false;
      m.model.add(id, afterDownloadOf(this.#task), (this.#clock.now() - START) / 1000);
      this.#nextDownload(m);
      return Promise.resolve();
    });
    m.model.add(`${id}:download`, downloadOf(this.#task), (this.#clock.now() - START) / 1000);
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
 * Pool mode's lower bound with the ramp: machine i can start only once created at the create
 * limit and booted, and then completes at most `rate` tasks per second (its slots each doing a
 * task per round trip + transfer at full network speed + CPU time; never more than its network
 * carries), so the earliest end T solves Σ rate × max(0, T − ready_i) = tasks.
 */
function rampBoundMs(poolSize: number, ratePerS: number, tasks: number, bootDelayMs: number): number {
  const ready = Array.from({ length: poolSize }, (_, i) => (Math.max(0, i + 1 - CREATE.burst) / CREATE.perSecond) * 1000 + bootDelayMs);
  const done = (t: number) => (ratePerS / 1000) * ready.reduce((sum, r) => sum + Math.max(0, t - r), 0);
  let lo = 0;
  let hi = ready[ready.length - 1] + (tasks / ratePerS) * 1000 + 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) / 2;
    if (done(mid) >= tasks) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** What the bench reads of an emulated machine: its size, its env as created, its state changes. */
const MachineView = z.object({
  id: z.string(),
  state: z.string(),
  config: z.object({
    guest: z.object({ cpu_kind: z.enum(["shared", "performance"]), cpus: z.number().int().positive(), memory_mb: z.number().int().positive() }),
    env: z.record(z.string(), z.string()),
  }),
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

async function simulate(mode: Mode, n: number, machinesLimit: number, task: TaskShape, bootDelayMs: number, fileBytes: number) {
  const batchId = `makespan-${mode}-${n}-${machinesLimit}`;
  // Every simulation starts at the same virtual time, so the app-wide create budget (in its
  // Durable Object's storage) starts empty: the previous simulation left its bucket dated at that
  // one's end, and no token would refill until virtual time passed it again (it once did: every
  // mode after the first waited out the one before it).
  await runInDurableObject(env.FLY_BUDGET.getByName(env.FLY_APP_NAME), (_budget, state) => void state.storage.sql.exec("DELETE FROM bucket"));
  const clock = new SimClock();
  clock.set(START);
  const pool = mode === "pool" ? new SimPoolRunner(clock, task) : null;
  const single = pool ? null : new TimedRunner(clock, task, mode === "baseline");
  const runner: SimRunner = pool ?? single!;
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
    // pool: the default (no pool settings); single and baseline: `"pool": false`.
    await stub(batchId).start({ batch_id: batchId, manifest_r2_key: manifestKey, ...(pool ? {} : { pool: false }) });
    let alarmAt: number | null = clock.now();
    let loops = 0;
    for (;;) {
      if (++loops % 2000 === 0) progress(`    (${mode} ${n}: virtual ${((clock.now() - START) / 1000).toFixed(1)} s, ${loops} steps, ${alarms} alarms)`);
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
      throw new Error(`simulation (${mode}) ended with the batch ${status.status}: ${JSON.stringify(status.progress)} ${status.error ?? ""}`);
    }
    if (status.mode !== (pool ? "pool" : "single")) throw new Error(`simulation (${mode}) ran in ${status.mode} mode`);
    const makespanMs = Date.parse(status.completed_at!) - Date.parse(status.started_at);
    // Billed time of each machine: from create until it stopped (auto_destroy follows at once), at
    // Fly's per-second price of the size it ran as (the baseline's: shared-cpu-1x 1 GB).
    let machineMs = 0;
    let costUsd = 0;
    let machines = 0;
    const sizes = new Set<string>();
    for (const view of world.fly.machines()) {
      const m = MachineView.parse(view);
      const created = Math.min(...m.events.map((e) => e.timestamp));
      const stopped = m.events.filter((e) => e.status === "stopped" || e.status === "destroyed").map((e) => e.timestamp);
      if (stopped.length === 0) throw new Error(`machine ${m.id} still ${m.state} when the simulation ended`);
      const guest: Guest = mode === "baseline" ? BASELINE_GUEST : m.config.guest;
      const slots = Number(m.config.env.POOL_CONCURRENCY ?? "1");
      sizes.add(`${guest.cpu_kind}-${guest.cpus}x ${guest.memory_mb} MB, ${slots} slot(s)`);
      const ms = Math.min(...stopped) - created;
      machineMs += ms;
      costUsd += (ms / 1000) * pricePerSecond(guest);
      machines++;
    }
    if (sizes.size !== 1) throw new Error(`machines of ${sizes.size} sizes (${[...sizes].join("; ")}); the figures assume one`);
    const first = MachineView.parse(world.fly.machines()[0]);
    const guest: Guest = mode === "baseline" ? BASELINE_GUEST : first.config.guest;
    const slots = Number(first.config.env.POOL_CONCURRENCY ?? "1");
    const creates = world.fly.requests.filter((r) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]));
    // A fresh budget spends its burst at once: a later first create means the budget (or the
    // scheduler) held the batch back, and every figure below would measure that instead.
    const firstCreateS = creates.length > 0 ? (creates[0].time - START) / 1000 : Infinity;
    if (firstCreateS > 1) throw new Error(`simulation (${mode}): the first create was sent ${firstCreateS.toFixed(1)} s after the batch started`);
    const cpu = pool ? pool.cpu() : single!.cpu;
    // Bounds. Single: one create per task at the create limit, or all tasks' wall time (as the CPU
    // model runs them on their guest) over MAX_CONCURRENT_MACHINES. Pool: the ramp-aware bound.
    const ioS = (task.inBytes + task.outBytes) / task.netBytesPerS;
    const oneTaskS = task.rttS + ioS + task.cpuS;
    const poolSize = Math.min(machinesLimit, pool ? machines : n);
    const rate = Math.min(slots / oneTaskS, task.netBytesPerS / (task.inBytes + task.outBytes));
    const createMs = ((pool ? poolSize : n) - CREATE.burst) / CREATE.perSecond * 1000;
    const singleTaskMs = (makespanMs > 0 ? machineMs / machines : 0) - bootDelayMs;
    const workMs = pool ? 0 : (n * (singleTaskMs + bootDelayMs)) / poolSize;
    return {
      mode,
      tasks: n,
      machines_limit: machinesLimit,
      guest,
      slots,
      cpu_s_per_task: task.cpuS,
      io_mb_per_task: (task.inBytes + task.outBytes) / 1e6,
      net_mb_per_s: task.netBytesPerS / 1e6,
      rtt_s: task.rttS,
      boot_delay_ms: bootDelayMs,
      makespan_s: makespanMs / 1000,
      machine_s: machineMs / 1000,
      cost_usd: costUsd,
      cpu_spent_s: cpu.spentS,
      throttled_machine_s: cpu.throttledS,
      machines,
      lower_bound_s: pool ? rampBoundMs(poolSize, rate, n, bootDelayMs) / 1000 : Math.max(createMs, workMs) / 1000,
      creates_429: creates.filter((r) => r.status === 429).length,
      alarms,
      pool: pool ? { ...pool.stats, tail_s: pool.tailMs.reduce((a, b) => a + b, 0) / 1000, peak_busy: pool.peakBusy() } : null,
      real_s: (performance.now() - real0) / 1000,
    };
  } finally {
    await world.restore();
  }
}

it("makespan", async () => {
  const { cpuS, bootDelayMs, sizes, fileBytes, outBytes, netBytesPerS, rttS, modes, machines } = inject("makespan");
  const task: TaskShape = { cpuS, inBytes: fileBytes, outBytes, netBytesPerS, rttS };
  const restore = quietEngineLogs();
  vi.useFakeTimers({ toFake: ["Date"] });
  try {
    const results = [];
    for (const n of sizes) {
      for (const mode of modes) {
        const r = await simulate(mode, n, machines, task, bootDelayMs, fileBytes);
        progress(
          `  makespan ${mode} ${n} tasks, ${machines} machines max: ${r.makespan_s.toFixed(0)} s simulated in ${r.real_s.toFixed(1)} s (bound ${r.lower_bound_s.toFixed(0)} s, ${r.machines} × ${r.guest.cpu_kind}-${r.guest.cpus}x ${r.guest.memory_mb} MB, ${r.slots} slot(s), ${r.machine_s.toFixed(0)} machine-s, $${r.cost_usd.toFixed(2)})`,
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
