// 300 small TIFFs through the local stack while the Fly API and the machines misbehave:
// 10% of creates answered 429, 5% of API requests 503, every create in the first region
// (iad) refused for capacity, 5% of machines killed before they call back, and 10% of
// callbacks delivered twice. The batch must still finish with nothing lost or double-counted.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../local/paths.ts";
import {
  BACKSTOP_MS,
  expectedJpegKeys,
  flyFigures,
  jpegKeys,
  orchestratorEvents,
  startE2EStack,
  submitSamples,
  waitNoLiveMachines,
  watchToEnd,
  type E2EStack,
} from "./support/stack.ts";

const TASKS = 300;
const batchId = "e2e-faults-300";

// Every way an attempt may fail in this run, and the fault that causes it.
const EXPLAINED = [
  /^machine [0-9a-f]+ exited without calling back$/, // die-silently fault
  /^no capacity: /, // capacity in every region tried (iad refused + 503s elsewhere)
  /^machine create got no answer and no machine was found$/, // 503 on create, machine not made
  // Not a boot timeout: no boot delay is injected, so a machine that "did not start" is a defect.
];

describe("300 TIFFs under injected faults", () => {
  let stack: E2EStack;

  beforeAll(async () => {
    stack = await startE2EStack({
      seed: 42,
      vars: {
        FLY_CREATE_RATE_PER_SECOND: "20",
        FLY_CREATE_BURST: "20",
        MAX_CONCURRENT_MACHINES: "8",
        MAX_RETRY_ATTEMPTS: "4",
        FLY_REGIONS: "iad,ord,ams",
      },
      emulator: {
        createLimit: { perSecond: 20, burst: 20 },
        faults: {
          createRateLimitRate: 0.1,
          serverErrorRate: 0.05,
          dieSilentlyRate: 0.05,
          capacityErrorsByRegion: { iad: 1 },
        },
      },
      duplicateCallbackRate: 0.1,
    });
  });
  afterAll(async () => {
    await stack?.dispose();
  });

  it("finishes DONE with 0 lost tasks, exact counters, every failure explained, no machine left", async () => {
    const { samples, submitted } = await submitSamples(stack, batchId, { count: TASKS, width: 96, height: 72, perFolder: 50 });
    const started = Date.now();
    // Fails on no progress (counts by state in the message), never on a wall-clock budget.
    const { final, stalled } = await watchToEnd(stack, batchId, 1000);
    const wallMs = Date.now() - started;
    await stack.proxy!.settled();
    const alive = await waitNoLiveMachines(stack);

    // Figures first, so a failing run still reports them.
    const events = orchestratorEvents(stack);
    const attemptFailures = events.filter((e) => e.event === "task_retry" || e.event === "task_failed");
    const duplicates = stack.proxy!.duplicates();
    const machines = stack.machines.list();
    const silent = machines.filter((m) => m.diedSilently);
    const done = await stack.api.allTasks(batchId, "done");
    const jpegs = await jpegKeys(stack, submitted.prefix);
    const figures = {
      tasks: TASKS,
      status: final.status,
      stalled,
      progress: final.progress,
      wall_ms: wallMs,
      ...flyFigures(stack),
      machines_died_silently: silent.length,
      callbacks_received: stack.proxy!.received(),
      duplicate_callbacks: duplicates.length,
      duplicates_ignored: duplicates.filter((d) => d.duplicateOutcome === "ignored").length,
      attempt_failures: attemptFailures.length,
      retries: events.filter((e) => e.event === "task_retry").length,
      tasks_failed_for_good: events.filter((e) => e.event === "task_failed").length,
      rate_limited_events: events.filter((e) => e.event === "rate_limited").length,
      failure_reasons: countBy(attemptFailures.map((e) => String(e.error).replace(/[0-9a-f]{14}/g, "<id>").replace(/\(.*\)$/, "(…)"))),
      lost_tasks: TASKS - final.progress.tasks_completed - final.progress.tasks_failed,
      jpegs_in_s3: jpegs.length,
      machines_alive_at_end: alive.live,
      machine_processes_at_end: alive.pids.length,
    };
    await mkdir(join(REPO_ROOT, ".local"), { recursive: true });
    await writeFile(join(REPO_ROOT, ".local", "e2e-fault-figures.json"), `${JSON.stringify(figures, null, 2)}\n`);
    console.log(`[e2e] fault run figures ${JSON.stringify(figures)}`);

    expect(stalled, "the batch stopped making progress (figures written to .local/e2e-fault-figures.json)").toBeNull();
    expect(final.status).toBe("DONE");
    expect(final.progress).toMatchObject({
      tasks_total: TASKS,
      tasks_completed: TASKS,
      tasks_failed: 0,
      pending: 0,
      starting: 0,
      running: 0,
      retrying: 0,
    });
    expect(figures.lost_tasks).toBe(0);
    expect(done).toHaveLength(TASKS);
    expect(new Set(done.map((t) => t.task_id)).size).toBe(TASKS);
    expect(jpegs.sort()).toEqual(expectedJpegKeys(submitted.prefix, samples));

    // The faults really happened…
    expect(figures.create_429).toBeGreaterThan(0);
    expect(figures.responses_5xx).toBeGreaterThan(0);
    expect(figures.create_capacity_422).toBeGreaterThan(0);
    expect(silent.length).toBeGreaterThan(0);
    expect(duplicates.length).toBeGreaterThan(0);
    // …no machine ran in the refused region…
    expect(machines.filter((m) => m.region === "iad")).toEqual([]);
    // …every duplicate callback was recognised and changed nothing…
    expect(duplicates.filter((d) => d.duplicateOutcome !== "ignored")).toEqual([]);
    // …every silent death was noticed and its task retried on another machine…
    const failedMachines = new Set(attemptFailures.map((e) => e.machine_id));
    expect(silent.filter((m) => !failedMachines.has(m.id)).map((m) => m.id)).toEqual([]);
    for (const m of silent) expect(done.find((t) => t.task_id === m.taskId)?.machine_id).not.toBe(m.id);
    // …and every failed attempt has a reason that one of the injected faults explains.
    const unexplained = attemptFailures.filter((e) => !EXPLAINED.some((re) => re.test(String(e.error))));
    expect(unexplained).toEqual([]);
    // Every machine that exited without converting is one of those explained failures.
    const unconverted = machines.filter((m) => m.totalTimeMs === null).map((m) => m.id);
    expect(unconverted.filter((id) => !failedMachines.has(id))).toEqual([]);
    expect(alive).toEqual({ live: 0, pids: [] });
  }, BACKSTOP_MS);
});

function countBy(values: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}
