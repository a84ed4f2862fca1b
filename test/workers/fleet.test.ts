// The fleet of a Fly app (fly/budget.ts, engine/fleet.ts): batches running at once share its
// machines fairly, weighted by priority, never past its limits; a batch over its share drains,
// one with no room waits and says so. The emulator counts what is live at every create.
import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { BatchDO, StatusBody } from "../../orchestrator/batch-do.ts";
import type { FleetSnapshot } from "../../orchestrator/fly/budget.ts";
import { getStatus, installWorld, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";
import { PoolRunner } from "./support/pool.ts";

let world: World | undefined;
afterEach(async () => {
  await world?.restore();
  world = undefined;
});

/** Starts a batch whose DO runs in Fly app `app` under the given vars (a fleet of its own per test). */
async function startIn(app: string, batchId: string, n: number, vars: Record<string, string>, message: Record<string, unknown> = {}): Promise<void> {
  await putTiffs(`${batchId}/`, n);
  await runInDurableObject(stub(batchId), (instance: BatchDO) => {
    const self = instance as unknown as { env: Env };
    self.env = { ...self.env, FLY_APP_NAME: app, MACHINE_CHECK_INTERVAL_MS: "200", ...vars };
  });
  await stub(batchId).start({ batch_id: batchId, r2_prefix: `${batchId}/`, ...message });
}

function snapshot(app: string, machines: number): Promise<FleetSnapshot> {
  const rate = { perSecond: 1000, burst: 100 };
  return env.FLY_BUDGET.getByName(app).snapshot({ machines, vcpus: 64, memory_mb: 131072 }, { create: rate, list: rate, get: rate, destroy: rate });
}

describe("the fleet", () => {
  it("two batches share a binding limit: the second waits (and says so) until the first's machines end; the limit is never exceeded", async () => {
    const app = "fleet-two";
    world = installWorld();
    const w = world;
    w.runner.behaviour = () => "hang";
    const vars = { FLEET_MAX_MACHINES: "4" };
    await startIn(app, "fl-a", 6, vars);
    await vi.waitFor(() => expect(w.runner.live.size).toBe(4), { timeout: 15_000 });
    await startIn(app, "fl-b", 6, vars);
    // b's fair share is 2 of the 4, all held by a: it waits, first in line.
    const waiting = await waitForStatus("fl-b", (s) => s.fleet?.waiting === true);
    expect(waiting.fleet).toMatchObject({ share: 2, waiting: true, position: 1, waiting_batches: 1, batches: 2, limits: { machines: 4 } });
    expect(waiting.warnings[0]).toBe("waiting for fleet capacity: share 2 machines of the fleet's 4 (2 batches running), 0 live, position 1 of 1 waiting");
    expect(w.runner.live.size).toBe(4);
    // a's machines finish one by one; the room goes to b (its share) and a (the rest), never past 4.
    const done = async (s: StatusBody) => s.status === "DONE";
    for (let i = 0; i < 40 && !((await done(await getStatus("fl-a"))) && (await done(await getStatus("fl-b")))); i++) {
      const [first] = [...w.runner.live.keys()];
      if (first) await w.runner.finish(first);
      await new Promise((r) => setTimeout(r, 150));
    }
    for (const id of ["fl-a", "fl-b"]) {
      const s = await waitForStatus(id, (x) => x.status === "DONE", 30_000);
      expect(s.progress).toMatchObject({ tasks_completed: 6, tasks_failed: 0 });
    }
    expect(w.fly.usage().peak.machines, "the emulator never saw more than the fleet's limit live").toBeLessThanOrEqual(4);
    const b = w.runner.started.filter((m) => m.env.BATCH_ID === "fl-b").map((m) => w.runner.started.indexOf(m));
    expect(Math.min(...b), "b's first machine came before a's last ones, not after a finished").toBeLessThan(w.runner.started.length - 2);
  });

  it("shares are weighted by the message's priority", async () => {
    const app = "fleet-priority";
    world = installWorld();
    world.runner.behaviour = () => "hang";
    const vars = { FLEET_MAX_MACHINES: "4" };
    await startIn(app, "fl-p3", 8, vars, { priority: 3 });
    await startIn(app, "fl-p1", 8, vars);
    await waitForStatus("fl-p1", (s) => s.fleet !== null);
    const fleet = await snapshot(app, 4);
    // Weights 3 and 1 over 4 machines: 3 and 1.
    expect(Object.fromEntries(fleet.batches.map((b) => [b.batch_id, [b.priority, b.share]]))).toEqual({ "fl-p3": [3, 3], "fl-p1": [1, 1] });
  });

  it("a pool batch over its share drains: its surplus machines take no new task and exit; nothing fails; the newcomer gets the room", async () => {
    const app = "fleet-drain";
    const runner = new PoolRunner();
    world = installWorld({ runner });
    const vars = { FLEET_MAX_MACHINES: "4", LEASE_TIMEOUT_MS: "60000" };
    // Machines take their time over each task, so big's four are busy for a while when small arrives.
    runner.taskMs = 300;
    await startIn(app, "fl-big", 80, { ...vars }, { pool: true });
    await vi.waitFor(() => expect(runner.live.size).toBe(4), { timeout: 15_000 });
    await startIn(app, "fl-small", 4, { ...vars }, { pool: true });
    // Small gets machines while big still has most of its work: big's surplus drained, it did not wait for big's end.
    await vi.waitFor(() => expect(runner.started.some((m) => m.env.BATCH_ID === "fl-small")).toBe(true), { timeout: 20_000, interval: 50 });
    const bigThen = await getStatus("fl-big");
    expect(bigThen.progress.tasks_completed, `big had ${bigThen.progress.tasks_completed} of 80 done when small's first machine started`).toBeLessThan(60);
    for (const id of ["fl-big", "fl-small"]) {
      const s = await waitForStatus(id, (x) => x.status === "DONE", 45_000);
      expect(s.progress.tasks_failed, `${id} lost nothing to fairness`).toBe(0);
      expect(s.recent_failures).toEqual([]);
    }
    expect(runner.started.some((m) => m.env.BATCH_ID === "fl-small")).toBe(true);
    expect(world.fly.usage().peak.machines).toBeLessThanOrEqual(4);
    // Every machine ended by being told done, never killed with a task; some of big's while it still had work (the drain).
    expect(runner.exits.every((e) => e.code === 0)).toBe(true);
    const bigMachines = new Set(runner.started.filter((m) => m.env.BATCH_ID === "fl-big").map((m) => m.id));
    const drained = runner.leases.filter((l) => bigMachines.has(l.machineId) && "kind" in l.answer && l.answer.kind === "done" && l.answer.reason === "no work left for this machine");
    expect(drained.length, "big's surplus machines were told done").toBeGreaterThan(0);
  });

  it("a batch whose share shrinks is told at once: the newcomer's report brings its alarm forward (its surplus stops leasing now, not at its next poll)", async () => {
    const app = "fleet-nudge";
    const runner = new PoolRunner();
    world = installWorld({ runner });
    // Big's machines hold their tasks: nothing of big's moves by itself while the test looks.
    runner.onTask = () => "hold";
    const vars = { FLEET_MAX_MACHINES: "4", LEASE_TIMEOUT_MS: "120000", MACHINE_CHECK_INTERVAL_MS: "120000" };
    await startIn(app, "fl-nudge-big", 40, vars, { pool: true });
    await vi.waitFor(() => expect(runner.held.size).toBe(4), { timeout: 15_000 });
    const big = await getStatus("fl-nudge-big");
    expect(big.fleet, JSON.stringify(big.fleet)).toMatchObject({ share: 4 });
    // Its next report is a minute away (it would poll the fleet every few seconds on its own).
    const far = Date.now() + 60_000;
    await runInDurableObject(stub("fl-nudge-big"), (_i: BatchDO, state) => state.storage.setAlarm(far));
    await startIn(app, "fl-nudge-small", 2, { ...vars, MACHINE_CHECK_INTERVAL_MS: "200" }, { pool: true });
    // Small's first report (two tasks: it could use two machines) shrank big's share to 2 of the 4: big
    // reports again now, not a minute later, and knows it (its fleet view is written at its reports only).
    await vi.waitFor(
      async () => {
        const s = await getStatus("fl-nudge-big");
        expect(s.fleet, `big's fleet view: ${JSON.stringify(s.fleet)}`).toMatchObject({ share: 2 });
      },
      { timeout: 10_000, interval: 100 },
    );
  });

  it("a batch over its share drains the machines that will be free soonest: not yet leasing, then the one whose newest task started first", async () => {
    const runner = new PoolRunner();
    world = installWorld({ runner });
    runner.onTask = () => "hold";
    await startIn("fleet-order", "fl-order", 40, { FLEET_MAX_MACHINES: "4", LEASE_TIMEOUT_MS: "120000", MACHINE_CHECK_INTERVAL_MS: "120000" }, { pool: true, pool_tasks_per_machine: 2 });
    await vi.waitFor(() => expect(runner.held.size).toBe(8), { timeout: 15_000 });
    await withStore("fl-order", (store, sql) => {
      const machines = sql.exec<{ worker_id: string }>("SELECT worker_id FROM workers WHERE task_id IS NULL ORDER BY worker_id").toArray().map((r) => r.worker_id);
      expect(machines).toHaveLength(4);
      const [m0, m1, m2, m3] = machines;
      // Each machine's two tasks started at these seconds ago: m2's newest is the oldest (it is nearly
      // through both), m0's next; m1 and m3 started a task a moment ago.
      const ago: Record<string, [number, number]> = { [m0]: [40, 25], [m1]: [30, 1], [m2]: [50, 28], [m3]: [20, 2] };
      const now = Date.now();
      for (const [worker, [a, b]] of Object.entries(ago)) {
        const tasks = sql.exec<{ task_id: string }>("SELECT task_id FROM tasks WHERE worker_id = ? AND state = 'running' ORDER BY task_id", worker).toArray();
        expect(tasks, `${worker} holds two tasks`).toHaveLength(2);
        sql.exec("UPDATE tasks SET attempt_started_at = ? WHERE task_id = ?", now - a * 1000, tasks[0].task_id);
        sql.exec("UPDATE tasks SET attempt_started_at = ? WHERE task_id = ?", now - b * 1000, tasks[1].task_id);
      }
      // The newest machine (m3) was what drained first before; it is one of the last to be free.
      expect(store.poolMachinesToDrain(1)).toEqual([m2]);
      expect(store.poolMachinesToDrain(2)).toEqual([m2, m0]);
      // A machine still booting holds nothing: it goes first.
      sql.exec("UPDATE workers SET state = 'booting' WHERE worker_id = ?", m1);
      expect(store.poolMachinesToDrain(2)).toEqual([m1, m2]);
    });
  });

  it("GET /fleet shows the limits, what each batch holds and may hold, who waits and the API tokens; a finished batch leaves", async () => {
    world = installWorld();
    world.runner.behaviour = () => "hang";
    await putTiffs("fl-view/", 3);
    await stub("fl-view").start({ batch_id: "fl-view", r2_prefix: "fl-view/" });
    await vi.waitFor(() => expect(world!.runner.live.size).toBe(3), { timeout: 15_000 });
    const res = await exports.default.fetch("http://orchestrator.test/fleet");
    expect(res.status).toBe(200);
    const fleet = (await res.json()) as FleetSnapshot & { app: string };
    expect(fleet.app).toBe("fanout-worker");
    expect(fleet.limits).toEqual({ configured: { machines: 20, vcpus: 64, memory_mb: 131072 }, effective: { machines: 20, vcpus: 64, memory_mb: 131072 }, learned: null });
    const mine = fleet.batches.find((b) => b.batch_id === "fl-view")!;
    expect(mine).toMatchObject({ priority: 1, demand: 3, share: 3, waiting: false, position: null, live: { machines: 3 } });
    expect(fleet.live.machines).toBeGreaterThanOrEqual(3);
    expect(Object.keys(fleet.api_tokens).sort()).toEqual(["create", "destroy", "get", "list"]);
    expect(fleet.api_tokens.create).toMatchObject({ per_second: 1000, burst: 100 });
    for (const id of [...world.runner.live.keys()]) await world.runner.finish(id);
    await waitForStatus("fl-view", (s) => s.status === "DONE");
    await vi.waitFor(
      async () => {
        const after = (await (await exports.default.fetch("http://orchestrator.test/fleet")).json()) as FleetSnapshot;
        expect(after.batches.map((b) => b.batch_id)).not.toContain("fl-view");
      },
      { timeout: 15_000, interval: 200 },
    );
  });
});
