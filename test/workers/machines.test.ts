// The Fly Machines client against the emulator core, inside workerd.
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { FlyApiError, type MachineSpec } from "../../orchestrator/fly/api.ts";
import { FlyMachines, type FlyClientOptions } from "../../orchestrator/fly/client.ts";
import { isCapacityError } from "../../orchestrator/fly/create-answer.ts";
import { backoffMs, parseRetryAfter } from "../../shared/backoff.ts";
import type { FlyEmulatorOptions } from "../../local/fly-emulator/api.ts";
import { ManualClock } from "../../local/fly-emulator/clock.ts";
import { SimulatedRunner } from "../../local/fly-emulator/runner.ts";
import { installFakeFly, type FakeFly } from "./support/fly.ts";

const APP = "fanout-worker";
const SECRET = "r2-secret-value-0123456789";

function spec(overrides: Partial<MachineSpec> = {}): MachineSpec {
  return {
    name: "fanout-b1-tiff-000001-a1",
    image: "registry.fly.io/fanout-worker:latest",
    guest: { cpu_kind: "shared", cpus: 2, memory_mb: 2048 },
    env: { TASK_ID: "tiff-000001", BATCH_ID: "b1", R2_SECRET_ACCESS_KEY: SECRET, CALLBACK_TOKEN: "cb-token-abcdef" },
    metadata: { batch_id: "b1", task_id: "tiff-000001", phase: "TIFF_CONVERSION", attempt: "1" },
    regions: ["iad"],
    ...overrides,
  };
}

let fly: FakeFly | undefined;
let clock: ManualClock;
const logs: string[] = [];
const sleeps: number[] = [];

function setup(emulator: FlyEmulatorOptions = {}, client: Partial<FlyClientOptions> = {}) {
  clock = emulator.clock instanceof ManualClock ? emulator.clock : new ManualClock();
  fly = installFakeFly({ token: env.FLY_API_TOKEN, ...emulator, clock });
  logs.length = 0;
  sleeps.length = 0;
  const machines = new FlyMachines({
    apiHostname: env.FLY_API_HOSTNAME,
    apiToken: env.FLY_API_TOKEN,
    appName: APP,
    fetch: fly.fetch,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    log: (line) => logs.push(line),
    ...client,
  });
  return { machines, core: fly.core, requests: fly.requests };
}

afterEach(async () => {
  await fly?.restore();
  fly = undefined;
});

const posts = (requests: FakeFly["requests"]) => requests.filter((r) => r.method === "POST");

