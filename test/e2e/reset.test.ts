// POST /admin/reset in the middle of a batch: the batch ends in ERROR, its machines are
// destroyed, and no machine is created for it afterwards.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sleep } from "../../local/progress.ts";
import { flyFigures, startE2EStack, submitSamples, waitNoLiveMachines, watchToEnd, type E2EStack } from "./support/stack.ts";

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
    const before = { create_requests: createsFor(stack, batchId) };
    expect(before.create_requests).toBe(flyFigures(stack).create_requests); // only this batch so far
    // Nothing may be created for the reset batch afterwards. Waited on progress, not on a clock:
    // a second small batch runs to DONE through the same orchestrator (queue, alarms, the Fly API
    // and machines all working, over many 1 s check intervals) before the reset batch is looked at again.
    const sentinel = `${batchId}-after`;
    await submitSamples(stack, sentinel, { count: 3, width: 64, height: 48 });
    const { final: sentinelFinal, stalled } = await watchToEnd(stack, sentinel, 500);
    expect(stalled, "the batch run after the reset stalled").toBeNull();
    expect(sentinelFinal.status).toBe("DONE");
    expect(createsFor(stack, batchId), "creates for the reset batch after it was reset").toBe(before.create_requests);
    expect(machinesOf(stack, batchId).filter((m) => m.state !== "destroyed")).toEqual([]);
    expect((await stack.api.status(batchId)).status).toBe("ERROR");

    // Resetting again is harmless; the failed tasks say why.
    await stack.api.reset(batchId);
    const failed = await stack.api.allTasks(batchId, "failed");
    expect(failed).toHaveLength(p.tasks_failed);
    for (const t of failed) expect(t.error).toContain("reset");
    console.log(`[e2e] reset: ${liveAtReset} machines live at reset, ${p.tasks_completed} done, ${p.tasks_failed} failed by reset, ${before.create_requests} creates, none after`);
  });
});

/** Create requests the Fly API saw for `batch` (its metadata names it; only env values are redacted). */
function createsFor(stack: E2EStack, batch: string): number {
  return stack.emulator.core.requests.filter(
    (r) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]) && (r.body as { config?: { metadata?: Record<string, string> } } | undefined)?.config?.metadata?.fanout_batch === batch,
  ).length;
}

function machinesOf(stack: E2EStack, batch: string): { id: string; state: string }[] {
  return stack.emulator.core
    .machines()
    .filter((m) => (m.config as { metadata?: Record<string, string> }).metadata?.fanout_batch === batch)
    .map((m) => ({ id: String(m.id), state: String(m.state) }));
}
