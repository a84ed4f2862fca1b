// What an operator relies on: a batch that fails says so (tolerated failures, every task failed),
// a batch with nothing to do says that, failed tasks can be redriven alone, a step that keeps
// failing stops the batch with the count, and a second phase runs without an engine change.
import { env } from "cloudflare:workers";
import { runDurableObjectAlarm } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";
import { checksum } from "../../orchestrator/phases/checksum.ts";
import { defaultPipeline, getPhase, registerPhase } from "../../orchestrator/phases/index.ts";
import { tiffConversion } from "../../orchestrator/phases/tiff-conversion.ts";
import type { Phase } from "../../orchestrator/phases/types.ts";
import { CHECKSUM_PHASE } from "../../shared/checksum.ts";
import { ADMIN, attemptsOf, callbackTo, expireAll, finalFiles, getStatus, installWorld, OUTPUT_SIZE, putTiffs, stub, waitForStatus, withStore, writeOutput, type World } from "./support/engine.ts";
import { exports } from "cloudflare:workers";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

/** Runs the batch's alarms (letting `expire` pass its deadlines first, each round) until its status is `status`. */
function driveTo(b: string, status: string, expire: (b: string) => Promise<unknown> = expireAll) {
  return vi.waitFor(
    async () => {
      await expire(b);
      await runDurableObjectAlarm(stub(b));
      const x = await getStatus(b);
      expect(x.status).toBe(status);
      return x;
    },
    { timeout: 30_000, interval: 50 },
  );
}

/** Only retry backoffs pass (machines keep their own clocks). */
const expireBackoffs = (b: string) => withStore(b, (_s, sql) => sql.exec("UPDATE tasks SET next_at = 0 WHERE state IN ('pending','retrying')"));

describe("a batch that fails says so", () => {
  it("tolerated_failure_count: past it the batch stops FAILED, open tasks cancelled, machines destroyed, the reason names the threshold", async () => {
    await putTiffs("op-tol/", 30);
    world.runner.behaviour = () => "error";
    await stub("op-tol").start({ batch_id: "op-tol", r2_prefix: "op-tol/", tolerated_failure_count: 2 });
    const s = await driveTo("op-tol", "FAILED");
    expect(s.error).toMatch(/^\d+ of 30 tasks failed, more than tolerated_failure_count=2$/);
    expect(s.progress.tasks_failed).toBe(30);
    expect(s.progress.pending + s.progress.starting + s.progress.running + s.progress.retrying).toBe(0);
    await vi.waitFor(() => expect(world.fly.liveMachineCount()).toBe(0), { timeout: 10_000 });
    // Far fewer machines than tasks: the systemic fault did not burn through the batch.
    expect(world.runner.started.length).toBeLessThan(30);
  });

  it("tolerated_failure_percentage stops the batch once the share is exceeded", async () => {
    // Two of ten tasks fail every attempt (20% > 10%); the rest succeed. Only backoffs are
    // expired: expiring running attempts too made which tasks failed a race with the callbacks.
    await putTiffs("op-pct/", 10);
    const bad = new Set(["tiff-000001", "tiff-000002"]);
    world.runner.behaviour = (m) => (bad.has(machineProcessEnv(m).TASK_ID) ? "error" : "succeed");
    await stub("op-pct").start({ batch_id: "op-pct", r2_prefix: "op-pct/", tolerated_failure_percentage: 10 });
    const s = await driveTo("op-pct", "FAILED", expireBackoffs);
    expect(s.error).toBe("2 of 10 tasks failed (20.0%), more than tolerated_failure_percentage=10");
    expect(s.progress.tasks_completed + s.progress.tasks_failed).toBe(10);
  });

  it("every task failed: FAILED, not DONE, whatever the threshold; nothing is sent downstream", async () => {
    await putTiffs("op-allfail/", 3);
    world.runner.behaviour = () => "error";
    await stub("op-allfail").start({ batch_id: "op-allfail", r2_prefix: "op-allfail/" });
    await driveTo("op-allfail", "FAILED");
    expect((await getStatus("op-allfail")).error).toBe("every task of TIFF_CONVERSION failed (3 of 3)");
    expect(world.downstream.calls).toHaveLength(0);
  });

  it("a batch with nothing to do ends DONE with a warning saying so", async () => {
    await env.BUCKET.put("op-empty/readme.txt", "no scans here");
    await stub("op-empty").start({ batch_id: "op-empty", r2_prefix: "op-empty/" });
    const s = await waitForStatus("op-empty", (x) => x.status === "DONE");
    expect(s.warnings).toEqual(["nothing to do: no file of the batch (1 file) needed any of TIFF_CONVERSION, PDF_SPLITTING"]);
  });
});

