// Outbound requests (orchestrator/outbound.ts) against the documented Workers limits
// (developers.cloudflare.com/workers/platform/limits/): 10,000 subrequests per invocation on
// Workers Paid, six connections waiting for their response headers at once (a seventh waits).
// Local workerd enforces neither; the engine does, and these tests measure it.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import type { Engine } from "../../orchestrator/engine/context.ts";
import { FlyMachines } from "../../orchestrator/fly/client.ts";
import { MAX_CONNECTIONS, Outbound, OutboundRefused, OutboundTimeout, PAID_SUBREQUESTS_PER_INVOCATION } from "../../orchestrator/outbound.ts";
import type { BatchStore } from "../../orchestrator/store/index.ts";
import type { FaultOptions } from "../../local/fly-emulator/faults.ts";
import { MAX_PAGES_PER_TASK } from "../../shared/contracts.ts";
import { attemptToken, callbackTo, installWorld, jpegBytes, OUTPUT_HEIGHT, OUTPUT_SIZE, OUTPUT_WIDTH, stub, withStore, type World } from "./support/engine.ts";

let world: World;
/** The emulator reads its faults from this object at every request: a test switches them on. */
let faults: FaultOptions;
beforeEach(() => {
  faults = {};
  world = installWorld({ faults });
  world.runner.behaviour = () => "hang";
});
afterEach(async () => {
  await world.restore();
});


/** A fetch that answers after `ms` (or fails when its signal aborts, as fetch does), counting how many it holds at once. */
function slowFetch(ms: number) {
  const seen = { now: 0, peak: 0, total: 0 };
  const fetcher = async (input: string | Request | URL, init?: RequestInit) => {
    seen.total++;
    seen.now++;
    seen.peak = Math.max(seen.peak, seen.now);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, ms);
        init?.signal?.addEventListener("abort", () => {
          clearTimeout(timer);
          reject(new DOMException("The operation was aborted", "AbortError"));
        });
      });
    } finally {
      seen.now--;
    }
    return new Response(String(input instanceof Request ? input.url : input));
  };
  return { seen, fetcher: fetcher as typeof fetch };
}

describe("Outbound: six at a time, each timed from when it is sent", () => {
  it("30 requests of 150 ms with a 400 ms timeout all answer: the queue's wait is not the request's", async () => {
    const { seen, fetcher } = slowFetch(150);
    const out = new Outbound({ fetch: fetcher });
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => out.exchange(`http://slow.test/${i}`, { method: "GET" }, 400, (r) => r.text())),
    );
    expect(results).toEqual(Array.from({ length: 30 }, (_, i) => `http://slow.test/${i}`));
    // Five waves of six: the last request waited ~600 ms for a connection, past its timeout.
    expect(seen.peak).toBe(MAX_CONNECTIONS);
    expect(out.peakInFlight).toBe(MAX_CONNECTIONS);
    expect(out.used).toBe(30);
  });

  it("a request that does not answer within its timeout after it was sent is an OutboundTimeout", async () => {
    const { fetcher } = slowFetch(300);
    const out = new Outbound({ fetch: fetcher });
    await expect(out.exchange("http://slow.test/x", { method: "GET" }, 50, (r) => r.text())).rejects.toBeInstanceOf(OutboundTimeout);
  });

  it("refuses past its budget and past its deadline, and counts each binding call as one subrequest", async () => {
    const out = new Outbound({ budget: 3 });
    const counted = out.env(env);
    await counted.BUCKET.head("nothing-here");
    await counted.BATCH_INDEX.prepare("SELECT 1").bind().first();
    await counted.FLY_BUDGET.getByName("outbound-test").take("create", 0, 1, 3);
    expect(out.used).toBe(3);
    await expect(counted.BUCKET.head("again")).rejects.toBeInstanceOf(OutboundRefused);
    expect(out.refused).toBe(1);
    // Vars pass through untouched.
    expect(counted.FLY_APP_NAME).toBe(env.FLY_APP_NAME);

    let clock = 0;
    const timed = new Outbound({ deadline: 1000, now: () => clock, fetch: slowFetch(1).fetcher });
    await timed.fetch("http://slow.test/a");
    clock = 1000;
    expect(timed.overdue).toBe(true);
    await expect(timed.fetch("http://slow.test/b")).rejects.toMatchObject({ reason: "deadline" });
  });

  it("the Fly client sends through it: a refused create is work for later (budget), never a failure", async () => {
    const out = new Outbound({ budget: 0 });
    const fly = new FlyMachines({ apiHostname: "http://fly.test", apiToken: "t", appName: "fanout-worker", exchange: out.exchange });
    const outcome = await fly.createMachine({ name: "m", image: "i", guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 }, env: {}, metadata: {}, regions: ["iad"] });
    expect(outcome.kind).toBe("budget");
    expect(world.fly.requests).toHaveLength(0);
  });
});

