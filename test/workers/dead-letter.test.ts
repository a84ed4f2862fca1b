import { env, exports } from "cloudflare:workers";
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import worker from "../../orchestrator/index.ts";
import { ADMIN, getStatus, installWorld, putTiffs, waitForStatus, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
  world.runner.behaviour = () => "hang";
});
afterEach(async () => {
  await world.restore();
  vi.restoreAllMocks();
});

/**
 * The one fault injected here: the batch's Durable Object cannot take `start` (as when it is
 * overloaded or being reset by a deploy), so the consumer retries until the queue gives up.
 */
function failStartFor(batchId: string): { starts: () => number } {
  let starts = 0;
  const namespace = env.BATCH_DO;
  const real = namespace.getByName.bind(namespace);
  vi.spyOn(namespace, "getByName").mockImplementation((name: string) => {
    const stub = real(name);
    if (name !== batchId) return stub;
    return new Proxy(stub, {
      get(target, prop) {
        if (prop === "start") {
          return () => {
            starts++;
            return Promise.reject(new Error("Durable Object is overloaded (injected)"));
          };
        }
        return Reflect.get(target, prop) as unknown;
      },
    });
  });
  return { starts: () => starts };
}

describe("dead letters (fanout-batches-dlq)", () => {
  it("a message that exhausts its retries on the real queue reaches the DLQ consumer, which marks its batch ERROR", async () => {
    await putTiffs("dlq-exhausted/", 1);
    const fault = failStartFor("dlq-exhausted");
    const res = await exports.default.fetch("http://orchestrator.test/admin/batches", {
      method: "POST",
      headers: { ...ADMIN, "content-type": "application/json" },
      body: JSON.stringify({ batch_id: "dlq-exhausted", r2_prefix: "dlq-exhausted/" }),
    });
    expect(res.status).toBe(202);
    // maxRetries is 1 in the tests: a first delivery, one retry (after the consumer's 2 s backoff), then the DLQ.
    const s = await waitForStatus("dlq-exhausted", (x) => x.status === "ERROR", 30_000);
    expect(fault.starts()).toBe(2);
    expect(s.error).toMatch(/^queue message dead-lettered: /);
    expect(s.progress.tasks_total).toBe(0);
    const row = await env.BATCH_INDEX.prepare("SELECT status, error FROM batches WHERE batch_id = ?").bind("dlq-exhausted").first();
    expect(row).toMatchObject({ status: "ERROR", error: expect.stringMatching(/dead-lettered/) });
  });

  it("a dead letter for a batch an earlier message started does not stop it: the real queue round trip leaves a warning in its status", async () => {
    await putTiffs("dlq-running/", 1);
    await env.BATCH_DO.getByName("dlq-running").start({ batch_id: "dlq-running", r2_prefix: "dlq-running/" });
    await waitForStatus("dlq-running", (x) => x.progress.tasks_total === 1);
    const fault = failStartFor("dlq-running");
    const res = await exports.default.fetch("http://orchestrator.test/admin/batches", {
      method: "POST",
      headers: { ...ADMIN, "content-type": "application/json" },
      body: JSON.stringify({ batch_id: "dlq-running", r2_prefix: "dlq-running/" }),
    });
    expect(res.status).toBe(202);
    const s = await waitForStatus("dlq-running", (x) => x.warnings.some((w) => w.includes("dead-lettered")), 30_000);
    expect(fault.starts()).toBe(2);
    expect(s.status).toBe("TIFF_CONVERSION");
    expect(s.error).toBeNull();
    expect(s.warnings.find((w) => w.includes("dead-lettered"))).toMatch(/^queue message dead-lettered: .*; the batch had already been started and goes on$/);
  });

  it("a dead letter for a finished batch changes nothing; one without a batch_id is logged with its content", async () => {
    await env.BATCH_DO.getByName("dlq-finished").start({ batch_id: "dlq-finished", r2_prefix: "dlq-finished-empty/" });
    const before = await waitForStatus("dlq-finished", (x) => x.status === "DONE");
    const logs = vi.spyOn(console, "log");
    const batch = createMessageBatch("fanout-batches-dlq", [
      { id: "d1", timestamp: new Date(), attempts: 1, body: { batch_id: "dlq-finished", r2_prefix: "dlq-finished-empty/" } },
      { id: "d2", timestamp: new Date(), attempts: 1, body: { source: "ingest-v1", r2_prefix: "somewhere/" } },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, env, ctx);
    const result = await getQueueResult(batch, ctx);
    expect(result.explicitAcks.sort()).toEqual(["d1", "d2"]);
    const after = await getStatus("dlq-finished");
    expect(after.status).toBe("DONE");
    expect(after.warnings).toEqual(before.warnings);
    const lines = logs.mock.calls.map((c) => String(c[0]));
    expect(lines.find((l) => l.includes("dead_letter_for_finished_batch"))).toContain('"batch_id":"dlq-finished"');
    const orphan = lines.find((l) => l.startsWith("[DLQ]") && l.includes("dead_letter_without_batch"));
    expect(orphan).toContain("somewhere/");
    expect(orphan).toContain("ingest-v1");
  });

  it("staging's dead letter queue comes from its own config: a message on fanout-batches-staging-dlq marks its batch ERROR, and one on production's name is an ordinary message there", async () => {
    // The Worker as `wrangler deploy --env staging` runs it: its vars say which queue dead-letters.
    const staging = { ...env, DEAD_LETTER_QUEUE: "fanout-batches-staging-dlq" };
    const dead = createMessageBatch("fanout-batches-staging-dlq", [
      { id: "s1", timestamp: new Date(), attempts: 1, body: { batch_id: "dlq-staging", r2_prefix: "dlq-staging/" } },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(dead, staging, ctx);
    expect((await getQueueResult(dead, ctx)).explicitAcks).toEqual(["s1"]);
    const s = await getStatus("dlq-staging");
    expect(s.status).toBe("ERROR");
    expect(s.error).toMatch(/^queue message dead-lettered: fanout-batches-staging-dlq received it after the batch queue gave up retrying/);
    // Under staging, production's DLQ name is not a dead letter queue: the message starts its batch.
    await putTiffs("dlq-not-staging/", 1);
    const ordinary = createMessageBatch("fanout-batches-dlq", [
      { id: "s2", timestamp: new Date(), attempts: 1, body: { batch_id: "dlq-not-staging", r2_prefix: "dlq-not-staging/" } },
    ]);
    const ctx2 = createExecutionContext();
    await worker.queue(ordinary, staging, ctx2);
    expect((await getQueueResult(ordinary, ctx2)).explicitAcks).toEqual(["s2"]);
    expect((await getStatus("dlq-not-staging")).status).not.toBe("ERROR");
  });
});
