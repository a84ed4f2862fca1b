// The fleet's arithmetic (orchestrator/fly/fleet.ts, pure): weighted max-min fair shares over
// machines, vCPUs and memory, and the limits learned from Fly's quota refusals. Every expected
// value is worked out by hand in the comment beside it.
import { describe, expect, it } from "vitest";
import { type Claim, fairShares, grow, jain, learnRefusal, NOTHING_LEARNED, type Resources } from "../../orchestrator/fly/fleet.ts";

const small = { cpus: 1, memory_mb: 1024 };
const claim = (id: string, demand: number, over: Partial<Claim> = {}): Claim => ({ id, weight: 1, demand, guest: small, order: id.charCodeAt(0), ...over });
const limits = (machines: number, vcpus = 1_000, memory_mb = 1_000_000): Resources => ({ machines, vcpus, memory_mb });
const asObject = (m: Map<string, number>) => Object.fromEntries(m);

describe("fairShares", () => {
  it("splits a binding limit equally, and gives a batch that wants less all it wants", () => {
    // 10 machines, two batches wanting 8: 5 each. Wanting 2 and 20: 2, and the other 8.
    expect(asObject(fairShares([claim("a", 8), claim("b", 8)], limits(10)))).toEqual({ a: 5, b: 5 });
    expect(asObject(fairShares([claim("a", 2), claim("b", 20)], limits(10)))).toEqual({ a: 2, b: 8 });
    // Nothing binds: every batch gets its demand.
    expect(asObject(fairShares([claim("a", 3), claim("b", 4)], limits(50)))).toEqual({ a: 3, b: 4 });
  });

  it("weights shares by priority", () => {
    // Weights 3 and 1 over 8 machines: 6 and 2 (3:1).
    expect(asObject(fairShares([claim("a", 20, { weight: 3 }), claim("b", 20)], limits(8)))).toEqual({ a: 6, b: 2 });
    // Five batches, one of priority 3, 14 machines: 3 × 2 for it, 2 each for the rest (6 + 4 × 2 = 14).
    const five = fairShares([claim("a", 50, { weight: 3 }), claim("b", 50), claim("c", 50), claim("d", 50), claim("e", 50)], limits(14));
    expect(asObject(five)).toEqual({ a: 6, b: 2, c: 2, d: 2, e: 2 });
  });

  it("evens out vCPUs when machines differ in size, whichever limit binds", () => {
    // 16 vCPUs bind: equal vCPUs, 4·xa = xb and 4·xa + xb = 16 → xa = 2 (8 vCPUs), xb = 8 (8 vCPUs).
    const byVcpus = fairShares([claim("a", 10, { guest: { cpus: 4, memory_mb: 8192 } }), claim("b", 20)], limits(100, 16));
    expect(asObject(byVcpus)).toEqual({ a: 2, b: 8 });
    // 10 machines bind: still equal vCPUs, 4·xa = xb and xa + xb = 10 → xa = 2, xb = 8 (dominant
    // resource fairness would give 5 and 5 machines: 20 vCPUs against 5).
    const byMachines = fairShares([claim("a", 10, { guest: { cpus: 4, memory_mb: 8192 } }), claim("b", 20)], limits(10));
    expect(asObject(byMachines)).toEqual({ a: 2, b: 8 });
    // Weighted 3:1 over 10 one-vCPU machines (7.5 : 2.5 exactly): levels after each machine a 1/3, 2/3,
    // 1 (ties b's first, a joined first), b 1, a 4/3, 5/3, 2 (ties b's second), b 2, a 7/3, 8/3 → 8 and 2.
    expect(asObject(fairShares([claim("a", 20, { weight: 3 }), claim("b", 20)], limits(10)))).toEqual({ a: 8, b: 2 });
  });

  it("fills what a large machine no longer fits with smaller ones", () => {
    // 10 vCPUs: a (4 vCPUs each) gets 1 at level 0.4 (tie with b's 4th, a joined first); b gets
    // 6 (levels 0.1 … 0.6); a 2nd 4-vCPU machine would need 4 of the 2 left, so b's fill them.
    const shares = fairShares([claim("a", 5, { guest: { cpus: 4, memory_mb: 4096 } }), claim("b", 10)], limits(100, 10));
    expect(asObject(shares)).toEqual({ a: 1, b: 6 });
  });

  it("Jain's index: 1 when equal, 1/n when one batch has everything", () => {
    expect(jain([2, 2, 2])).toBe(1);
    expect(jain([1, 0])).toBe(0.5);
    expect(jain([3, 1])).toBeCloseTo(16 / 20, 12); // (3+1)² / (2 · (9+1))
  });
});

describe("learned limits", () => {
  const configured = limits(20, 64, 131_072);

  it("halve from what was live at a quota refusal, grow back fast to what fitted, then slowly, then go", () => {
    const t0 = 1_000_000;
    // 4 machines live when Fly refused the 5th: the machine limit halves to 2; 4 are known to fit.
    let l = learnRefusal(NOTHING_LEARNED, configured, "machines", { machines: 4, vcpus: 8, memory_mb: 8192 }, "machines limit", 0, t0);
    expect(l.limit).toEqual({ machines: 2 });
    expect(l.fitted).toEqual({ machines: 4 });
    expect(l.epoch).toBe(1);
    // Below what fitted: an eighth of it (rounded up to 1 machine) every 5 s.
    expect(grow(l, configured, t0 + 4_999).limit.machines).toBe(2);
    l = grow(l, configured, t0 + 5_000);
    expect(l.limit.machines).toBe(3);
    l = grow(l, configured, t0 + 10_000);
    expect(l.limit.machines).toBe(4);
    // At what fitted: the next step waits a minute (ceil(4/8) = 1 machine).
    expect(grow(l, configured, t0 + 69_999).limit.machines).toBe(4);
    l = grow(l, configured, t0 + 70_000);
    expect(l.limit.machines).toBe(5);
    // Growing to the configured limit drops what was learned.
    let t = t0 + 70_000;
    while (l.limit.machines !== undefined) l = grow(l, configured, (t += 60_000));
    expect(l.limit).toEqual({});
  });

  it("counts a refusal of creates granted before the last halving, but does not halve again", () => {
    const first = learnRefusal(NOTHING_LEARNED, configured, "vcpus", { machines: 3, vcpus: 12, memory_mb: 6144 }, "over the allowed quota", 0, 1);
    expect(first.limit).toEqual({ vcpus: 6 });
    const again = learnRefusal(first, configured, "vcpus", { machines: 3, vcpus: 12, memory_mb: 6144 }, "over the allowed quota", 0, 2);
    expect(again.limit).toEqual({ vcpus: 6 });
    expect(again.refusals).toBe(2);
    // Memory halves in whole 256 MB steps: 6144 / 2 = 3072.
    expect(learnRefusal(NOTHING_LEARNED, configured, "memory_mb", { machines: 3, vcpus: 12, memory_mb: 6144 }, "MB of memory", 0, 1).limit).toEqual({ memory_mb: 3072 });
  });
});
