// Sizing learns (issue 23): a phase is sized from the starting figure, then, once its machines
// have reported the CPU-seconds and megapixels of its first tasks, what is left of it is sized
// again from the batch's own figures — once — and GET /status says so. Expected plans are worked
// by hand from Fly's documented figures (docs.fly.io/about/pricing, cpu-performance).
import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";
import { LeaseResponse } from "../../shared/contracts.ts";
import { getStatus, installWorld, postCallback, stub, successBody, withStore, writeOutput, type World } from "./support/engine.ts";
import { lease, PoolRunner } from "./support/pool.ts";

let world: World | undefined;
afterEach(async () => {
  await world?.restore();
  world = undefined;
});

/** 12 scans the manifest says are 64,102,564 bytes each: 25 MP at the 0.39 pixels a byte the phase assumes. */
const BYTES = 64_102_564;

async function putScans(batchId: string, n: number, bytes = BYTES): Promise<string> {
  const files = Array.from({ length: n }, (_, i) => {
    const key = `${batchId}/scan-${String(i).padStart(3, "0")}.tif`;
    return { r2_key: key, logical_path: `/a/${key}`, file_name: key.split("/").pop()!, file_size: bytes, content_type: "image/tiff" };
  });
  await Promise.all(files.map((f) => env.BUCKET.put(f.r2_key, "II*\0")));
  const manifestKey = `${batchId}/manifest.json`;
  await env.BUCKET.put(manifestKey, JSON.stringify({ batch_id: batchId, directories: [{ directory_path: "/a", files }] }));
  return manifestKey;
}

/** The machine leases `n` tasks by hand and reports each done with `performance` (its CPU-seconds and megapixels). */
async function reportTasks(machine: Parameters<typeof machineProcessEnv>[0], n: number, performance: { total_time_ms: number; cpu_s: number; megapixels: number }): Promise<void> {
  for (let i = 0; i < n; i++) {
    const answer = LeaseResponse.parse(await (await lease(machineProcessEnv(machine))).json());
    if (answer.kind !== "task") throw new Error(`expected a task, got ${JSON.stringify(answer)}`);
    const taskEnv = { ...answer.env, ...machineProcessEnv(machine) };
    await writeOutput(taskEnv);
    expect((await postCallback(taskEnv, { ...successBody(taskEnv), performance })).status).toBe(200);
  }
}

