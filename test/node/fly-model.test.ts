// Fly's CPU model and prices (shared/fly-model.ts) and the sizing built on them
// (orchestrator/engine/sizing.ts): pure functions, checked against figures worked by hand.
import { describe, expect, it } from "vitest";
import { chooseGuest, guestOf, poolByDefault, sizePool, type TaskWork } from "../../orchestrator/engine/sizing.ts";
import { simulatedDuration } from "../../local/fly-emulator/server.ts";
import type { RunnerMachine } from "../../local/fly-emulator/runner.ts";
import { guestFor, tiffWork } from "../../orchestrator/phases/tiff-conversion.ts";
import { conversionWallS, FLY_CPU, initialBalanceS, MachineModel, pricePerSecond, sizeError, type Guest } from "../../shared/fly-model.ts";

const shared1: Guest = { cpu_kind: "shared", cpus: 1, memory_mb: 1024 };
const perf1: Guest = { cpu_kind: "performance", cpus: 1, memory_mb: 2048 };
const MB = 1024 * 1024;

describe("Fly's CPU model", () => {
  it("is the documented table: 5 ms per 80 ms on shared vCPUs, 100% on performance", () => {
    expect(FLY_CPU.shared.quotaMs / FLY_CPU.periodMs).toBe(0.0625);
    expect(FLY_CPU.performance.quotaMs / FLY_CPU.periodMs).toBe(1);
    expect(initialBalanceS(shared1)).toBe(5);
    expect(initialBalanceS(perf1)).toBe(0);
  });

  it("a 14 CPU-s encode on a fresh shared-cpu-1x bursts ~5.3 s, then runs at 1/16: minutes, not seconds", () => {
    const r = conversionWallS({ cpuS: 14, parallelism: 1, guest: shared1 });
    // Burst: balance 5 s drains at 1 − 1/16 per second → 5.333 s doing 5.333 CPU-s; the rest at 0.0625.
    const burst = 5 / (1 - 1 / 16);
    expect(r.wallS).toBeCloseTo(burst + (14 - burst) * 16, 6);
    expect(r.wallS).toBeGreaterThan(140);
    expect(r.balanceAfterS).toBe(0);
  });

  it("performance vCPUs never throttle; work that fits the balance runs at full speed", () => {
    expect(conversionWallS({ cpuS: 14, parallelism: 1, guest: perf1 })).toEqual({ wallS: 14, throttledS: 0, balanceAfterS: 0 });
    const small = conversionWallS({ cpuS: 3, parallelism: 1, guest: shared1 });
    expect(small.wallS).toBe(3);
    expect(small.throttledS).toBe(0);
    expect(small.balanceAfterS).toBeCloseTo(5 - 3 * (15 / 16), 9);
  });

  it("slots share the machine's CPUs and its pooled quota", () => {
    const g: Guest = { cpu_kind: "performance", cpus: 2, memory_mb: 4096 };
    // Four one-thread tasks on two CPUs: each gets half a CPU.
    expect(conversionWallS({ cpuS: 10, parallelism: 1, guest: g, sharers: 4 }).wallS).toBe(20);
    // shared-cpu-8x with no balance: 8 × 1/16 = half a CPU, split over 2 tasks.
    const s8: Guest = { cpu_kind: "shared", cpus: 8, memory_mb: 2048 };
    expect(conversionWallS({ cpuS: 1, parallelism: 1, guest: s8, sharers: 2, balanceS: 0 }).wallS).toBeCloseTo(4, 9);
  });

  it("the fluid machine model agrees with the closed form, and shares its network", () => {
    const m = new MachineModel(shared1, { netBytesPerS: 100e6, nowS: 0 });
    m.add("a", [{ kind: "net", bytes: 200e6 }, { kind: "cpu", cpuS: 14, parallelism: 1 }], 0);
    m.add("b", [{ kind: "net", bytes: 100e6 }], 0);
    const ends: Record<string, number> = {};
    for (let t = m.nextEventS(); t !== null; t = m.nextEventS()) {
      m.advance(t);
      for (const id of m.takeFinished()) ends[id] = t;
    }
    // Both download at 50 MB/s until b is done at 2 s; a then has 100 MB alone at 100 MB/s.
    expect(ends.b).toBeCloseTo(2, 9);
    // a's CPU stage starts at 3 s with the 5 s balance plus what the idle CPU accrued for 3 s.
    const balance = 5 + 3 * (1 / 16);
    const cpu = conversionWallS({ cpuS: 14, parallelism: 1, guest: shared1, balanceS: balance });
    expect(ends.a).toBeCloseTo(3 + cpu.wallS, 6);
    expect(m.cpuSpentS).toBeCloseTo(14, 6);
  });
});

