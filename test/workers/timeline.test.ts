// GET /status/:batchId/timeline: the dashboard's machine timeline in one read (open attempts and
// the latest ended), instead of the task list and a request per started task.
import { exports } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { attemptsOf, getStatus, installWorld, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

interface Timeline {
  batch_id: string;
  limit: number;
  attempts: { task_id: string; attempt: number; machine: string; machine_id: string | null; outcome: string; error: string | null; started_at: string; ended_at: string | null }[];
  open: number;
  ended: number;
}

async function timeline(b: string, query = ""): Promise<{ status: number; body: Timeline }> {
  const res = await exports.default.fetch(`http://orchestrator.test/status/${b}/timeline${query}`);
  return { status: res.status, body: (await res.json()) as Timeline };
}

describe("GET /status/:batchId/timeline", () => {
  it("gives every attempt of a small batch with its machine and times: the same the task routes give, in one request", async () => {
    // Three hang (open attempts), three succeed.
    world.runner.behaviour = (_m, nth) => (nth <= 3 ? "hang" : "succeed");
    await putTiffs("tl-small/", 6);
    await stub("tl-small").start({ batch_id: "tl-small", r2_prefix: "tl-small/" });
    await waitForStatus("tl-small", (x) => x.progress.tasks_completed === 3 && x.progress.running + x.progress.starting === 3, 30_000);
    const { status, body } = await timeline("tl-small");
    expect(status).toBe(200);
    expect(body).toMatchObject({ batch_id: "tl-small", limit: 400, open: 3, ended: 3 });
    const expected = [];
    for (let i = 0; i < 6; i++) {
      const task = `tiff-${String(i).padStart(6, "0")}`;
      for (const a of await attemptsOf("tl-small", task)) {
        expected.push({ task_id: task, attempt: a.attempt, machine_id: a.machine_id, outcome: a.outcome, error: a.error });
      }
    }
    const got = body.attempts.map((a) => ({ task_id: a.task_id, attempt: a.attempt, machine_id: a.machine_id, outcome: a.outcome, error: a.error }));
    const key = (a: { task_id: string; attempt: number }) => `${a.task_id}/${a.attempt}`;
    expect(got.sort((a, b) => key(a).localeCompare(key(b)))).toEqual(expected.sort((a, b) => key(a).localeCompare(key(b))));
    // Open attempts first, then ended ones, newest first.
    expect(body.attempts.slice(0, 3).every((a) => a.outcome === "open" && a.ended_at === null)).toBe(true);
    const ends = body.attempts.slice(3).map((a) => Date.parse(a.ended_at!));
    expect(ends).toEqual([...ends].sort((a, b) => b - a));
  });

  it("on a large batch answers the open attempts and the `limit` latest ended ones, reading no more rows as the batch grows", async () => {
    const b = "tl-large";
    await stub(b).start({ batch_id: b, manifest_r2_key: `${b}/none.json` });
    const t0 = Date.now() - 3_600_000;
    await withStore(b, (_store, sql) => {
      // 5,000 ended attempts (done, failed, superseded, cancelled) and 20 open ones, written straight to the table.
      for (let i = 0; i < 5000; i++) {
        const outcome = i % 10 === 0 ? "failed" : i % 25 === 1 ? "superseded" : i === 4998 ? "cancelled" : "done";
        sql.exec(
          "INSERT INTO attempts (task_id, attempt, machine_id, machine_name, outcome, error, started_at, ended_at) VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
          `t${i}`, `m${i % 50}`, `n${i}`, outcome, outcome === "failed" ? "boom" : null, t0 + i * 100, t0 + i * 100 + 50,
        );
      }
      for (let i = 0; i < 20; i++) sql.exec("INSERT INTO attempts (task_id, attempt, machine_id, machine_name, started_at) VALUES (?, 1, ?, ?, ?)", `o${i}`, `m${i}`, `o${i}`, Date.now());
    });
    const before = await withStore(b, (store) => store.work.rowsRead);
    const { body } = await timeline(b, "?limit=100");
    const read = (await withStore(b, (store) => store.work.rowsRead)) - before;
    expect(body).toMatchObject({ limit: 100, open: 20, ended: 100 });
    expect(body.attempts).toHaveLength(120);
    // The latest 100 ended: tasks t4900 .. t4999, newest first.
    expect(body.attempts.slice(20).map((a) => a.task_id)).toEqual(Array.from({ length: 100 }, (_, i) => `t${4999 - i}`));
    // A cancelled attempt (a reset ended it) is there too.
    expect(body.attempts.find((a) => a.task_id === "t4998")?.outcome).toBe("cancelled");
    // By hand: the meta row, 20 open and at most 100 per outcome (four), not the 5,020 rows there are.
    expect(read).toBeLessThanOrEqual(1 + 20 + 4 * 100 + 5);
    expect((await timeline(b, "?limit=0")).status).toBe(400);
    expect((await timeline("tl-never-seen")).status).toBe(404);
    expect((await getStatus(b)).batch_id).toBe(b);
  });
});
