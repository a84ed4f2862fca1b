// A machine can do its own attempt and nothing else: callbacks are charged to the attempt their
// credential names, outputs are reserved before they are written and checked before they count,
// and reads of unknown batches create nothing.
import { env, exports } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";
import { machineName } from "../../orchestrator/batch-do.ts";
import {
  attemptToken,
  attemptsOf,
  callbackTo,
  errorBody,
  expireAll,
  finalFiles,
  getStatus,
  installWorld,
  OUTPUT_SIZE,
  putTiffs,
  stub,
  successBody,
  waitForStatus,
  withStore,
  writeOutput,
  type World,
} from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

async function startHanging(batchId: string, keys: string[] | number) {
  world.runner.behaviour = () => "hang";
  if (typeof keys === "number") await putTiffs(`${batchId}/`, keys);
  else for (const k of keys) await env.BUCKET.put(k, "II*\0", { httpMetadata: { contentType: "image/tiff" } });
  const n = typeof keys === "number" ? keys : keys.length;
  await stub(batchId).start({ batch_id: batchId, r2_prefix: `${batchId}/` });
  await vi.waitFor(() => expect(world.runner.started.length).toBeGreaterThanOrEqual(n), { timeout: 10_000 });
  return world.runner.started.map((m) => machineProcessEnv(m));
}

/** Gives up on attempt 1 (as a timeout would) and waits for attempt 2's machine. */
async function supersede(batchId: string): Promise<Record<string, string>> {
  await expireAll(batchId); // attempt 1's run limit passes: its machine is destroyed, the task retries
  await runDurableObjectAlarm(stub(batchId));
  await expireAll(batchId); // the retry's backoff
  await runDurableObjectAlarm(stub(batchId));
  await vi.waitFor(() => expect(world.runner.started).toHaveLength(2), { timeout: 10_000 });
  return machineProcessEnv(world.runner.started[1]);
}

describe("callbacks are charged to the attempt their credential names", () => {
  it("a late error from a superseded attempt is recorded on that attempt and changes nothing else; a replay with retryable:false neither", async () => {
    const [a1] = await startHanging("at-stale-err", 1);
    await withStore("at-stale-err", (_s, sql) => sql.exec("UPDATE workers SET check_at = ?", Date.now() + 3_600_000));
    const a2 = await supersede("at-stale-err");
    expect(a2.ATTEMPT).toBe("2");
    const destroysBefore = world.fly.requests.filter((r) => r.method === "DELETE").length;
    for (const retryable of [undefined, false]) {
      const res = await callbackTo("at-stale-err", a1.TASK_ID, errorBody(a1, "late failure", retryable), a1.CALLBACK_TOKEN);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ outcome: "ignored", reason: "superseded" });
    }
    const s = await getStatus("at-stale-err");
    expect(s.progress).toMatchObject({ tasks_failed: 0, retrying: 0 });
    expect(s.progress.starting + s.progress.running).toBe(1);
    const attempts = await attemptsOf("at-stale-err", a1.TASK_ID);
    expect(attempts.map((a) => a.outcome)).toEqual(["failed", "open"]);
    expect((attempts[0] as unknown as { note: string }).note).toContain("late callback: late failure");
    // Attempt 2's healthy machine was not touched.
    expect(world.fly.requests.filter((r) => r.method === "DELETE").length).toBe(destroysBefore);
    expect(world.fly.machine(a2.FLY_MACHINE_ID)?.state).toBe("started");
    // And attempt 2 still finishes the task.
    await world.runner.finish(a2.FLY_MACHINE_ID);
    await waitForStatus("at-stale-err", (x) => x.status === "DONE" && x.progress.tasks_completed === 1);
  });

  it("a superseded attempt's success counts once its output checks out, and the current attempt's machine is destroyed", async () => {
    const [a1] = await startHanging("at-stale-ok", 1);
    await withStore("at-stale-ok", (_s, sql) => sql.exec("UPDATE workers SET check_at = ?", Date.now() + 3_600_000));
    const a2 = await supersede("at-stale-ok");
    await writeOutput(a1);
    const res = await callbackTo("at-stale-ok", a1.TASK_ID, successBody(a1), a1.CALLBACK_TOKEN);
    expect(await res.json()).toMatchObject({ outcome: "done", late: true });
    const s = await waitForStatus("at-stale-ok", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_completed: 1, tasks_failed: 0 });
    await vi.waitFor(() => expect(world.fly.machine(a2.FLY_MACHINE_ID)?.state).toBe("destroyed"), { timeout: 10_000 });
    const attempts = await attemptsOf("at-stale-ok", a1.TASK_ID);
    expect(attempts.map((a) => a.outcome)).toEqual(["done", "superseded"]);
    // Replays change nothing.
    const again = await callbackTo("at-stale-ok", a1.TASK_ID, successBody(a1), a2.CALLBACK_TOKEN);
    expect(await again.json()).toMatchObject({ outcome: "ignored", reason: "duplicate" });
    expect((await getStatus("at-stale-ok")).progress).toMatchObject({ tasks_completed: 1, tasks_total: 1 });
  });

  it("a credential for an attempt that never ran, or one past its expiry, is 401", async () => {
    const [a1] = await startHanging("at-401", 1);
    await writeOutput(a1);
    const never = await callbackTo("at-401", a1.TASK_ID, successBody(a1), await attemptToken("at-401", a1.TASK_ID, 7));
    expect(never.status).toBe(401);
    expect(await never.json()).toMatchObject({ error: "attempt 7 of tiff-000000 never ran" });
    const expired = await callbackTo("at-401", a1.TASK_ID, successBody(a1), await attemptToken("at-401", a1.TASK_ID, 1, Date.now() - 1));
    expect(expired.status).toBe(401);
    // The old, attempt-less token format is refused too.
    const old = await callbackTo("at-401", a1.TASK_ID, successBody(a1), "a".repeat(64));
    expect(old.status).toBe(401);
    expect((await getStatus("at-401")).progress.tasks_completed).toBe(0);
  });
});

