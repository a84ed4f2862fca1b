import { env, exports } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type BatchIndexRow, recordBatch } from "../../orchestrator/batch-index.ts";
import { ADMIN, installWorld, putTiffs, stub, waitForStatus, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

interface Listed {
  batch_id: string;
  status: string;
  mode: string;
  progress: { tasks_total: number; tasks_completed: number; tasks_failed: number };
  started_at: string;
  completed_at: string | null;
  error: string | null;
}

async function list(query = ""): Promise<{ batches: Listed[]; next_cursor: string | null }> {
  const res = await exports.default.fetch(`http://orchestrator.test/batches${query}`);
  if (res.status !== 200) throw new Error(`GET /batches${query}: ${res.status} ${await res.text()}`);
  return (await res.json()) as { batches: Listed[]; next_cursor: string | null };
}

async function row(batchId: string): Promise<(BatchIndexRow & { writes: number }) | null> {
  return await env.BATCH_INDEX.prepare("SELECT * FROM batches WHERE batch_id = ?").bind(batchId).first();
}

describe("the batch index (D1)", () => {
  it("shows each status transition: started in its phase, DONE with its counts", async () => {
    world.runner.behaviour = () => "hang";
    await putTiffs("ix-life/", 3);
    await stub("ix-life").start({ batch_id: "ix-life", r2_prefix: "ix-life/" });
    expect((await row("ix-life"))?.status).toBe("TIFF_CONVERSION");
    await vi.waitFor(() => expect(world.runner.live.size).toBe(3), { timeout: 20_000 });
    for (const id of [...world.runner.live.keys()]) await world.runner.finish(id);
    await waitForStatus("ix-life", (s) => s.status === "DONE");
    // The DONE transition is written by the alarm that finished the batch.
    await vi.waitFor(async () => expect((await row("ix-life"))?.status).toBe("DONE"), { timeout: 10_000 });
    const listed = (await list("?status=DONE")).batches.find((b) => b.batch_id === "ix-life");
    expect(listed).toMatchObject({ status: "DONE", mode: "single", progress: { tasks_total: 3, tasks_completed: 3, tasks_failed: 0 } });
    expect(listed?.completed_at).not.toBeNull();
  });

  it("shows a reset batch as ERROR and an invalid message's batch as ERROR with the reason", async () => {
    world.runner.behaviour = () => "hang";
    await putTiffs("ix-reset/", 2);
    await stub("ix-reset").start({ batch_id: "ix-reset", r2_prefix: "ix-reset/" });
    await vi.waitFor(() => expect(world.runner.live.size).toBe(2), { timeout: 20_000 });
    const res = await exports.default.fetch("http://orchestrator.test/admin/reset/ix-reset", { method: "POST", headers: ADMIN });
    expect(res.status).toBe(200);
    expect(await row("ix-reset")).toMatchObject({ status: "ERROR", error: "reset by admin", tasks_failed: 2 });

    await stub("ix-invalid").recordInvalid("ix-invalid", "invalid queue message: r2_prefix missing", "{}");
    expect(await row("ix-invalid")).toMatchObject({ status: "ERROR", error: "invalid queue message: r2_prefix missing" });
  });

  it("pages newest first with a cursor, filters by status, and rejects a bad query with 400", async () => {
    const base = Date.UTC(2020, 0, 1);
    const rows: BatchIndexRow[] = Array.from({ length: 7 }, (_, i) => ({
      batch_id: `ix-page-${i}`,
      status: i % 3 === 0 ? "DONE" : "TIFF_CONVERSION",
      mode: "single",
      tasks_total: 10,
      tasks_completed: i,
      tasks_failed: 0,
      // Two pairs share a start time: the cursor must not skip or repeat either.
      started_at: base + Math.floor(i / 2) * 1000,
      updated_at: base + 10_000,
      completed_at: null,
      error: null,
    }));
    for (const r of rows) await recordBatch(env.BATCH_INDEX, r);
    const ours = (b: Listed) => b.batch_id.startsWith("ix-page-");

    // Older than every batch the other tests start (they start now): page through all of ours.
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await list(`?limit=3${cursor ? `&cursor=${cursor}` : ""}`);
      expect(page.batches.length).toBeLessThanOrEqual(3);
      seen.push(...page.batches.filter(ours).map((b) => b.batch_id));
      cursor = page.next_cursor;
      pages++;
      expect(pages, "paging never ends").toBeLessThan(50);
    } while (cursor);
    expect(seen).toEqual(["ix-page-6", "ix-page-5", "ix-page-4", "ix-page-3", "ix-page-2", "ix-page-1", "ix-page-0"]);

    const done = (await list("?status=DONE&limit=200")).batches.filter(ours).map((b) => b.batch_id);
    expect(done).toEqual(["ix-page-6", "ix-page-3", "ix-page-0"]);
    const active = (await list("?status=active&limit=200")).batches.filter(ours).map((b) => b.batch_id);
    expect(active).toEqual(["ix-page-5", "ix-page-4", "ix-page-2", "ix-page-1"]);

    for (const bad of ["?limit=0", "?limit=abc", "?status=done;drop", "?cursor=%21%21", "?cursor=bm90LWpzb24"]) {
      const res = await exports.default.fetch(`http://orchestrator.test/batches${bad}`);
      expect(res.status, bad).toBe(400);
      expect(((await res.json()) as { error: string }).error, bad).toMatch(/^invalid query: /);
    }
  });

  it("an older observation never overwrites a newer one", async () => {
    const r: BatchIndexRow = {
      batch_id: "ix-race",
      status: "DONE",
      mode: "single",
      tasks_total: 1,
      tasks_completed: 1,
      tasks_failed: 0,
      started_at: 1,
      updated_at: 2,
      completed_at: 2,
      error: null,
    };
    expect(await recordBatch(env.BATCH_INDEX, r, 2000)).toBe(true);
    expect(await recordBatch(env.BATCH_INDEX, { ...r, status: "TIFF_CONVERSION", tasks_completed: 0 }, 1000)).toBe(false);
    expect(await row("ix-race")).toMatchObject({ status: "DONE", tasks_completed: 1, writes: 1 });
  });

  it("writes progress at most every BATCH_INDEX_PROGRESS_MS (1 s here), never once per callback", async () => {
    world.runner.behaviour = () => "hang";
    await putTiffs("ix-throttle/", 40);
    await stub("ix-throttle").start({ batch_id: "ix-throttle", r2_prefix: "ix-throttle/" });
    await vi.waitFor(() => expect(world.runner.live.size).toBe(20), { timeout: 20_000 }); // MAX_CONCURRENT_MACHINES
    const began = Date.now();
    let callbacks = 0;
    // Finish tasks over ~2.5 s, so progress writes are due a few times.
    while (callbacks < 40) {
      const ids = [...world.runner.live.keys()].filter((id) => world.runner.live.get(id)!.machine.env.BATCH_ID === "ix-throttle");
      if (ids.length === 0) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      await world.runner.finish(ids[0]);
      callbacks++;
      await new Promise((r) => setTimeout(r, 60));
    }
    await waitForStatus("ix-throttle", (s) => s.status === "DONE");
    await vi.waitFor(async () => expect((await row("ix-throttle"))?.status).toBe("DONE"), { timeout: 10_000 });
    const elapsedS = (Date.now() - began) / 1000;
    const r = (await row("ix-throttle"))!;
    console.log(`[batch-index.test] D1 writes for a 40-task batch: ${r.writes} over ${elapsedS.toFixed(1)} s (${callbacks} callbacks)`);
    // start, the run phase, finalise, DONE: a handful of transitions, plus one progress write per second at most.
    const bound = 6 + Math.ceil(elapsedS);
    expect(r.writes, `writes ${r.writes} over ${elapsedS.toFixed(1)} s for ${callbacks} callbacks`).toBeLessThanOrEqual(bound);
    expect(r.writes).toBeLessThan(callbacks / 2);
    // Progress did reach the index while the batch ran (not only at the end).
    expect(r.writes).toBeGreaterThanOrEqual(3);
    expect(r).toMatchObject({ tasks_total: 40, tasks_completed: 40 });
  });
});