/** Seeds a batch in `run` with `pending` tasks ready, `live` machines due a check and `orphans` due a destroy. */
async function seedWorst(b: string, pending: number, live: number, orphans: number) {
  await stub(b).start({ batch_id: b, manifest_r2_key: `${b}/none.json`, pool: false });
  await withStore(b, (store, sql) => {
    const now = Date.now();
    sql.exec("UPDATE meta SET stage = 'run', error = NULL");
    store.transaction(() => {
      for (let i = 0; i < pending + live; i++) {
        const key = `${b}/s${i}.tif`;
        store.insertFiles([{ r2_key: key, logical_path: key, file_name: `s${i}.tif`, file_size: 4, content_type: "image/tiff" }]);
        const id = `tiff-${String(i).padStart(6, "0")}`;
        store.insertTasks([{ task_id: id, phase: "TIFF_CONVERSION", file_id: i + 1, input_key: key, output_key: key.replace(/\.tif$/, ".jpg"), size_bytes: 4, params_json: "{}", now }]);
      }
      for (let i = 0; i < live; i++) {
        const id = `tiff-${String(pending + i).padStart(6, "0")}`;
        const worker = `${id}-a1`;
        const task = store.getTask(id)!;
        // The open attempt is the task row's (store/attempts.ts: attempts are written when they end).
        store.moveTask(task, "running", { attempt: 1, machine_id: `m-live-${i}`, machine_name: worker, worker_id: worker, deadline_at: now + 3_600_000, limit_at: now + 3_600_000, attempt_started_at: now }, now);
        store.insertWorker({ worker_id: worker, phase: "TIFF_CONVERSION", now, check_at: 0, limit_at: now + 3_600_000, task_id: id, attempt: 1 });
        store.updateWorker(worker, { state: "live", machine_id: `m-live-${i}` });
      }
      for (let i = 0; i < orphans; i++) store.addOrphan(`m-orphan-${i}`, "test", 0);
    });
  });
}

