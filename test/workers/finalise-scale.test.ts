import { runDurableObjectAlarm } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { attemptToken, callbackTo, getStatus, installWorld, putTiffs, stub, successBody, waitForStatus, withStore, writeOutput, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

describe("finalisation", () => {
  it("is retried with backoff after downstream 5xx and an outage; DONE only once it is accepted", async () => {
    world.downstream.script = [503, 500];
    await putTiffs("fin-retry/", 3);
    await stub("fin-retry").start({ batch_id: "fin-retry", r2_prefix: "fin-retry/" });
    let s = await waitForStatus("fin-retry", (x) => x.finalisation?.attempts === 1);
    expect(s).toMatchObject({ status: "TIFF_CONVERSION", stage: "finalise", completed_at: null });
    expect(s.finalisation).toMatchObject({ attempts: 1, last_error: "downstream answered 503" });
    await runDurableObjectAlarm(stub("fin-retry"));
    s = await getStatus("fin-retry");
    expect(s.finalisation).toMatchObject({ attempts: 2, last_error: "downstream answered 500" });
    await runDurableObjectAlarm(stub("fin-retry"));
    await waitForStatus("fin-retry", (x) => x.status === "DONE");
    expect(world.downstream.calls).toHaveLength(3);
    // The list is written once; every retry names the same object (3 TIFFs and their 3 JPEGs).
    const bodies = world.downstream.calls.map((call) => JSON.parse(call.body) as { file_list: { key: string; entries: number; etag: string } });
    for (const body of bodies) expect(body.file_list).toEqual(bodies[0].file_list);
    expect(bodies[0].file_list).toMatchObject({ key: "fin-retry/_fanout/file-list.ndjson", entries: 6 });
  });
});

describe("scale", () => {
  /** Seeds a batch of n pending tasks straight into its store (the discovery path has its own test). */
  async function seed(batchId: string, n: number) {
    await stub(batchId).start({ batch_id: batchId, manifest_r2_key: `${batchId}/none.json` });
    await withStore(batchId, (store, sql) => {
      sql.exec("UPDATE meta SET stage = 'run', error = NULL");
      store.transaction(() => {
        const keys = Array.from({ length: n }, (_, i) => `${batchId}/s${i}.tif`);
        store.insertFiles(keys.map((key, i) => ({ r2_key: key, logical_path: key, file_name: `s${i}.tif`, file_size: 4, content_type: "image/tiff" })));
        store.insertTasks(
          keys.map((key, i) => ({
            task_id: `tiff-${String(i).padStart(6, "0")}`,
            phase: "TIFF_CONVERSION",
            file_id: i + 1,
            input_key: key,
            output_key: key.replace(/\.tif$/, ".jpg"),
            size_bytes: 4,
            params_json: "{}",
            now: Date.now(),
          })),
        );
      });
      // Park the alarm loop: this test drives callbacks only.
      sql.exec("UPDATE tasks SET next_at = ?", Date.now() + 3_600_000);
    });
    await runDurableObjectAlarm(stub(batchId));
  }

  /** SQLite rows read and written by one success callback for task `i`. */
  async function callbackWork(batchId: string, i: number) {
    const taskId = `tiff-${String(i).padStart(6, "0")}`;
    const outputKey = await withStore(batchId, (store) => {
      const t = store.getTask(taskId)!;
      store.moveTask(t, "running", { attempt: 1, machine_id: `m${i}`, machine_name: `m${i}`, deadline_at: Date.now() + 3_600_000, attempt_started_at: Date.now() }, Date.now());
      return t.output_key;
    });
    const machine = {
      TASK_ID: taskId,
      BATCH_ID: batchId,
      OUTPUT_R2_KEY: outputKey,
      FLY_MACHINE_ID: `m${i}`,
      OUTPUTS_URL: `http://orchestrator.test/outputs/${batchId}/${taskId}`,
      CALLBACK_TOKEN: await attemptToken(batchId, taskId, 1),
    };
    await writeOutput(machine);
    const before = await withStore(batchId, (store) => ({ ...store.work }));
    const body = successBody(machine);
    const res = await callbackTo(batchId, taskId, body);
    expect(res.status).toBe(200);
    const after = await withStore(batchId, (store) => ({ ...store.work }));
    return { read: after.rowsRead - before.rowsRead, written: after.rowsWritten - before.rowsWritten };
  }

  it("the storage work of one callback and of a status read is the same at 100 and at 10,000 tasks", async () => {
    await seed("scale-100", 100);
    await seed("scale-10k", 10_000);
    const small = [await callbackWork("scale-100", 10), await callbackWork("scale-100", 50)];
    const large = [await callbackWork("scale-10k", 10), await callbackWork("scale-10k", 9_000)];
    expect(small[0].written).toBeGreaterThan(0);
    expect(large[0]).toEqual(small[0]);
    expect(large[1]).toEqual(small[1]);

    const statusWork = async (batchId: string) => {
      const before = await withStore(batchId, (store) => store.work.rowsRead);
      const s = await getStatus(batchId);
      const after = await withStore(batchId, (store) => store.work.rowsRead);
      return { rows: after - before, total: s.progress.tasks_total };
    };
    const s100 = await statusWork("scale-100");
    const s10k = await statusWork("scale-10k");
    expect([s100.total, s10k.total]).toEqual([100, 10_000]);
    expect(s10k.rows).toBe(s100.rows);
  });
});
