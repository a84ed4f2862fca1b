// READ_TOKEN: unset, status reads are open; set, they need it (or the admin token).
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, expect, it } from "vitest";
import worker from "../../orchestrator/index.ts";
import { installWorld, putTiffs, stub, waitForStatus, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
  world.runner.behaviour = () => "hang";
});
afterEach(async () => {
  await world.restore();
});

const READ_TOKEN = "read-token-of-at-least-16-chars";

async function get(path: string, headers: Record<string, string>, withToken: boolean): Promise<Response> {

  const e = (withToken ? { ...env, READ_TOKEN } : env) as Env;
  const res = await worker.fetch(new Request(`http://orchestrator.test${path}`, { headers }), e);

  return res;
}

it("status, events, tasks and the batch index need READ_TOKEN (or the admin token) when it is set, and are open when not", async () => {
  await putTiffs("rt-batch/", 1);
  await stub("rt-batch").start({ batch_id: "rt-batch", r2_prefix: "rt-batch/" });
  await waitForStatus("rt-batch", (x) => x.progress.tasks_total === 1);
  for (const path of ["/status/rt-batch", "/status/rt-batch/tasks", "/status/rt-batch/tasks/tiff-000000", "/batches"]) {
    expect((await get(path, {}, false)).status, `${path} open without READ_TOKEN`).toBe(200);
    const refused = await get(path, {}, true);
    expect(refused.status, `${path} without a token`).toBe(401);
    expect(await refused.json()).toEqual({ error: "read token missing or invalid (Authorization: Bearer $READ_TOKEN)" });
    expect((await get(path, { authorization: "Bearer wrong-token-wrong-token" }, true)).status).toBe(401);
    expect((await get(path, { authorization: `Bearer ${READ_TOKEN}` }, true)).status, `${path} with READ_TOKEN`).toBe(200);
    expect((await get(path, { authorization: `Bearer ${env.ADMIN_TOKEN}` }, true)).status, `${path} with the admin token`).toBe(200);
  }
  const open = await get("/status/rt-batch/events", {}, false);
  expect(open.status, "events open without READ_TOKEN").toBe(200);
  await open.body?.cancel();
  const events = await get("/status/rt-batch/events", {}, true);
  expect(events.status).toBe(401);
});
