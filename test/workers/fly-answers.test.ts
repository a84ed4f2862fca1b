// What the engine does with each answer Fly gives a create (fly/create-answer.ts reads them as
// documented), against the emulator refusing the way Fly refuses: no refusal ever fails a task.
// Each test runs its batch on its own Fly app, so the app's fleet and budget are its own.
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import type { FlyEmulatorOptions } from "../../local/fly-emulator/api.ts";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { attemptsOf, createRequests, getStatus, installWorld, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";
import { PoolRunner } from "./support/pool.ts";

let world: World | undefined;
afterEach(async () => {
  await world?.restore();
  world = undefined;
});

/** Starts a batch of `n` TIFFs whose DO uses Fly app `app` (its own fleet and budget). */
async function start(batchId: string, n: number, options: FlyEmulatorOptions = {}, pool = false): Promise<World> {
  world = installWorld(pool ? { runner: new PoolRunner(), ...options } : options);
  await putTiffs(`${batchId}/`, n);
  await runInDurableObject(stub(batchId), (instance: BatchDO) => {
    const self = instance as unknown as { env: Env };
    self.env = { ...self.env, FLY_APP_NAME: `app-${batchId}` };
  });
  await stub(batchId).start({ batch_id: batchId, r2_prefix: `${batchId}/`, pool });
  return world;
}

/** Every attempt of every task that did not end done (none should: refusals spend no attempt). */
async function attemptsNotDone(batchId: string, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `tiff-${String(i).padStart(6, "0")}`;
    for (const a of await attemptsOf(batchId, id)) if (a.outcome !== "done") out.push(`${id}#${a.attempt} ${a.outcome}: ${a.error}`);
  }
  return out;
}

const unblock = (batchId: string) => withStore(batchId, (_s, sql) => void sql.exec("UPDATE meta SET fly_blocked_until = 0, bucket_at = 0, paused_until = 0"));

