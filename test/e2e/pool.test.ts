// Pool mode through the whole local stack: ~30 small TIFFs, POOL_MODE=true, at most 4 machines
// at once, each converting task after task; two machines are killed while holding a lease.
// The batch must finish with every JPEG in S3, no machine left, and a create count bounded by
// the pool size plus the deaths — not by the number of tasks.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BACKSTOP_MS,
  checkJpegs,
  expectedJpegKeys,
  flyFigures,
  jpegKeys,
  orchestratorEvents,
  startE2EStack,
  submitSamples,
  waitNoLiveMachines,
  watchToEnd,
  type E2EStack,
} from "./support/stack.ts";

const TASKS = 30;
const MAX_MACHINES = 4;
const KILLS = 2;
const batchId = "e2e-pool-30";

describe("a pool-mode batch of 30 TIFFs with machines dying mid-lease", () => {
  let stack: E2EStack | undefined;
  const leasesPerMachine = new Map<string, number>();
  const killed: string[] = [];

  beforeAll(async () => {
    stack = await startE2EStack({
      vars: {
        POOL_MODE: "true",
        MAX_CONCURRENT_MACHINES: String(MAX_MACHINES),
        LEASE_TIMEOUT_MS: "5000",
        MACHINE_CHECK_INTERVAL_MS: "1000",
      },
      // A machine dies silently (SIGKILL, no callback) on its second lease, twice in the run.
      onMachineLine: (machineId, line) => {
        if (!line.includes('"event":"task.leased"')) return;
        const n = (leasesPerMachine.get(machineId) ?? 0) + 1;
        leasesPerMachine.set(machineId, n);
        if (n === 2 && killed.length < KILLS) {
          killed.push(machineId);
          void stack?.machines.kill(machineId);
        }
      },
    });
  });
  afterAll(async () => {
    await stack?.dispose();
  });

  it("finishes DONE, every JPEG present, 0 machines alive, creates ≤ pool size + deaths", async () => {
    const s = stack!;
    const { samples, submitted } = await submitSamples(s, batchId, { count: TASKS, width: 96, height: 72, perFolder: 10 });
    const { final, stalled } = await watchToEnd(s, batchId, 500);
    const alive = await waitNoLiveMachines(s);
    const fly = flyFigures(s);
    const events = orchestratorEvents(s);
    const retries = events.filter((e) => e.event === "task_retry");
    const done = await s.api.allTasks(batchId, "done");
    const jpegs = await jpegKeys(s, submitted.prefix);
    console.log(`[e2e] pool run ${JSON.stringify({ status: final.status, progress: final.progress, ...fly, killed: killed.length, retries: retries.map((r) => r.error), leases: [...leasesPerMachine.values()] })}`);

    expect(stalled).toBeNull();
    expect(final.status).toBe("DONE");
    expect(final.progress).toMatchObject({ tasks_total: TASKS, tasks_completed: TASKS, tasks_failed: 0, pending: 0, starting: 0, running: 0, retrying: 0 });
    expect((final as { mode?: string }).mode).toBe("pool");
    expect(new Set(done.map((t) => t.task_id)).size).toBe(TASKS);
    expect(jpegs.sort()).toEqual(expectedJpegKeys(submitted.prefix, samples));
    expect(await checkJpegs(s, jpegs)).toEqual([]);

    // The deaths happened, and each task a dead machine held went back to the batch and was done
    // elsewhere (a machine of several slots may hold several leases when it dies).
    expect(killed).toHaveLength(KILLS);
    // Slots a machine had (the sizing chose them: POOL_CONCURRENCY in its env; 16, the most, if the view hides it).
    const slots = Math.max(...s.emulator.core.machines().map((m) => Number((m as { config?: { env?: Record<string, string> } }).config?.env?.POOL_CONCURRENCY ?? 16)));
    const deathRetries = retries.filter((r) => killed.includes(String(r.machine_id)));
    expect(deathRetries.length).toBeGreaterThanOrEqual(KILLS);
    expect(deathRetries.length).toBeLessThanOrEqual(KILLS * slots);
    for (const r of deathRetries) {
      expect(String(r.error)).toMatch(/exited while holding the lease|lease expired/);
      expect(done.find((t) => t.task_id === r.task_id)?.machine_id).not.toBe(r.machine_id);
    }

    // A handful of machines did all the work: creates bounded by the pool, not by the tasks. Each create
    // fills the pool, replaces a death, or follows a machine retired because the others covered every open
    // task (a death then returned tasks to the batch): in the log, a create after a retirement pairs with it.
    // A re-size from the first tasks' measurements (a new shape) may replace the pool once more.
    let retiredUnpaired = 0;
    let afterRetirement = 0;
    const ours = events.filter((x) => x.batch_id === batchId);
    for (const e of ours) {
      if (e.event === "pool_machine_retired") retiredUnpaired++;
      else if (e.event === "machine_created" && retiredUnpaired > 0) {
        retiredUnpaired--;
        afterRetirement++;
      }
    }
    const resized = ours.filter((e) => e.event === "phase_resized" && e.from !== e.to).length;
    const bound = MAX_MACHINES + KILLS + afterRetirement + resized * MAX_MACHINES;
    const created = s.emulator.core.machines().length;
    const story = JSON.stringify(ours.filter((e) => /machine_created|pool_machine_retired|phase_sized|phase_resized|machine_gone/.test(e.event)).map((e) => `${e.event}${e.worker_id ? ` ${String(e.worker_id)}` : ""}${e.to ? ` → ${String(e.to)}` : ""}`));
    expect(created, `${afterRetirement} create(s) after a retirement, ${resized} re-size(s): ${story}`).toBeLessThanOrEqual(bound);
    expect(fly.create_requests - fly.create_429).toBeLessThanOrEqual(bound);
    expect(afterRetirement, `re-creates stay few: ${story}`).toBeLessThanOrEqual(KILLS);
    expect(Math.max(...leasesPerMachine.values())).toBeGreaterThan(2);
    expect(alive).toEqual({ live: 0, pids: [] });
  }, BACKSTOP_MS);
});
