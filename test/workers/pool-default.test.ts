// With POOL_MODE unset (production's default) the sizing chooses each batch's plan — one machine
// per task or a pool, the size, the slots — by its objective; `"pool": false` keeps one machine per
// task. The status body carries the batch's machine-seconds and all-in cost, which must agree
// with the machine rows and the providers' prices. Every expected size and price here is worked by
// hand from the documented figures (typed below), never taken from the sizing code. (The other
// workerd suites run with POOL_MODE=false from vitest.config.ts; here the DO's env drops it.)
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";
import { loadConfig } from "../../orchestrator/config.ts";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { planBatch, DEFAULT_LIMITS } from "../../orchestrator/engine/sizing.ts";
import { tiffWork } from "../../orchestrator/phases/tiff-conversion.ts";
import { CHECKSUM_PHASE } from "../../shared/checksum.ts";
import { getStatus, installWorld, OUTPUT_SIZE, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";
import { PoolRunner } from "./support/pool.ts";

// docs.fly.io/about/pricing (read 2026-11-26): iad per-second prices; regions marked up from iad.
const SHARED_CPU_S = 0.0000008465;
const PERF_CPU_S = 0.000012732;
const RAM_GB_S = 0.000002316;
const MARKUP: Record<string, number> = { iad: 1, ord: 1.25 };
/** A machine's price per second, by hand: its vCPUs with 256 MB (shared) or 2 GB (performance) each, RAM beyond at RAM_GB_S. */
function handPrice(g: { cpu_kind: string; cpus: number; memory_mb: number }, region: string | null): number {
  const [cpu, included] = g.cpu_kind === "shared" ? [SHARED_CPU_S, 256] : [PERF_CPU_S, 2048];
  return (g.cpus * cpu + (Math.max(0, g.memory_mb - g.cpus * included) / 1024) * RAM_GB_S) * (MARKUP[region ?? "iad"] ?? 1);
}

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

/** Machine-seconds and cost recomputed from the machine rows (create → end) at the hand-typed prices. */
async function costFromRows(batchId: string): Promise<{ ms: number; usd: number; ended: number }> {
  return withStore(batchId, (_s, sql) => {
    const rows = sql
      .exec<{ created_at: number; ended_at: number | null; cpu_kind: "shared" | "performance"; cpus: number; memory_mb: number; region: string | null }>(
        "SELECT created_at, ended_at, cpu_kind, cpus, memory_mb, region FROM workers WHERE state = 'gone'",
      )
      .toArray();
    let ms = 0;
    let usd = 0;
    for (const r of rows) {
      expect(r.ended_at).not.toBeNull();
      expect(r.cpus).toBeGreaterThan(0);
      expect(r.region).toBe("iad"); // the first of FLY_REGIONS, where the emulator creates them
      const t = r.ended_at! - r.created_at;
      ms += t;
      usd += (t / 1000) * handPrice(r, r.region);
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

  it("a message without pool settings: the sizing's pick, worked by hand; status shows machine-seconds and the all-in cost", async () => {
    const runner = new PoolRunner();
    world = installWorld({ runner });
    await putTiffs("default-pool/", 12);
    await startWithDefaults("default-pool");
    const s = await waitForStatus("default-pool", (x) => x.status === "DONE" && x.machines.running === 0, 30_000);
    expect(s.progress).toMatchObject({ tasks_total: 12, tasks_completed: 12, tasks_failed: 0 });
    // By hand. Each input is 4 bytes: 0.3 CPU-s to start, 513 MB (512 + 3 × its MiB, rounded up),
    // nothing to move; a task's four requests take 0.05 s each: the lease, the input's GET, the
    // output's presign and its PUT (0.2 s). A pool machine's slots share its CPUs and take turns
    // downloading, a turn being the GET alone (0.05 s; the lease before it and the presign and PUT
    // after the conversion are each slot's own time): it finishes a task every max(its slot's task
    // ÷ slots, 0.05 s), a slot's task being 0.2 + 0.3 s with a CPU of its own (0.2 + 0.3 × slots ÷
    // CPUs with fewer); and no machine ends before its first round, whose last slot downloads after
    // the others' turns: 5 + 0.2 + (k − 1) × 0.05 + the k tasks' conversion side by side. With 20
    // machines and 100 creates at once allowed, the soonest any plan can end is boot + one task,
    // 5 + 0.2 + 0.3 = 5.5 s: one task a machine only; a pool of k slots a machine ends 0.05 s a slot
    // later at best (2 × 2 slots: 5.55 s; 3 × 4: 5.65 s; 2 × 8: 5.85 s; 16 slots on one machine:
    // 12 tasks, 5.5 + 11 × 0.05 = 6.05 s). With what each decides — machines (S = $0.0000008465 a
    // shared CPU, R = $0.000002316 a GB beyond 256 MB a CPU), DO rows ($1.00/M: 31 a batch, 17 a pool
    // task or 20 a single one, 20 a pool machine or 18 a single one, 2 every 30 machine-seconds of a
    // pool), DO requests ($0.166/M with their 10 ms: a pool's lease and callback per task and a `done`
    // lease per slot, a single task's callback, 4 alarms a batch and 2 a machine) and the Worker's
    // ($0.30/M: the machines' requests):
    //   12 × shared-cpu-1x 768 MB, 1 slot: 5.5 s; 66 s at S + 0.5R = $2.0045e-6/s = $132.3e-6; rows
    //     31 + 204 + 240 + 4.4 = $479.4e-6; requests 64 = $10.6e-6; Worker $10.8e-6: $633.1e-6;
    //   one shared-cpu-1x 768 MB per task (a bigger one costs more): 5.5 s; $132.3e-6; rows 31 + 240
    //     + 216 = $487e-6; requests 12 + 4 + 24 = $6.6e-6; Worker $3.6e-6: $629.5e-6;
    //   on performance CPUs ($12.732e-6 each a second) the 66 CPU-seconds alone are $840e-6;
    //   6 × shared-cpu-2x 1280 MB (2 × 513 = 1,026 MB in 256 MB steps), 2 slots: 5.55 s; 6 × 5.55 =
    //     33.3 s at 2S + 0.75R = $3.430e-6/s = $114.2e-6; rows 31 + 204 + 120 + 2.2 = $357.2e-6;
    //     requests 24 + 12 + 4 + 12 = 52 = $8.6e-6; Worker 36 = $10.8e-6: $490.9e-6 (the balance
    //     lasts: 1.2 CPUs used of a 0.125 baseline drain 5 s of it in 4.7 s, the work takes 0.55 s);
    //   3 × shared-cpu-4x 2304 MB (4 × 513 = 2,052 MB), 4 slots: 5.65 s; 16.95 s at 4S + 1.25R =
    //     $6.281e-6/s = $106.5e-6; rows 31 + 204 + 60 + 1.1 = $296.1e-6; requests 46 = $7.6e-6;
    //     Worker $10.8e-6: $421.0e-6.
    // The cheapest of all is slower: 1 × shared-cpu-8x 8448 MB (16 × 513 = 8,208 MB), 16 slots on 8
    // CPUs: a slot's task 0.2 + 0.6 = 0.8 s, a task every max(0.8/16, 0.05) = 0.05 s, 12 in 0.6 s;
    // its first round, 12 tasks on 8 CPUs, 5 + 0.2 + 11 × 0.05 + 0.3 × 12/8 = 6.2 s, at 8S + 6.25R
    // = $21.247e-6/s = $131.7e-6; rows 31 + 204 + 20 + 0.4 = $255.4e-6; requests 24 + 16 + 4 + 2 =
    // $7.6e-6; Worker 40 = $12e-6: $406.8e-6 (3 × shared-cpu-2x 2304 MB, 4 slots, 5.95 s: $417.2e-6;
    // 1 × shared-cpu-16x 8448 MB, 16 slots, 6.05 s: $416.5e-6). `fast` would take the soonest within
    // 1.25 × $406.8e-6 = $508.5e-6 (the 5.5 s plans are not), and of the soonest the cheapest: 6 ×
    // shared-cpu-2x 1280 MB, 2 slots, 5.55 s. `balanced`, the default, takes that only when it ends a
    // minute sooner than the soonest plan whose whole bill is within 1.05× the cheapest's. Every plan
    // also pays the same egress and R2 operations (12 × 1,234 bytes at $0.02/GB, 12 PUTs at $4.50/M
    // and 24 reads at $0.36/M: $62.6e-6): bills within 1.05 × ($406.8e-6 + $62.6e-6) = $492.9e-6,
    // i.e. deciding at most $430.3e-6. The soonest of those: 3 × shared-cpu-4x 2304 MB, 4 slots,
    // 5.65 s ($421.0e-6; 5.55 s is more than the 0.5% tie below it, but 0.1 s is not a minute).
    // Its pick: 3 × shared-cpu-4x 2304 MB, 4 slots of 576 MB.
    const guest = { cpu_kind: "shared", cpus: 4, memory_mb: 2304 };
    const shared = (cpus: number, mb: number) => handPrice({ cpu_kind: "shared", cpus, memory_mb: mb }, "iad");
    const doRequest = 0.15e-6 + 0.01 * 0.128 * 12.5e-6;
    const pool = (machines: number, slots: number, machineS: number, perSecond: number) =>
      machineS * perSecond + (31 + 12 * 17 + machines * 20 + (machineS * 2) / 30) * 1e-6 + (2 * 12 + slots * machines + 4 + 2 * machines) * doRequest + (2 * 12 + slots * machines) * 0.3e-6;
    const single = (perSecond: number) => 12 * 5.5 * perSecond + (31 + 12 * 20 + 12 * 18) * 1e-6 + (12 + 4 + 2 * 12) * doRequest + 12 * 0.3e-6;
    const fast = pool(6, 2, 6 * 5.55, shared(2, 1280));
    const picked = pool(3, 4, 3 * 5.65, shared(4, 2304));
    const cheapest = pool(1, 16, 6.2, shared(8, 8448));
    expect(fast).toBeCloseTo(490.9e-6, 7);
    expect(picked).toBeCloseTo(421.0e-6, 7);
    expect(cheapest).toBeCloseTo(406.8e-6, 7);
    expect(fast).toBeLessThanOrEqual(1.25 * cheapest);
    const alike = 12 * OUTPUT_SIZE * 0.02e-9 + 12 * 4.5e-6 + 24 * 0.36e-6;
    expect(fast + alike).toBeGreaterThan(1.05 * (cheapest + alike));
    expect(picked + alike).toBeLessThanOrEqual(1.05 * (cheapest + alike));
    expect(1.25 * cheapest).toBeLessThan(Math.min(pool(12, 1, 66, shared(1, 768)), single(shared(1, 768)), 66 * 12.732e-6));
    // What the engine itself says it expects of its pick: 5.65 s (its 0.3 CPU-s are 0.3000004: 5.6500004,
    // shown to a tenth).
    expect(s.sizing?.estimated_makespan_s).toBe(5.7);
    expect(s.mode).toBe("pool");
    expect(s.sizing).toMatchObject({ objective: "balanced", mode: "pool", plan: "3 × shared-cpu-4x 2304 MB, 4 slot(s)", work: { basis: "starting figure" } });
    expect(runner.started).toHaveLength(3);
    for (const m of runner.started) {
      expect(machineProcessEnv(m)).toMatchObject({ POOL_MODE: "true", POOL_CONCURRENCY: "4", MEMORY_MB: "576" });
      expect(m.guest).toEqual(guest);
    }
    // Machines: the status totals are the rows' create → end times at the hand-typed prices.
    const rows = await costFromRows("default-pool");
    expect(s.machines.ended).toBe(rows.ended);
    expect(s.machines.ended).toBe(runner.started.length);
    expect(s.machines.machine_seconds).toBeCloseTo(rows.ms / 1000, 1);
    expect(s.machines.estimated_cost_usd).toBeCloseTo(rows.usd, 6);
    expect(s.machines.estimated_cost_usd).toBeGreaterThan(0);
    expect(s.machines.prices).toMatch(/fly\.io\/about\/pricing/);
    // All in: what the batch counted, priced by hand. 12 outputs of OUTPUT_SIZE bytes left iad
    // ($0.02/GB); a GET per attempt (12) and a HEAD and a PUT per output (R2 Class B $0.36/M, A $4.50/M);
    // the DO's rows ($1.00/M) and requests ($0.15/M, billed 10 ms active each at 0.128 GB × $12.50/M
    // GB-s); the Worker's requests ($0.30/M).
    const c = s.cost.counted;
    expect(c).toMatchObject({ output_bytes: 12 * OUTPUT_SIZE, r2_class_a: 12, r2_class_b: 24 });
    // The DO counted its own rows: at least the 17 a pool task's life writes (the test below).
    expect(c.do_rows_written).toBeGreaterThan(12 * 17);
    expect(s.cost.egress_usd).toBeCloseTo(12 * OUTPUT_SIZE * 0.02e-9, 9);
    expect(s.cost.r2_operations_usd).toBeCloseTo(12 * 4.5e-6 + 24 * 0.36e-6, 9);
    expect(s.cost.durable_object_usd).toBeCloseTo(c.do_rows_written * 1e-6 + c.do_requests * (0.15e-6 + 0.01 * 0.128 * 12.5e-6), 8);
    expect(s.cost.worker_requests_usd).toBeCloseTo(c.worker_requests * 0.3e-6, 8);
    expect(s.cost.total_usd).toBeCloseTo(s.machines.estimated_cost_usd + s.cost.egress_usd + s.cost.r2_operations_usd + s.cost.durable_object_usd + s.cost.worker_requests_usd, 6);
    expect(s.cost.per_task_done_usd).toBeCloseTo(s.cost.total_usd / 12, 7);
    expect(s.cost.sources.join(" ")).toMatch(/r2\/pricing.*durable-objects\/platform\/pricing/s);
    // Per phase and in total, one thing: the phase's machines, egress and R2 are the batch's (one
    // phase did work; PDF_SPLITTING found nothing and is not listed), its all-in total their sum.
    expect(s.phases.map((p) => p.name)).toEqual(["TIFF_CONVERSION"]);
    const [tiff] = s.phases;
    expect(tiff.machines).toMatchObject({ ended: s.machines.ended, machine_seconds: s.machines.machine_seconds, estimated_cost_usd: s.machines.estimated_cost_usd, sizes: ["shared-cpu-4x 2304 MB"] });
    expect(tiff.cost.machines_usd).toBeCloseTo(s.cost.machines_usd, 9);
    expect(tiff.cost.egress_usd).toBeCloseTo(12 * OUTPUT_SIZE * 0.02e-9, 9);
    expect(tiff.cost.r2_operations_usd).toBeCloseTo(12 * 4.5e-6 + 24 * 0.36e-6, 9);
    expect(tiff.cost.total_usd).toBeCloseTo(tiff.cost.machines_usd + tiff.cost.egress_usd + tiff.cost.r2_operations_usd, 8); // each item rounded to 1e-9
    expect(s.cost.total_usd).toBeCloseTo(tiff.cost.total_usd + s.cost.durable_object_usd + s.cost.worker_requests_usd, 8);
  });

  it("a pool task's whole life, discovery to done, writes at most 20 rows (issue 23), as the DO counts them", async () => {
    const runner = new PoolRunner();
    world = installWorld({ runner });
    await putTiffs("rows-pool/", 200);
    await startWithDefaults("rows-pool", { pool: true });
    const s = await waitForStatus("rows-pool", (x) => x.status === "DONE" && x.machines.running === 0, 60_000);
    expect(s.progress.tasks_completed).toBe(200);
    // Per task: its file (2: the row, its unique key), its task (6: the row and five index entries),
    // the lease and the callback (2 each: the row, tasks_state_id), the phase's tally (1 each), its
    // attempt (1: no row of its own, it finished the task; the task's tasks_done entry, which the
    // timeline reads), its output file (2): 17; the batch's meta, machines and alarms spread over 200.
    const rows = s.cost.counted.do_rows_written;
    expect(rows / 200, `rows written per task: ${rows / 200}`).toBeLessThanOrEqual(20);
    expect(rows / 200).toBeGreaterThanOrEqual(17);
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
    // The first machines' size and slots are the plan stored when the phase began to run; after
    // the deploy the phase keeps it (no machine of another size, none beyond its count).
    await vi.waitFor(() => expect(runner.started.length).toBeGreaterThan(0), { timeout: 10_000 });
    const first = runner.started[0];
    const plan = (await getStatus("pool-plan")).sizing!;
    expect(plan.guest).toEqual(first.guest);
    await deploy(after);
    for (let i = 0; i < 5; i++) {
      await runDurableObjectAlarm(stub("pool-plan"));
      expect(world.fly.liveMachineCount()).toBeLessThanOrEqual(plan.machines);
    }
    for (const m of runner.started) {
      expect(machineProcessEnv(m).POOL_CONCURRENCY).toBe(String(plan.slots));
      expect(m.guest).toEqual(first.guest);
    }
    expect((await getStatus("pool-plan")).sizing).toMatchObject({ plan: plan.plan });
    // The premise: the same batch sized afresh under the new limit is another plan (the test above:
    // 3 × shared-cpu-4x 2304 MB, 4 slots). With 2 machines allowed the cheapest is 2 × shared-cpu-1x
    // 768 MB, 1 slot, 8.25 s, $321.6e-6; the soonest whose bill is within 1.05× of its (deciding at
    // most 1.05 × ($321.6e-6 + $62.6e-6) − $62.6e-6 = $340.9e-6), 2 × shared-cpu-2x 1280 MB, 2 slots:
    // each machine 6 tasks, one every 0.5 / 2 = 0.25 s, 5 + 1.5 s, and the last round half over,
    // + 0.25 = 6.75 s, $334.8e-6; `fast`'s 2 × shared-cpu-4x 2304 MB, 4 slots (6.0 s, $364.2e-6) is
    // not a minute sooner: `balanced` takes 2 × shared-cpu-2x.
    const maxSize = await withStore("pool-plan", (_s, sql) => sql.exec<{ n: number }>("SELECT MAX(size_bytes) AS n FROM tasks").one().n);
    const c = loadConfig(env);
    const afresh = planBatch({ tasks: 12, work: tiffWork(maxSize), limits: { ...DEFAULT_LIMITS, maxMachines: 20, createPerS: c.FLY_CREATE_RATE_PER_SECOND, createBurst: c.FLY_CREATE_BURST, region: "iad" } }).plan;
    expect(afresh.guest).not.toEqual(first.guest);
  });

  it("a phase without a work model whose machine is larger than the fleet stops the batch with that error, instead of waiting for room for ever", async () => {
    world = installWorld();
    await putTiffs("too-big/", 2);
    // CHECKSUM has no work model: its guest (shared-cpu-1x 256 MB) per slot, 16 slots a machine: shared-cpu-16x, more than the fleet's 8 vCPUs.
    const { POOL_MODE: _mode, POOL_TASKS_PER_MACHINE: _slots, ...production } = env as unknown as Record<string, unknown>;
    await runInDurableObject(stub("too-big"), async (instance: BatchDO) => {
      Object.defineProperty(instance, "env", { value: { ...production, FLEET_MAX_VCPUS: "8", MAX_STEP_FAILURES: "2" }, configurable: true });
      await instance.start({ batch_id: "too-big", r2_prefix: "too-big/", phases: [CHECKSUM_PHASE], pool_tasks_per_machine: 16 });
    });
    for (let i = 0; i < 20 && (await getStatus("too-big")).status !== "ERROR"; i++) await runDurableObjectAlarm(stub("too-big"));
    const s = await getStatus("too-big");
    expect(s.status, JSON.stringify({ stage: s.stage, error: s.error })).toBe("ERROR");
    expect(s.error).toMatch(/CHECKSUM's machine \(16 CPUs, 4096 MB for 16 slot\(s\)\) is larger than the fleet's limits \(FLEET_MAX_VCPUS 8, /);
    expect(world.runner.started).toHaveLength(0);
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
