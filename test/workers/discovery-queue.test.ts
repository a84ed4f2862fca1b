import { env, exports } from "cloudflare:workers";
import { createMessageBatch, getQueueResult, runDurableObjectAlarm } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import worker from "../../orchestrator/index.ts";
import { ADMIN, createRequests, getStatus, installWorld, putManifest, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
  world.runner.behaviour = () => "hang";
});
afterEach(async () => {
  await world.restore();
});

async function deliver(messages: { id: string; body: unknown; attempts?: number }[]) {
  const batch = createMessageBatch(
    "fanout-batches",
    messages.map((m) => ({ id: m.id, timestamp: new Date(), attempts: m.attempts ?? 1, body: m.body })),
  );
  const ctx = (await import("cloudflare:test")).createExecutionContext();
  await worker.queue(batch, env, ctx);
  return getQueueResult(batch, ctx);
}

describe("discovery", () => {
  it("lists more than 1,000 objects under a prefix, across pages, and plans one task per TIFF", async () => {
    await putTiffs("d-prefix/", 2300, ["d-prefix/readme.txt", "d-prefix/sub/UPPER.TIFF", "d-prefix/sub/"]);
    await stub("d-prefix").start({ batch_id: "d-prefix", r2_prefix: "d-prefix/" });
    const s = await waitForStatus("d-prefix", (x) => x.progress.tasks_total > 0 && x.stage === "run", 30_000);
    expect(s.files_total).toBe(2302); // the folder marker is not a file
    expect(s.progress.tasks_total).toBe(2301); // .tif and .TIFF; not the .txt
    const jpeg = await withStore("d-prefix", (store) => store.keyTaken("d-prefix/sub/UPPER.jpg"));
    expect(jpeg).toBe(true);
  });

  it("reads a manifest of more than 1,000 files, keeping unknown fields", async () => {
    const keys = Array.from({ length: 1500 }, (_, i) => `d-man/in/p${i}.tif`);
    await putManifest("d-man", "d-man/manifest.json", keys);
    await stub("d-man").start({ batch_id: "d-man", manifest_r2_key: "d-man/manifest.json" });
    const s = await waitForStatus("d-man", (x) => x.stage === "run");
    expect(s.progress.tasks_total).toBe(1500);
    expect(s.files_total).toBe(1500);
  });

  it("never lets two inputs write the same output key", async () => {
    await env.BUCKET.put("d-clash/a.tif", "x");
    await env.BUCKET.put("d-clash/a.tiff", "x");
    await env.BUCKET.put("d-clash/a.TIF", "x");
    await env.BUCKET.put("d-clash/b.tif", "x");
    await env.BUCKET.put("d-clash/b.jpg", "existing jpeg");
    await stub("d-clash").start({ batch_id: "d-clash", r2_prefix: "d-clash/" });
    await waitForStatus("d-clash", (x) => x.stage === "run");
    const outputs = await withStore("d-clash", (_s, sql) =>
      sql.exec<{ input_key: string; output_key: string }>("SELECT input_key, output_key FROM tasks ORDER BY input_key").toArray(),
    );
    expect(outputs).toEqual([
      { input_key: "d-clash/a.TIF", output_key: "d-clash/a.jpg" },
      { input_key: "d-clash/a.tif", output_key: "d-clash/a.tif.jpg" },
      { input_key: "d-clash/a.tiff", output_key: "d-clash/a.tiff.jpg" },
      { input_key: "d-clash/b.tif", output_key: "d-clash/b.tif.jpg" },
    ]);
  });

  it("puts the batch in ERROR with the reason when the manifest is missing, not JSON, or invalid", async () => {
    await stub("d-missing").start({ batch_id: "d-missing", manifest_r2_key: "nowhere/manifest.json" });
    expect(await waitForStatus("d-missing", (x) => x.status === "ERROR")).toMatchObject({ error: "manifest nowhere/manifest.json not found" });
    await env.BUCKET.put("d-notjson/m.json", "{oops");
    await stub("d-notjson").start({ batch_id: "d-notjson", manifest_r2_key: "d-notjson/m.json" });
    expect((await waitForStatus("d-notjson", (x) => x.status === "ERROR")).error).toMatch(/^manifest d-notjson\/m.json is not valid JSON/);
    await env.BUCKET.put("d-bad/m.json", JSON.stringify({ batch_id: "d-bad", directories: [{ directory_path: "/", files: [{ file_name: "x" }] }] }));
    await stub("d-bad").start({ batch_id: "d-bad", manifest_r2_key: "d-bad/m.json" });
    expect((await waitForStatus("d-bad", (x) => x.status === "ERROR")).error).toContain("directories.0.files.0.r2_key");
    await env.BUCKET.put("d-other/m.json", JSON.stringify({ batch_id: "someone-else", directories: [] }));
    await stub("d-other").start({ batch_id: "d-other", manifest_r2_key: "d-other/m.json" });
    expect((await waitForStatus("d-other", (x) => x.status === "ERROR")).error).toContain("is for batch someone-else");
  });

  it("a batch with no TIFFs goes straight to DONE", async () => {
    await env.BUCKET.put("d-none/a.txt", "x");
    await stub("d-none").start({ batch_id: "d-none", r2_prefix: "d-none/" });
    const s = await waitForStatus("d-none", (x) => x.status === "DONE");
    expect(s.progress.tasks_total).toBe(0);
    expect(s.files_total).toBe(1);
  });
});

