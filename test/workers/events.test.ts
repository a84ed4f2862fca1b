// GET /status/:batchId/events: Server-Sent Events with progress, task_failed, phase and a final
// event; Last-Event-ID resumes without gaps; a cap on open streams answers 429.
import { exports } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, beforeEach, expect, it } from "vitest";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { ADMIN, attemptsOf, getStatus, installWorld, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

interface Sse {
  id?: number;
  event: string;
  data: Record<string, unknown>;
}

/** Reads events until `until` returns true or the stream ends; keeps the raw comments too. */
async function readEvents(res: Response, until: (e: Sse) => boolean, timeoutMs = 20_000): Promise<{ events: Sse[]; ended: boolean }> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const events: Sse[] = [];
  let buffer = "";
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const next = await Promise.race([reader.read(), new Promise<null>((r) => setTimeout(() => r(null), Math.max(1, deadline - Date.now())))]);
    if (next === null) throw new Error(`no end within ${timeoutMs} ms; events so far: ${events.map((e) => e.event).join(", ")}`);
    if (next.done) return { events, ended: true };
    buffer += decoder.decode(next.value, { stream: true });
    let cut: number;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const fields = Object.fromEntries(frame.split("\n").filter((l) => !l.startsWith(":") && l.includes(": ")).map((l) => [l.slice(0, l.indexOf(": ")), l.slice(l.indexOf(": ") + 2)]));
      if (!fields.event) continue;
      const e: Sse = { event: fields.event, data: JSON.parse(fields.data) as Record<string, unknown>, ...(fields.id ? { id: Number(fields.id) } : {}) };
      events.push(e);
      if (until(e)) {
        await reader.cancel();
        return { events, ended: false };
      }
    }
  }
}

/** Opens the batch's stream as the client at `ip` (Cloudflare's CF-Connecting-IP). */
const open = (b: string, last?: number, ip = "192.0.2.1") =>
  exports.default.fetch(`http://orchestrator.test/status/${b}/events`, {
    headers: { "cf-connecting-ip": ip, ...(last !== undefined ? { "last-event-id": String(last) } : {}) },
  });

