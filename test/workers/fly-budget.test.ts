import { env } from "cloudflare:workers";
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { FlyEmulator, type FlyEmulatorOptions, type RecordedRequest } from "../../local/fly-emulator/api.ts";
import { ManualClock } from "../../local/fly-emulator/clock.ts";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import type { FleetSnapshot } from "../../orchestrator/fly/budget.ts";
import { installWorld, putTiffs, stub, waitForStatus, type World } from "./support/engine.ts";
import { PoolRunner } from "./support/pool.ts";

describe("FlyBudget: the create limit every batch of a Fly app shares", () => {
  it("hands out the burst less its reserve token, then one token per second, across callers", async () => {
    const budget = env.FLY_BUDGET.getByName("budget-app-1");
    const first = await budget.take("create", 5, 1, 3);
    expect(first.granted).toBe(2);
    // A second batch asking at once gets nothing, and is told when the next token comes.
    const second = await budget.take("create", 5, 1, 3);
    expect(second.granted).toBe(0);
    expect(second.next_at - Date.now()).toBeGreaterThan(800);
    expect(second.next_at - Date.now()).toBeLessThanOrEqual(1000);
  });

  it("keeps one token of the burst in reserve, so POSTs bunched on their way to Fly still fit Fly's own bucket", async () => {
    // Tokens drawn from the real budget at 5/s, burst 10, for 3 s. The POSTs of the first 0.3 s
    // reach Fly 150 ms late (a slow RPC), later ones at once: replayed in arrival order into the
    // emulator's bucket of the same 5/s, burst 10 on a manual clock. Without the reserve the
    // burst arrives late, the next POST on time, and Fly's bucket is empty for it.
    const budget = env.FLY_BUDGET.getByName("budget-jitter");
    const grants: number[] = [];
    for (const until = Date.now() + 3000; Date.now() < until; ) {
      const token = await budget.draw("create", 5, 10);
      if (token.ok) grants.push(Date.now());
      else await new Promise((r) => setTimeout(r, Math.max(1, token.retryAt - Date.now())));
    }
    expect(grants.length).toBeGreaterThanOrEqual(20);
    const clock = new ManualClock(0);
    const fly = new FlyEmulator({ clock, rateLimits: { create: { perSecond: 5, burst: 10 } } });
    const arrivals = grants.map((t) => t + (t - grants[0] < 300 ? 150 : 0)).sort((a, b) => a - b);
    for (const at of arrivals) {
      clock.set(at - grants[0]);
      await fly.handle(new Request("http://fly.test/v1/apps/budget-jitter/machines", { method: "POST", headers: { authorization: "Bearer test" }, body: "{}" }));
    }
    const refused = fly.requests.filter((r) => r.status === 429).map((r) => r.time);
    expect(refused, `${refused.length} of ${arrivals.length} POSTs refused by Fly's bucket at ms ${refused.join(", ")}`).toEqual([]);
  });

  it("a 429's Retry-After holds back every caller until it has passed", async () => {
    const budget = env.FLY_BUDGET.getByName("budget-app-2");
    const until = Date.now() + 60_000;
    await budget.block("create", until);
    expect(await budget.take("create", 1, 1000, 100)).toEqual({ granted: 0, next_at: until });
  });

  it("apps do not share a budget", async () => {
    expect((await env.FLY_BUDGET.getByName("budget-app-3").take("create", 3, 1, 3)).granted).toBe(2);
    expect((await env.FLY_BUDGET.getByName("budget-app-4").take("create", 3, 1, 3)).granted).toBe(2);
  });

  it("an evicted budget remembers its spent tokens and its Retry-After block", async () => {
    const spent = env.FLY_BUDGET.getByName("budget-app-5");
    expect((await spent.take("create", 3, 1, 3)).granted).toBe(2);
    await evictDurableObject(spent);
    expect((await spent.take("create", 3, 1, 3)).granted, "a new instance must not hand out a fresh burst").toBe(0);

    const blocked = env.FLY_BUDGET.getByName("budget-app-6");
    const until = Date.now() + 60_000;
    await blocked.block("create", until);
    await evictDurableObject(blocked);
    expect(await blocked.draw("create", 1000, 100)).toEqual({ ok: false, retryAt: until });
  });
});

