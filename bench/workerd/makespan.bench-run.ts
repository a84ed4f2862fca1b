// Makespan: the real engine (BatchDO, its alarms, create budget, concurrency limit, leases) and
// the Fly Machines API emulator, run as a discrete-event simulation, once per size in each mode:
// baseline (one shared-cpu-1x 1 GB machine per TIFF, as the replaced system ran), single (one
// machine per TIFF sized by guestFor: `"pool": false`) and pool (the default: no pool settings,
// auto-sized by the engine). Each machine is Fly's CPU model (shared/fly-model.ts MachineModel):
// its tasks share its CPUs, quota and network; a task is round trips, download, CPU, upload. Virtual time
// drives everything (sim.ts): this file fires each alarm when virtual time reaches it, and each
// emulator timer (boot, conversion end, lease retry, heartbeat, auto-destroy) through the emulator's Clock.
import { inject, it, vi } from "vitest";
import { type Guest, pricePerSecond } from "../../shared/fly-model.ts";
import { getStatus, installWorld, stub } from "../../test/workers/support/engine.ts";
import { BASELINE_GUEST, MachineView, SimClock, SimPoolRunner, type SimRunner, START, type TaskShape, TimedRunner } from "./sim.ts";
import { alarmStep, resetFlyBudget } from "./steps.ts";
import { progress, putManifest, quietEngineLogs, report } from "./support.ts";

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
const CREATE = { perSecond: 1, burst: 3 }; // Fly's documented create limit per app

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

async function simulate(mode: Mode, n: number, machinesLimit: number, task: TaskShape, bootDelayMs: number, fileBytes: number) {
  const batchId = `makespan-${mode}-${n}-${machinesLimit}`;
  // Every simulation starts at the same virtual time, with an empty FlyBudget (see resetFlyBudget).
  await resetFlyBudget();
  const clock = new SimClock();
  clock.set(START);
  const pool = mode === "pool" ? new SimPoolRunner(clock, task) : null;
  const single = pool ? null : new TimedRunner(clock, task, mode === "baseline");
  const runner: SimRunner = pool ?? single!;
  const world = installWorld({
    runner,
    clock,
    rateLimits: { create: CREATE }, // every other action at its documented limit
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