describe("createMachine", () => {
  it("creates with the documented body and reports the machine", async () => {
    const { machines, requests } = setup();
    const outcome = await machines.createMachine(spec());
    expect(outcome).toMatchObject({ kind: "created", name: "fanout-b1-tiff-000001-a1", region: "iad", state: "created" });
    expect(outcome.kind === "created" && /^[0-9a-f]{14}$/.test(outcome.machineId)).toBe(true);

    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({ method: "POST", path: `/v1/apps/${APP}/machines`, status: 200 });
    expect(requests[0].body).toEqual({
      name: "fanout-b1-tiff-000001-a1",
      region: "iad",
      config: {
        image: "registry.fly.io/fanout-worker:latest",
        guest: { cpu_kind: "shared", cpus: 2, memory_mb: 2048 },
        env: { TASK_ID: "[redacted]", BATCH_ID: "[redacted]", R2_SECRET_ACCESS_KEY: "[redacted]", CALLBACK_TOKEN: "[redacted]" },
        metadata: { batch_id: "b1", task_id: "tiff-000001", phase: "TIFF_CONVERSION", attempt: "1" },
        auto_destroy: true,
        restart: { policy: "no" },
      },
    });
    expect(machines.requestsMade).toBe(1);
    expect(logs.some((l) => l.startsWith("[Fly] {") && l.includes('"outcome":"created"'))).toBe(true);
    expect(logs.join("\n")).not.toContain(SECRET);
    expect(logs.join("\n")).not.toContain(env.FLY_API_TOKEN);
  });

  it("is refused without the right token", async () => {
    const { machines } = setup({}, { apiToken: "wrong-token" });
    const outcome = await machines.createMachine(spec());
    expect(outcome).toEqual({ kind: "invalid", status: 401, message: "Authenticate: token validation error" });
  });

  it("answers 429 with Retry-After as rate_limited, without sending another create", async () => {
    const { machines, requests } = setup();
    for (let i = 1; i <= 3; i++) {
      expect((await machines.createMachine(spec({ name: `m-${i}` }))).kind).toBe("created");
    }
    const limited = await machines.createMachine(spec({ name: "m-4" }));
    expect(limited).toEqual({ kind: "rate_limited", retryAfterMs: 1000 });
    expect(posts(requests).map((r) => r.status)).toEqual([200, 200, 200, 429]);
    expect(sleeps).toEqual([]);

    await clock.advance(999);
    expect(await machines.createMachine(spec({ name: "m-4" }))).toMatchObject({ kind: "rate_limited" });
    await clock.advance(1000);
    expect(await machines.createMachine(spec({ name: "m-4" }))).toMatchObject({ kind: "created", name: "m-4" });
  });

  it("reads Retry-After as seconds or an HTTP date (shared/backoff.ts, in workerd)", () => {
    const now = Date.UTC(2026, 10, 1, 12, 0, 0);
    expect(parseRetryAfter("3", now)).toBe(3000);
    expect(parseRetryAfter("0.5", now)).toBe(500);
    expect(parseRetryAfter(new Date(now + 7000).toUTCString(), now)).toBe(7000);
    expect(parseRetryAfter(new Date(now - 7000).toUTCString(), now)).toBe(0);
    // RFC 9110's obsolete forms a recipient must still accept: RFC 850 and asctime.
    expect(parseRetryAfter("Sunday, 01-Nov-26 12:00:09 GMT", now)).toBe(9000);
    expect(parseRetryAfter("Sun Nov  1 12:00:09 2026", now)).toBe(9000);
    expect(parseRetryAfter(null, now)).toBeUndefined();
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter("2026-11-02", now)).toBeUndefined();
  });

  it("backs off exponentially with jitter, within half and all of the capped step", () => {
    expect(backoffMs(1, 1000, 60_000, () => 0)).toBe(500);
    expect(backoffMs(1, 1000, 60_000, () => 1)).toBe(1000);
    expect(backoffMs(3, 1000, 60_000, () => 1)).toBe(4000);
    expect(backoffMs(20, 1000, 60_000, () => 1)).toBe(60_000);
    expect(backoffMs(0, 2000, 300_000, () => 0)).toBe(1000);
    for (let i = 0; i < 50; i++) expect(backoffMs(2)).toBeGreaterThanOrEqual(2000);
  });

  it("retries 5xx with backoff and creates exactly one machine", async () => {
    const { core, requests } = setup();
    let failures = 2;
    const flaky: typeof fetch = async (input, init) => {
      const request = new Request(input, init);
      if (request.method === "POST" && failures-- > 0) return Response.json({ error: "upstream hiccup" }, { status: 503 });
      return fly!.fetch(request);
    };
    const client = new FlyMachines({ apiHostname: env.FLY_API_HOSTNAME, apiToken: env.FLY_API_TOKEN, appName: APP, fetch: flaky, sleep: async (ms) => void sleeps.push(ms), log: () => {} });
    const outcome = await client.createMachine(spec());
    expect(outcome.kind).toBe("created");
    expect(sleeps).toHaveLength(2);
    expect(sleeps[1]).toBeGreaterThan(sleeps[0] / 2);
    // Between attempts the client looked for the machine the failed attempt might have made.
    expect(requests.filter((r) => r.method === "GET").length).toBe(2);
    expect(core.machines()).toHaveLength(1);
  });

  it("retries a network error", async () => {
    setup();
    let thrown = false;
    const client = new FlyMachines({
      apiHostname: env.FLY_API_HOSTNAME,
      apiToken: env.FLY_API_TOKEN,
      appName: APP,
      sleep: async () => {},
      log: () => {},
      fetch: async (input, init) => {
        if (!thrown) {
          thrown = true;
          throw new TypeError("Network connection lost.");
        }
        return fly!.fetch(input, init);
      },
    });
    expect((await client.createMachine(spec())).kind).toBe("created");
  });

  it("finds the machine a failed create did make instead of creating a second", async () => {
    const { machines, core } = setup({ faults: { lostCreateResponseRate: 1 } });
    const outcome = await machines.createMachine(spec());
    expect(outcome).toMatchObject({ kind: "created", name: spec().name });
    expect(core.machines()).toHaveLength(1);
  });

  it("gives up after its attempts with unknown", async () => {
    const { machines } = setup({ faults: { serverErrorRate: 1 } });
    const outcome = await machines.createMachine(spec());
    expect(outcome.kind).toBe("unknown");
    expect(outcome.kind === "unknown" && outcome.message).toContain("503");
  });

  it("moves to the next region on a capacity error", async () => {
    const { machines, requests } = setup({ faults: { capacityErrorsByRegion: { iad: 1 } } });
    const outcome = await machines.createMachine(spec({ regions: ["iad", "ord", "ams"] }));
    expect(outcome).toMatchObject({ kind: "created", region: "ord" });
    expect(posts(requests).map((r) => [(r.body as { region: string }).region, r.status])).toEqual([
      ["iad", 422],
      ["ord", 200],
    ]);
    expect(sleeps).toEqual([]);
  });

  it("draws a create token before every POST: first try, 5xx retry and next region", async () => {
    setup({ faults: { capacityErrorsByRegion: { iad: 1 } } });
    let failures = 1;
    let sent = 0;
    const flaky: typeof fetch = async (input, init) => {
      const request = new Request(input, init);
      if (request.method === "POST" && ++sent && failures-- > 0) return Response.json({ error: "upstream hiccup" }, { status: 503 });
      return fly!.fetch(request);
    };
    const client = new FlyMachines({ apiHostname: env.FLY_API_HOSTNAME, apiToken: env.FLY_API_TOKEN, appName: APP, fetch: flaky, sleep: async () => {}, log: () => {} });
    let draws = 0;
    const outcome = await client.createMachine(spec({ regions: ["iad", "ord"] }), { draw: async () => (draws++, { ok: true }) });
    expect(outcome).toMatchObject({ kind: "created", region: "ord" });
    // 503 in iad, retried in iad (refused for capacity), then ord: three POSTs, three tokens.
    expect(sent).toBe(3);
    expect(draws).toBe(3);
  });

  it("without a token sends nothing more and says when to come back", async () => {
    const { machines, requests } = setup({ faults: { capacityErrorsByRegion: { iad: 1 } } });
    const retryAt = Date.now() + 700;
    const tokens = [true];
    const outcome = await machines.createMachine(spec({ regions: ["iad", "ord"] }), {
      draw: async () => (tokens.shift() ? { ok: true } : { ok: false, retryAt }),
    });
    expect(outcome).toEqual({ kind: "budget", retryAt });
    expect(posts(requests).map((r) => (r.body as { region: string }).region)).toEqual(["iad"]);
  });

  it("reports no_capacity when every region refuses", async () => {
    const { machines } = setup({ faults: { capacityErrorsByRegion: { iad: 1, ord: 1 } } });
    const outcome = await machines.createMachine(spec({ regions: ["iad", "ord"] }));
    expect(outcome.kind).toBe("no_capacity");
    expect(outcome.kind === "no_capacity" && outcome.message).toMatch(/iad: insufficient resources.*ord: insufficient resources/);
  });

  it("treats the live-machine cap as capacity", async () => {
    const { machines } = setup({ maxLiveMachines: 1 });
    expect((await machines.createMachine(spec({ name: "one" }))).kind).toBe("created");
    expect((await machines.createMachine(spec({ name: "two" }))).kind).toBe("no_capacity");
  });

  it("classifies capacity errors the way the API reports them", () => {
    expect(isCapacityError(422, { error: "whatever", status: "insufficient_capacity" })).toBe(true);
    expect(isCapacityError(409, { error: "aborted: could not reserve resource for machine: insufficient memory available to fulfill request" })).toBe(true);
    expect(isCapacityError(422, { error: "invalid config.guest.memory_mb 300" })).toBe(false);
    expect(isCapacityError(422, { error: "Validation failed: name", status: "name_taken" })).toBe(false);
  });

  it("fails a validation error with the API's message", async () => {
    const { machines } = setup();
    const outcome = await machines.createMachine(spec({ guest: { cpu_kind: "shared", cpus: 1, memory_mb: 300 } }));
    expect(outcome).toEqual({
      kind: "invalid",
      status: 422,
      message: "invalid config.guest.memory_mb 300: memory must be in increments of 256 MiB",
    });
    expect(sleeps).toEqual([]);
  });

  it("never puts the token or env values in a message, and keeps it short", async () => {
    setup();
    const echo: typeof fetch = async () =>
      Response.json({ error: `bad env ${SECRET} for token ${env.FLY_API_TOKEN} ${"x".repeat(1000)}` }, { status: 400 });
    const client = new FlyMachines({ apiHostname: env.FLY_API_HOSTNAME, apiToken: env.FLY_API_TOKEN, appName: APP, fetch: echo, log: () => {} });
    const outcome = await client.createMachine(spec());
    expect(outcome.kind).toBe("invalid");
    const message = outcome.kind === "invalid" ? outcome.message : "";
    expect(message).not.toContain(SECRET);
    expect(message).not.toContain(env.FLY_API_TOKEN);
    expect(message).toContain("[redacted]");
    expect(message.length).toBeLessThanOrEqual(301);
  });

  it("reports a timed-out create as unknown, and listing by metadata finds the machine", async () => {
    const { machines, core } = setup({ faults: { createResponseDelayMs: 60_000 } }, { requestTimeoutMs: 50 });
    const outcome = await machines.createMachine(spec());
    expect(outcome.kind).toBe("unknown");
    expect(machines.requestsMade).toBe(1);
    expect(core.machines()).toHaveLength(1);

    const found = await machines.listMachines({ batch_id: "b1", task_id: "tiff-000001" });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ name: spec().name, region: "iad", metadata: spec().metadata });
    expect(found[0]).not.toHaveProperty("env");
    expect(await machines.listMachines({ batch_id: "other" })).toEqual([]);
  });

  it("stops at its subrequest budget", async () => {
    const { machines, requests } = setup({}, { maxRequests: 2 });
    expect((await machines.createMachine(spec({ name: "a" }))).kind).toBe("created");
    expect((await machines.createMachine(spec({ name: "b" }))).kind).toBe("created");
    expect(await machines.createMachine(spec({ name: "c" }))).toEqual({ kind: "budget" });
    await expect(machines.listMachines({ batch_id: "b1" })).rejects.toMatchObject({ kind: "budget" });
    expect(await machines.destroyMachine("whatever")).toBe("failed");
    expect(machines.requestsMade).toBe(2);
    expect(requests).toHaveLength(2);
  });
});