it("streams progress, task_failed and phase as the batch runs, then done; the stream ends with it", async () => {
  const b = "ev-live";
  await putTiffs(`${b}/`, 6);
  world.runner.behaviour = (_m, nth) => (nth === 1 ? "error" : "succeed");
  await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
  const res = await open(b);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("text/event-stream");
  let streamEnded = false;
  const pump = (async () => {
    // The retry's backoff is made due while the stream is open, until it ends.
    while (!streamEnded) {
      await withStore(b, (_s, sql) => sql.exec("UPDATE tasks SET next_at = 0 WHERE state = 'retrying'"));
      await runDurableObjectAlarm(stub(b)).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const { events, ended } = await readEvents(res, () => false).finally(() => (streamEnded = true));
  await pump;
  expect(ended).toBe(true);
  const types = events.map((e) => e.event);
  expect(types[0]).toBe("progress");
  expect(types).toContain("task_failed");
  expect(types).toContain("phase");
  expect(types.at(-1)).toBe("done");
  const failed = events.find((e) => e.event === "task_failed")!;
  expect(failed.data).toMatchObject({ attempt: 1, reason: "simulated failure", final: false, logs: expect.stringMatching(/^fly logs -a \S+ -i \S+ --no-tail$/), run: 0 });
  // Named by its file: the task's input key (putTiffs names them scan-NNNNN.tif).
  expect(failed.data.input_key).toBe(`${b}/scan-${String(Number(String(failed.data.task_id).slice(5))).padStart(5, "0")}.tif`);
  expect((await getStatus(b)).recent_failures[0]).toMatchObject({ task_id: failed.data.task_id, input_key: failed.data.input_key });
  const progress = events.filter((e) => e.event === "progress");
  expect(progress.length).toBeGreaterThanOrEqual(2);
  // The status line a watcher draws from it: status, phase and stage with the counts.
  expect(progress.at(-1)!.data).toMatchObject({ status: expect.any(String), phase: "TIFF_CONVERSION", stage: expect.any(String), tasks_total: expect.any(Number) });
  // Bytes on the wire per event (the frame's data line), for the README's figures.
  const bytes = (e: Sse) => `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`.length + (e.id !== undefined ? `id: ${e.id}\n`.length : 0);
  console.log(`[Events] progress ${bytes(progress[0])} B, task_failed ${bytes(failed)} B per event`);
  expect(bytes(progress[0])).toBeLessThan(1024);
  // Ids never go back.
  const ids = events.flatMap((e) => (e.id !== undefined ? [e.id] : []));
  expect([...ids].sort((x, y) => x - y)).toEqual(ids);

  // Resuming from the task_failed event replays what came after it, without gaps, and ends.
  const resumed = await readEvents(await open(b, failed.id), () => false);
  const discrete = (list: Sse[]) => list.filter((e) => e.event !== "progress").map((e) => `${e.id}:${e.event}`);
  expect(discrete(resumed.events)).toEqual(discrete(events).slice(discrete(events).indexOf(`${failed.id}:task_failed`) + 1));
  expect(resumed.events.at(-1)!.event).toBe("done");
});

it("caps open streams per batch with a clear 429; unknown batches are 404; a bad Last-Event-ID is 400", async () => {
  const b = "ev-cap";
  world.runner.behaviour = () => "hang";
  await putTiffs(`${b}/`, 1);
  await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
  await waitForStatus(b, (x) => x.progress.starting + x.progress.running === 1);
  const streams: Response[] = [];
  // Twenty clients' worth: five addresses with four each.
  for (let i = 0; i < 20; i++) streams.push(await open(b, undefined, `192.0.2.${1 + (i % 5)}`));
  expect(streams.every((r) => r.status === 200)).toBe(true);
  const over = await open(b, undefined, "192.0.2.99");
  expect(over.status).toBe(429);
  // README: past the cap, 429 with Retry-After (whole seconds, RFC 9110 §10.2.3).
  expect(over.headers.get("retry-after")).toMatch(/^[1-9]\d*$/);
  expect(await over.json()).toMatchObject({ error: expect.stringContaining("too many open event streams for this batch (at most 20)") });
  for (const s of streams) await s.body!.cancel();
  expect((await open("ev-nobody")).status).toBe(404);
  expect((await exports.default.fetch(`http://orchestrator.test/status/${b}/events`, { headers: { "last-event-id": "x" } })).status).toBe(400);
});

it("one client holds at most 4 of a batch's streams, and a stream it closes frees its slot at once", async () => {
  const b = "ev-client";
  world.runner.behaviour = () => "hang";
  await putTiffs(`${b}/`, 1);
  await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
  await waitForStatus(b, (x) => x.progress.starting + x.progress.running === 1);
  const mine: Response[] = [];
  for (let i = 0; i < 4; i++) mine.push(await open(b, undefined, "198.51.100.7"));
  expect(mine.map((r) => r.status)).toEqual([200, 200, 200, 200]);
  const fifth = await open(b, undefined, "198.51.100.7");
  expect(fifth.status).toBe(429);
  expect(await fifth.json()).toMatchObject({ error: expect.stringContaining("from one client (at most 4)") });
  // Another client is not held back by this one.
  const other = await open(b, undefined, "198.51.100.8");
  expect(other.status).toBe(200);
  // The client leaves one stream: its slot is free well before the next keep-alive (15 s) would find out.
  await mine[0].body!.cancel();
  const started = Date.now();
  let again = await open(b, undefined, "198.51.100.7");
  while (again.status !== 200 && Date.now() - started < 3000) {
    await again.body?.cancel();
    await new Promise((r) => setTimeout(r, 50));
    again = await open(b, undefined, "198.51.100.7");
  }
  expect(again.status, `still refused ${Date.now() - started} ms after the client closed a stream`).toBe(200);
  for (const r of [...mine.slice(1), other, again]) await r.body!.cancel();
});

it("progress is at most 2 events a second however fast callbacks come", async () => {
  const b = "ev-cap-rate";
  const tasks = 60;
  world.runner.behaviour = () => "hang";
  await putTiffs(`${b}/`, tasks);
  await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
  await waitForStatus(b, (x) => x.progress.starting + x.progress.running === 20); // MAX_CONCURRENT_MACHINES
  const opened = Date.now();
  const res = await open(b);
  const reading = readEvents(res, () => false);
  // Every task's callback, one every ~20 ms (a pause lets the DO's timers run between them, as
  // they would between real machines' requests): far more count changes than 2 a second.
  let callbacks = 0;
  while (callbacks < tasks) {
    const live = [...world.runner.live.keys()];
    if (live.length === 0) {
      await new Promise((r) => setTimeout(r, 5));
      continue;
    }
    for (const id of live) {
      expect((await world.runner.finish(id)).status).toBe(200);
      callbacks++;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const { events, ended } = await reading;
  const streamMs = Date.now() - opened;
  expect(ended).toBe(true);
  const progress = events.filter((e) => e.event === "progress").length;
  // One on opening, one when the batch ends (flushed at once), at most one per 500 ms between
  // (the first at once), and one for the DO's clock, which only moves on I/O.
  const cap = 2 + Math.floor(streamMs / 500) + 1 + 1;
  console.log(`[Events] ${callbacks} callbacks in ${streamMs} ms: ${progress} progress events (cap ${cap})`);
  expect(callbacks, `the callbacks came too slowly (${callbacks} in ${streamMs} ms) to show the cap`).toBeGreaterThan(1.5 * cap);
  expect(progress, `${progress} progress events in ${streamMs} ms`).toBeLessThanOrEqual(cap);
  expect(progress).toBeGreaterThanOrEqual(2);
});

it("reset closes every open attempt; after a redrive, events name their run and a stream opened then ends on the redrive's done, not the reset's error", async () => {
  const b = "ev-reset-redrive";
  await putTiffs(`${b}/`, 4);
  world.runner.behaviour = () => "hang";
  await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
  await waitForStatus(b, (x) => x.progress.running + x.progress.starting === 4);
  const reset = await exports.default.fetch(`http://orchestrator.test/admin/reset/${b}`, { method: "POST", headers: ADMIN });
  expect(reset.status).toBe(200);
  // No attempt of the stopped batch is left open: each ended, as cancelled, with the reason and a time.
  for (const task of ["tiff-000000", "tiff-000001", "tiff-000002", "tiff-000003"]) {
    const attempts = await attemptsOf(b, task);
    expect(attempts, task).toHaveLength(1);
    expect(attempts[0], task).toMatchObject({ attempt: 1, outcome: "cancelled", error: "batch reset by admin", ended_at: expect.any(String) });
  }
  expect((await getStatus(b)).run).toBe(0);

  world.runner.behaviour = () => "succeed";
  const redrive = await exports.default.fetch(`http://orchestrator.test/admin/redrive/${b}`, { method: "POST", headers: ADMIN });
  expect(await redrive.json()).toMatchObject({ tasks: 4, redrive: 1 });
  expect((await getStatus(b)).run).toBe(1);
  // A follower that arrives now: the live run first, then the history, then the redrive's end.
  const res = await open(b);
  const pump = (async () => {
    for (let i = 0; i < 200 && (await getStatus(b)).status !== "DONE"; i++) {
      await withStore(b, (_s, sql) => sql.exec("UPDATE tasks SET next_at = 0 WHERE state = 'retrying'"));
      await runDurableObjectAlarm(stub(b)).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const { events, ended } = await readEvents(res, () => false);
  await pump;
  expect(ended).toBe(true);
  expect(events[0]).toMatchObject({ event: "progress", data: { run: 1 } });
  const terminal = events.filter((e) => ["done", "failed", "error"].includes(e.event));
  expect(terminal.map((e) => [e.event, e.data.run])).toEqual([
    ["error", 0],
    ["done", 1],
  ]);
  expect(events.find((e) => e.event === "redrive")?.data).toMatchObject({ run: 1, tasks: 4 });
  // The attempts continue: the cancelled first, then the redrive's, done.
  const attempts = await attemptsOf(b, "tiff-000000");
  expect(attempts.map((a) => [a.attempt, a.outcome])).toEqual([
    [1, "cancelled"],
    [2, "done"],
  ]);
});

it("a batch ends once: two alarms that both read it while finalising emit one done (the test harness's runDurableObjectAlarm can overlap the runtime's)", async () => {
  const b = "ev-once";
  await putTiffs(`${b}/`, 1);
  await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
  await waitForStatus(b, (x) => x.status === "DONE");
  // Back to finalising (its file list is written: the step goes straight to the end), then two alarms at once.
  const before = await withStore(b, (store, sql) => {
    sql.exec("UPDATE meta SET stage = 'finalise', completed_at = NULL");
    return store.lastEventId();
  });
  await runInDurableObject(stub(b), async (instance: BatchDO) => {
    await Promise.all([instance.alarm(), instance.alarm()]);
  });
  const dones = await withStore(b, (store) => store.eventsAfter(before, 1000).filter((e) => e.type === "done").length);
  expect(dones, "done events after the two overlapping alarms").toBe(1);
  expect((await getStatus(b)).status).toBe("DONE");
});

