// The fleet, measured: batches at once through the real engine (each its BatchDO, alarms, leases,
// callbacks) and the real fleet (the FlyBudget DO), on the emulator with Fly's CPU model, in
// virtual time (sim-machines.ts). Three scenarios (issue 24):
//   (a) a 10-scan batch submitted 5 minutes after a 10,000-scan batch starts, each also alone;
//   (b) five batches of 10 to 5,000 scans at once, one with priority 3;
//   (c) three batches under a fleet limit that binds (64 vCPUs).
// Every SAMPLE_S of virtual time the bench records what each batch holds on the emulator (live
// machines, vCPUs, memory, by the machines' metadata) and whether it has work waiting (tasks
// pending or retrying), and the emulator's peak of live resources against the fleet's limits.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { inject, it, vi } from "vitest";
import { z } from "zod";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { jain, type Resources } from "../../orchestrator/fly/fleet.ts";
import { getStatus, installWorld, stub } from "../../test/workers/support/engine.ts";
import { CREATE, DispatchRunner, SimClock, SimPoolRunner, START, type TaskShape, TimedRunner } from "./sim-machines.ts";
import { alarmStep, resetFlyBudget } from "./steps.ts";
import { progress, putManifest, quietEngineLogs, report } from "./support.ts";

declare module "vitest" {
  export interface ProvidedContext {
    fleet: { cpuS: number; bootDelayMs: number; fileBytes: number; outBytes: number; netBytesPerS: number; rttS: number; scale: number; scenarios: string[] };
  }
}


const SAMPLE_S = 5;

interface BatchPlan {
  id: string;
  scans: number;
  /** Virtual seconds after the scenario starts. */
  atS: number;
  priority?: number;
}

/** One sample: per batch its holdings, whether work waits and whether it wants more machines than it holds; the fleet's total. */
interface Sample {
  t: number;
  batches: Record<string, { running: boolean; waiting_work: boolean; wants_more: boolean; live: Resources }>;
  total: Resources;
}

export interface BatchFigure {
  id: string;
  scans: number;
  priority: number;
  submitted_s: number;
  makespan_s: number;
  status: string;
  machines: number;
  guest: string;
}

const LiveMachine = z.object({
  state: z.string(),
  config: z.object({ guest: z.object({ cpus: z.number(), memory_mb: z.number(), cpu_kind: z.string() }), metadata: z.record(z.string(), z.string()), env: z.record(z.string(), z.string()) }),
});

/** Runs the batches in one fleet of `limits`, sampling as it goes; every batch must end DONE. */
async function simulateFleet(name: string, plans: BatchPlan[], limits: Resources, task: TaskShape, bootDelayMs: number, fileBytes: number) {
  await resetFlyBudget();
  const clock = new SimClock();
  clock.set(START);
  // Each batch runs the plan its sizing picks: a pool, or one machine per task (a small batch may).
  const runner = new DispatchRunner(new TimedRunner(clock, task, false), new SimPoolRunner(clock, task));
  const world = installWorld({ runner, clock, rateLimits: { create: CREATE }, faults: { bootDelayMs }, maxLiveMachines: 10_000 });
  const real0 = performance.now();
  const samples: Sample[] = [];
  try {
    const manifests = new Map<string, string>();
    for (const p of plans) {
      manifests.set(p.id, await putManifest(p.id, p.scans, fileBytes));
      await runInDurableObject(stub(p.id), (instance: BatchDO) => {
        const self = instance as unknown as { env: Env };
        self.env = { ...self.env, FLEET_MAX_MACHINES: String(limits.machines), FLEET_MAX_VCPUS: String(limits.vcpus), FLEET_MAX_MEMORY_MB: String(limits.memory_mb) };
      });
    }
    const starts = [...plans].sort((a, b) => a.atS - b.atS);
    const alarms = new Map<string, number | null>();
    const started = new Set<string>();
    let nextSample = START;
    let steps = 0;
    for (;;) {
      if (++steps % 5000 === 0) progress(`    (${name}: virtual ${((clock.now() - START) / 1000).toFixed(0)} s, ${steps} steps)`);
      const startAt = starts.length > 0 ? START + starts[0].atS * 1000 : Infinity;
      const emulatorAt = clock.nextAt() ?? Infinity;
      const [alarmId, alarmAt] = [...alarms].reduce<[string | null, number]>((best, [id, at]) => (at !== null && at < best[1] ? [id, at] : best), [null, Infinity]);
      const at = Math.min(startAt, emulatorAt, alarmAt);
      if (at === Infinity) break;
      clock.set(Math.max(clock.now(), at));
      while (nextSample <= clock.now()) {
        samples.push(await sample(world.fly.machines(), plans, started, nextSample, limits));
        nextSample += SAMPLE_S * 1000;
      }
      if (startAt <= clock.now()) {
        const p = starts.shift()!;
        await stub(p.id).start({ batch_id: p.id, manifest_r2_key: manifests.get(p.id)!, ...(p.priority ? { priority: p.priority } : {}) });
        started.add(p.id);
        alarms.set(p.id, clock.now());
        continue;
      }
      if (emulatorAt <= clock.now()) {
        clock.fireDue();
        // Callbacks and leases reach the DOs (a callback may bring an alarm forward): let them land first.
        if (await runner.settle()) for (const id of started) alarms.set(id, (await alarmStep(id, -1)).next);
        continue;
      }
      const step = await alarmStep(alarmId!, clock.now());
      alarms.set(alarmId!, step.next);
    }
    const figures: BatchFigure[] = [];
    for (const p of plans) {
      const s = await getStatus(p.id);
      if (s.status !== "DONE" || s.progress.tasks_completed !== p.scans) throw new Error(`${name}: ${p.id} ended ${s.status}: ${JSON.stringify(s.progress)} ${s.error ?? ""}`);
      const mine = world.fly.machines().map((m) => LiveMachine.parse(m)).filter((m) => m.config.metadata.fanout_batch === p.id);
      const g = mine[0]?.config.guest;
      figures.push({
        id: p.id,
        scans: p.scans,
        priority: p.priority ?? 1,
        submitted_s: p.atS,
        makespan_s: (Date.parse(s.completed_at!) - Date.parse(s.started_at)) / 1000,
        status: s.status,
        machines: mine.length,
        guest: g ? (mine[0].config.env.POOL_MODE === "true" ? `${g.cpu_kind}-${g.cpus}x ${g.memory_mb} MB, ${mine[0].config.env.POOL_CONCURRENCY ?? "1"} slot(s)` : `one ${g.cpu_kind}-${g.cpus}x ${g.memory_mb} MB machine per task`) : "-",
      });
    }
    const usage = world.fly.usage();
    return { name, limits, figures, samples, peak: usage.peak, real_s: (performance.now() - real0) / 1000, creates_429: world.fly.requests.filter((r) => r.status === 429).length };
  } finally {
    await world.restore();
  }
}

