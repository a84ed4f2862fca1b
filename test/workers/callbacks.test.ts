import { exports } from "cloudflare:workers";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Phase } from "../../orchestrator/phases/types.ts";
import { registerPhase } from "../../orchestrator/phases/index.ts";
import { tiffConversion } from "../../orchestrator/phases/tiff-conversion.ts";
import {
  callbackTo,
  errorBody,
  getStatus,
  installWorld,
  putTiffs,
  stub,
  successBody,
  writeOutput,
  waitForStatus,
  withStore,
  type World,
} from "./support/engine.ts";
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

async function startHanging(batchId: string, n: number) {
  world.runner.behaviour = () => "hang";
  await putTiffs(`${batchId}/`, n);
  await stub(batchId).start({ batch_id: batchId, r2_prefix: `${batchId}/` });
  await waitForStatus(batchId, (s) => s.progress.starting + s.progress.running === n);
  await waitForStatusMachines(n);
  return world.runner.started.map((m) => machineProcessEnv(m));
}
async function waitForStatusMachines(n: number) {
  const until = Date.now() + 5000;
  while (world.runner.started.length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
}

describe("callbacks", () => {
  it("first result wins; a duplicate answers 200 and changes nothing", async () => {
    const [m] = await startHanging("cb-dup", 1);
    await writeOutput(m);
    const first = await callbackTo("cb-dup", m.TASK_ID, successBody(m));
    expect(first.status).toBe(200);
    expect(await first.json()).toMatchObject({ ok: true, outcome: "done" });
    const before = await getStatus("cb-dup");
    const again = await callbackTo("cb-dup", m.TASK_ID, errorBody(m, "late error"));
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ outcome: "ignored", reason: "duplicate" });
    const after = await waitForStatus("cb-dup", (s) => s.status === "DONE");
    expect(after.progress).toMatchObject({ tasks_total: 1, tasks_completed: 1, tasks_failed: 0 });
    expect(before.progress.tasks_completed).toBe(1);
  });

  it("rejects a forged or missing token with 401 and changes nothing", async () => {
    const [m] = await startHanging("cb-forged", 1);
    const forged = await callbackTo("cb-forged", m.TASK_ID, successBody(m), "0".repeat(64));
    expect(forged.status).toBe(401);
    expect(await forged.json()).toEqual({ error: "callback token missing, invalid or expired" });
    // A real token for another task does not open this one.
    const other = await callbackTo("cb-forged", "tiff-000999", successBody(m), m.CALLBACK_TOKEN);
    expect(other.status).toBe(401);
    const none = await exports.default.fetch(`http://orchestrator.test/callback/cb-forged/${m.TASK_ID}`, {
      method: "POST",
      body: JSON.stringify(successBody(m)),
    });
    expect(none.status).toBe(401);
    expect((await getStatus("cb-forged")).progress.tasks_completed).toBe(0);
  });

  it("answers 404 for an unknown batch or task, 400 for a bad body, 413 for a huge one", async () => {
    const [m] = await startHanging("cb-bad", 1);
    const unknownBatch = await callbackTo("nope", "tiff-000000", { ...successBody(m), batch_id: "nope", task_id: "tiff-000000" });
    expect(unknownBatch.status).toBe(404);
    expect(await unknownBatch.json()).toMatchObject({ error: "unknown batch" });
    const unknownTask = await callbackTo("cb-bad", "tiff-000123", { ...successBody(m), task_id: "tiff-000123" });
    expect(unknownTask.status).toBe(404);
    expect(await unknownTask.json()).toMatchObject({ error: "unknown task" });

    const noStatus = await callbackTo("cb-bad", m.TASK_ID, { task_id: m.TASK_ID, batch_id: "cb-bad" });
    expect(noStatus.status).toBe(400);
    expect((await noStatus.json()) as { error: string }).toMatchObject({ error: expect.stringContaining("status") });
    const mismatch = await callbackTo("cb-bad", m.TASK_ID, { ...successBody(m), batch_id: "other" });
    expect(mismatch.status).toBe(400);
    const notJson = await exports.default.fetch(m.CALLBACK_URL, {
      method: "POST",
      headers: { authorization: `Bearer ${m.CALLBACK_TOKEN}` },
      body: "{not json",
    });
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({ error: expect.stringContaining("not valid JSON") });
    const huge = await callbackTo("cb-bad", m.TASK_ID, { ...successBody(m), padding: "x".repeat(1_100_000) });
    expect(huge.status).toBe(413);
    const badTaskId = await exports.default.fetch("http://orchestrator.test/callback/cb-bad/..%2Fetc", { method: "POST" });
    expect(badTaskId.status).toBe(400);
    expect((await getStatus("cb-bad")).progress.tasks_completed).toBe(0);
  });

  it("a late callback for a task still open counts; one for a closed task is ignored", async () => {
    const [m] = await startHanging("cb-late", 1);
    // The first attempt is given up (as a timeout would): the task waits to retry.
    await withStore("cb-late", (store) => {
      const t = store.getTask(m.TASK_ID)!;
      store.moveTask(t, "retrying", { next_at: Date.now() + 3_600_000, deadline_at: 0 }, Date.now());
    });
    await writeOutput(m);
    const late = await callbackTo("cb-late", m.TASK_ID, successBody(m));
    expect(await late.json()).toMatchObject({ outcome: "done", late: true });
    const s = await waitForStatus("cb-late", (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_completed: 1, tasks_failed: 0, retrying: 0 });
  });

  it("an error callback with retryable:false fails the task at once with the worker's reason", async () => {
    const [m] = await startHanging("cb-err", 1);
    await callbackTo("cb-err", m.TASK_ID, errorBody(m, "input is not a TIFF (PNG signature)", false));
    const s = await waitForStatus("cb-err", (x) => x.status === "FAILED");
    expect(s.progress).toMatchObject({ tasks_total: 1, tasks_completed: 0, tasks_failed: 1 });
    expect(s.recent_failures[0]).toMatchObject({
      task_id: m.TASK_ID,
      error: "input is not a TIFF (PNG signature)",
      machine_id: m.FLY_MACHINE_ID,
      logs: `fly logs -a ${m.FLY_APP_NAME} -i ${m.FLY_MACHINE_ID} --no-tail`,
    });
  });

  it("a machine may not report outputs outside its own keys", async () => {
    const [m] = await startHanging("cb-stray", 1);
    await callbackTo("cb-stray", m.TASK_ID, { ...successBody(m), output_r2_key: "elsewhere/x.jpg" });
    const s = await waitForStatus("cb-stray", (x) => x.status === "FAILED");
    expect(s.progress.tasks_failed).toBe(1);
    expect(s.recent_failures[0].error).toContain("elsewhere/x.jpg");
  });
});