// ---- the engine against the budget: every create POST the Fly API sees is paid for -------------

const RATE = 3;
const BURST = 3;
/** Time between a token drawn and its POST arriving at the emulator (signing, RPC), allowed as slack. */
const SLACK_MS = 300;

let world: World | undefined;
afterEach(async () => {
  await world?.restore();
  world = undefined;
});

/** A batch whose DO reads a tight create limit and its own app's budget (as `--var` would set them). */
async function startThrottled(batchId: string, app: string, n: number, options: FlyEmulatorOptions = {}, pool = false): Promise<World> {
  world = installWorld(pool ? { runner: new PoolRunner(), ...options } : options);
  await putTiffs(`${batchId}/`, n);
  await runInDurableObject(stub(batchId), (instance: BatchDO) => {
    const self = instance as unknown as { env: Env };
    self.env = { ...self.env, FLY_APP_NAME: app, FLY_CREATE_RATE_PER_SECOND: String(RATE), FLY_CREATE_BURST: String(BURST) };
  });
  await stub(batchId).start({ batch_id: batchId, r2_prefix: `${batchId}/`, pool });
  return world;
}

function createPosts(w: World, app: string): RecordedRequest[] {
  return w.fly.requests.filter((r) => r.method === "POST" && r.path.split("?")[0] === `/v1/apps/${app}/machines`);
}

/**
 * The interval where the POSTs most exceed what a bucket of RATE/s and BURST allows
 * (BURST + RATE × its length, plus SLACK_MS), and POSTs per second from the first, for the message.
 */
function overLimit(posts: RecordedRequest[]): { excess: number; where: string; perSecond: number[] } {
  const t = posts.map((p) => p.time).sort((a, b) => a - b);
  let worst = { excess: -Infinity, where: "" };
  for (let i = 0; i < t.length; i++) {
    for (let j = i; j < t.length; j++) {
      const allowed = BURST + (RATE * (t[j] - t[i] + SLACK_MS)) / 1000;
      const excess = j - i + 1 - allowed;
      if (excess > worst.excess) worst = { excess, where: `${j - i + 1} POSTs in ${t[j] - t[i]} ms (allowed ${allowed.toFixed(1)})` };
    }
  }
  const perSecond: number[] = [];
  for (const x of t) perSecond[Math.floor((x - t[0]) / 1000)] = (perSecond[Math.floor((x - t[0]) / 1000)] ?? 0) + 1;
  return { ...worst, perSecond: Array.from(perSecond, (c) => c ?? 0) };
}

describe("FlyBudget: the fleet tells batches whose share shrank", () => {
  it("a newcomer's report tells at most six over-share batches at once, the furthest over first; the others hear at their own next report", async () => {
    const app = "budget-nudges";
    const budget = env.FLY_BUDGET.getByName(app);
    const limits = { machines: 80, vcpus: 1000, memory_mb: 1_000_000 };
    const rate = { perSecond: 1000, burst: 1000 };
    const report = (batch_id: string, demand: number, machines: number) =>
      budget.acquire({ batch_id, weight: 1, demand, guest: { cpus: 1, memory_mb: 256 }, live: { machines, vcpus: machines, memory_mb: 256 * machines }, running: machines, want: 0, limits, create: rate });
    // Eight batches, each told a share of 10 and holding 10 (b8 holds 9: the least over once shares shrink).
    for (let i = 1; i <= 8; i++) await report(`b${i}`, 10, 0);
    for (let i = 1; i <= 8; i++) expect((await report(`b${i}`, 10, i === 8 ? 9 : 10)).share).toBe(10);
    // A ninth wanting 80 shrinks each share to 9 (80 machines for nine: 9 each, the newcomer 8); b8, holding 9, is not over it.
    await report("newcomer", 80, 0);
    const told = await runInDurableObject(budget, (_i, state) =>
      Object.fromEntries(state.storage.sql.exec<{ batch_id: string; share: number }>("SELECT batch_id, share FROM fleet WHERE batch_id != 'newcomer'").toArray().map((r) => [r.batch_id, r.share])),
    );
    const nudged = Object.entries(told).filter(([, share]) => share < 10).map(([id]) => id);
    expect(nudged, JSON.stringify(told)).toHaveLength(6);
    expect(nudged).not.toContain("b8");
    // The next report tells the rest that hold more than their share now, and none of the six again.
    await report("newcomer", 80, 0);
    const snapshot: FleetSnapshot = await budget.snapshot(limits, { create: rate, list: rate, get: rate, destroy: rate });
    const storedNow = await runInDurableObject(budget, (_i, state) =>
      Object.fromEntries(state.storage.sql.exec<{ batch_id: string; share: number }>("SELECT batch_id, share FROM fleet").toArray().map((r) => [r.batch_id, r.share])),
    );
    for (const b of snapshot.batches.filter((x) => x.batch_id !== "newcomer")) {
      if (b.live.machines > b.share) expect(storedNow[b.batch_id], `${b.batch_id} holds ${b.live.machines}, share ${b.share}`).toBe(b.share);
    }
    for (const id of nudged) expect(storedNow[id]).toBe(told[id]);
  });
});

