// GET /health checks the configuration (never echoing a value) and, with ?deep=1 and the admin
// token, the Fly API (the emulator), the storage (a real R2 binding / a real refused connection)
// and CALLBACK_BASE_URL (routed to this same Worker).
import { env, exports } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import worker from "../../orchestrator/index.ts";
import { FlyEmulator, emulatorFetch } from "../../local/fly-emulator/api.ts";

interface FakeFly {
  requests: FlyEmulator["requests"];
  restore(): Promise<void>;
}

const ADMIN = { authorization: `Bearer ${env.ADMIN_TOKEN}` };

type Report = { ok: boolean; deep: boolean; checks: { name: string; ok: boolean; severity?: string; problem?: string; fix?: string }[] };

async function get(path: string, envOverride: Partial<Env> = {}, headers: Record<string, string> = {}, origin = "http://orchestrator.test") {
  const res = await worker.fetch(new Request(`${origin}${path}`, { headers }), { ...env, ...envOverride } as Env);
  return { status: res.status, text: await res.text() };
}

let fly: FakeFly | undefined;
afterEach(async () => {
  await fly?.restore();
  fly = undefined;
  vi.restoreAllMocks();
});

/** The fake Fly API, and CALLBACK_BASE_URL routed back into this Worker. */
function world(token = env.FLY_API_TOKEN): FakeFly {
  const core = new FlyEmulator({ token, rateLimits: false });
  const routed = emulatorFetch(core);
  const original = globalThis.fetch;
  const spy = vi.spyOn(globalThis, "fetch").mockImplementation((input, init) => {
    const request = new Request(input, init);
    const host = new URL(request.url).host;
    if (host === "fly.test") return routed(request);
    if (host === "orchestrator.test") return exports.default.fetch(request);
    return original(request);
  });
  return {
    requests: core.requests,
    async restore() {
      spy.mockRestore();
      await core.stop();
    },
  };
}

describe("GET /health", () => {
  it("is 200 with every check listed when the configuration is valid", async () => {
    const { status, text } = await get("/health");
    expect(status).toBe(200);
    const body = JSON.parse(text) as Report;
    expect(body.ok).toBe(true);
    expect(body.checks.find((c) => c.name === "config")).toEqual({ name: "config", ok: true });
    // The test config's image is `:latest`: a warning, not a failure.
    expect(body.checks.find((c) => c.name === "fly_image")).toMatchObject({ ok: true, severity: "warning" });
  });

  it("is 503 naming a missing secret and a placeholder CALLBACK_BASE_URL, never echoing values", async () => {
    const missing = await get("/health", { FLY_API_TOKEN: "" });
    expect(missing.status).toBe(503);
    expect((JSON.parse(missing.text) as Report).checks[0]).toMatchObject({ name: "config", ok: false });
    expect(missing.text).toContain("FLY_API_TOKEN");

    const placeholder = await get("/health", { CALLBACK_BASE_URL: "https://fanout.example.workers.dev", FLY_API_TOKEN: "fm2_secretvalue123" });
    expect(placeholder.status).toBe(503);
    const body = JSON.parse(placeholder.text) as Report;
    expect(body.checks.find((c) => c.name === "callback_base_url")).toMatchObject({ ok: false, severity: "error" });
    expect(body.checks.find((c) => c.name === "fly_api_token")).toMatchObject({ ok: true, severity: "warning" });
    for (const value of ["fanout.example.workers.dev", "fm2_secretvalue123", env.ADMIN_TOKEN, env.CALLBACK_SECRET, env.R2_SECRET_ACCESS_KEY]) {
      expect(placeholder.text).not.toContain(value);
    }
  });
});

describe("GET /health?deep=1", () => {
  it("needs the admin token", async () => {
    expect((await get("/health?deep=1")).status).toBe(401);
    expect((await get("/health?deep=1", {}, { authorization: "Bearer nope" })).status).toBe(401);
  });

  it("lists machines on the Fly API, HEADs the bucket and reaches CALLBACK_BASE_URL", async () => {
    fly = world();
    // The machines' S3 endpoint: a real refused connection (nothing listens on port 9). Asked at
    // another origin than CALLBACK_BASE_URL, so the callback URL is fetched (routed to this Worker).
    const { status, text } = await get("/health?deep=1", { R2_ENDPOINT: "http://127.0.0.1:9" }, ADMIN, "http://admin-side.test");
    const body = JSON.parse(text) as Report;
    const by = Object.fromEntries(body.checks.map((c) => [c.name, c]));
    expect(by.fly_api).toEqual({ name: "fly_api", ok: true });
    expect(by.callback_reachable).toEqual({ name: "callback_reachable", ok: true });
    expect(by.storage_s3).toMatchObject({ ok: false, problem: expect.stringContaining("R2_ENDPOINT") });
    expect(status).toBe(503);
    expect(body.deep).toBe(true);
    const lists = fly.requests.filter((r) => r.method === "GET" && r.path.startsWith(`/v1/apps/${env.FLY_APP_NAME}/machines`));
    expect(lists).toHaveLength(1);

    // A CALLBACK_BASE_URL that answers, but not as this orchestrator.
    const elsewhere = await get("/health?deep=1", { R2_ENDPOINT: "http://127.0.0.1:9", CALLBACK_BASE_URL: "http://fly.test" }, ADMIN, "http://admin-side.test");
    const cb = (JSON.parse(elsewhere.text) as Report).checks.find((c) => c.name === "callback_reachable");
    expect(cb).toMatchObject({ severity: "warning", problem: expect.stringContaining("not this orchestrator") });
  });

  it("uses the R2 binding when no R2_ENDPOINT is set, and names a refused Fly token", async () => {
    fly = world("another-token");
    const { text } = await get("/health?deep=1", {}, ADMIN);
    const by = Object.fromEntries((JSON.parse(text) as Report).checks.map((c) => [c.name, c]));
    expect(by.storage_binding).toEqual({ name: "storage_binding", ok: true });
    expect(by.fly_api).toMatchObject({ ok: false, problem: expect.stringContaining("refused FLY_API_TOKEN"), fix: expect.stringContaining("fly tokens create deploy") });
    expect(text).not.toContain(env.FLY_API_TOKEN);
  });
});
