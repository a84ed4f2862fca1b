// The engine in pool mode: machines lease task after task (support/pool.ts: a scripted stand-in
// for fly-worker's pool loop, speaking the lease contract through exports.default.fetch),
// heartbeats keep leases, lapsed leases return tasks, machines are retired at the end and
// destroyed on reset. The real loop against the real engine: test/e2e/pool-lease.test.ts.
import { runDurableObjectAlarm } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LeaseResponse } from "../../shared/contracts.ts";
import { signGrant } from "../../shared/token.ts";
import type { FlyEmulatorOptions } from "../../local/fly-emulator/api.ts";
import {
  ADMIN,
  attemptsOf,
  CALLBACK_SECRET,
  createRequests,
  errorBody,
  expireAll,
  getStatus,
  installWorld,
  postCallback,
  putTiffs,
  stub,
  waitForStatus,
  withStore,
  writeOutput,
  type World,
} from "./support/engine.ts";
import { PoolRunner, lease } from "./support/pool.ts";

let world: World | undefined;
afterEach(async () => {
  await world?.restore();
  world = undefined;
});

async function startPool(
  batchId: string,
  n: number,
  setup: (runner: PoolRunner) => void = () => {},
  options: FlyEmulatorOptions = {},
  tasksPerMachine?: number,
) {
  const runner = new PoolRunner();
  setup(runner);
  world = installWorld({ runner, ...options });
  await putTiffs(`${batchId}/`, n);
  await stub(batchId).start({ batch_id: batchId, r2_prefix: `${batchId}/`, pool: true, pool_tasks_per_machine: tasksPerMachine });
  return { runner, fly: world.fly };
}

/** The stored counters agree with the task rows, state by state. */
async function expectCountersExact(batchId: string): Promise<void> {
  const { counters, rows } = await withStore(batchId, (store, sql) => ({
    counters: Object.fromEntries(
      store.counts().flatMap((c) => (["pending", "retrying", "creating", "booting", "running", "done", "failed"] as const).filter((s) => c[s] !== 0).map((s) => [s, c[s]])),
    ),
    rows: Object.fromEntries(sql.exec<{ state: string; n: number }>("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state").toArray().map((r) => [r.state, r.n])),
  }));
  expect(counters).toEqual(rows);
}


/** As if LEASE_TIMEOUT_MS passed without a heartbeat (run limits untouched). */
function lapseLeases(batchId: string): Promise<void> {
  return withStore(batchId, (_s, sql) => {
    sql.exec("UPDATE tasks SET deadline_at = 0 WHERE state = 'running' AND worker_id IS NOT NULL");
  });
}

function leaseTokenFor(batchId: string, workerId: string, expiresAt = Date.now() + 3_600_000, epoch = 0): Promise<string> {
  return signGrant(CALLBACK_SECRET, { kind: "lease", batchId, workerId, epoch }, expiresAt);
}

/** A lease request as pool machine `workerId` — from `machineId`, the machine the engine created for it unless a test says otherwise. */
async function leaseAs(batchId: string, workerId: string, token?: string, machineId = "m-test"): Promise<Response> {
  const env = {
    LEASE_URL: `http://orchestrator.test/lease/${batchId}`,
    LEASE_TOKEN: token ?? (await leaseTokenFor(batchId, workerId)),
    WORKER_ID: workerId,
    FLY_MACHINE_ID: machineId,
  };
  return lease(env);
}

