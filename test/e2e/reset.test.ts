// POST /admin/reset in the middle of a batch: the batch ends in ERROR, its machines are
// destroyed, and no machine is created for it afterwards.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sleep } from "../../local/progress.ts";
import { flyFigures, startE2EStack, submitSamples, waitNoLiveMachines, type E2EStack } from "./support/stack.ts";

const TASKS = 30;
const batchId = "e2e-reset-mid-batch";

describe("reset in the middle of a batch", () => {
  let stack: E2EStack;

  beforeAll(async () => {
    stack = await startE2EStack({
      vars: { MAX_CONCURRENT_MACHINES: "3" },
      // Machines sit in `created` for a while, so there is always something live to destroy.
      emulator: { faults: { bootDelayMs: 1500 } },
    });
  });
  afterAll(async () => {
    await stack?.dispose();
  });

  it("ends in ERROR with 0 machines alive and no further creates", async () => {
    await submitSamples(stack, batchId, { count: TASKS, width: 640, height: 480 });
    const deadline = Date.now() + 120_000;
    for (;;) {
      // null until the queue has delivered the message (~1 s).
      const s = await stack.api.status(batchId).catch(() => null);
      if (s && s.progress.tasks_completed >= 3 && stack.emulator.core.liveMachineCount() > 0) break;
      if (Date.now() > deadline) throw new Error(`batch never got going: ${JSON.stringify(s?.progress)}`);
      await sleep(200);
    }
    const liveAtReset = stack.emulator.core.liveMachineCount();
    expect(liveAtReset).toBeGreaterThan(0);

    const result = await stack.api.reset(batchId);
    expect(result).toMatchObject({ ok: true, batch_id: batchId, status: "ERROR" });

    const status = await stack.api.status(batchId);
    expect(status.status).toBe("ERROR");
    expect(status.error).toBe("reset by admin");
    const p = status.progress;
    expect(p.tasks_total).toBe(TASKS);
    expect(p.tasks_completed).toBeLessThan(TASKS);
    expect(p.tasks_completed + p.tasks_failed).toBe(TASKS);
    expect({ pending: p.pending, starting: p.starting, running: p.running, retrying: p.retrying }).toEqual({ pending: 0, starting: 0, running: 0, retrying: 0 });

    expect(await waitNoLiveMachines(stack, 15_000)).toEqual({ live: 0, pids: [] });
    const before = flyFigures(stack);
    // Several alarm rounds (the machine check interval is 1 s): nothing may be created.
    await sleep(6000);
    const after = flyFigures(stack);
    expect(after.create_requests).toBe(before.create_requests);
    expect(after.machines_created).toBe(before.machines_created);
    expect(stack.emulator.core.liveMachineCount()).toBe(0);
    expect((await stack.api.status(batchId)).status).toBe("ERROR");

    // Resetting again is harmless; the failed tasks say why.
    await stack.api.reset(batchId);
    const failed = await stack.api.allTasks(batchId, "failed");
    expect(failed).toHaveLength(p.tasks_failed);
    for (const t of failed) expect(t.error).toContain("reset");
    console.log(`[e2e] reset: ${liveAtReset} machines live at reset, ${p.tasks_completed} done, ${p.tasks_failed} failed by reset, ${before.create_requests} creates, none after`);
  });
});