describe("the emulator's simulate mode", () => {
  it("runs a machine for its CPU-seconds under the CPU model of its guest", () => {
    const duration = simulatedDuration({ cpuSeconds: 14 });
    if (typeof duration !== "function") throw new Error("expected a per-machine duration");
    const machine = (guest: Guest) => ({ guest }) as RunnerMachine;
    expect(duration(machine(perf1))).toBe(14_000);
    expect(duration(machine(shared1))).toBe(Math.round(conversionWallS({ cpuS: 14, parallelism: 1, guest: shared1 }).wallS * 1000));
    expect(duration(machine(shared1))).toBeGreaterThan(140_000);
    expect(simulatedDuration({ durationMs: 250 })).toBe(250);
  });
});

describe("Fly's prices", () => {
  it("match the published per-second figures (monthly / 30 days)", () => {
    // fly.io: shared-cpu-1x 1 GB $5.70/month ($0.0000022/s), performance-1x 2 GB $31/month ($0.0000120/s).
    expect(pricePerSecond(shared1) * 2_592_000).toBeCloseTo(5.69, 2);
    expect(pricePerSecond(perf1)).toBeCloseTo(0.000012, 7);
    expect(pricePerSecond({ cpu_kind: "performance", cpus: 1, memory_mb: 4096 }) * 2_592_000).toBeCloseTo(41.0, 2);
  });

  it("Fly's size rules", () => {
    expect(sizeError(perf1)).toBeNull();
    expect(sizeError({ cpu_kind: "performance", cpus: 1, memory_mb: 1024 })).toMatch(/2048–8192/);
    expect(sizeError({ cpu_kind: "shared", cpus: 3, memory_mb: 1024 })).toMatch(/cpus/);
    expect(guestOf("performance", 2, 1000)).toEqual({ cpu_kind: "performance", cpus: 2, memory_mb: 4096 });
    expect(guestOf("shared", 1, 3000)).toBeNull();
  });
});

describe("sizing", () => {
  it("a 100 MP scan gets a performance vCPU (faster and cheaper than a throttled shared one)", () => {
    const g = guestFor(242.6 * MB);
    expect(g).toEqual({ cpu_kind: "performance", cpus: 1, memory_mb: 2048 });
    expect(sizeError(g)).toBeNull();
    const w = tiffWork(242.6 * MB);
    const onShared = conversionWallS({ cpuS: w.cpuS, parallelism: 1, guest: { cpu_kind: "shared", cpus: 1, memory_mb: 1280 } });
    expect(onShared.throttledS).toBeGreaterThan(0);
  });

  it("a small scan that fits the burst balance stays on shared-cpu-1x", () => {
    expect(guestFor(10 * MB)).toEqual({ cpu_kind: "shared", cpus: 1, memory_mb: 768 });
  });

  it("`fast` never picks a guest that runs throttled; `cheapest` may", () => {
    const work: TaskWork = { cpuS: 60, parallelism: 1, memoryMb: 900, ioBytes: 0 };
    const fast = chooseGuest(work, "fast");
    const cheap = chooseGuest(work, "cheapest");
    expect(fast.throttledS).toBe(0);
    expect(cheap.costUsd).toBeLessThanOrEqual(fast.costUsd);
    for (const c of [fast, cheap]) expect(sizeError(c.guest)).toBeNull();
  });

  it("pool auto-size: several slots on performance machines for a big batch, within the cost margin", () => {
    const input = { tasks: 10_000, work: tiffWork(242.6 * MB), maxMachines: 50, createPerS: 1, createBurst: 3, bootS: 5 };
    const p = sizePool(input);
    expect(p.slots).toBeGreaterThan(1);
    expect(p.machines).toBe(50);
    expect(p.guest.cpu_kind).toBe("performance");
    expect(sizeError(p.guest)).toBeNull();
    expect(p.perSlotMb).toBeGreaterThanOrEqual(input.work.memoryMb);
    const allowed = p.considered.filter((c) => !c.throttled);
    const cheapest = Math.min(...allowed.map((c) => c.costUsd));
    expect(p.costUsd).toBeLessThanOrEqual(cheapest * 1.1 + 1e-9);
    // Nothing within the margin finishes sooner.
    for (const c of allowed) if (c.costUsd <= cheapest * 1.1) expect(c.makespanS).toBeGreaterThanOrEqual(p.makespanS - 1e-6);
  });

  it("pool auto-size: a handful of tasks gets no more machines than it has tasks; fixed slots are kept", () => {
    const p = sizePool({ tasks: 3, work: tiffWork(242.6 * MB), maxMachines: 50, createPerS: 1, createBurst: 3, bootS: 5 });
    expect(p.machines * p.slots).toBeGreaterThanOrEqual(3);
    expect(p.machines).toBeLessThanOrEqual(3);
    expect(sizePool({ tasks: 100, work: tiffWork(242.6 * MB), maxMachines: 50, createPerS: 1, createBurst: 3, bootS: 5, slots: 8 }).slots).toBe(8);
  });

  it("the message's pool flag wins over POOL_MODE", () => {
    expect(poolByDefault(undefined, true)).toBe(true);
    expect(poolByDefault(false, true)).toBe(false);
    expect(poolByDefault(true, false)).toBe(true);
  });
});