describe("listMachines, getMachine, destroyMachine", () => {
  it("lists by metadata, gets, destroys with force and forgets destroyed machines", async () => {
    const runner = new SimulatedRunner({ clock: (clock = new ManualClock()), durationMs: 60_000 });
    const { machines, requests } = setup({ clock, runner });
    const a = await machines.createMachine(spec({ name: "a", metadata: { batch_id: "b1", task_id: "tiff-000001" } }));
    const b = await machines.createMachine(spec({ name: "b", metadata: { batch_id: "b2", task_id: "tiff-000001" } }));
    if (a.kind !== "created" || b.kind !== "created") throw new Error("setup failed");
    await clock.advance(0);

    expect((await machines.listMachines({ batch_id: "b1" })).map((m) => m.name)).toEqual(["a"]);
    expect(requests.at(-1)?.path).toBe(`/v1/apps/${APP}/machines?metadata.batch_id=b1`);
    expect(await machines.getMachine(a.machineId)).toMatchObject({ id: a.machineId, state: "started", region: "iad" });
    expect(await machines.getMachine("0000000000dead")).toBeNull();

    expect(await machines.destroyMachine(a.machineId)).toBe("destroyed");
    expect(requests.at(-1)).toMatchObject({ method: "DELETE", path: `/v1/apps/${APP}/machines/${a.machineId}?force=true`, status: 200 });
    expect((await machines.getMachine(a.machineId))?.state).toBe("destroyed");
    expect(await machines.listMachines({ batch_id: "b1" })).toEqual([]);
    expect(await machines.destroyMachine(a.machineId)).toBe("not_found");
  });

  it("sees a machine through created → started → stopped → destroyed", async () => {
    const runner = new SimulatedRunner({ clock: (clock = new ManualClock()), durationMs: 5_000 });
    const { machines } = setup({ clock, runner, faults: { bootDelayMs: 1_000 } });
    const created = await machines.createMachine(spec());
    if (created.kind !== "created") throw new Error("setup failed");
    const id = created.machineId;
    expect((await machines.getMachine(id))?.state).toBe("created");
    await clock.advance(1_000);
    expect((await machines.getMachine(id))?.state).toBe("started");
    await clock.advance(5_000);
    expect((await machines.getMachine(id))?.state).toBe("destroyed");
  });

  it("throws a FlyApiError when a read is rate limited", async () => {
    const { machines } = setup({ rateLimits: { read: { perSecond: 1, burst: 1 } } });
    await machines.listMachines({});
    const error = await machines.listMachines({}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FlyApiError);
    expect(error).toMatchObject({ kind: "rate_limited", status: 429, retryAfterMs: 1000 });
  });
});

