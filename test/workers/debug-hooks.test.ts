import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../orchestrator/index.ts";

const evictUrl = "http://orchestrator.test/admin/debug/evict-fly-budget";
const asAdmin = { method: "POST", headers: { authorization: "Bearer test-admin-token" } };

describe("debug hook: evict the FlyBudget DO (the soak's budget eviction)", () => {
  it("is off unless DEBUG_HOOKS=true, and needs the admin token either way", async () => {
    const off = await worker.fetch(new Request(evictUrl, asAdmin), env);
    expect(off.status).toBe(404);
    expect(await off.json()).toMatchObject({ error: expect.stringMatching(/DEBUG_HOOKS=true/) });
    const on = { ...env, DEBUG_HOOKS: "true" } as Env;
    expect((await worker.fetch(new Request(evictUrl, { method: "POST" }), on)).status).toBe(401);
    expect((await worker.fetch(new Request(evictUrl, { method: "POST", headers: { authorization: "Bearer wrong" } }), on)).status).toBe(401);
  });
  // The eviction itself is shown by `npm run soak` (abort() inside vitest's shared isolate surfaces
  // as an unhandled `durableObjectReset` error, so it is not exercised here).
});
