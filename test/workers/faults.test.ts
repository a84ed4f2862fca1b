import { runDurableObjectAlarm } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { FlyEmulatorOptions } from "../../local/fly-emulator/api.ts";
import {
  ADMIN,
  attemptsOf,
  createRequests,
  expireAll,
  getStatus,
  installWorld,
  putTiffs,
  stub,
  waitForStatus,
  withStore,
  type World,
} from "./support/engine.ts";

let world: World | undefined;
afterEach(async () => {
  await world?.restore();
  world = undefined;
});

async function start(batchId: string, n: number, options: FlyEmulatorOptions = {}) {
  world = installWorld(options);
  await putTiffs(`${batchId}/`, n);
  await stub(batchId).start({ batch_id: batchId, r2_prefix: `${batchId}/` });
  return world;
}

/** Machines created per task (one per attempt that reached the API and succeeded). */
function machinesPerTask(w: World): Map<string, number> {
  const per = new Map<string, number>();
  for (const m of w.runner.started) per.set(m.env.TASK_ID, (per.get(m.env.TASK_ID) ?? 0) + 1);
  return per;
}

describe("Fly API faults", () => {
  it("honours 429 Retry-After: no create is sent before that time", async () => {
    // The documented create limit, tight: burst 1, one per second.
    const w = await start("f-429", 4, { rateLimits: { create: { perSecond: 1, burst: 1 } } });
    const s = await waitForStatus("f-429", (x) => x.status === "DONE", 30_000);
    expect(s.progress).toMatchObject({ tasks_completed: 4, tasks_failed: 0 });
    const creates = createRequests(w.fly);
    const limited = creates.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    const retryAfterMs = 1000; // the emulator answers Retry-After in whole seconds, at least 1
    for (const r of limited) {
      // Creates sent in the same parallel burst arrive within a few ms; any later one must wait.
      const next = creates.find((c) => c.time > r.time + 20);
      if (next) expect(next.time - r.time).toBeGreaterThanOrEqual(retryAfterMs - 20);
    }
    expect(creates.filter((r) => r.status === 200)).toHaveLength(4);
  });

  it("retries 5xx answers and finishes with one machine per task", async () => {
    const w = await start("f-5xx", 10, { faults: { seed: 7, serverErrorRate: 0.4 } });
    const s = await waitForStatus("f-5xx", (x) => x.status === "DONE", 30_000);
    expect(s.progress).toMatchObject({ tasks_total: 10, tasks_completed: 10, tasks_failed: 0 });
    expect(w.fly.requests.some((r) => r.status === 503)).toBe(true);
    expect([...machinesPerTask(w).values()].every((n) => n === 1)).toBe(true);
  });

  it("falls back to the next region on a capacity error", async () => {
    const w = await start("f-cap", 3, { faults: { capacityErrorsByRegion: { iad: 1 } } });
    const s = await waitForStatus("f-cap", (x) => x.status === "DONE");
    expect(s.progress.tasks_completed).toBe(3);
    expect(w.runner.started.map((m) => m.region)).toEqual(["ord", "ord", "ord"]);
    expect(createRequests(w.fly).filter((r) => (r.body as { region?: string }).region === "iad").length, "one refused create in iad per task").toBe(3);
  });

  it("a create whose answer was lost is found again, not repeated", async () => {
    const w = await start("f-lost", 6, { faults: { seed: 3, lostCreateResponseRate: 0.5 } });
    const s = await waitForStatus("f-lost", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_completed: 6, tasks_failed: 0 });
    expect(w.fly.requests.some((r) => r.status === 500)).toBe(true);
    expect([...machinesPerTask(w).values()]).toEqual([1, 1, 1, 1, 1, 1]);
  });

  it("reconciles a machine created but never recorded (crash mid-create) by listing its metadata", async () => {
    const w = await start("f-crash", 3);
    w.runner.behaviour = () => "hang";
    await waitForStatus("f-crash", (x) => x.progress.starting === 3);
    await vi.waitFor(() => expect(w.runner.started).toHaveLength(3), { timeout: 10_000 });
    // As if the DO died after sending the create and before storing its answer.
    const lost = await withStore("f-crash", (store, sql) => {
      const t = store.getTask("tiff-000001")!;
      sql.exec("UPDATE tasks SET state = 'creating', machine_id = NULL, deadline_at = 0 WHERE task_id = ?", t.task_id);
      sql.exec(`UPDATE phase_tally SET creating = creating + 1, ${t.state} = ${t.state} - 1 WHERE phase = ?`, t.phase);
      sql.exec("UPDATE workers SET state = 'creating', machine_id = NULL, check_at = 0 WHERE worker_id = ?", t.worker_id);
      return t.machine_id;
    });
    await runDurableObjectAlarm(stub("f-crash"));
    const task = await withStore("f-crash", (store) => store.getTask("tiff-000001")!);
    expect(task).toMatchObject({ state: "booting", machine_id: lost, attempt: 1 });
    // One list of the batch's machines, not a read per machine.
    expect(w.fly.requests.filter((r) => r.method === "GET" && r.path.includes("metadata.fanout_batch=f-crash"))).toHaveLength(1);
    expect(createRequests(w.fly)).toHaveLength(3);
    for (const id of [...w.runner.live.keys()]) await w.runner.finish(id);
    const s = await waitForStatus("f-crash", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 3, tasks_completed: 3, starting: 0 });
  });
});

