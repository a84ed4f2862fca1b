// Makespan and all-in cost: the real engine (BatchDO, its alarms, create budget, sizing, leases,
// callbacks) and the Fly Machines API emulator, run as a discrete-event simulation, once per run
// bench/run.ts asks for: the replaced system as it really ran (one shared-cpu-2x 1 GB machine per
// scan in ord, created as fast as Fly's create limit allows, no other cap), or the default (no
// pool settings: the engine chooses the plan, and learns from what its machines report). Each
// machine is Fly's CPU model (sim-machines.ts). Virtual time drives everything: Date is faked
// (the DO runs in this isolate) and starts in 2100, so the runtime never fires an alarm by
// itself; this file fires each alarm when virtual time reaches it, and each emulator timer
// (boot, conversion end, lease retry, heartbeat, auto-destroy) through the emulator's Clock.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { inject, it, vi } from "vitest";
import { z } from "zod";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import type { RunSpec } from "../makespan-runs.ts";
import { allInCost } from "../../shared/cost-model.ts";
import { type Guest, guestName, pricePerSecond, regionMarkup } from "../../shared/fly-model.ts";
import { getStatus, installWorld, stub } from "../../test/workers/support/engine.ts";
import { BASELINE, CREATE, DispatchRunner, SimClock, SimPoolRunner, START, type TaskShape, TimedRunner } from "./sim-machines.ts";
import { alarmStep, resetFlyBudget } from "./steps.ts";
import { countRows, progress, putManifest, quietEngineLogs, report, type Tally } from "./support.ts";

declare module "vitest" {
  export interface ProvidedContext {
    makespan: { runs: RunSpec[]; bootDelayMs: number; rttS: number };
  }
}

/** What the bench reads of an emulated machine: its size, region, env as created, its state changes. */
const MachineView = z.object({
  id: z.string(),
  state: z.string(),
  region: z.string(),
  config: z.object({
    guest: z.object({ cpu_kind: z.enum(["shared", "performance"]), cpus: z.number().int().positive(), memory_mb: z.number().int().positive() }),
    env: z.record(z.string(), z.string()),
  }),
  events: z.array(z.object({ status: z.string(), timestamp: z.number() })),
});

