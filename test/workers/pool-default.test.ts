// Pool mode is the default (POOL_MODE unset), auto-sized by engine/sizing.ts; `"pool": false`
// keeps one machine per task. The status body carries the batch's machine-seconds and estimated
// cost, which must agree with the machine rows and Fly's prices. (The other workerd suites run
// with POOL_MODE=false from vitest.config.ts; here the DO's env drops it, as production has it.)
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";
import { loadConfig } from "../../orchestrator/config.ts";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { sizePool } from "../../orchestrator/engine/sizing.ts";
import { tiffWork } from "../../orchestrator/phases/tiff-conversion.ts";
import { pricePerSecond } from "../../shared/fly-model.ts";
import { getStatus, installWorld, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";
import { PoolRunner } from "./support/pool.ts";

let world: World | undefined;
afterEach(async () => {
  await world?.restore();
  world = undefined;
});

/** Starts the batch in a DO whose env is production's: no POOL_MODE or POOL_TASKS_PER_MACHINE var. */
async function startWithDefaults(batchId: string, extra: Record<string, unknown> = {}): Promise<void> {
  const { POOL_MODE: _mode, POOL_TASKS_PER_MACHINE: _slots, ...production } = env as unknown as Record<string, unknown>;
  await runInDurableObject(stub(batchId), async (instance: BatchDO) => {
    Object.defineProperty(instance, "env", { value: production, configurable: true });
    await instance.start({ batch_id: batchId, r2_prefix: `${batchId}/`, ...extra });
  });
}

/** Machine-seconds and cost recomputed from the machine rows (create → end) at Fly's prices. */
async function costFromRows(batchId: string): Promise<{ ms: number; usd: number; ended: number }> {
  return withStore(batchId, (_s, sql) => {
    const rows = sql
      .exec<{ created_at: number; ended_at: number | null; cpu_kind: "shared" | "performance"; cpus: number; memory_mb: number }>(
        "SELECT created_at, ended_at, cpu_kind, cpus, memory_mb FROM workers WHERE state = 'gone'",
      )
      .toArray();
    let ms = 0;
    let usd = 0;
    for (const r of rows) {
      expect(r.ended_at).not.toBeNull();
      expect(r.cpus).toBeGreaterThan(0);
      const t = r.ended_at! - r.created_at;
      ms += t;
      usd += (t / 1000) * pricePerSecond(r);
    }
    return { ms, usd, ended: rows.length };
  });
}

describe("pool mode by default", () => {
  it("the config's default is pool mode", () => {
    const { POOL_MODE: _dropped, ...production } = env as unknown as Record<string, unknown>;
    expect(loadConfig(production as unknown as Env).POOL_MODE).toBe(true);
    expect(loadConfig({ ...production, POOL_MODE: "false" } as unknown as Env).POOL_MODE).toBe(false);
  });

  it("a message without pool settings runs an auto-sized pool; status shows machine-seconds and cost", async () => {
    const runner = new PoolRunner();
    world = installWorld({ runner });
    await putTiffs("default-pool/", 12);
    await startWithDefaults("default-pool");
    const s = await waitForStatus("default-pool", (x) => x.status === "DONE" && x.machines.running === 0, 30_000);
    expect(s.mode).toBe("pool");
    expect(s.progress).toMatchObject({ tasks_total: 12, tasks_completed: 12, tasks_failed: 0 });
    // Every machine is a pool machine of the size and slot count the sizing picks for this batch.
    const maxSize = await withStore("default-pool", (_s, sql) => sql.exec<{ n: number }>("SELECT MAX(size_bytes) AS n FROM tasks").one().n);
    const c = loadConfig(env);
    const expected = sizePool({
      tasks: 12,
      work: tiffWork(maxSize),
      maxMachines: Math.min(c.MAX_CONCURRENT_MACHINES ?? Infinity, c.FLEET_MAX_MACHINES),
      createPerS: c.FLY_CREATE_RATE_PER_SECOND,
      createBurst: c.FLY_CREATE_BURST,
      bootS: 5,
    });
    expect(runner.started.length).toBeGreaterThan(0);
    expect(runner.started.length).toBeLessThanOrEqual(expected.machines);
    for (const m of runner.started) {
      expect(machineProcessEnv(m)).toMatchObject({ POOL_MODE: "true", POOL_CONCURRENCY: String(expected.slots) });
      expect(m.guest).toEqual(expected.guest);
    }
    // Cost: the status totals are the rows' create → end times at Fly's per-second prices.
    const rows = await costFromRows("default-pool");
    expect(s.machines.ended).toBe(rows.ended);
    expect(s.machines.ended).toBe(runner.started.length);
    expect(s.machines.machine_seconds).toBeCloseTo(rows.ms / 1000, 1);
    expect(s.machines.estimated_cost_usd).toBeCloseTo(rows.usd, 6);
    expect(s.machines.estimated_cost_usd).toBeGreaterThan(0);
    expect(s.machines.prices).toMatch(/fly\.io\/docs\/about\/pricing/);
  });

  it("the pool is decided once per phase: a deploy that raises MAX_CONCURRENT_MACHINES mid-phase mixes no machine sizes", async () => {
    const runner = new PoolRunner();
    runner.lazy = () => true; // booted, never leasing: the batch stays in its run stage
    world = installWorld({ runner });
    await putTiffs("pool-plan/", 12);
    const { POOL_MODE: _mode, POOL_TASKS_PER_MACHINE: _slots, ...production } = env as unknown as Record<string, unknown>;
    const before = { ...production, MAX_CONCURRENT_MACHINES: "2" };
    const after = { ...production, MAX_CONCURRENT_MACHINES: "20" };
    const deploy = (vars: Record<string, unknown>) =>
      runInDurableObject(stub("pool-plan"), (instance: BatchDO) => void Object.defineProperty(instance, "env", { value: vars, configurable: true }));
    await deploy(before);
    await stub("pool-plan").start({ batch_id: "pool-plan", r2_prefix: "pool-plan/" });
    const maxSize = await vi.waitFor(
      () => withStore("pool-plan", (_s, sql) => {
        const n = sql.exec<{ n: number | null }>("SELECT MAX(size_bytes) AS n FROM tasks").one().n;
        expect(n).not.toBeNull();
        return n!;
      }),
      { timeout: 10_000 },
    );
    const c = loadConfig(env);
    const sized = (maxMachines: number) =>
      sizePool({ tasks: 12, work: tiffWork(maxSize), maxMachines, createPerS: c.FLY_CREATE_RATE_PER_SECOND, createBurst: c.FLY_CREATE_BURST, bootS: 5 });
    const [small, large] = [sized(2), sized(20)];
    // The premise: sized afresh under the new limit, the pool would be another shape.
    expect(large.slots).not.toBe(small.slots);
    await vi.waitFor(() => expect(runner.started).toHaveLength(small.machines), { timeout: 10_000 });
    await deploy(after);
    for (let i = 0; i < 5; i++) {
      await runDurableObjectAlarm(stub("pool-plan"));
      expect(world.fly.liveMachineCount()).toBeLessThanOrEqual(small.machines);
    }
    for (const m of runner.started) {
      expect(machineProcessEnv(m).POOL_CONCURRENCY).toBe(String(small.slots));
      expect(m.guest).toEqual(small.guest);
    }
  });

  it('"pool": false keeps one machine per task, each sized by guestFor; its cost counts every machine', async () => {
    world = installWorld();
    await putTiffs("no-pool/", 5);
    await startWithDefaults("no-pool", { pool: false });
    const s = await waitForStatus("no-pool", (x) => x.status === "DONE" && x.machines.running === 0, 30_000);
    expect(s.mode).toBe("single");
    expect(s.workers).toBeNull();
    expect(world.runner.started.length).toBe(5);
    for (const m of world.runner.started) {
      expect(machineProcessEnv(m).TASK_ID).toMatch(/^tiff-/);
      expect(machineProcessEnv(m).POOL_MODE).toBeUndefined();
    }
    const rows = await costFromRows("no-pool");
    expect(s.machines.ended).toBe(5);
    expect(rows.ended).toBe(5);
    expect(s.machines.estimated_cost_usd).toBeCloseTo(rows.usd, 6);
    const status = await getStatus("no-pool");
    expect(status.machines.machine_seconds).toBe(s.machines.machine_seconds);
  });
});

describe("guestForSlots: pool machines sized as Fly accepts them", () => {
  it("rounds CPUs up to 1, 2, 4, 8 or 16 and keeps memory within the size's range", async () => {
    const { guestForSlots } = await import("../../orchestrator/fly/api.ts");
    expect(guestForSlots({ cpu_kind: "shared", cpus: 1, memory_mb: 1024 }, 1)).toEqual({ guest: { cpu_kind: "shared", cpus: 1, memory_mb: 1024 }, perSlotMb: 1024 });
    expect(guestForSlots({ cpu_kind: "shared", cpus: 1, memory_mb: 1024 }, 3)).toEqual({ guest: { cpu_kind: "shared", cpus: 4, memory_mb: 3072 }, perSlotMb: 1024 });
    expect(guestForSlots({ cpu_kind: "shared", cpus: 1, memory_mb: 2048 }, 8)).toEqual({ guest: { cpu_kind: "shared", cpus: 8, memory_mb: 16384 }, perSlotMb: 2048 });
    // Too big for the largest guest: 16 CPUs, its most memory, and each task gets its share.
    expect(guestForSlots({ cpu_kind: "performance", cpus: 2, memory_mb: 8192 }, 12)).toEqual({ guest: { cpu_kind: "performance", cpus: 16, memory_mb: 98304 }, perSlotMb: 8192 });
    expect(guestForSlots({ cpu_kind: "shared", cpus: 1, memory_mb: 2048 }, 16).guest).toEqual({ cpu_kind: "shared", cpus: 16, memory_mb: 32768 });
    // Every result is a size the emulator (Fly's documented rules) accepts.
    for (const slots of [1, 2, 3, 5, 6, 7, 9, 12, 16]) {
      for (const one of [{ cpu_kind: "shared" as const, cpus: 1, memory_mb: 1024 }, { cpu_kind: "performance" as const, cpus: 1, memory_mb: 4096 }]) {
        const { guest } = guestForSlots(one, slots);
        expect([1, 2, 4, 8, 16]).toContain(guest.cpus);
        expect(guest.memory_mb % 256).toBe(0);
      }
    }
  });
});