describe("queue consumer", () => {
  it("a real queue round trip starts the batch", async () => {
    await putTiffs("q-real/", 2);
    const res = await exports.default.fetch("http://orchestrator.test/admin/batches", {
      method: "POST",
      headers: { ...ADMIN, "content-type": "application/json" },
      body: JSON.stringify({ batch_id: "q-real", r2_prefix: "q-real/", source: "ingest-v1" }),
    });
    expect(res.status).toBe(202);
    const s = await waitForStatus("q-real", (x) => x.progress.tasks_total === 2);
    expect(s.status).toBe("TIFF_CONVERSION");
  });

  it("redelivery of the same message never restarts or duplicates work", async () => {
    await putTiffs("q-redeliver/", 3);
    const body = { batch_id: "q-redeliver", r2_prefix: "q-redeliver/" };
    const first = await deliver([{ id: "m1", body }]);
    expect(first.explicitAcks).toEqual(["m1"]);
    const ours = () => world.runner.started.filter((m) => m.env.BATCH_ID === "q-redeliver");
    await vi.waitFor(() => expect(ours()).toHaveLength(3), { timeout: 20_000 });
    const second = await deliver([{ id: "m1", body, attempts: 2 }, { id: "m2", body: JSON.stringify(body) }]);
    expect(second.explicitAcks.sort()).toEqual(["m1", "m2"]);
    await runDurableObjectAlarm(stub("q-redeliver"));
    const s = await getStatus("q-redeliver");
    expect(s.progress.tasks_total).toBe(3);
    expect(ours()).toHaveLength(3);
    expect(createRequests(world.fly).filter((r) => JSON.stringify(r.body).includes('"fanout_batch":"q-redeliver"'))).toHaveLength(3);
  });

  it("acks a malformed message; with a usable batch_id the batch exists in ERROR explaining why", async () => {
    const result = await deliver([
      { id: "bad1", body: { batch_id: "q-bad" } },
      { id: "bad2", body: "not json at all" },
      { id: "bad3", body: { batch_id: "../etc/passwd", r2_prefix: "x/" } },
    ]);
    expect(result.explicitAcks.sort()).toEqual(["bad1", "bad2", "bad3"]);
    expect(result.retryMessages).toEqual([]);
    const s = await getStatus("q-bad");
    expect(s).toMatchObject({ status: "ERROR", error: expect.stringContaining("manifest_r2_key or r2_prefix") });
    const unknown = await exports.default.fetch("http://orchestrator.test/status/q-unknown");
    expect(unknown.status).toBe(404);
  });

  it("a valid message for a batch that already failed validation does not revive it", async () => {
    await deliver([{ id: "a", body: { batch_id: "q-revive" } }]);
    await deliver([{ id: "b", body: { batch_id: "q-revive", r2_prefix: "q-revive/" } }]);
    expect((await getStatus("q-revive")).status).toBe("ERROR");
  });
});