describe("outputs", () => {
  it("a success naming the right key with the wrong size, or an object never written, fails the attempt naming the key", async () => {
    const [a1, b1] = await startHanging("at-verify", 2);
    const lying = await callbackTo("at-verify", a1.TASK_ID, { ...successBody(a1), output_file_size: 999_999_999 }, a1.CALLBACK_TOKEN);
    expect(await lying.json()).toMatchObject({ outcome: "error_recorded" });
    await writeOutput(b1);
    await callbackTo("at-verify", b1.TASK_ID, { ...successBody(b1), output_file_size: 999_999_999 }, b1.CALLBACK_TOKEN);
    const s = await getStatus("at-verify");
    expect(s.progress).toMatchObject({ tasks_completed: 0, retrying: 2 });
    const errors = s.recent_failures.map((f) => f.error).sort();
    expect(errors).toEqual([`output ${a1.OUTPUT_R2_KEY} does not exist`, `output ${b1.OUTPUT_R2_KEY} is ${OUTPUT_SIZE} bytes, not the 999999999 reported`].sort());
  });

  it("scan.tif with 3 pages beside scan-p002.tif and scan-p003.TIF: every output a distinct reserved key, all in the final list, none overwritten", async () => {
    const b = "at-pages";
    const machines = await startHanging(b, [`${b}/scan.tif`, `${b}/scan-p002.tif`, `${b}/scan-p003.TIF`]);
    const scan = machines.find((m) => m.INPUT_R2_KEY === `${b}/scan.tif`)!;
    const reserve = (token: string, pages: number) =>
      exports.default.fetch(scan.OUTPUTS_URL, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify({ pages }) });
    const res = await reserve(scan.CALLBACK_TOKEN, 3);
    expect(res.status).toBe(200);
    const reserved = (await res.json()) as { outputs: { page: number; r2_key: string; url: string }[] };
    expect(reserved.outputs.map((o) => o.r2_key)).toEqual([`${b}/scan-p002-2.jpg`, `${b}/scan-p003-2.jpg`]);
    for (const o of reserved.outputs) expect(new URL(o.url).pathname).toContain(o.r2_key.split("/").pop());
    // Asking again gives the same keys; a stranger's token gets nothing.
    expect(((await (await reserve(scan.CALLBACK_TOKEN, 3)).json()) as typeof reserved).outputs.map((o) => o.r2_key)).toEqual(reserved.outputs.map((o) => o.r2_key));
    expect((await reserve(await attemptToken(b, scan.TASK_ID, 5), 3)).status).toBe(401);
    // Every machine writes its outputs and calls back.
    const keys = [scan.OUTPUT_R2_KEY, ...reserved.outputs.map((o) => o.r2_key)];
    for (const k of keys) await env.BUCKET.put(k, new Uint8Array(OUTPUT_SIZE));
    const outputs = keys.map((k, i) => ({ r2_key: k, file_name: k.split("/").pop(), file_size: OUTPUT_SIZE, page: i + 1 }));
    expect((await (await callbackTo(b, scan.TASK_ID, { ...successBody(scan), outputs }, scan.CALLBACK_TOKEN)).json()) as object).toMatchObject({ outcome: "done" });
    for (const m of machines.filter((x) => x !== scan)) {
      await writeOutput(m);
      await callbackTo(b, m.TASK_ID, successBody(m), m.CALLBACK_TOKEN);
    }
    await waitForStatus(b, (x) => x.status === "DONE");
    const final = { files: await finalFiles(world.downstream) };
    const jpegs = final.files.map((f) => f.r2_key).filter((k) => k.endsWith(".jpg")).sort();
    expect(jpegs).toEqual([`${b}/scan-p002-2.jpg`, `${b}/scan-p002.jpg`, `${b}/scan-p003-2.jpg`, `${b}/scan-p003.jpg`, `${b}/scan.jpg`].sort());
    expect(new Set(jpegs).size).toBe(5);
  });

  it("a machine may not report an output that was not reserved for it", async () => {
    const [a1, b1] = await startHanging("at-foreign", 2);
    await writeOutput(b1);
    const outputs = [
      { r2_key: a1.OUTPUT_R2_KEY, file_name: "x.jpg", file_size: OUTPUT_SIZE },
      { r2_key: b1.OUTPUT_R2_KEY, file_name: "y.jpg", file_size: OUTPUT_SIZE },
    ];
    await writeOutput(a1);
    await callbackTo("at-foreign", a1.TASK_ID, { ...successBody(a1), outputs }, a1.CALLBACK_TOKEN);
    const s = await getStatus("at-foreign");
    expect(s.recent_failures[0].error).toBe(`output ${b1.OUTPUT_R2_KEY} was not reserved for ${a1.TASK_ID}`);
  });
});

