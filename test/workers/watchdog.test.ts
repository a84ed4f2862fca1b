// No silent stall (engine/watchdog.ts): an alarm re-armed before it works, the runtime's retries
// of a dead alarm counted (alarmInfo.retryCount), each alarm's work bounded by time as well as
// count, and a Cron Trigger that finds running batches nothing drives and wakes them.
// Alarm retries: "exponential backoff, starting at 2 second delays for up to 6 retries"
// (developers.cloudflare.com/durable-objects/api/alarms/); while an alarm runs, getAlarm()
// "returns null unless setAlarm has also been called since the alarm handler started running".
import { env } from "cloudflare:workers";
import { createExecutionContext, createScheduledController, runInDurableObject } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { ALARM_REARM_MS } from "../../orchestrator/engine/watchdog.ts";
import worker from "../../orchestrator/index.ts";
import { registerPhase } from "../../orchestrator/phases/index.ts";
import { tiffConversion } from "../../orchestrator/phases/tiff-conversion.ts";
import type { Phase } from "../../orchestrator/phases/types.ts";
import type { BatchStore } from "../../orchestrator/store/index.ts";
import { getStatus, installWorld, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

const crash: Phase = { ...tiffConversion, name: "TEST_WATCHDOG_CRASH", slug: "crash", plan: () => { throw new Error("planner crashed"); } };
registerPhase(crash);

/** Runs the DO's alarm handler as the runtime runs a retry of it. */
function retryAlarm(b: string, retryCount: number) {
  return runInDurableObject(stub(b), (instance: BatchDO) => instance.alarm({ isRetry: true, retryCount, scheduledTime: Date.now() }));
}

describe("the runtime's retries of a dead alarm are counted", () => {
  it("a retry is a failed step (with the retry count in the status), and its warning stays after the next step succeeds", async () => {
    world.runner.behaviour = () => "hang";
    await putTiffs("wd-retry/", 2);
    await stub("wd-retry").start({ batch_id: "wd-retry", r2_prefix: "wd-retry/" });
    await waitForStatus("wd-retry", (x) => x.stage === "run");
    // The step itself works: the count goes back to 0 after it, the warning stays.
    await retryAlarm("wd-retry", 3);
    const s = await getStatus("wd-retry");
    expect(s.step_failures).toBeNull();
    expect(s.warnings.some((w) => w.includes("the previous alarm did not finish and the runtime retried it (retry 3)"))).toBe(true);
  });

  it("retries of an alarm whose step fails too reach MAX_STEP_FAILURES in a row: ERROR, naming the step", async () => {
    await putTiffs("wd-crash/", 1);
    await stub("wd-crash").start({ batch_id: "wd-crash", r2_prefix: "wd-crash/", phases: ["TEST_WATCHDOG_CRASH"] });
    await waitForStatus("wd-crash", (x) => (x.step_failures?.count ?? 0) >= 1);
    const before = (await getStatus("wd-crash")).step_failures!.count;
    // Each retried alarm: one failure for the invocation that died, one for its own step.
    await retryAlarm("wd-crash", 1);
    const after = await getStatus("wd-crash");
    expect(after.step_failures?.count).toBeGreaterThanOrEqual(before + 2);
    for (let i = 2; i <= 6 && (await getStatus("wd-crash")).status !== "ERROR"; i++) await retryAlarm("wd-crash", i);
    const s = await getStatus("wd-crash");
    expect(s.status).toBe("ERROR");
    expect(s.error).toMatch(/^plan step failed \d+ times in a row: /);
  });
});

describe("an alarm sets its successor before it works", () => {
  it("while an alarm waits on the downstream, the next alarm is already set ALARM_REARM_MS ahead", async () => {
    await putTiffs("wd-rearm/", 1);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let posted = 0;
    // In front of the world's fetch (the Fly emulator and the downstream): the POST waits at the gate.
    const spied = globalThis.fetch;
    globalThis.fetch = async (input, init) => {
      const request = new Request(input, init);
      if (new URL(request.url).host === "downstream.test") {
        posted++;
        await gate;
      }
      return spied(request);
    };
    const hold = { mockRestore: () => (globalThis.fetch = spied) };
    try {
      await stub("wd-rearm").start({ batch_id: "wd-rearm", r2_prefix: "wd-rearm/" });
      await vi.waitFor(() => expect(posted).toBe(1), { timeout: 30_000 });
      const seen = Date.now();
      const alarm = await runInDurableObject(stub("wd-rearm"), (_i, state) => state.storage.getAlarm());
      expect(alarm).not.toBeNull();
      expect(alarm!).toBeGreaterThan(seen + ALARM_REARM_MS - 30_000);
      expect(alarm!).toBeLessThanOrEqual(seen + ALARM_REARM_MS);
    } finally {
      release();
      hold.mockRestore();
    }
    await waitForStatus("wd-rearm", (x) => x.status === "DONE", 30_000);
  });
});

describe("a wake during an alarm is kept", () => {
  it("a callback that brings the alarm forward while an alarm is running is not overwritten by that alarm's own next time", async () => {
    world.runner.behaviour = () => "hang";
    await putTiffs("wd-wake/", 1);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let held = 0;
    const spied = globalThis.fetch;
    // The alarm's machine create waits at the gate.
    globalThis.fetch = async (input, init) => {
      const request = new Request(input, init);
      if (new URL(request.url).host === "fly.test" && request.method === "POST") {
        held++;
        await gate;
      }
      return spied(request);
    };
    try {
      await stub("wd-wake").start({ batch_id: "wd-wake", r2_prefix: "wd-wake/" });
      await vi.waitFor(() => expect(held).toBe(1), { timeout: 30_000 });
      const wantedAt = Date.now() + 3000;
      const before = await runInDurableObject(stub("wd-wake"), async (instance: BatchDO) => {
        await (instance as unknown as { wake(at: number): Promise<void> }).wake(wantedAt);
        return instance.lastAlarm;
      });
      release();
      // The alarm ends (its create answered); its own next look would be MACHINE_CHECK_INTERVAL_MS (30 s) away.
      await vi.waitFor(async () => expect(await runInDurableObject(stub("wd-wake"), (instance: BatchDO) => instance.lastAlarm !== before && instance.lastAlarm?.stage === "run")).toBe(true), { timeout: 30_000 });
      const alarm = await runInDurableObject(stub("wd-wake"), (_i, state) => state.storage.getAlarm());
      expect(alarm).not.toBeNull();
      expect(alarm!).toBeLessThanOrEqual(wantedAt);
    } finally {
      release();
      globalThis.fetch = spied;
    }
  });
});

describe("each alarm's work is bounded by time as well as by count", () => {
  it("discovery stops taking manifest pages once the alarm's time is up, and the next alarm goes on from the cursor", async () => {
    const b = "wd-time";
    const n = 10_000;
    const pad = "p".repeat(900);
    const files = Array.from({ length: n }, (_, i) => ({ r2_key: `${b}/s${i}.tif`, note: pad }));
    await env.BUCKET.put(`${b}/manifest.json`, JSON.stringify({ batch_id: b, directories: [{ directory_path: "/", processing_config: {}, files }] }));
    world.runner.behaviour = () => "hang";
    await stub(b).start({ batch_id: b, manifest_r2_key: `${b}/manifest.json` });
    // Park the DO's own alarms: this test runs them, with ALARM_WORK_MS at its 100 ms floor and
    // every ranged read of the manifest (about four pages each) taking 150 ms.
    await runInDurableObject(stub(b), (_i, state) => state.storage.deleteAlarm());
    const alarm = () =>
      runInDurableObject(stub(b), async (instance: BatchDO, state) => {
        const self = instance as unknown as { env: Env; store: BatchStore };
        const original = self.env;
        const bucket = {
          get: async (...a: Parameters<R2Bucket["get"]>) => {
            await new Promise((r) => setTimeout(r, 150));
            return env.BUCKET.get(...a);
          },
        };
        self.env = new Proxy(original, { get: (t, p) => (p === "ALARM_WORK_MS" ? "100" : p === "BUCKET" ? bucket : Reflect.get(t, p)) });
        try {
          await instance.alarm();
        } finally {
          self.env = original;
          await state.storage.deleteAlarm();
        }
        return { files: self.store.fileCount(), cursor: self.store.getMeta()!.discover_cursor, failures: self.store.getMeta()!.step_failures };
      });
    const first = await alarm();
    // By count alone one alarm takes 80 pages of 250 (20,000 entries): all 10,000.
    expect(first.files).toBeGreaterThan(0);
    expect(first.files).toBeLessThan(n / 2);
    expect(first.cursor).not.toBeNull();
    // Running out of time is not a failed step.
    expect(first.failures).toBe(0);
    const second = await alarm();
    expect(second.files).toBeGreaterThan(first.files);
  });
});

describe("the watchdog (Cron Trigger) wakes a running batch nothing drives", () => {
  it("no alarm: /status says stalled; the cron run wakes it and the warning says so", async () => {
    world.runner.behaviour = () => "hang";
    await putTiffs("wd-stall/", 2);
    await stub("wd-stall").start({ batch_id: "wd-stall", r2_prefix: "wd-stall/" });
    await waitForStatus("wd-stall", (x) => x.stage === "run");
    // The runtime gave up on its alarm, and its index row has not moved for an hour.
    await runInDurableObject(stub("wd-stall"), (_i, state) => state.storage.deleteAlarm());
    await env.BATCH_INDEX.prepare("UPDATE batches SET observed_at = ? WHERE batch_id = ?").bind(Date.now() - 3_600_000, "wd-stall").run();
    const stalled = await getStatus("wd-stall");
    expect(stalled.warnings[0]).toMatch(/^stalled: no alarm is set: nothing has driven the batch since .*; the watchdog \(a Cron Trigger every 5 minutes\) wakes it/);

    const controller = createScheduledController({ scheduledTime: Date.now(), cron: "*/5 * * * *" });
    await worker.scheduled!(controller, env, createExecutionContext());
    const alarm = await runInDurableObject(stub("wd-stall"), (_i, state) => state.storage.getAlarm());
    expect(alarm).not.toBeNull();
    const s = await waitForStatus("wd-stall", (x) => x.warnings.some((w) => w.includes("the watchdog woke the batch: no alarm is set")));
    expect(s.warnings.some((w) => w.startsWith("stalled:"))).toBe(false);
    // A healthy batch is left alone (and its row refreshed, so it is not asked again soon).
    const before = await withStore("wd-stall", (store) => store.getMeta()!.warnings_json);
    await env.BATCH_INDEX.prepare("UPDATE batches SET observed_at = ? WHERE batch_id = ?").bind(Date.now() - 3_600_000, "wd-stall").run();
    await worker.scheduled!(createScheduledController({ scheduledTime: Date.now(), cron: "*/5 * * * *" }), env, createExecutionContext());
    expect(await withStore("wd-stall", (store) => store.getMeta()!.warnings_json)).toBe(before);
    const row = await env.BATCH_INDEX.prepare("SELECT observed_at FROM batches WHERE batch_id = ?").bind("wd-stall").first<{ observed_at: number }>();
    expect(row!.observed_at).toBeGreaterThan(Date.now() - 60_000);
  });
});