describe("timeouts and retries", () => {
  it("boot timeout → destroyed → retried → success", async () => {
    const faults = { bootDelayMs: 3_600_000 };
    const w = await start("t-boot", 1, { faults });
    await waitForStatus("t-boot", (x) => x.progress.starting === 1 && w.fly.machines().length === 1);
    await expireAll("t-boot");
    await runDurableObjectAlarm(stub("t-boot"));
    let s = await getStatus("t-boot");
    expect(s.progress.retrying).toBe(1);
    expect(s.recent_failures[0].error).toMatch(/did not start within \d+s \(state: created\)/);
    // The stuck machine is destroyed.
    await runDurableObjectAlarm(stub("t-boot"));
    expect(w.fly.requests.some((r) => r.method === "DELETE" && r.path.includes(s.recent_failures[0].machine_id!))).toBe(true);
    // The retry boots normally.
    faults.bootDelayMs = 0;
    await expireAll("t-boot");
    await runDurableObjectAlarm(stub("t-boot"));
    s = await waitForStatus("t-boot", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_completed: 1, tasks_failed: 0 });
    const attempts = await attemptsOf("t-boot", "tiff-000000");
    expect(attempts.map((a) => [a.attempt, a.outcome])).toEqual([
      [1, "failed"],
      [2, "done"],
    ]);
    expect(attempts[0].machine_id).not.toBe(attempts[1].machine_id);
  });

  it("run timeout → destroyed → retried → success", async () => {
    const w = await start("t-run", 1);
    w.runner.behaviour = (_m, nth) => (nth === 1 ? "hang" : "succeed");
    await waitForStatus("t-run", () => w.runner.live.size === 1);
    await expireAll("t-run");
    await runDurableObjectAlarm(stub("t-run")); // booting → running (machine is started)
    expect((await getStatus("t-run")).progress.running).toBe(1);
    await expireAll("t-run");
    await runDurableObjectAlarm(stub("t-run")); // run deadline passed
    const s1 = await getStatus("t-run");
    expect(s1.recent_failures[0].error).toMatch(/ran longer than \d+s/);
    await expireAll("t-run");
    await runDurableObjectAlarm(stub("t-run"));
    const s = await waitForStatus("t-run", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_completed: 1, tasks_failed: 0 });
    expect(w.fly.liveMachineCount()).toBe(0);
  });

  it("machines that die without calling back are retried up to MAX_RETRY_ATTEMPTS, then FAILED with the reason", async () => {
    const w = await start("t-dead", 1, { faults: { dieSilentlyRate: 1 } });
    for (let attempt = 1; attempt <= 3; attempt++) {
      await waitForStatus("t-dead", () => w.runner.started.length === attempt && w.fly.liveMachineCount() === 0);
      await expireAll("t-dead");
      await runDurableObjectAlarm(stub("t-dead")); // sees the machine gone: retry later
      await expireAll("t-dead");
      await runDurableObjectAlarm(stub("t-dead")); // the backoff has passed: next attempt
    }
    const s = await waitForStatus("t-dead", (x) => x.status === "FAILED");
    expect(s.progress).toMatchObject({ tasks_total: 1, tasks_completed: 0, tasks_failed: 1 });
    const page = (await (await exports.default.fetch("http://orchestrator.test/status/t-dead/tasks?status=failed")).json()) as {
      tasks: { error: string; attempt: number }[];
    };
    expect(page.tasks[0]).toMatchObject({ attempt: 3, error: expect.stringMatching(/exited without calling back \(after 3 attempts\)$/) });
    expect(s.recent_failures).toHaveLength(3);
  });
});