describe("a callback for an earlier phase", () => {
  const second: Phase = {
    ...tiffConversion,
    name: "TEST_VARIANTS",
    slug: "variant",
    plan: (f) => (f.r2_key.endsWith(".jpg") ? { input_key: f.r2_key, output_key_candidates: [f.r2_key.replace(/\.jpg$/, ".thumb.jpg")], size_bytes: f.file_size } : null),
  };
  const first: Phase = { ...tiffConversion, name: "TEST_CONVERT", slug: "convert" };
  registerPhase(first);
  registerPhase(second);
  afterAll(() => undefined);

  it("answers 200 and changes nothing", async () => {
    await putTiffs("cb-phase/", 2);
    await stub("cb-phase").start({ batch_id: "cb-phase", r2_prefix: "cb-phase/", phases: ["TEST_CONVERT", "TEST_VARIANTS"] });
    const s = await waitForStatus("cb-phase", (x) => x.status === "DONE");
    expect(s.phases.map((p) => [p.name, p.total, p.done])).toEqual(
      expect.arrayContaining([
        ["TEST_CONVERT", 2, 2],
        ["TEST_VARIANTS", 2, 2],
      ]),
    );
    const firstMachine = machineProcessEnv(world.runner.started[0]);
    expect(firstMachine.TASK_ID).toMatch(/^convert-/);
    const replay = await callbackTo("cb-phase", firstMachine.TASK_ID, errorBody(firstMachine, "too late"));
    expect(replay.status).toBe(200);
    expect(await replay.json()).toMatchObject({ outcome: "ignored", reason: "earlier_phase" });
    expect((await getStatus("cb-phase")).progress).toMatchObject({ tasks_total: 4, tasks_completed: 4, tasks_failed: 0 });
  });
});
