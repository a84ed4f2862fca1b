import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

describe("FlyBudget: the create limit every batch of a Fly app shares", () => {
  it("hands out the burst, then one token per second, across callers", async () => {
    const budget = env.FLY_BUDGET.getByName("budget-app-1");
    const first = await budget.take(5, 1, 3);
    expect(first.granted).toBe(3);
    // A second batch asking at once gets nothing, and is told when the next token comes.
    const second = await budget.take(5, 1, 3);
    expect(second.granted).toBe(0);
    expect(second.next_at - Date.now()).toBeGreaterThan(800);
    expect(second.next_at - Date.now()).toBeLessThanOrEqual(1000);
  });

  it("a 429's Retry-After holds back every caller until it has passed", async () => {
    const budget = env.FLY_BUDGET.getByName("budget-app-2");
    const until = Date.now() + 60_000;
    await budget.block(until);
    expect(await budget.take(1, 1000, 100)).toEqual({ granted: 0, next_at: until });
  });

  it("apps do not share a budget", async () => {
    expect((await env.FLY_BUDGET.getByName("budget-app-3").take(3, 1, 3)).granted).toBe(3);
    expect((await env.FLY_BUDGET.getByName("budget-app-4").take(3, 1, 3)).granted).toBe(3);
  });
});