describe("machine checks", () => {
  it("look at 20 live machines with one list request, within Fly's read limit", async () => {
    const w = await start("c-census", 20);
    w.runner.behaviour = () => "hang";
    await vi.waitFor(() => expect(w.runner.live.size).toBe(20), { timeout: 10_000 }); // started, not just created
    const booting = () => withStore("c-census", (_s, sql) => sql.exec("SELECT COUNT(*) AS n FROM tasks WHERE state = 'booting'").one().n);
    await vi.waitFor(async () => expect(await booting()).toBe(20), { timeout: 10_000 });
    const readsBefore = w.fly.requests.filter((r) => r.method === "GET").length;
    await expireAll("c-census");
    await runDurableObjectAlarm(stub("c-census"));
    const reads = w.fly.requests.filter((r) => r.method === "GET").slice(readsBefore);
    expect(reads.map((r) => r.path)).toEqual(["/v1/apps/fanout-worker/machines?metadata.fanout_batch=c-census"]);
    expect((await getStatus("c-census")).progress.running).toBe(20);
  });
});

describe("reset", () => {
  it("destroys every live machine, fails open tasks, stops creating; repeatable", async () => {
    const w = await start("r-mid", 30);
    w.runner.behaviour = () => "hang";
    await waitForStatus("r-mid", (x) => x.progress.starting + x.progress.running === 20); // MAX_CONCURRENT_MACHINES
    await vi.waitFor(() => expect(w.fly.liveMachineCount()).toBe(20), { timeout: 10_000 });
    const unauthorised = await exports.default.fetch("http://orchestrator.test/admin/reset/r-mid", { method: "POST" });
    expect(unauthorised.status).toBe(401);
    const res = await exports.default.fetch("http://orchestrator.test/admin/reset/r-mid", { method: "POST", headers: ADMIN });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ok: true, status: "ERROR", tasks_failed: 30, machines_destroyed: 20, machines_pending: 0 });
    expect(w.fly.liveMachineCount()).toBe(0);
    const s = await getStatus("r-mid");
    expect(s).toMatchObject({ status: "ERROR", error: "reset by admin" });
    expect(s.progress).toMatchObject({ tasks_total: 30, tasks_failed: 30, pending: 0, starting: 0, running: 0 });
    const createsAfter = createRequests(w.fly).length;
    await runDurableObjectAlarm(stub("r-mid"));
    expect(createRequests(w.fly).length).toBe(createsAfter);
    const again = await exports.default.fetch("http://orchestrator.test/admin/reset/r-mid", { method: "POST", headers: ADMIN });
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ ok: true, tasks_failed: 0, machines_destroyed: 0 });
    const missing = await exports.default.fetch("http://orchestrator.test/admin/reset/never-was", { method: "POST", headers: ADMIN });
    expect(missing.status).toBe(404);
  });
});
