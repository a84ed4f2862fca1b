// A pool batch of 200 TIFFs through the whole local stack against an organisation whose quota is
// smaller than the fleet's limits (FANOUT_FLY_QUOTA=machines=4,vcpus=8): Fly refuses creates the way
// it does (422 machines limit, 403 over the allowed quota), and the batch must still end DONE with
// every JPEG, no attempt charged to a quota refusal, the quota never exceeded, and its warnings
// saying the quota bound it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseQuota } from "../../local/fly-emulator/quota.ts";
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

const TASKS = 200;
const QUOTA = "machines=4,vcpus=8";
const batchId = "e2e-quota-200";

describe("a pool batch of 200 TIFFs under FANOUT_FLY_QUOTA=machines=4,vcpus=8", () => {
  let stack: E2EStack | undefined;

  beforeAll(async () => {
    stack = await startE2EStack({
      // The production default (pool mode, auto-sized), under the local fleet (6 machines on 2 cores):
      // more than the quota allows, so Fly's refusals are what bind.
      vars: { POOL_MODE: "true", MAX_CONCURRENT_MACHINES: "", LEASE_TIMEOUT_MS: "10000" },
      emulator: { quota: parseQuota(QUOTA) },
    });
  });
  afterAll(async () => {
    await stack?.dispose();
  });

  it("ends DONE, every JPEG present, no attempt charged to a quota refusal, the quota never exceeded, the warnings saying it bound the batch", async () => {
    const s = stack!;
    const { samples, submitted } = await submitSamples(s, batchId, { count: TASKS, width: 64, height: 48, perFolder: 50 });
    const { final, stalled } = await watchToEnd(s, batchId, 1000);
    const alive = await waitNoLiveMachines(s);
    const fly = flyFigures(s);
    const requests = s.emulator.core.requests;
    const quotaRefusals = requests.filter((r) => r.fault === "quota_machines" || r.fault === "quota_vcpus" || r.fault === "quota_memory");
    const failedAttempts = orchestratorEvents(s).filter((e) => e.event === "task_retry" || e.event === "task_failed");
    const warnings = (final as { warnings?: string[] }).warnings ?? [];
    const usage = s.emulator.core.usage();
    console.log(`[e2e] quota run ${JSON.stringify({ status: final.status, progress: final.progress, ...fly, quota_refusals: quotaRefusals.map((r) => r.fault), failed_attempts: failedAttempts.map((e) => e.error), peak: usage.peak, warnings })}`);

    expect(stalled).toBeNull();
    expect(final.status).toBe("DONE");
    expect(final.progress).toMatchObject({ tasks_total: TASKS, tasks_completed: TASKS, tasks_failed: 0 });
    const jpegs = await jpegKeys(s, submitted.prefix);
    expect(jpegs.sort()).toEqual(expectedJpegKeys(submitted.prefix, samples));
    expect(await checkJpegs(s, jpegs.slice(0, 20))).toEqual([]);

    // Fly refused creates for the quota, and none of it cost a task an attempt.
    expect(quotaRefusals.length, "the quota bound the batch: Fly refused creates for it").toBeGreaterThan(0);
    expect(failedAttempts.filter((e) => /quota|machines limit|capacity|refused/i.test(String(e.error)))).toEqual([]);
    expect(usage.peak.machines).toBeLessThanOrEqual(4);
    expect(usage.peak.vcpus).toBeLessThanOrEqual(8);
    expect(warnings.join("\n")).toMatch(/Fly's quota bound this batch: \d+ creates? refused for the organisation's quota/);
    expect(alive).toEqual({ live: 0, pids: [] });
  }, BACKSTOP_MS);
});