describe("sizing learns the batch's real work", () => {
  it("after the first tasks' reports the rest is sized from the measured CPU-seconds per megapixel; status says so; machines of the old size leave", async () => {
    const runner = new PoolRunner();
    runner.lazy = () => true; // the test leases by hand
    world = installWorld({ runner });
    const manifestKey = await putScans("learn", 12);
    await stub("learn").start({ batch_id: "learn", manifest_r2_key: manifestKey, pool: true });
    // By hand, from the starting figure: 25 MP × 0.273 + 0.3 = 7.1 CPU-s. The test env fixes one
    // slot a machine, so a machine is shared-cpu-1x 768 MB (512 MB + 3 × 61 MiB = 696 MB) or
    // performance-1x 2 GB: on shared-cpu-1x 5.33 s of burst and 1.8 CPU-s at 1/16 (~34 s, at
    // $0.0000020045/s); on performance-1x 7.1 s at $0.000012732/s, over 1.25× the cost: twelve
    // shared-cpu-1x machines, one per task.
    await vi.waitFor(async () => expect((await getStatus("learn")).sizing).toMatchObject({ plan: "12 × shared-cpu-1x 768 MB, 1 slot(s)", work: { basis: "starting figure" }, resized: null }), {
      timeout: 10_000,
    });
    await vi.waitFor(() => expect(runner.started).toHaveLength(12), { timeout: 10_000 });
    const first = runner.started[0];
    expect(first.guest).toEqual({ cpu_kind: "shared", cpus: 1, memory_mb: 768 });

    // Three tasks (learnAfter(12) = max(3, 2% of 12)) report 28 CPU-seconds for their 25 megapixels.
    await reportTasks(first, 3, { total_time_ms: 30_000, cpu_s: 28, megapixels: 25 });
    await runDurableObjectAlarm(stub("learn"));

    // By hand: 28 / 25 = 1.12 CPU-s per MP; 25e6 / 64,102,564 = 0.39 pixels a byte; a task 0.3 + 25 × 1.12
    // = 28.3 CPU-s. On shared-cpu-1x: 5.33 s of burst, 22.97 CPU-s at 1/16 = 367.5 s more (~$0.00076);
    // on performance-1x 28.3 s (~$0.00043): sooner and cheaper. Nine tasks are left: nine machines.
    const s = await getStatus("learn");
    expect(s.sizing?.work).toMatchObject({ basis: "measured", measured_tasks: 3 });
    expect(s.sizing!.work.cpu_s_per_mp).toBeCloseTo(1.12, 9);
    expect(s.sizing!.work.pixels_per_byte).toBeCloseTo(0.39, 6);
    expect(s.sizing).toMatchObject({
      plan: "9 × performance-1x 2048 MB, 1 slot(s)",
      guest: { cpu_kind: "performance", cpus: 1, memory_mb: 2048 },
      resized: { from: "12 × shared-cpu-1x 768 MB, 1 slot(s)", to: "9 × performance-1x 2048 MB, 1 slot(s)" },
    });
    // New machines are of the new size (the old ones' free slots take no task, so they cover none).
    await vi.waitFor(() => expect(runner.started.length).toBeGreaterThan(12), { timeout: 10_000 });
    for (const m of runner.started.slice(12)) expect(m.guest).toEqual({ cpu_kind: "performance", cpus: 1, memory_mb: 2048 });
    // A machine of the old size takes no new task: told done, it leaves.
    const answer = LeaseResponse.parse(await (await lease(machineProcessEnv(runner.started[1]))).json());
    expect(answer).toMatchObject({ kind: "done", reason: expect.stringMatching(/re-sized/) });
    // The figures the engine learned from are the phase's tally: the tasks' reports, summed.
    const measured = await withStore("learn", (store) => store.measured("TIFF_CONVERSION"));
    expect(measured).toEqual({ phase: "TIFF_CONVERSION", tasks: 3, cpuS: 84, megapixels: 75, bytes: 3 * BYTES });
    // Learned once: more reports change nothing.
    await runDurableObjectAlarm(stub("learn"));
    expect((await getStatus("learn")).sizing?.resized?.to).toBe("9 × performance-1x 2048 MB, 1 slot(s)");
  });

  it("`balanced` does not change machine size for cost alone: the batch keeps its machines when the measured work makes another size only cheaper", async () => {
    const runner = new PoolRunner();
    runner.lazy = () => true;
    world = installWorld({ runner });
    // 100 MP scans (256,410,257 bytes at 0.39 pixels a byte): from the starting figure 0.3 + 100 × 0.273 =
    // 27.6 CPU-s, one slot a machine. On shared-cpu-1x 1280 MB the burst lasts 5.33 s and the other
    // 22.3 CPU-s run at 1/16 (~6 min); performance-1x 2 GB runs it in 27.6 s and bills less: performance-1x.
    const manifestKey = await putScans("keep", 12, 256_410_257);
    await stub("keep").start({ batch_id: "keep", manifest_r2_key: manifestKey, pool: true });
    await vi.waitFor(() => expect(runner.started).toHaveLength(12), { timeout: 10_000 });
    const first = runner.started[0];
    expect(first.guest).toMatchObject({ cpu_kind: "performance", cpus: 1 });
    // Three tasks report 1 CPU-second for their 100 megapixels: a task now fits a shared vCPU's burst,
    // as fast there (1.3 s of CPU, its 2.8 s of transfer alike) at a quarter of the price. Cheaper, not
    // sooner: the plan stays (the old engine switched for 10% cheaper, booting new machines beside the
    // old, which an organisation's quota refuses until the old have gone).
    await reportTasks(first, 3, { total_time_ms: 4_000, cpu_s: 1, megapixels: 100 });
    await runDurableObjectAlarm(stub("keep"));
    const s = await getStatus("keep");
    expect(s.sizing?.work).toMatchObject({ basis: "measured", measured_tasks: 3 });
    // The size and slots stay (the plan counts the nine tasks left).
    expect(s.sizing).toMatchObject({ objective: "balanced", plan: "9 × performance-1x 2048 MB, 1 slot(s)", guest: first.guest });
    await runDurableObjectAlarm(stub("keep"));
    for (const m of runner.started) expect(m.guest).toEqual(first.guest);
    const still = LeaseResponse.parse(await (await lease(machineProcessEnv(runner.started[1]))).json());
    expect(still.kind).toBe("task");
  });
});