async function simulate(spec: RunSpec, bootDelayMs: number, rttS: number) {
  const batchId = `makespan-${spec.name.replace(/[^A-Za-z0-9-]/g, "-")}`;
  const baseline = spec.mode === "baseline";
  // Every simulation starts at the same virtual time with an empty create budget (see git history: a
  // budget dated at the previous simulation's end held every later one back).
  await resetFlyBudget();
  const clock = new SimClock();
  clock.set(START);
  const task: TaskShape = { cpuS: spec.cpuS, megapixels: spec.megapixels, inBytes: spec.fileBytes, outBytes: spec.outBytes, netBytesPerS: spec.netBytesPerS, rttS };
  const single = new TimedRunner(clock, task, baseline);
  const pool = new SimPoolRunner(clock, task);
  const runner = new DispatchRunner(single, pool);
  const world = installWorld({
    runner,
    clock,
    rateLimits: { create: CREATE }, // every other action at its documented limit
    faults: { bootDelayMs },
    maxLiveMachines: 100_000, // Fly's capacity is not what is measured (the emulator's default is 100)
  });
  const real0 = performance.now();
  let alarms = 0;
  // Rows the batch's statements wrote, by table and verb (the rest of its count is setAlarm).
  const tally: Tally = new Map();
  try {
    await runInDurableObject(stub(batchId), (_i, state) => countRows(state.storage.sql, tally));
    const manifestKey = await putManifest(batchId, spec.tasks, spec.fileBytes);
    // The replaced system: one machine per scan, no cap but the create limit. The default: production's env.
    if (baseline) {
      const vars = { ...(env as unknown as Record<string, unknown>), MAX_CONCURRENT_MACHINES: "10000" };
      await runInDurableObject(stub(batchId), (instance: BatchDO) => void Object.defineProperty(instance, "env", { value: vars, configurable: true }));
    }
    await stub(batchId).start({ batch_id: batchId, manifest_r2_key: manifestKey, ...(baseline ? { pool: false } : {}) });
    let alarmAt: number | null = clock.now();
    let loops = 0;
    for (;;) {
      if (++loops % 5000 === 0) progress(`    (${spec.name}: virtual ${((clock.now() - START) / 1000).toFixed(1)} s, ${loops} steps, ${alarms} alarms)`);
      const emulatorAt = clock.nextAt();
      const at = Math.min(alarmAt ?? Infinity, emulatorAt ?? Infinity);
      if (at === Infinity) break;
      // A finished batch keeps one alarm, for its retention (BATCH_RETENTION_DAYS): not part of the run,
      // and firing it would archive the batch (its status then has no cost to read).
      if (emulatorAt === null && at - clock.now() > 86_400_000) break;
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
    if (status.status !== "DONE" || status.progress.tasks_completed !== spec.tasks) {
      throw new Error(`simulation ${spec.name} ended with the batch ${status.status}: ${JSON.stringify(status.progress)} ${status.error ?? ""}`);
    }
    const makespanS = (Date.parse(status.completed_at!) - Date.parse(status.started_at)) / 1000;
    // Each machine billed from create to stop (auto_destroy follows at once) at its size's price in its region.
    let machineS = 0;
    let machineUsd = 0;
    const shapes = new Map<string, number>();
    const spans: { from: number; to: number; cpus: number }[] = [];
    for (const view of world.fly.machines()) {
      const m = MachineView.parse(view);
      const created = Math.min(...m.events.map((e) => e.timestamp));
      const stopped = m.events.filter((e) => e.status === "stopped" || e.status === "destroyed").map((e) => e.timestamp);
      if (stopped.length === 0) throw new Error(`machine ${m.id} still ${m.state} when the simulation ended`);
      const guest: Guest = baseline ? BASELINE.guest : m.config.guest;
      const region = baseline ? BASELINE.region : m.region;
      const slots = Number(m.config.env.POOL_CONCURRENCY ?? "1");
      const key = `${guestName(guest)}${slots > 1 || m.config.env.POOL_MODE === "true" ? `, ${slots} slot(s)` : ""} in ${region}`;
      shapes.set(key, (shapes.get(key) ?? 0) + 1);
      const s = (Math.min(...stopped) - created) / 1000;
      machineS += s;
      machineUsd += s * pricePerSecond(guest, region);
      spans.push({ from: created, to: Math.min(...stopped), cpus: guest.cpus });
    }
    // Most vCPUs the batch's machines held at once (for the fleet bound).
    const edges = spans.flatMap((s) => [{ t: s.from, d: s.cpus }, { t: s.to, d: -s.cpus }]).sort((a, b) => a.t - b.t || a.d - b.d);
    let held = 0;
    let peakCpus = 0;
    for (const e of edges) peakCpus = Math.max(peakCpus, (held += e.d));
    const region = baseline ? BASELINE.region : (MachineView.parse(world.fly.machines()[0]).region ?? null);
    const counted = status.cost.counted;
    // All in: the machines; the real JPEGs' egress (the simulated machines upload SIM_OUTPUT_BYTES);
    // R2 operations, rows and requests as the engine counted them.
    const cost = allInCost({
      machineUsd,
      outputBytes: spec.tasks * spec.outBytes,
      region,
      r2ClassA: counted.r2_class_a,
      r2ClassB: counted.r2_class_b,
      doRowsWritten: counted.do_rows_written,
      doRequests: counted.do_requests,
      doActiveS: counted.do_active_s,
      workerRequests: counted.worker_requests,
    });
    const creates = world.fly.requests.filter((r) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]));
    const firstCreateS = creates.length > 0 ? (creates[0].time - START) / 1000 : Infinity;
    if (firstCreateS > 1) throw new Error(`simulation ${spec.name}: the first create was sent ${firstCreateS.toFixed(1)} s after the batch started`);
    const cpu = { single: single.cpu, pool: pool.cpu() };
    return {
      ...spec,
      rtt_s: rttS,
      boot_delay_ms: bootDelayMs,
      makespan_s: makespanS,
      machines: spans.length,
      shapes: Object.fromEntries(shapes),
      peak_vcpus: peakCpus,
      machine_s: machineS,
      cost,
      region,
      // The same machine-seconds priced in ord (the replaced system's region): prices scale by region alike.
      machine_usd_in_ord: (machineUsd * regionMarkup("ord")) / regionMarkup(region),
      cpu_spent_s: cpu.single.spentS + cpu.pool.spentS,
      throttled_machine_s: cpu.single.throttledS + cpu.pool.throttledS,
      rows_written_per_task: counted.do_rows_written / spec.tasks,
      counted,
      rows_by_statement: Object.fromEntries([...tally.entries()].sort((a, b) => b[1] - a[1])),
      do_requests_per_task: counted.do_requests / spec.tasks,
      sizing: status.sizing,
      mode_run: status.mode,
      creates_429: creates.filter((r) => r.status === 429).length,
      alarms,
      pool: { ...pool.stats, tail_s: pool.tailMs.reduce((a, b) => a + b, 0) / 1000 },
      real_s: (performance.now() - real0) / 1000,
    };
  } finally {
    await world.restore();
  }
}

it("makespan", async () => {
  const { runs, bootDelayMs, rttS } = inject("makespan");
  const restore = quietEngineLogs();
  vi.useFakeTimers({ toFake: ["Date"] });
  try {
    const results = [];
    for (const spec of runs) {
      const r = await simulate(spec, bootDelayMs, rttS);
      progress(
        `  makespan ${spec.name}: ${r.makespan_s.toFixed(0)} s simulated in ${r.real_s.toFixed(1)} s (${Object.entries(r.shapes).map(([k, n]) => `${n} × ${k}`).join("; ")}, $${(r.cost.total / spec.tasks).toFixed(6)} per scan all in)`,
      );
      results.push(r);
    }
    report("makespan", results);
  } finally {
    vi.useRealTimers();
    restore();
  }
});