describe("HTTP API", () => {
  it("health, 404 for unknown routes, 400 for a bad batch id, 401 for admin without a token", async () => {
    expect(await (await exports.default.fetch("http://o.test/health")).json()).toMatchObject({ ok: true, service: "fanout" });
    const nowhere = await exports.default.fetch("http://o.test/nowhere");
    expect(nowhere.status).toBe(404);
    const bad = await exports.default.fetch("http://o.test/status/%20bad%20id");
    expect(bad.status).toBe(400);
    const malformed = await exports.default.fetch("http://o.test/status/%E0%A4%A");
    expect(malformed.status).toBe(400);
    expect(await malformed.json()).toEqual({ error: "invalid batchId: malformed percent-encoding in the URL" });
    expect(await bad.json()).toMatchObject({ error: expect.stringContaining("batchId") });
    const noAuth = await exports.default.fetch("http://o.test/admin/batches", { method: "POST", body: "{}" });
    expect(noAuth.status).toBe(401);
    const badBody = await exports.default.fetch("http://o.test/admin/batches", { method: "POST", headers: ADMIN, body: JSON.stringify({ r2_prefix: "x" }) });
    expect(badBody.status).toBe(400);
    expect(await badBody.json()).toMatchObject({ error: expect.stringContaining("batch_id") });
  });

  it("pages the task list with a cursor and filters by status", async () => {
    await putTiffs("h-page/", 25);
    await stub("h-page").start({ batch_id: "h-page", r2_prefix: "h-page/" });
    await waitForStatus("h-page", (x) => x.stage === "run");
    const seen: string[] = [];
    let cursor: string | null = "";
    while (cursor !== null) {
      const res = await exports.default.fetch(`http://o.test/status/h-page/tasks?limit=10${cursor ? `&cursor=${cursor}` : ""}`);
      const page = (await res.json()) as { tasks: { task_id: string }[]; next_cursor: string | null };
      seen.push(...page.tasks.map((t) => t.task_id));
      cursor = page.next_cursor;
    }
    expect(new Set(seen).size).toBe(25);
    const failed = (await (await exports.default.fetch("http://o.test/status/h-page/tasks?status=failed")).json()) as { tasks: unknown[] };
    expect(failed.tasks).toEqual([]);
    const badQuery = await exports.default.fetch("http://o.test/status/h-page/tasks?status=exploded&limit=0");
    expect(badQuery.status).toBe(400);
    expect(((await badQuery.json()) as { error: string }).error).toMatch(/status.*limit/);
  });

  it("status and error bodies never contain a secret", async () => {
    await putTiffs("h-secret/", 1);
    await stub("h-secret").start({ batch_id: "h-secret", r2_prefix: "h-secret/" });
    await waitForStatus("h-secret", (x) => x.progress.starting + x.progress.running === 1);
    const bodies = [
      await (await exports.default.fetch("http://o.test/status/h-secret")).text(),
      await (await exports.default.fetch("http://o.test/status/h-secret/tasks")).text(),
      await (await exports.default.fetch("http://o.test/callback/h-secret/tiff-000000", { method: "POST", body: "{}" })).text(),
    ];
    for (const body of bodies) {
      for (const secret of [env.CALLBACK_SECRET, env.ADMIN_TOKEN, env.FLY_API_TOKEN, env.R2_SECRET_ACCESS_KEY]) {
        expect(body).not.toContain(secret);
      }
    }
  });
});