describe("redrive", () => {
  it("re-runs only the failed tasks, attempts continue, counters exact throughout, the final list goes again under a new Idempotency-Key", async () => {
    const b = "op-redrive";
    await putTiffs(`${b}/`, 6);
    const bad = new Set(["tiff-000002", "tiff-000004"]);
    let healed = false;
    world.runner.behaviour = (m) => (bad.has(machineProcessEnv(m).TASK_ID) && !healed ? "error" : "succeed");
    await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
    const first = await driveTo(b, "DONE", expireBackoffs);
    expect(first.progress, JSON.stringify(first)).toMatchObject({ tasks_total: 6, tasks_completed: 4, tasks_failed: 2 });
    const startedBefore = world.runner.started.length;
    healed = true;
    const res = await exports.default.fetch(`http://orchestrator.test/admin/redrive/${b}`, { method: "POST", headers: ADMIN });
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ ok: true, tasks: 2, redrive: 1 });
    // Counters exact at once: 4 done, 2 waiting, 0 failed.
    expect((await getStatus(b)).progress).toMatchObject({ tasks_total: 6, tasks_completed: 4, tasks_failed: 0, retrying: 2 });
    // A redrive of a running batch is 409.
    expect((await exports.default.fetch(`http://orchestrator.test/admin/redrive/${b}`, { method: "POST", headers: ADMIN })).status).toBe(409);
    const s = await driveTo(b, "DONE", expireBackoffs);
    expect(s.progress).toMatchObject({ tasks_total: 6, tasks_completed: 6, tasks_failed: 0 });
    // Only the two failed tasks got machines again.
    const again = world.runner.started.slice(startedBefore).map((m) => machineProcessEnv(m).TASK_ID).sort();
    expect(again).toEqual([...bad].sort());
    const attempts = await attemptsOf(b, "tiff-000002");
    expect(attempts.map((a) => a.attempt)).toEqual([1, 2, 3, 4]);
    expect(attempts.at(-1)!.outcome).toBe("done");
    // The test's own alarm runs can overlap the runtime's, and a POST repeated under the same key
    // is what the key is for: each key's body is the same every time it is sent.
    const byKey = new Map<string, string[]>();
    for (const c of world.downstream.calls) byKey.set(c.headers["idempotency-key"], [...(byKey.get(c.headers["idempotency-key"]) ?? []), c.body]);
    expect([...byKey.keys()]).toEqual([`fanout:${b}:final`, `fanout:${b}:final:redrive-1`]);
    for (const bodies of byKey.values()) expect(new Set(bodies).size).toBe(1);
    // Each finalisation wrote its own file list object; the redrive's has all six JPEGs.
    const lists = [...byKey.values()].map((bodies) => (JSON.parse(bodies[0]) as { file_list: { key: string; entries: number } }).file_list);
    expect(lists.map((l) => l.key)).toEqual([`${b}/_fanout/file-list.ndjson`, `${b}/_fanout/file-list.redrive-1.ndjson`]);
    expect(lists.map((l) => l.entries)).toEqual([6 + 4, 6 + 6]);
    // Nothing left to redrive.
    expect((await exports.default.fetch(`http://orchestrator.test/admin/redrive/${b}`, { method: "POST", headers: ADMIN })).status).toBe(409);
  });
});

describe("no silent stalls", () => {
  const boom: Phase = { ...tiffConversion, name: "TEST_BOOM", slug: "boom", plan: () => { throw new Error("planner exploded"); } };
  registerPhase(boom);

  it("a step that fails MAX_STEP_FAILURES times in a row stops the batch in ERROR with the step, the error and the count; status shows the count while it retries", async () => {
    await putTiffs("op-stall/", 1);
    await stub("op-stall").start({ batch_id: "op-stall", r2_prefix: "op-stall/", phases: ["TEST_BOOM"] });
    await waitForStatus("op-stall", (x) => x.step_failures !== null && x.step_failures.count >= 1);
    const during = await getStatus("op-stall");
    expect(during.step_failures).toMatchObject({ limit: 10, last_error: "planner exploded", stage: "plan" });
    for (let i = 0; i < 12 && (await getStatus("op-stall")).status !== "ERROR"; i++) await runDurableObjectAlarm(stub("op-stall"));
    const s = await getStatus("op-stall");
    expect(s.status).toBe("ERROR");
    expect(s.error).toBe("plan step failed 10 times in a row: planner exploded");
  });
});