describe("FlyBudget under a running batch", () => {
  it("evicting the budget mid-batch gives no burst beyond the configured rate", async () => {
    const app = "budget-evict-app";
    const w = await startThrottled("fb-evict", app, 15);
    const budget = env.FLY_BUDGET.getByName(app);
    let evictions = 0;
    let finished = false;
    const evicting = (async () => {
      while (!finished) {
        await new Promise((r) => setTimeout(r, 150));
        // Rejects while the budget is not running (between alarms): nothing to evict then.
        await evictDurableObject(budget).then(() => evictions++, () => undefined);
      }
    })();
    try {
      const s = await waitForStatus("fb-evict", (x) => x.status === "DONE" || x.status === "ERROR", 45_000);
      expect(s.progress).toMatchObject({ tasks_completed: 15, tasks_failed: 0 });
    } finally {
      finished = true;
      await evicting;
    }
    const posts = createPosts(w, app);
    const { excess, where, perSecond } = overLimit(posts);
    console.log(`[Test] ${JSON.stringify({ test: "evict", evictions, posts: posts.length, per_second: perSecond, worst: where })}`);
    expect(evictions, "the budget was evicted while the batch ran").toBeGreaterThanOrEqual(3);
    expect(posts).toHaveLength(15);
    expect(excess, `worst: ${where}; POSTs per second: ${perSecond.join(", ")}`).toBeLessThanOrEqual(0);
  });

  it("a 5xx retry and a capacity refusal's next region each draw a token", async () => {
    const app = "budget-faults-app";
    // Every create in iad is refused for capacity (so each machine costs two POSTs), and about a third get 503.
    const w = await startThrottled("fb-faults", app, 8, { faults: { seed: 11, serverErrorRate: 0.3, capacityErrorsByRegion: { iad: 1 } } });
    const s = await waitForStatus("fb-faults", (x) => x.status === "DONE" || x.status === "ERROR", 50_000);
    expect(s.progress).toMatchObject({ tasks_completed: 8, tasks_failed: 0 });
    const posts = createPosts(w, app);
    const region = (p: RecordedRequest) => (p.body as { region?: string }).region;
    expect(posts.filter((p) => p.status === 503).length, "some creates were retried after a 503").toBeGreaterThan(0);
    expect(posts.filter((p) => region(p) === "iad").length, "every machine was refused in iad first").toBeGreaterThanOrEqual(8);
    const { excess, where, perSecond } = overLimit(posts);
    console.log(`[Test] ${JSON.stringify({ test: "faults", posts: posts.length, status_503: posts.filter((p) => p.status === 503).length, iad: posts.filter((p) => region(p) === "iad").length, per_second: perSecond, worst: where })}`);
    expect(excess, `worst: ${where}; ${posts.length} POSTs; per second: ${perSecond.join(", ")}`).toBeLessThanOrEqual(0);
  });

  it("pool mode: each pool machine's next region draws a token too", async () => {
    const app = "budget-pool-app";
    // (Capacity only: 5xx retries go through the same createMachine path, tested above.)
    const w = await startThrottled("fb-pool", app, 10, { faults: { capacityErrorsByRegion: { iad: 1 } } }, true);
    const s = await waitForStatus("fb-pool", (x) => x.status === "DONE" || x.status === "ERROR", 50_000);
    expect(s.progress).toMatchObject({ tasks_completed: 10, tasks_failed: 0 });
    const posts = createPosts(w, app);
    const iad = posts.filter((p) => (p.body as { region?: string }).region === "iad").length;
    expect(iad, "every pool machine was refused in iad first").toBeGreaterThan(0);
    expect(posts.length, "two POSTs per pool machine").toBe(2 * iad);
    const { excess, where, perSecond } = overLimit(posts);
    console.log(`[Test] ${JSON.stringify({ test: "pool", posts: posts.length, per_second: perSecond, worst: where })}`);
    expect(excess, `worst: ${where}; ${posts.length} POSTs; per second: ${perSecond.join(", ")}`).toBeLessThanOrEqual(0);
    // Let the retired machines go before the emulator does (no stray request after the test).
    await vi.waitFor(() => expect(w.fly.liveMachineCount()).toBe(0), { timeout: 20_000 });
  });
});