/** What each batch holds on the emulator now, and whether its work waits. */
async function sample(machines: Record<string, unknown>[], plans: BatchPlan[], started: Set<string>, t: number, limits: Resources): Promise<Sample> {
  const batches: Sample["batches"] = {};
  const total: Resources = { machines: 0, vcpus: 0, memory_mb: 0 };
  for (const p of plans) batches[p.id] = { running: false, waiting_work: false, wants_more: false, live: { machines: 0, vcpus: 0, memory_mb: 0 } };
  // What each batch could use (its demand, as it last told the fleet) against what it holds.
  const rate = { perSecond: 1, burst: 3 };
  const fleet = await env.FLY_BUDGET.getByName(env.FLY_APP_NAME).snapshot(limits, { create: rate, list: rate, get: rate, destroy: rate });
  for (const b of fleet.batches) if (batches[b.batch_id]) batches[b.batch_id].wants_more = b.demand > b.live.machines;
  for (const view of machines) {
    const m = LiveMachine.parse(view);
    if (m.state === "destroyed") continue;
    const b = batches[m.config.metadata.fanout_batch];
    for (const into of b ? [b.live, total] : [total]) {
      into.machines++;
      into.vcpus += m.config.guest.cpus;
      into.memory_mb += m.config.guest.memory_mb;
    }
  }
  for (const id of started) {
    const s = await getStatus(id);
    batches[id].running = s.status !== "DONE" && s.status !== "FAILED" && s.status !== "ERROR";
    batches[id].waiting_work = batches[id].running && s.progress.pending + s.progress.retrying > 0;
  }
  return { t: (t - START) / 1000, batches, total };
}

/**
 * Fairness while `when` holds, averaged over the samples: Jain's index of vCPUs per weight among the
 * batches contending for machines (work waiting and wanting more machines than they hold: a batch
 * whose demand is met is not short of its share), and the priority batch's vCPUs against an equal one's.
 */
function fairness(samples: Sample[], plans: BatchPlan[], when: (s: Sample) => boolean) {
  const weight = (id: string) => plans.find((p) => p.id === id)?.priority ?? 1;
  const picked = samples.filter(when);
  const jains: number[] = [];
  const ratios: number[] = [];
  for (const s of picked) {
    const contending = Object.entries(s.batches).filter(([, b]) => b.waiting_work && b.wants_more);
    if (contending.length < 2) continue;
    jains.push(jain(contending.map(([id, b]) => b.live.vcpus / weight(id))));
    const heavy = contending.filter(([id]) => weight(id) > 1);
    const equal = contending.filter(([id]) => weight(id) === 1);
    if (heavy.length === 1 && equal.length > 0) ratios.push(heavy[0][1].live.vcpus / (equal.reduce((n, [, b]) => n + b.live.vcpus, 0) / equal.length));
  }
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
  return { samples: picked.length, contended_samples: jains.length, jain_mean: mean(jains), jain_min: jains.length ? Math.min(...jains) : Number.NaN, priority_ratio_mean: mean(ratios) };
}