describe("the phase contract", () => {
  // The real CHECKSUM phase (orchestrator/phases/checksum.ts, opt-in), named after TIFF_CONVERSION in
  // the batch's pipeline: no engine file names it.
  it("runs after TIFF_CONVERSION when the message names it, with its own callback schema (a TIFF-shaped callback is refused); every input and output gets its sha256 downstream", async () => {
    const b = "op-sum";
    await putTiffs(`${b}/`, 2);
    world.runner.behaviour = (m) => (machineProcessEnv(m).PHASE === CHECKSUM_PHASE ? "hang" : "succeed");
    await stub(b).start({ batch_id: b, r2_prefix: `${b}/`, phases: ["TIFF_CONVERSION", CHECKSUM_PHASE] });
    // Two TIFFs and their two JPEGs.
    await vi.waitFor(() => expect(world.runner.started.filter((m) => machineProcessEnv(m).PHASE === CHECKSUM_PHASE)).toHaveLength(4), { timeout: 20_000 });
    const digests = new Map<string, string>();
    for (const [i, m] of world.runner.started.map(machineProcessEnv).filter((x) => x.PHASE === CHECKSUM_PHASE).entries()) {
      // What the fly-worker's checksum mode reads: its input and the sidecar key reserved for it.
      expect(m.OUTPUT_R2_KEY).toBe(`${m.INPUT_R2_KEY}.sha256`);
      expect(m.MEMORY_MB).toBe("256");
      // The phase's schema, not the TIFF one, judges the body.
      const wrong = await callbackTo(b, m.TASK_ID, { task_id: m.TASK_ID, batch_id: b, status: "success", output_r2_key: m.OUTPUT_R2_KEY, output_file_name: "x", output_file_size: OUTPUT_SIZE }, m.CALLBACK_TOKEN);
      expect(wrong.status).toBe(400);
      expect(await wrong.json()).toMatchObject({ error: expect.stringMatching(/sha256/) });
      await writeOutput(m);
      const sha256 = String(i + 1).repeat(64);
      digests.set(m.INPUT_R2_KEY, sha256);
      const body = {
        task_id: m.TASK_ID,
        batch_id: b,
        status: "success",
        output_r2_key: m.OUTPUT_R2_KEY,
        output_file_name: m.OUTPUT_R2_KEY.split("/").pop(),
        output_file_size: OUTPUT_SIZE,
        sha256,
        sidecar_sha256: "f".repeat(64),
        input: { r2_key: m.INPUT_R2_KEY, bytes: 1234 },
      };
      const ok = await callbackTo(b, m.TASK_ID, body, m.CALLBACK_TOKEN);
      expect(await ok.json(), JSON.stringify(await getStatus(b))).toMatchObject({ outcome: "done" });
    }
    expect([...digests.keys()].filter((k) => k.endsWith(".tif"))).toHaveLength(2);
    const s = await waitForStatus(b, (x) => x.status === "DONE");
    expect(s.phases.map((p) => [p.name, p.total, p.done])).toEqual(expect.arrayContaining([["TIFF_CONVERSION", 2, 2], [CHECKSUM_PHASE, 4, 4]]));
    const final = { files: (await finalFiles(world.downstream)) as { r2_key: string; sha256?: string; source_r2_key?: string }[] };
    expect(final.files).toHaveLength(8);
    for (const f of final.files) {
      if (f.r2_key.endsWith(".sha256")) expect(f).toMatchObject({ sha256: "f".repeat(64), r2_key: `${f.source_r2_key}.sha256` });
      else expect(f.sha256, f.r2_key).toBe(digests.get(f.r2_key));
    }
  });

  it("is opt-in: a batch whose message names no phases runs the default pipeline, which leaves it out", () => {
    expect(getPhase(CHECKSUM_PHASE)).toBe(checksum);
    expect(defaultPipeline()).toEqual(["TIFF_CONVERSION", "PDF_SPLITTING"]);
  });
});

describe("scheduling order", () => {
  it("a retry whose backoff has passed starts before tasks still pending (it does not wait behind the whole batch)", async () => {
    const b = "op-order";
    world.runner.behaviour = () => "hang";
    await putTiffs(`${b}/`, 5);
    await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
    await waitForStatus(b, (x) => x.progress.tasks_total === 5);
    const order = await withStore(b, (store, sql) => {
      sql.exec("UPDATE tasks SET state = 'pending', next_at = 0, attempt = 0");
      // The last task failed once and its backoff has just passed.
      sql.exec("UPDATE tasks SET state = 'retrying', attempt = 1, next_at = ? WHERE task_id = 'tiff-000004'", Date.now() - 1);
      return store.readyTasks(Date.now(), 2).map((t) => t.task_id);
    });
    expect(order).toEqual(["tiff-000004", "tiff-000000"]);
  });
});