describe("Fly's answers to a create", () => {
  it("the organisation's machines limit (422): no task fails, the fleet halves its limit, the warnings say the quota bound the batch", async () => {
    const w = await start("ans-quota", 6, { quota: { machines: 2 } });
    const s = await waitForStatus("ans-quota", (x) => x.status === "DONE" || x.status === "FAILED", 45_000);
    expect(s.progress).toMatchObject({ tasks_total: 6, tasks_completed: 6, tasks_failed: 0 });
    expect(await attemptsNotDone("ans-quota", 6)).toEqual([]);
    const refused = createRequests(w.fly).filter((r) => r.status === 422);
    expect(refused.length, "Fly refused some creates for quota").toBeGreaterThan(0);
    expect(refused.every((r) => r.fault === "quota_machines")).toBe(true);
    expect(w.fly.usage().peak.machines).toBeLessThanOrEqual(2);
    expect(s.warnings.join("\n")).toMatch(/Fly's quota bound this batch: \d+ creates? refused for the organisation's quota \(last: failed to launch VM: organization "personal" has reached its machines limit/);
    // Fly's last words once: the fleet's lowered limit, if shown, without repeating them.
    expect(s.warnings.join("\n").match(/has reached its machines limit/g)).toHaveLength(1);
    const fleet = (await (await exports.default.fetch("http://orchestrator.test/fleet")).json()) as { app: string };
    expect(fleet.app).toBe("fanout-worker"); // the Worker's own app; this batch ran on its own (below)
    const own = await runInDurableObject(stub("ans-quota"), (i: BatchDO) => (i as unknown as { env: Env }).env.FLY_BUDGET.getByName("app-ans-quota").snapshot({ machines: 20, vcpus: 64, memory_mb: 131072 }, {
      create: { perSecond: 1, burst: 3 }, list: { perSecond: 1, burst: 3 }, get: { perSecond: 5, burst: 10 }, destroy: { perSecond: 1, burst: 3 },
    }));
    // Halved from the 2 live when Fly refused: 1, and growing back (to what fitted, 2) while no refusal comes.
    expect(own.limits.learned).toMatch(/^Fly refused \d+ creates? for quota .* the fleet runs at machines [12] of 20/);
  });

  it("no room in any region: the task waits (its attempt not spent) and the batch backs off; room comes back and it finishes", async () => {
    const faults = { capacityErrorsByRegion: { iad: 1, ord: 1 } as Record<string, number> };
    const w = await start("ans-nocap", 2, { faults });
    let s = await waitForStatus("ans-nocap", (x) => x.warnings.some((m) => m.startsWith("Fly had no room in any region")));
    expect(s.progress).toMatchObject({ tasks_failed: 0, pending: 2 });
    expect(s.recent_failures).toEqual([]);
    expect(await withStore("ans-nocap", (store) => store.getMeta()!.fly_blocked_until)).toBeGreaterThan(Date.now());
    faults.capacityErrorsByRegion = {};
    await unblock("ans-nocap");
    await runDurableObjectAlarm(stub("ans-nocap"));
    s = await waitForStatus("ans-nocap", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_completed: 2, tasks_failed: 0 });
    expect(await attemptsNotDone("ans-nocap", 2)).toEqual([]);
    expect(createRequests(w.fly).filter((r) => r.fault === "capacity_region").length).toBeGreaterThanOrEqual(4);
  });

  it("a request Fly calls bad pauses the phase with one error naming the field, fails no task, and resumes once fixed", async () => {
    const regions = ["ams"]; // the batch asks for iad, then ord (FLY_REGIONS): unknown regions here
    const w = await start("ans-invalid", 3, { regions });
    let s = await waitForStatus("ans-invalid", (x) => x.paused !== null);
    expect(s.paused!.error).toMatch(/^Fly refused the machine config \(HTTP 422\) — fix region \(FLY_REGIONS\): invalid region "iad": unknown region\. No task failed for it/);
    expect(s.warnings[0]).toBe(`paused: ${s.paused!.error}`);
    expect(s.progress).toMatchObject({ tasks_failed: 0, pending: 3 });
    const sent = createRequests(w.fly).length;
    await runDurableObjectAlarm(stub("ans-invalid"));
    expect(createRequests(w.fly).length, "paused: no create until the pause has passed").toBe(sent);
    // The fix (a deploy, here the regions Fly accepts), then the pause passes: one create tries, the rest follow.
    regions.push("iad", "ord");
    await unblock("ans-invalid");
    await runDurableObjectAlarm(stub("ans-invalid"));
    s = await waitForStatus("ans-invalid", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_completed: 3, tasks_failed: 0 });
    expect(s.paused).toBeNull();
    expect(await attemptsNotDone("ans-invalid", 3)).toEqual([]);
  });

  it("pool mode: a create refused while pool machines work fails none of their tasks (they lease the rest)", async () => {
    // Room for 2 machines in iad; the next region, ord, is one Fly does not know: each further create is refused as invalid.
    const w = await start("ans-pool", 6, { regions: ["iad"], regionCapacity: { iad: 2 } }, true);
    const s = await waitForStatus("ans-pool", (x) => x.status === "DONE" || x.status === "FAILED", 45_000);
    expect(s.progress).toMatchObject({ tasks_total: 6, tasks_completed: 6, tasks_failed: 0 });
    expect(createRequests(w.fly).some((r) => r.status === 422 && (r.body as { region?: string }).region === "ord"), "a create was refused as invalid").toBe(true);
    expect(await attemptsNotDone("ans-pool", 6)).toEqual([]);
    expect((await getStatus("ans-pool")).recent_failures).toEqual([]);
  });

  it("pool mode: the organisation's quota while pool machines work fails none of their tasks", async () => {
    const w = await start("ans-pool-quota", 6, { quota: { machines: 2 } }, true);
    const s = await waitForStatus("ans-pool-quota", (x) => x.status === "DONE" || x.status === "FAILED", 45_000);
    expect(s.progress).toMatchObject({ tasks_total: 6, tasks_completed: 6, tasks_failed: 0 });
    expect(createRequests(w.fly).some((r) => r.fault === "quota_machines")).toBe(true);
    expect(await attemptsNotDone("ans-pool-quota", 6)).toEqual([]);
  });
});