describe("the worst alarm and request stay under the documented subrequest limit", () => {
  it("a run alarm at the configured maxima, with every Fly request answered 503 (each retried to its limit), stays under 10,000", async () => {
    const b = "worst-alarm";
    await seedWorst(b, 200, 60, 60);
    faults.serverErrorRate = 1;
    const measured = await runInDurableObject(stub(b), async (instance: BatchDO) => {
      const self = instance as unknown as { env: Env; lastAlarm: BatchDO["lastAlarm"] };
      const original = self.env;
      // The configured maxima: MAX_CONCURRENT_MACHINES and the fleet's limits at their ceilings, production's three regions.
      self.env = { ...original, MAX_CONCURRENT_MACHINES: "10000", FLEET_MAX_MACHINES: "100000", FLEET_MAX_VCPUS: "1000000", FLEET_MAX_MEMORY_MB: "100000000", FLY_REGIONS: "iad,ord,ams" };
      try {
        await instance.alarm();
      } finally {
        self.env = original;
      }
      return self.lastAlarm!;
    });
    // By hand, per alarm, every Fly request drawing its action's token from the FlyBudget first (a
    // DO RPC: a subrequest too): 50 destroys x 3 tries x 2; one list x 3 and 50 gets x 3, x 2; 40
    // creates, each 3 POSTs (the first on the fleet's grant, 2 retries drawing) and 2 look-ups of 3
    // tries between them, each drawing; the fleet's grant and the index row:
    // 300 + 306 + 40 x (3 + 2 + 12) + 2 = 1,288.
    const HAND_BOUND = 50 * 3 * 2 + (3 + 50 * 3) * 2 + 40 * (3 + 2 + 2 * 3 * 2) + 2;
    console.log(`worst run alarm: ${JSON.stringify(measured)} (hand bound ${HAND_BOUND}, limit ${PAID_SUBREQUESTS_PER_INVOCATION})`);
    expect(measured.subrequests).toBeGreaterThan(300);
    expect(measured.subrequests).toBeLessThanOrEqual(HAND_BOUND);
    expect(measured.subrequests).toBeLessThanOrEqual(PAID_SUBREQUESTS_PER_INVOCATION);
    expect(measured.peak_in_flight).toBeLessThanOrEqual(MAX_CONNECTIONS);
    expect(world.fly.requests.filter((r) => r.status === 503).length).toBeGreaterThan(300);
  });

  it(`a callback naming 1,000 outputs makes exactly one storage read per output (its first bytes): ${MAX_PAGES_PER_TASK} outputs (the contract's most) stay under the limit`, async () => {
    const b = "worst-callback";
    await seedWorst(b, 0, 1, 0);
    const task = "tiff-000000";
    const pages = 1000;
    const keys = Array.from({ length: pages }, (_, i) => (i === 0 ? `${b}/s0.jpg` : `${b}/s0-p${String(i + 1).padStart(3, "0")}.jpg`));
    await withStore(b, (store) => store.transaction(() => keys.slice(1).forEach((k, i) => store.reserveOutput(k, task, i + 2))));
    // Each a JPEG of the reported size and dimensions (a success counts only on that evidence), its frame header in the first read.
    const jpeg = jpegBytes(OUTPUT_WIDTH, OUTPUT_HEIGHT);
    for (let i = 0; i < keys.length; i += 100) await Promise.all(keys.slice(i, i + 100).map((k) => env.BUCKET.put(k, jpeg)));
    const outbounds: Outbound[] = [];
    await runInDurableObject(stub(b), (instance: BatchDO) => {
      const self = instance as unknown as { engine: (deadline?: number) => Engine };
      const make = self.engine.bind(instance);
      self.engine = (deadline) => {
        const e = make(deadline);
        outbounds.push(e.outbound);
        return e;
      };
    });
    const body = {
      task_id: task,
      batch_id: b,
      status: "success",
      output_r2_key: keys[0],
      output_file_name: "s0.jpg",
      output_file_size: OUTPUT_SIZE,
      width: OUTPUT_WIDTH,
      height: OUTPUT_HEIGHT,
      outputs: keys.map((k) => ({ r2_key: k, file_name: k.slice(k.lastIndexOf("/") + 1), file_size: OUTPUT_SIZE, width: OUTPUT_WIDTH, height: OUTPUT_HEIGHT })),
    };
    const res = await callbackTo(b, task, body, await attemptToken(b, task, 1));
    expect(res.status).toBe(200);
    const used = outbounds.map((o) => o.used).reduce((a, n) => a + n, 0);
    console.log(`callback with ${pages} outputs: ${used} subrequests, peak ${Math.max(...outbounds.map((o) => o.peakInFlight))} in flight`);
    expect(used).toBe(pages);
    expect(Math.max(...outbounds.map((o) => o.peakInFlight))).toBeLessThanOrEqual(MAX_CONNECTIONS);
    expect((used / pages) * MAX_PAGES_PER_TASK).toBeLessThanOrEqual(PAID_SUBREQUESTS_PER_INVOCATION);
    await withStore(b, (store: BatchStore) => expect(store.getTask(task)!.state).toBe("done"));
  });
});