describe("FlyBudget: every Fly API call of every batch draws from the app's budget for its action", () => {
  it("two batches checking their machines every 100 ms meet no 429 from an emulator keeping Fly's documented limits", async () => {
    const app = "budget-reads-app";
    // The emulator keeps every documented limit (list 1/s burst 3 per app, get 5/s burst 10 per machine,
    // destroy 1/s burst 3 per machine); the DOs budget list, get and destroy at those rates (FLY_API_RATES unset).
    world = installWorld({ rateLimits: { create: { perSecond: RATE, burst: BURST } } });
    const w = world;
    w.runner.behaviour = () => "hang";
    for (const id of ["fb-reads-a", "fb-reads-b"]) {
      await putTiffs(`${id}/`, 4);
      await runInDurableObject(stub(id), (instance: BatchDO) => {
        const self = instance as unknown as { env: Env };
        self.env = { ...self.env, FLY_APP_NAME: app, FLY_CREATE_RATE_PER_SECOND: String(RATE), FLY_CREATE_BURST: String(BURST), FLY_API_RATES: "", MACHINE_CHECK_INTERVAL_MS: "100" };
      });
      await stub(id).start({ batch_id: id, r2_prefix: `${id}/` });
    }
    await vi.waitFor(() => expect(w.runner.live.size).toBe(8), { timeout: 30_000 });
    // Let the batches look at their hanging machines for a while (each check is due every 100 ms).
    await new Promise((r) => setTimeout(r, 4000));
    for (const id of [...w.runner.live.keys()]) await w.runner.finish(id);
    for (const id of ["fb-reads-a", "fb-reads-b"]) {
      const s = await waitForStatus(id, (x) => x.status === "DONE" && x.machines.running === 0, 45_000);
      expect(s.progress).toMatchObject({ tasks_completed: 4, tasks_failed: 0 });
    }
    const reads = w.fly.requests.filter((r) => r.method !== "POST");
    const lists = reads.filter((r) => r.method === "GET" && !/\/machines\/[0-9a-f]+/.test(r.path.split("?")[0]));
    const span = (lists.at(-1)!.time - lists[0].time) / 1000;
    console.log(`[Test] ${JSON.stringify({ test: "reads", lists: lists.length, gets: reads.length - lists.length, span_s: span, refused: reads.filter((r) => r.status === 429).length })}`);
    expect(reads.filter((r) => r.status === 429).map((r) => `${r.method} ${r.path}`), "no list, get or destroy refused by Fly's limits").toEqual([]);
    expect(lists.length, "at most the burst and 1 list a second for the app, both batches together").toBeLessThanOrEqual(3 + Math.ceil(span));
    expect(lists.length, "the batches did look at their machines").toBeGreaterThanOrEqual(3);
  });
});