/** The fleet's use of its binding resource while any batch has work waiting. */
function utilisation(samples: Sample[], limits: Resources) {
  const use = (s: Sample) => Math.max(s.total.machines / limits.machines, s.total.vcpus / limits.vcpus, s.total.memory_mb / limits.memory_mb);
  const waiting = samples.filter((s) => Object.values(s.batches).some((b) => b.waiting_work));
  const firstFull = waiting.findIndex((s) => use(s) >= 0.9);
  const after = firstFull >= 0 ? waiting.slice(firstFull) : [];
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
  return { waiting_samples: waiting.length, mean_while_work_waits: mean(waiting.map(use)), mean_after_ramp: mean(after.map(use)), ramp_s: firstFull >= 0 ? waiting[firstFull].t - waiting[0].t : Number.NaN, min_after_ramp: after.length ? Math.min(...after.map(use)) : Number.NaN };
}

it("fleet", async () => {
  const { cpuS, bootDelayMs, fileBytes, outBytes, netBytesPerS, rttS, scale, scenarios } = inject("fleet");
  const task: TaskShape = { cpuS, megapixels: 100, inBytes: fileBytes, outBytes, netBytesPerS, rttS };
  const n = (x: number) => Math.max(1, Math.round(x * scale));
  const restore = quietEngineLogs();
  vi.useFakeTimers({ toFake: ["Date"] });
  const run = async (name: string, plans: BatchPlan[], limits: Resources) => {
    const r = await simulateFleet(name, plans, limits, task, bootDelayMs, fileBytes);
    progress(`  fleet ${name}: ${r.figures.map((f) => `${f.id} ${f.scans} scans ${f.makespan_s.toFixed(0)} s`).join(", ")} (peak ${r.peak.machines} machines, ${r.peak.vcpus} vCPUs; ${r.real_s.toFixed(1)} s real)`);
    return r;
  };
  // The production fleet for (a) and (b): 50 machines, 200 vCPUs, 400 GB (50 performance-4x 8 GB machines).
  const wide: Resources = { machines: 50, vcpus: 200, memory_mb: 409_600 };
  const scenarioA = async () => {
    const large: BatchPlan = { id: "fleet-a-large", scans: n(10_000), atS: 0 };
    const small: BatchPlan = { id: "fleet-a-small", scans: 10, atS: 300 * Math.min(1, scale * 10) };
    const together = await run("a: together", [large, small], wide);
    const largeAlone = await run("a: large alone", [{ ...large, id: "fleet-a-large-alone" }], wide);
    const smallAlone = await run("a: small alone", [{ ...small, id: "fleet-a-small-alone", atS: 0 }], wide);
    return {
      together: together.figures,
      large_alone_s: largeAlone.figures[0].makespan_s,
      small_alone_s: smallAlone.figures[0].makespan_s,
      large_ratio: together.figures[0].makespan_s / largeAlone.figures[0].makespan_s,
      small_ratio: together.figures[1].makespan_s / smallAlone.figures[0].makespan_s,
      peak: together.peak,
      limits: wide,
      real_s: together.real_s + largeAlone.real_s + smallAlone.real_s,
    };
  };
  const scenarioB = async () => {
    const five: BatchPlan[] = [10, 100, 500, 1000, 5000].map((s, i) => ({ id: `fleet-b-${s}`, scans: n(s), atS: 0, ...(i === 3 ? { priority: 3 } : {}) }));
    const b5 = await run("b: five at once", five, wide);
    const allRun = (s: Sample) => five.every((p) => s.batches[p.id].running);
    return { figures: b5.figures, all_five: fairness(b5.samples, five, allRun), whole_run: fairness(b5.samples, five, () => true), peak: b5.peak, limits: wide, real_s: b5.real_s, samples: b5.samples.filter(allRun) };
  };
  const scenarioC = async () => {
    // 64 vCPUs bind: 16 performance-4x machines for three batches that would each take 50.
    const tight: Resources = { machines: 50, vcpus: 64, memory_mb: 409_600 };
    const three: BatchPlan[] = [3000, 1000, 1000].map((s, i) => ({ id: `fleet-c-${i}`, scans: n(s), atS: 0 }));
    const c3 = await run("c: a binding limit", three, tight);
    const exceeded = c3.peak.vcpus > tight.vcpus || c3.peak.machines > tight.machines || c3.peak.memory_mb > tight.memory_mb;
    return { figures: c3.figures, utilisation: utilisation(c3.samples, tight), peak: c3.peak, limits: tight, exceeded, real_s: c3.real_s };
  };
  try {
    const a = scenarios.includes("a") ? await scenarioA() : null;
    const b = scenarios.includes("b") ? await scenarioB() : null;
    const c = scenarios.includes("c") ? await scenarioC() : null;
    report("fleet", { scale, a, b, c });
  } finally {
    vi.useRealTimers();
    restore();
  }
});
