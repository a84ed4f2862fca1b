// The orchestrator process (wrangler dev: workerd, its SQLite and alarms) is killed mid-batch
// and started again on the same persisted state: the batch finishes as if nothing happened.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sleep } from "../../local/progress.ts";
import { BACKSTOP_MS, expectedJpegKeys, jpegKeys, startE2EStack, submitSamples, waitNoLiveMachines, watchToEnd, type E2EStack } from "./support/stack.ts";

const TASKS = 30;
const batchId = "e2e-restart";

describe("orchestrator killed and restarted mid-batch", () => {
  let stack: E2EStack;

  beforeAll(async () => {
    stack = await startE2EStack({ vars: { MAX_CONCURRENT_MACHINES: "4" } });
  });
  afterAll(async () => {
    await stack?.dispose();
  });

  it("finishes the batch from its persisted state", async () => {
    const { samples, submitted } = await submitSamples(stack, batchId, { count: TASKS, width: 640, height: 480 });
    const deadline = Date.now() + 120_000;
    let atKill = await stack.api.status(batchId).catch(() => null);
    while (!atKill || atKill.progress.tasks_completed < 5) {
      if (Date.now() > deadline) throw new Error("batch never got going");
      await sleep(200);
      atKill = await stack.api.status(batchId).catch(() => null);
    }
    expect(atKill.progress.tasks_completed).toBeLessThan(TASKS);

    // A crash, not a shutdown: SIGKILL to wrangler, workerd and all.
    await stack.stopOrchestrator("SIGKILL");
    expect(await stack.api.health()).toBe(false);
    await sleep(3000);
    await stack.startOrchestrator();

    const { final, stalled } = await watchToEnd(stack, batchId, 500);
    expect(stalled).toBeNull();
    expect(final.status).toBe("DONE");
    expect(final.progress).toMatchObject({ tasks_total: TASKS, tasks_completed: TASKS, tasks_failed: 0, pending: 0, starting: 0, running: 0, retrying: 0 });
    expect((await jpegKeys(stack, submitted.prefix)).sort()).toEqual(expectedJpegKeys(submitted.prefix, samples));
    expect(await waitNoLiveMachines(stack)).toEqual({ live: 0, pids: [] });
    const restarts = stack.orchestratorLines.filter((l) => l.includes("Ready on http://127.0.0.1")).length;
    expect(restarts).toBe(2);
    console.log(`[e2e] restart: killed at ${atKill.progress.tasks_completed}/${TASKS} done; DONE ${TASKS}/${TASKS} after restart`);
  }, BACKSTOP_MS);
});
