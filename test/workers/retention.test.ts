// Retention (engine/retention.ts): a finished batch's Durable Object storage is deleted
// BATCH_RETENTION_DAYS (30 here, the default) after it ended, by its own alarm; its batch index
// row stays with the final counts and the file list's key, and GET /status/:id answers from it.
import { env, exports } from "cloudflare:workers";
import { createExecutionContext, createScheduledController, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import worker from "../../orchestrator/index.ts";
import { installWorld, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";

const DAY_MS = 86_400_000;

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

async function indexRow(b: string) {
  return env.BATCH_INDEX.prepare("SELECT status, tasks_total, tasks_completed, tasks_failed, file_list_key, archived_at FROM batches WHERE batch_id = ?")
    .bind(b)
    .first<{ status: string; tasks_total: number; tasks_completed: number; tasks_failed: number; file_list_key: string | null; archived_at: number | null }>();
}

/** Ends the batch `days` ago, as if that much time had passed since it finished. */
const endedDaysAgo = (b: string, days: number) =>
  withStore(b, (_s, sql) => {
    sql.exec("UPDATE meta SET completed_at = ?", Date.now() - days * DAY_MS);
  });

describe("retention", () => {
  it("a DONE batch keeps its storage for 30 days (its alarm is set then), is then archived: storage deleted, index row kept, /status answers from it", async () => {
    const b = "ret-done";
    await putTiffs(`${b}/`, 3);
    await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
    const done = await waitForStatus(b, (x) => x.status === "DONE", 30_000);
    const key = done.finalisation!.file_list!.key;
    // Its alarm waits for the retention date.
    const alarm = await runInDurableObject(stub(b), (_i, state) => state.storage.getAlarm());
    expect(alarm).not.toBeNull();
    expect(Math.abs(alarm! - (Date.parse(done.completed_at!) + 30 * DAY_MS))).toBeLessThan(5_000);
    // An alarm before the date changes nothing.
    await endedDaysAgo(b, 29);
    await runDurableObjectAlarm(stub(b));
    expect((await waitForStatus(b, (x) => x.status === "DONE")).progress.tasks_total).toBe(3);

    await endedDaysAgo(b, 31);
    await runInDurableObject(stub(b), (_i, state) => state.storage.setAlarm(Date.now()));
    expect(await runDurableObjectAlarm(stub(b))).toBe(true);
    // The storage is gone: no table, no alarm.
    const left = await runInDurableObject(stub(b), async (_i, state) => ({
      tables: state.storage.sql.exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%'").toArray().length,
      alarm: await state.storage.getAlarm(),
    }));
    expect(left).toEqual({ tables: 0, alarm: null });
    // The index row stays, with the final counts and the file list's key.
    const row = await indexRow(b);
    expect(row).toMatchObject({ status: "DONE", tasks_total: 3, tasks_completed: 3, tasks_failed: 0, file_list_key: key });
    expect(row!.archived_at).toBeGreaterThan(Date.now() - 60_000);
    // GET /status answers from it and says so; the task list is gone (410), an unknown batch is still 404.
    const res = await exports.default.fetch(`http://orchestrator.test/status/${b}`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      batch_id: b,
      status: "DONE",
      archived: true,
      progress: { tasks_total: 3, tasks_completed: 3, tasks_failed: 0 },
      completed_at: expect.any(String),
      file_list: { key },
    });
    expect((body.warnings as string[])[0]).toMatch(/^archived: /);
    expect((await exports.default.fetch(`http://orchestrator.test/status/${b}/tasks`)).status).toBe(410);
    expect((await exports.default.fetch(`http://orchestrator.test/status/${b}/tasks/tiff-000000`)).status).toBe(410);
    expect((await exports.default.fetch("http://orchestrator.test/status/ret-never-seen")).status).toBe(404);
    // A late redelivery of its queue message does not start it again.
    expect(await stub(b).start({ batch_id: b, r2_prefix: `${b}/` })).toEqual({ created: false, status: "DONE" });
    expect((await (await exports.default.fetch(`http://orchestrator.test/status/${b}`)).json()) as object).toMatchObject({ archived: true });
    // GET /batches still lists it.
    const list = (await (await exports.default.fetch("http://orchestrator.test/batches?status=DONE&limit=200")).json()) as { batches: { batch_id: string }[] };
    expect(list.batches.map((x) => x.batch_id)).toContain(b);
  });

  it("a batch that finished before retention had an alarm is archived by the watchdog's run", async () => {
    const b = "ret-legacy";
    await putTiffs(`${b}/`, 1);
    await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
    await waitForStatus(b, (x) => x.status === "DONE", 30_000);
    await endedDaysAgo(b, 40);
    await runInDurableObject(stub(b), (_i, state) => state.storage.deleteAlarm());
    await env.BATCH_INDEX.prepare("UPDATE batches SET completed_at = ? WHERE batch_id = ?").bind(Date.now() - 40 * DAY_MS, b).run();
    await worker.scheduled!(createScheduledController({ scheduledTime: Date.now(), cron: "*/5 * * * *" }), env, createExecutionContext());
    expect(await runDurableObjectAlarm(stub(b))).toBe(true);
    expect((await indexRow(b))!.archived_at).not.toBeNull();
    expect(((await (await exports.default.fetch(`http://orchestrator.test/status/${b}`)).json()) as { archived?: boolean }).archived).toBe(true);
  });
});