describe("installFakeFly", () => {
  it("routes global fetch to http://fly.test", async () => {
    const { requests } = setup();
    const response = await fetch(`http://fly.test/v1/apps/${APP}/machines`, { headers: { Authorization: `Bearer ${env.FLY_API_TOKEN}` } });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual([]);
    expect(requests).toHaveLength(1);
    const client = new FlyMachines({ apiHostname: "http://fly.test", apiToken: env.FLY_API_TOKEN, appName: APP, log: () => {} });
    expect((await client.createMachine(spec())).kind).toBe("created");
  });
});

describe("guestForSlots: pool machines sized as Fly accepts them", () => {
  it("rounds CPUs up to 1, 2, 4, 8 or 16 and keeps memory within the size's range", async () => {
    const { guestForSlots } = await import("../../orchestrator/fly/api.ts");
    expect(guestForSlots({ cpu_kind: "shared", cpus: 1, memory_mb: 1024 }, 1)).toEqual({ guest: { cpu_kind: "shared", cpus: 1, memory_mb: 1024 }, perSlotMb: 1024 });
    expect(guestForSlots({ cpu_kind: "shared", cpus: 1, memory_mb: 1024 }, 3)).toEqual({ guest: { cpu_kind: "shared", cpus: 4, memory_mb: 3072 }, perSlotMb: 1024 });
    expect(guestForSlots({ cpu_kind: "shared", cpus: 1, memory_mb: 2048 }, 8)).toEqual({ guest: { cpu_kind: "shared", cpus: 8, memory_mb: 16384 }, perSlotMb: 2048 });
    // Too big for the largest guest: 16 CPUs, its most memory, and each task gets its share.
    expect(guestForSlots({ cpu_kind: "performance", cpus: 2, memory_mb: 8192 }, 12)).toEqual({ guest: { cpu_kind: "performance", cpus: 16, memory_mb: 98304 }, perSlotMb: 8192 });
    expect(guestForSlots({ cpu_kind: "shared", cpus: 1, memory_mb: 2048 }, 16).guest).toEqual({ cpu_kind: "shared", cpus: 16, memory_mb: 32768 });
    // Every result is a size the emulator (Fly's documented rules) accepts.
    for (const slots of [1, 2, 3, 5, 6, 7, 9, 12, 16]) {
      for (const one of [{ cpu_kind: "shared" as const, cpus: 1, memory_mb: 1024 }, { cpu_kind: "performance" as const, cpus: 1, memory_mb: 4096 }]) {
        const { guest } = guestForSlots(one, slots);
        expect([1, 2, 4, 8, 16]).toContain(guest.cpus);
        expect(guest.memory_mb % 256).toBe(0);
      }
    }
  });
});