describe("reads never create", () => {
  it("status, tasks and task reads of unknown batches answer 404 and write no schema", async () => {
    for (let i = 0; i < 5; i++) {
      const id = `nobody-${i}`;
      for (const path of [`/status/${id}`, `/status/${id}/tasks`, `/status/${id}/tasks/tiff-000001`]) {
        expect((await exports.default.fetch(`http://orchestrator.test${path}`)).status).toBe(404);
      }
      const tables = await runInDurableObject(env.BATCH_DO.getByName(id), (_i, state) =>
        state.storage.sql.exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf%' ESCAPE '\\'").toArray(),
      );
      expect(tables, `tables of ${id}`).toEqual([]);
    }
  });
});

describe("a batch stays in its own place", () => {
  /** This batch's DO runs with the production default roots (batches/). */
  async function withDefaultRoots(batchId: string) {
    await runInDurableObject(stub(batchId), (instance) => {
      (instance as unknown as { env: Env }).env = { ...env, ALLOWED_PREFIXES: "batches/" } as Env;
    });
  }

  it("refuses a prefix outside the roots and an empty prefix, with the reason", async () => {
    await withDefaultRoots("at-outside");
    await stub("at-outside").start({ batch_id: "at-outside", r2_prefix: "private/" });
    expect(await getStatus("at-outside")).toMatchObject({ status: "ERROR", error: expect.stringContaining("r2_prefix private/ is outside the allowed roots (batches/)") });
    await withDefaultRoots("at-empty");
    await stub("at-empty").start({ batch_id: "at-empty", r2_prefix: "" });
    expect(await getStatus("at-empty")).toMatchObject({ status: "ERROR", error: expect.stringContaining("r2_prefix must not be empty") });
  });

  it("a manifest entry outside the roots fails that file with a reason; the others run", async () => {
    const b = "at-manifest";
    await withDefaultRoots(b);
    await env.BUCKET.put(`batches/${b}/a.tif`, "II*\0");
    await env.BUCKET.put(`batches/${b}/m.json`, JSON.stringify({
      batch_id: b,
      directories: [{ directory_path: "/", files: [{ r2_key: `batches/${b}/a.tif` }, { r2_key: "secrets/payroll.tif" }] }],
    }));
    await stub(b).start({ batch_id: b, manifest_r2_key: `batches/${b}/m.json` });
    const s = await waitForStatus(b, (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 2, tasks_completed: 1, tasks_failed: 1 });
    const failed = (await (await exports.default.fetch(`http://orchestrator.test/status/${b}/tasks?status=failed`)).json()) as { tasks: { error: string }[] };
    expect(failed.tasks[0].error).toBe("secrets/payroll.tif is outside the allowed roots (batches/)");
    const final = { files: await finalFiles(world.downstream) };
    expect(final.files.map((f) => f.r2_key)).not.toContain("secrets/payroll.tif");
  });
});

describe("engine edges", () => {
  it("machine names of batch ids that differ only in case or punctuation differ", () => {
    const names = ["Batch_1", "batch.1", "batch-1", "BATCH-1"].map((id) => machineName(id, "tiff-000001-a1"));
    expect(new Set(names).size).toBe(4);
    expect(machineName("batch-1", "pool-0001")).toBe("fo-batch-1-pool-0001");
    for (const n of names) expect(n).toMatch(/^[a-z0-9-]{1,63}$/);
  });

  it("the final POST carries an Idempotency-Key that is the same on every retry", async () => {
    world.downstream.script = [503, 200];
    world.runner.behaviour = () => "succeed";
    await putTiffs("at-idem/", 2);
    await stub("at-idem").start({ batch_id: "at-idem", r2_prefix: "at-idem/" });
    await vi.waitFor(async () => {
      await expireAll("at-idem");
      await withStore("at-idem", (s) => s.updateMeta({ finalise_attempts: s.getMeta()!.finalise_attempts }, Date.now()));
      await runDurableObjectAlarm(stub("at-idem"));
      expect(world.downstream.calls.length).toBeGreaterThanOrEqual(2);
    }, { timeout: 20_000, interval: 200 });
    const keys = world.downstream.calls.map((c) => c.headers["idempotency-key"]);
    expect(keys[0]).toBe("fanout:at-idem:final");
    expect(new Set(keys).size).toBe(1);
  });
});