describe("pool mode", () => {
  it("40 tasks, MAX_CONCURRENT_MACHINES=20: DONE with at most 20 creates, every task done once", async () => {
    const { runner, fly } = await startPool("pool-40", 40);
    const s = await waitForStatus("pool-40", (x) => x.status === "DONE", 30_000);
    expect(s.progress).toMatchObject({ tasks_total: 40, tasks_completed: 40, tasks_failed: 0, pending: 0, starting: 0, running: 0, retrying: 0 });
    expect(s.mode).toBe("pool");
    const creates = createRequests(fly).filter((r) => r.status === 200);
    expect(creates.length).toBeGreaterThan(0);
    expect(creates.length).toBeLessThanOrEqual(20);
    expect(s.workers?.created).toBe(creates.length);
    // Each create is a pool machine: its env is PoolEnv, not one task's.
    for (const m of runner.started) expect(m.env).toMatchObject({ POOL_MODE: "true", BATCH_ID: "pool-40", WORKER_ID: expect.stringMatching(/^pool-\d{4}$/) });
    for (const m of runner.started) expect(m.env.TASK_ID).toBeUndefined();
    const done = runner.doneCallbacks();
    expect(done.size).toBe(40);
    expect([...done.values()].every((n) => n === 1)).toBe(true);
    expect(runner.callbacks.filter((c) => c.outcome !== "done")).toEqual([]);
    // Some machine converted more than one task: the point of the pool.
    const perMachine = new Map<string, number>();
    for (const c of runner.callbacks) perMachine.set(c.machineId, (perMachine.get(c.machineId) ?? 0) + 1);
    expect(Math.max(...perMachine.values())).toBeGreaterThan(1);
    // One attempt per task, the one that finished it: it is the task row (attempt 1, done), with no
    // attempts row of its own (store/attempts.ts: a row is written only for an attempt that did not).
    const tasks = await withStore("pool-40", (_s, sql) => sql.exec<{ attempt: number; state: string }>("SELECT attempt, state FROM tasks").toArray());
    expect(tasks).toHaveLength(40);
    expect(tasks.every((t) => t.attempt === 1 && t.state === "done"), "one attempt per task").toBe(true);
    expect(await withStore("pool-40", (_s, sql) => sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM attempts").one().n)).toBe(0);
    await expectCountersExact("pool-40");
    // Retired at the end: machines that asked again were told done; none is left running.
    await vi.waitFor(() => expect(fly.liveMachineCount()).toBe(0), { timeout: 10_000 });
    expect(runner.exits.every((e) => e.code === 0)).toBe(true);
    expect((await getStatus("pool-40")).workers).toMatchObject({ starting: 0, live: 0 });
  });

  it("a machine that stops heartbeating: its lease lapses, another machine does the task, exactly once", async () => {
    let first = true;
    const { runner, fly } = await startPool("pool-lapse", 6, (r) => {
      r.onTask = () => (first ? ((first = false), "hold") : "succeed");
    });
    await waitForStatus("pool-lapse", (x) => x.progress.tasks_completed === 5 && x.progress.running === 1);
    const [held] = [...runner.held.values()];
    // While the lease holds, the holder's heartbeat renews it.
    expect(await runner.heartbeat(held.taskId)).toEqual({ status: 200, body: { ok: true, lease_token: expect.stringMatching(/^v3\.0\.0\./) } });

    await lapseLeases("pool-lapse");
    await runDurableObjectAlarm(stub("pool-lapse"));
    const attempts = await attemptsOf("pool-lapse", held.taskId);
    expect(attempts[0]).toMatchObject({ attempt: 1, outcome: "failed", error: expect.stringMatching(/^lease expired: pool-\d{4} stopped heartbeating/) });
    expect(await runner.heartbeat(held.taskId)).toMatchObject({ status: 409, body: { ok: false, reason: expect.stringMatching(/lease lost/) } });
    await expireAll("pool-lapse"); // skip the retry's backoff

    const s = await waitForStatus("pool-lapse", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 6, tasks_completed: 6, tasks_failed: 0 });
    const done = runner.doneCallbacks();
    expect(done.get(held.taskId)).toBe(1);
    const retriedBy = runner.callbacks.find((c) => c.taskId === held.taskId)!.machineId;
    expect(retriedBy).not.toBe(held.machine.id);
    expect((await attemptsOf("pool-lapse", held.taskId)).map((a) => a.outcome)).toEqual(["failed", "done"]);

    // The dead lease holder wakes up and calls back late: ignored, nothing counted twice.
    expect(await runner.lateCallback(held.taskId)).toMatchObject({ status: 200, body: { ok: true, outcome: "ignored", reason: "duplicate" } });
    expect((await getStatus("pool-lapse")).progress).toMatchObject({ tasks_total: 6, tasks_completed: 6, tasks_failed: 0 });
    await expectCountersExact("pool-lapse");
    // The holder never asked again; the engine retired (destroyed) it.
    await vi.waitFor(() => expect(fly.liveMachineCount()).toBe(0), { timeout: 10_000 });
    expect(runner.exits.find((e) => e.machineId === held.machine.id)).toBeUndefined();
  });

  it("a task past its run limit on a pool machine fails alone: the machine and its other slot's task go on", async () => {
    const { runner, fly } = await startPool("pool-overrun", 2, (r) => (r.onTask = () => "hold"), {}, 2);
    await waitForStatus("pool-overrun", (x) => x.progress.running === 2);
    const held = [...runner.held.values()];
    expect(new Set(held.map((h) => h.machine.id)).size, "both tasks on one machine (two slots)").toBe(1);
    const [slow, healthy] = held;
    // The slow task ran past its run limit; the other's lease is fresh (its slot heartbeats).
    await withStore("pool-overrun", (_s, sql) => {
      sql.exec("UPDATE tasks SET limit_at = 1, deadline_at = 1 WHERE task_id = ?", slow.taskId);
      sql.exec("UPDATE tasks SET limit_at = ?, deadline_at = ? WHERE task_id = ?", Date.now() + 600_000, Date.now() + 600_000, healthy.taskId);
    });
    await runDurableObjectAlarm(stub("pool-overrun"));
    expect((await attemptsOf("pool-overrun", slow.taskId))[0]).toMatchObject({ outcome: "failed", error: expect.stringMatching(/^task ran longer than \d+s on machine /) });
    const other = await attemptsOf("pool-overrun", healthy.taskId);
    expect(other, "the other slot's task keeps its attempt").toHaveLength(1);
    expect(other[0].outcome).toBe("open");
    expect(await runner.heartbeat(healthy.taskId)).toEqual({ status: 200, body: { ok: true, lease_token: expect.any(String) } });
    expect(fly.liveMachineCount()).toBe(1);
    await expectCountersExact("pool-overrun");
  });

  it("a machine that dies holding a lease: after expireAll + alarm its task is retried by another machine", async () => {
    let first = true;
    const { runner, fly } = await startPool("pool-die", 6, (r) => {
      r.onTask = () => (first ? ((first = false), "die") : "succeed");
    });
    await waitForStatus("pool-die", (x) => x.progress.tasks_completed === 5 && x.progress.running === 1);
    const [held] = [...runner.held.values()];
    await vi.waitFor(() => expect(runner.exits).toContainEqual({ machineId: held.machine.id, code: 137 }));

    await expireAll("pool-die");
    await runDurableObjectAlarm(stub("pool-die"));
    await expireAll("pool-die"); // the retry's backoff
    const s = await waitForStatus("pool-die", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 6, tasks_completed: 6, tasks_failed: 0 });
    expect(runner.doneCallbacks().get(held.taskId)).toBe(1);
    const attempts = await attemptsOf("pool-die", held.taskId);
    expect(attempts.map((a) => a.outcome)).toEqual(["failed", "done"]);
    expect(attempts[1].machine_id).not.toBe(held.machine.id);
    expect(await runner.lateCallback(held.taskId)).toMatchObject({ status: 200, body: { outcome: "ignored", reason: "duplicate" } });
    await expectCountersExact("pool-die");
    expect(createRequests(fly).filter((r) => r.status === 200).length).toBeLessThanOrEqual(6 + 1);
    await vi.waitFor(() => expect(fly.liveMachineCount()).toBe(0), { timeout: 10_000 });
  });

  it("a machine found exited while holding a lease returns its task at once, without waiting for the lease", async () => {
    let first = true;
    const { runner } = await startPool("pool-exit", 4, (r) => {
      r.onTask = () => (first ? ((first = false), "die") : "succeed");
    });
    await waitForStatus("pool-exit", (x) => x.progress.tasks_completed === 3 && x.progress.running === 1);
    const [held] = [...runner.held.values()];
    await vi.waitFor(() => expect(runner.exits).toContainEqual({ machineId: held.machine.id, code: 137 }));
    // Only the machine check comes due; the lease itself has a minute left.
    await withStore("pool-exit", (_s, sql) => sql.exec("UPDATE workers SET check_at = 0"));
    await runDurableObjectAlarm(stub("pool-exit"));
    const attempts = await attemptsOf("pool-exit", held.taskId);
    expect(attempts[0]).toMatchObject({ outcome: "failed", error: expect.stringMatching(/^pool machine \S+ exited while holding the lease/) });
    await expireAll("pool-exit");
    const s = await waitForStatus("pool-exit", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 4, tasks_completed: 4, tasks_failed: 0 });
    await expectCountersExact("pool-exit");
  });

  it("a late callback from the lapsed holder while the retry runs is counted once; the retry's is ignored", async () => {
    const holdFirstTwo = new Set<string>();
    const { runner } = await startPool("pool-race", 2, (r) => {
      // Both attempts of tiff-000001 hold; the other task succeeds.
      r.onTask = (_m, l) => (l.task_id === "tiff-000001" ? (holdFirstTwo.add(l.task_id), "hold") : "succeed");
    });
    await waitForStatus("pool-race", (x) => x.progress.tasks_completed === 1 && x.progress.running === 1);
    const firstHolder = runner.held.get("tiff-000001")!;
    // It uploads while its lease holds (a lapsed attempt gets no upload URL); its callback is what is late.
    expect(await writeOutput(firstHolder.env)).toBe(true);
    await lapseLeases("pool-race");
    await runDurableObjectAlarm(stub("pool-race"));
    await expireAll("pool-race");
    await vi.waitFor(() => expect(runner.held.get("tiff-000001")?.machine.id).not.toBe(firstHolder.machine.id));
    const secondHolder = runner.held.get("tiff-000001")!;
    // The first holder's callback arrives while attempt 2 holds the lease: it settles the task.
    runner.held.set("tiff-000001", firstHolder);
    expect(await runner.lateCallback("tiff-000001")).toMatchObject({ status: 200, body: { outcome: "done" } });
    runner.held.set("tiff-000001", secondHolder);
    expect(await runner.heartbeat("tiff-000001")).toMatchObject({ status: 409, body: { ok: false, reason: expect.stringMatching(/lease lost: task is done/) } });
    expect(await runner.lateCallback("tiff-000001")).toMatchObject({ status: 200, body: { outcome: "ignored", reason: "duplicate" } });
    const s = await waitForStatus("pool-race", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 2, tasks_completed: 2, tasks_failed: 0 });
    await expectCountersExact("pool-race");
  });

  it("an error callback retries the task on some machine; the machine goes on leasing", async () => {
    const failedOnce = new Set<string>();
    const { runner } = await startPool("pool-err", 5, (r) => {
      r.onTask = (_m, l) => (l.task_id === "tiff-000002" && !failedOnce.has(l.task_id) ? (failedOnce.add(l.task_id), "error") : "succeed");
    });
    await waitForStatus("pool-err", (x) => x.progress.retrying === 1 || x.status === "DONE");
    await expireAll("pool-err");
    const s = await waitForStatus("pool-err", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 5, tasks_completed: 5, tasks_failed: 0 });
    expect(runner.callbacks.filter((c) => c.taskId === "tiff-000002").map((c) => c.outcome)).toEqual(["error_recorded", "done"]);
    const failer = runner.callbacks.find((c) => c.outcome === "error_recorded")!.machineId;
    expect(runner.leases.filter((l) => l.machineId === failer).length).toBeGreaterThan(1);
    await expectCountersExact("pool-err");
  });

  it("lease and heartbeat refuse a forged token (401) and an unknown batch (404); change nothing", async () => {
    const { runner } = await startPool("pool-auth", 2, (r) => {
      r.onTask = () => "hold";
    });
    await waitForStatus("pool-auth", (x) => x.progress.running === 2);
    const forged = await leaseAs("pool-auth", "pool-0001", "0".repeat(64));
    expect(forged.status).toBe(401);
    expect(await forged.json()).toEqual({ error: "lease token missing, invalid or expired" });
    // A real token of another worker, or of the same worker in another batch, is not this one's.
    expect((await leaseAs("pool-auth", "pool-0001", await leaseTokenFor("pool-auth", "pool-0002"))).status).toBe(401);
    expect((await leaseAs("pool-auth", "pool-0001", await leaseTokenFor("other-batch", "pool-0001"))).status).toBe(401);
    const noAuth = await exports.default.fetch(new Request("http://orchestrator.test/lease/pool-auth", { method: "POST", body: JSON.stringify({ worker_id: "pool-0001", machine_id: "m-test" }) }));
    expect(noAuth.status).toBe(401);
    const [held] = [...runner.held.values()];
    const hb = await exports.default.fetch(
      new Request("http://orchestrator.test/lease/pool-auth/heartbeat", {
        method: "POST",
        headers: { authorization: `Bearer ${"0".repeat(64)}` },
        body: JSON.stringify({ worker_id: held.env.WORKER_ID, machine_id: held.machine.id, task_id: held.taskId }),
      }),
    );
    expect(hb.status).toBe(401);
    const unknown = await leaseAs("pool-nope", "pool-0001");
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: "unknown batch", batch_id: "pool-nope" });
    const bad = await exports.default.fetch(new Request("http://orchestrator.test/lease/pool-auth", { method: "POST", body: "{}" }));
    expect(bad.status).toBe(400);
    const s = await getStatus("pool-auth");
    expect(s.progress).toMatchObject({ tasks_total: 2, running: 2, tasks_completed: 0 });
    await expectCountersExact("pool-auth");
  });

  it("a lease after DONE answers done", async () => {
    const { runner } = await startPool("pool-after", 3);
    await waitForStatus("pool-after", (x) => x.status === "DONE");
    const worker = runner.started[0].env.WORKER_ID;
    const res = await leaseAs("pool-after", worker);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ kind: "done", reason: "batch is DONE" });
    // A retired machine is told so even when its token is good.
    const again = await leaseAs("pool-after", "pool-0099");
    expect(await again.json()).toMatchObject({ kind: "done" });
  });

  it("reset destroys every pool machine; their credentials are refused from then on (401)", async () => {
    const { runner, fly } = await startPool("pool-reset", 8, (r) => {
      r.onTask = () => "hold";
    });
    await waitForStatus("pool-reset", (x) => x.progress.running === 8);
    expect(fly.liveMachineCount()).toBe(8);
    const res = await exports.default.fetch(new Request("http://orchestrator.test/admin/reset/pool-reset", { method: "POST", headers: ADMIN }));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ok: true, status: "ERROR", tasks_failed: 8 });
    await vi.waitFor(() => expect(fly.liveMachineCount()).toBe(0), { timeout: 10_000 });
    const s = await getStatus("pool-reset");
    expect(s).toMatchObject({ status: "ERROR", workers: { starting: 0, live: 0 } });
    expect(s.progress).toMatchObject({ tasks_total: 8, tasks_failed: 8, running: 0 });
    const [held] = [...runner.held.values()];
    const after = await leaseAs("pool-reset", held.env.WORKER_ID, held.env.LEASE_TOKEN, held.machine.id);
    expect(after.status).toBe(401);
    expect(await after.json()).toEqual({ error: "lease refused: lease credential of epoch 0: the batch was reset or redriven since (it is at 1)" });
    expect(await runner.heartbeat(held.taskId)).toMatchObject({ status: 401 });
    await expectCountersExact("pool-reset");
  });

  it("idle machines leave as soon as nothing waits; a hung lease holder is retired and its task gets a new machine", async () => {
    let first = true;
    const { runner, fly } = await startPool("pool-hung", 4, (r) => {
      r.onTask = () => (first ? ((first = false), "hold") : "succeed");
    });
    await waitForStatus("pool-hung", (x) => x.progress.tasks_completed === 3 && x.progress.running === 1);
    const [held] = [...runner.held.values()];
    // Nothing waits for a machine: every machine but the holder is told done and exits, not kept waiting.
    await vi.waitFor(() => expect(runner.exits.filter((e) => e.code === 0)).toHaveLength(runner.started.length - 1), { timeout: 10_000 });
    const idleAnswers = runner.leases.filter((l) => "kind" in l.answer && l.answer.kind === "wait");
    expect(idleAnswers).toEqual([]);
    // The holder hangs (up, no heartbeat, no callback): when its lease lapses it stops counting as
    // capacity and is destroyed, and the task is given to a new machine.
    await lapseLeases("pool-hung");
    await runDurableObjectAlarm(stub("pool-hung"));
    await expireAll("pool-hung");
    await runDurableObjectAlarm(stub("pool-hung"));
    const s = await waitForStatus("pool-hung", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 4, tasks_completed: 4, tasks_failed: 0 });
    expect(fly.machine(held.machine.id)?.state).toBe("destroyed");
    const retriedBy = runner.callbacks.find((c) => c.taskId === held.taskId)!.machineId;
    expect(runner.started.findIndex((m) => m.id === retriedBy)).toBeGreaterThan(runner.started.findIndex((m) => m.id === held.machine.id));
    await expectCountersExact("pool-hung");
    await vi.waitFor(() => expect(fly.liveMachineCount()).toBe(0), { timeout: 10_000 });
  });

  it("pool_tasks_per_machine=4: machines four times the size each convert four tasks at once", async () => {
    const { runner, fly } = await startPool("pool-slots", 30, () => {}, {}, 4);
    const s = await waitForStatus("pool-slots", (x) => x.status === "DONE", 30_000);
    expect(s.progress).toMatchObject({ tasks_total: 30, tasks_completed: 30, tasks_failed: 0 });
    const creates = createRequests(fly).filter((r) => r.status === 200);
    expect(creates.length).toBeLessThanOrEqual(Math.ceil(30 / 4)); // never more machines than slots needed
    const config = (creates[0].body as { config: { guest: { cpus: number; memory_mb: number; cpu_kind: string } } }).config;
    // By hand: four slots, a CPU each. A 4-byte input needs 512 + 1 MB; four of them 2,052 MB, in
    // 256 MB steps 2,304 MB: shared-cpu-4x (1,024–8,192 MB). Its 0.3 CPU-s tasks fit the 5 s burst,
    // so performance-4x would take as long at $0.000050928/s against 4 × $0.0000008465 + 1.25 GB ×
    // $0.000002316 = $0.000006281/s (docs.fly.io/about/pricing).
    expect(config.guest).toEqual({ cpu_kind: "shared", cpus: 4, memory_mb: 2304 });
    const env = runner.started[0].env;
    expect(env).toMatchObject({ POOL_CONCURRENCY: "4", MEMORY_MB: "576" });
    // Fewer, bigger machines: some machine took at least as many tasks as it has slots.
    const perMachine = new Map<string, number>();
    for (const l of runner.leases) if ("kind" in l.answer && l.answer.kind === "task") perMachine.set(l.machineId, (perMachine.get(l.machineId) ?? 0) + 1);
    expect(Math.max(...perMachine.values())).toBeGreaterThanOrEqual(4);
    expect([...runner.doneCallbacks().values()].every((n) => n === 1)).toBe(true);
    await expectCountersExact("pool-slots");
    await vi.waitFor(() => expect(fly.liveMachineCount()).toBe(0), { timeout: 10_000 });
  });

  it("a machine is not retired while the others' slots cannot cover every open task (no retire-then-replace)", async () => {
    const { runner, fly } = await startPool("pool-cover", 3, (r) => {
      r.lazy = () => true; // this test leases by hand
    });
    await vi.waitFor(() => expect(runner.started).toHaveLength(3), { timeout: 10_000 });
    const answers = [];
    for (const m of runner.started) answers.push(LeaseResponse.parse(await (await leaseAs("pool-cover", m.env.WORKER_ID, undefined, m.id)).json()));
    expect(answers.map((a) => a.kind)).toEqual(["task", "task", "task"]);
    // The third machine's task fails (retryable): it waits out its backoff, the others still run theirs.
    const third = answers[2] as Extract<LeaseResponse, { kind: "task" }>;
    await postCallback({ ...third.env }, errorBody(third.env, "transient"));
    const again = LeaseResponse.parse(await (await leaseAs("pool-cover", runner.started[2].env.WORKER_ID, undefined, runner.started[2].id)).json());
    // 3 open tasks, 2 other slots: this machine is still needed, so it waits instead of leaving
    // (leaving would only make the engine create a replacement).
    expect(again.kind).toBe("wait");
    await runDurableObjectAlarm(stub("pool-cover"));
    expect(createRequests(fly).filter((r) => r.status === 200)).toHaveLength(3);
  });

  it("machines that never ask again are retired at the end: 0 alive", async () => {
    const { runner, fly } = await startPool("pool-retire", 10, (r) => {
      r.lazy = (_m, nth) => nth <= 3; // booted, never leasing (as if stuck before the first lease)
    });
    const s = await waitForStatus("pool-retire", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 10, tasks_completed: 10, tasks_failed: 0 });
    await vi.waitFor(() => expect(fly.liveMachineCount()).toBe(0), { timeout: 10_000 });
    for (const m of runner.started.slice(0, 3)) expect(fly.machine(m.id)?.state).toBe("destroyed");
    expect(createRequests(fly).filter((r) => r.status === 200).length).toBeLessThanOrEqual(10);
  });
});
