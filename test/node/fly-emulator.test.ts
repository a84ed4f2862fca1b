// The Fly Machines API emulator server with real child processes as machines, driven by the
// production client over loopback HTTP.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { MachineSpec } from "../../orchestrator/fly/api.ts";
import { FlyMachines } from "../../orchestrator/fly/client.ts";
import { startFlyEmulator, type FlyEmulatorServerOptions, type RunningFlyEmulator } from "../../local/fly-emulator/server.ts";

const APP = "fanout-worker";
const TOKEN = "emulator-test-token";
const FAKE_MACHINE = [process.execPath, "test/node/support/fake-machine.ts"];

interface Callback {
  path: string;
  authorization: string | undefined;
  body: Record<string, unknown>;
}

let callbackServer: Server;
let callbackUrl: string;
const callbacks: Callback[] = [];

beforeAll(async () => {
  callbackServer = createServer((req, res) => {
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (text += chunk));
    req.on("end", () => {
      callbacks.push({ path: req.url ?? "", authorization: req.headers.authorization, body: JSON.parse(text) as Record<string, unknown> });
      res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve) => callbackServer.listen(0, "127.0.0.1", resolve));
  callbackUrl = `http://127.0.0.1:${(callbackServer.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => callbackServer.close(() => resolve()));
});

let emulator: RunningFlyEmulator | undefined;

afterEach(async () => {
  await emulator?.stop();
  emulator = undefined;
  callbacks.length = 0;
});

async function start(options: FlyEmulatorServerOptions = {}) {
  emulator = await startFlyEmulator({ token: TOKEN, process: { command: FAKE_MACHINE }, ...options });
  const client = new FlyMachines({ apiHostname: emulator.url, apiToken: TOKEN, appName: APP, log: () => {}, sleep: async () => {} });
  return { emulator, client };
}

function spec(task: string, env: Record<string, string> = {}): MachineSpec {
  return {
    name: `fanout-b1-${task}-a1`,
    image: "registry.fly.io/fanout-worker:latest",
    guest: { cpu_kind: "shared", cpus: 1, memory_mb: 512 },
    env: { TASK_ID: task, CALLBACK_URL: `${callbackUrl}/callback/b1/${task}`, CALLBACK_TOKEN: "cb-secret", ...env },
    metadata: { batch_id: "b1", task_id: task },
    regions: ["iad"],
  };
}

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${emulator!.url}${path}`, { ...init, headers: { authorization: `Bearer ${TOKEN}`, ...init.headers } });
}

async function waitFor(id: string, state: string, timeoutSeconds = 20): Promise<number> {
  const response = await api(`/v1/apps/${APP}/machines/${id}/wait?state=${state}&timeout=${timeoutSeconds}`);
  await response.arrayBuffer();
  return response.status;
}

async function created(client: FlyMachines, machine: MachineSpec): Promise<string> {
  const outcome = await client.createMachine(machine);
  if (outcome.kind !== "created") throw new Error(`create failed: ${JSON.stringify(outcome)}`);
  return outcome.machineId;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("fly emulator server", () => {
  it("runs a machine as a child process with the machine env, keeps its logs and auto-destroys it", async () => {
    process.env.FAKE_HOST_SECRET = "host-only";
    try {
      const { client } = await start();
      const id = await created(client, spec("tiff-000001"));
      expect(await waitFor(id, "destroyed")).toBe(200);

      expect(callbacks).toHaveLength(1);
      expect(callbacks[0]).toMatchObject({
        path: "/callback/b1/tiff-000001",
        authorization: "Bearer cb-secret",
        body: { task_id: "tiff-000001", machine_id: id, app: APP, region: "iad", host_home_visible: false },
      });

      const machine = emulator!.core.machine(id)!;
      expect(machine.state).toBe("destroyed");
      const events = machine.events as { status: string; request?: { exit_event?: { exit_code?: number } } }[];
      expect(events.map((e) => e.status)).toEqual(["destroyed", "stopped", "started", "created"]);
      expect(events[1].request?.exit_event?.exit_code).toBe(0);

      const logs = await (await fetch(`${emulator!.url}/_emulator/machines/${id}/logs`)).text();
      expect(logs).toContain("fake machine started");
      expect(logs).toContain("stderr fake machine stderr line");
      expect(logs).toContain("callback answered 200");
      expect(emulator!.core.logs(id).find((l) => l.line.includes("fake machine started"))?.stream).toBe("stdout");
      expect(await client.listMachines({ batch_id: "b1" })).toEqual([]);
    } finally {
      delete process.env.FAKE_HOST_SECRET;
    }
  });

  it("walks created → started → stopped → destroyed, and reports a failing exit code", async () => {
    const { client } = await start({ faults: { bootDelayMs: 300 } });
    const id = await created(client, spec("tiff-000002", { FAKE_RUN_MS: "400", FAKE_EXIT_CODE: "3" }));
    expect((await client.getMachine(id))?.state).toBe("created");
    expect(await waitFor(id, "started")).toBe(200);
    expect((await client.getMachine(id))?.state).toBe("started");
    expect(emulator!.machinePids()).toHaveLength(1);
    expect(await waitFor(id, "stopped")).toBe(200);
    expect(await waitFor(id, "destroyed")).toBe(200);
    const events = emulator!.core.machine(id)!.events as { status: string; request?: { exit_event?: { exit_code?: number } } }[];
    expect(events.find((e) => e.status === "stopped")?.request?.exit_event?.exit_code).toBe(3);
  });

  it("answers wait with 408 when the state is not reached in time", async () => {
    const { client } = await start();
    const id = await created(client, spec("tiff-000003", { FAKE_RUN_MS: "5000" }));
    expect(await waitFor(id, "stopped", 1)).toBe(408);
    expect((await api(`/v1/apps/${APP}/machines/${id}/wait?state=bogus`)).status).toBe(400);
  });

  it("kills a machine before it can call back when it dies silently", async () => {
    const { client } = await start({ faults: { dieSilentlyRate: 1 } });
    const id = await created(client, spec("tiff-000004"));
    expect(await waitFor(id, "destroyed")).toBe(200);
    expect(callbacks).toEqual([]);
    const events = emulator!.core.machine(id)!.events as { status: string; request?: { exit_event?: { exit_code?: number } } }[];
    expect(events.find((e) => e.status === "stopped")?.request?.exit_event?.exit_code).toBe(137);
  });

  it("destroys a running machine with force, killing its process", async () => {
    const { client } = await start();
    const id = await created(client, spec("tiff-000005", { FAKE_RUN_MS: "60000" }));
    expect(await waitFor(id, "started")).toBe(200);
    const [pid] = emulator!.machinePids();
    expect(alive(pid)).toBe(true);
    expect((await api(`/v1/apps/${APP}/machines/${id}`, { method: "DELETE" })).status).toBe(412);
    expect(await client.destroyMachine(id)).toBe("destroyed");
    expect(alive(pid)).toBe(false);
    expect((await client.getMachine(id))?.state).toBe("destroyed");
    expect(callbacks).toEqual([]);
  });

  it("refuses creates beyond the live-machine cap as a capacity error", async () => {
    const { client } = await start({ maxLiveMachines: 2, rateLimits: false });
    await created(client, spec("tiff-000006", { FAKE_RUN_MS: "60000" }));
    await created(client, spec("tiff-000007", { FAKE_RUN_MS: "60000" }));
    const third = await client.createMachine(spec("tiff-000008"));
    expect(third).toMatchObject({ kind: "no_capacity" });
    const raw = await api(`/v1/apps/${APP}/machines`, {
      method: "POST",
      body: JSON.stringify({ region: "iad", config: { image: "img" } }),
    });
    expect(raw.status).toBe(422);
    expect(await raw.json()).toEqual({ error: "insufficient resources available to fulfill request", status: "insufficient_capacity" });
  });

  it("rate-limits creates at 1/s with a burst of 3 and says when to come back", async () => {
    await start({ runner: "simulate", simulate: { durationMs: 10 } });
    const create = () =>
      api(`/v1/apps/${APP}/machines`, { method: "POST", body: JSON.stringify({ region: "iad", config: { image: "img", auto_destroy: true } }) });
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 4; i++) {
      const response = await create();
      statuses.push(response.status);
      if (response.status === 429) {
        retryAfter = response.headers.get("retry-after");
        expect(await response.json()).toEqual({ error: "rate limit exceeded" });
      } else await response.arrayBuffer();
    }
    expect(statuses).toEqual([200, 200, 200, 429]);
    expect(retryAfter).toBe("1");
  });

  it("rate-limits every action as documented: list per app 1/s burst 3, get per machine 5/s burst 10, destroy per machine", async () => {
    const { client } = await start({ runner: "simulate", simulate: { durationMs: 60_000 }, rateLimits: { create: { perSecond: 100, burst: 100 } } });
    const a = await created(client, spec("tiff-000020"));
    const b = await created(client, spec("tiff-000021"));
    const status = async (path: string, init: RequestInit = {}) => {
      const r = await api(path, init);
      await r.arrayBuffer();
      return r.status;
    };
    // Create's bucket is its own: three lists still fit, the fourth is refused.
    const lists = [];
    for (let i = 0; i < 4; i++) lists.push(await status(`/v1/apps/${APP}/machines`));
    expect(lists).toEqual([200, 200, 200, 429]);
    // Get Machine: 10 at once per machine; another machine has its own bucket.
    const gets = [];
    for (let i = 0; i < 11; i++) gets.push(await status(`/v1/apps/${APP}/machines/${a}`));
    expect(gets).toEqual([...Array(10).fill(200), 429]);
    expect(await status(`/v1/apps/${APP}/machines/${b}`)).toBe(200);
    // Destroy is per machine: b's first destroy is not held back by anything a's requests did.
    expect(await status(`/v1/apps/${APP}/machines/${b}?force=true`, { method: "DELETE" })).toBe(200);
    const refused = emulator!.core.requests.filter((r) => r.status === 429);
    expect(refused.map((r) => r.fault)).toEqual(["rate_limited", "rate_limited"]);
  });

  it("refuses a create past the organisation's quota the way Fly does: 422 for machines, 403 for vCPUs and memory", async () => {
    const { client } = await start({
      runner: "simulate",
      simulate: { durationMs: 60_000 },
      rateLimits: false,
      quota: { machines: 3, vcpus: 4, memory_mb: 4096 },
    });
    const guest = (cpus: number, memory_mb: number) => ({ cpu_kind: "shared" as const, cpus, memory_mb });
    await created(client, { ...spec("tiff-000030"), guest: guest(2, 1024) });
    // 2 + 4 vCPUs > 4: refused for CPUs in the region asked for, with Fly's "consider other regions".
    const cpus = await api(`/v1/apps/${APP}/machines`, { method: "POST", body: JSON.stringify({ region: "ord", config: { image: "i", guest: guest(4, 1024) } }) });
    expect(cpus.status).toBe(403);
    expect(await cpus.json()).toEqual({ error: 'organization "personal" is using 2 cpus in ord which is over the allowed quota. please consider other regions' });
    // 1024 + 3584 MB > 4096: refused for memory.
    const memory = await api(`/v1/apps/${APP}/machines`, { method: "POST", body: JSON.stringify({ region: "iad", config: { image: "i", guest: guest(2, 3584) } }) });
    expect(memory.status).toBe(403);
    expect(((await memory.json()) as { error: string }).error).toBe('organization "personal" is using 1024 MB of memory in iad which is over the allowed quota. please consider other regions');
    await created(client, { ...spec("tiff-000031"), guest: guest(1, 256) });
    await created(client, { ...spec("tiff-000032"), guest: guest(1, 256) });
    // The fourth machine: the organisation's machines limit, 422, every region alike.
    const machines = await api(`/v1/apps/${APP}/machines`, { method: "POST", body: JSON.stringify({ region: "ams", config: { image: "i" } }) });
    expect(machines.status).toBe(422);
    expect(((await machines.json()) as { error: string }).error).toMatch(/^failed to launch VM: organization "personal" has reached its machines limit \(3 of 3 machines\)/);
    expect(emulator!.core.requests.filter((r) => r.fault).map((r) => r.fault)).toEqual(["quota_vcpus", "quota_memory", "quota_machines"]);
    // The quota counts live machines only: one gone, one more fits.
    const [first] = await client.listMachines({ batch_id: "b1" });
    expect(await client.destroyMachine(first.id)).toBe("destroyed");
    await created(client, { ...spec("tiff-000033"), guest: guest(1, 256) });
    expect(emulator!.core.usage()).toMatchObject({ now: { machines: 3, vcpus: 3, memory_mb: 768 }, peak: { machines: 3, vcpus: 4, memory_mb: 1536 } });
  });

  it("refuses a create in a region with no room as a capacity error, and places it in the next", async () => {
    const { client } = await start({ runner: "simulate", simulate: { durationMs: 60_000 }, rateLimits: false, regionCapacity: { iad: 1 } });
    const first = await client.createMachine({ ...spec("tiff-000040"), regions: ["iad", "ord"] });
    const second = await client.createMachine({ ...spec("tiff-000041"), regions: ["iad", "ord"] });
    expect([first, second].map((o) => (o.kind === "created" ? o.region : o.kind))).toEqual(["iad", "ord"]);
    expect(emulator!.core.requests.filter((r) => r.fault).map((r) => [r.status, r.fault])).toEqual([[422, "capacity_region_full"]]);
  });

  it("records which refusals were injected faults and which its own create limit, so a soak can tell them apart", async () => {
    const { emulator: emu } = await start({
      runner: "simulate",
      simulate: { durationMs: 10 },
      rateLimits: { create: { perSecond: 0.001, burst: 4 } },
      faults: { seed: 3, createRateLimitRate: 0.3, capacityErrorsByRegion: { iad: 0.3 } },
    });
    for (let i = 0; i < 12; i++) {
      const r = await api(`/v1/apps/${APP}/machines`, { method: "POST", body: JSON.stringify({ region: "iad", config: { image: "img", auto_destroy: true } }) });
      await r.arrayBuffer();
    }
    const recorded = emu.core.requests.map((r) => ({ status: r.status, fault: r.fault ?? null }));
    // The first 4 creates get tokens (each answered, refused by an injected fault, or created); the rest hit the limit.
    expect(recorded.slice(4).every((r) => r.status === 429 && r.fault === "rate_limited")).toBe(true);
    for (const r of recorded.slice(0, 4)) {
      if (r.status === 429) expect(r.fault).toBe("injected_429");
      else if (r.status === 422) expect(r.fault).toBe("capacity_region");
      else expect(r).toEqual({ status: 200, fault: null });
    }
    expect(recorded.slice(0, 4).some((r) => r.fault !== null)).toBe(true);
  });

  it("validates requests like the API: auth, JSON, config", async () => {
    await start({ runner: "simulate" });
    expect((await fetch(`${emulator!.url}/v1/apps/${APP}/machines`)).status).toBe(401);
    const bad = await api(`/v1/apps/${APP}/machines`, { method: "POST", body: "{not json" });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ error: "invalid request body: could not parse JSON" });
    const noImage = await api(`/v1/apps/${APP}/machines`, { method: "POST", body: JSON.stringify({ config: {} }) });
    expect(noImage.status).toBe(422);
    expect(((await noImage.json()) as { error: string }).error).toMatch(/image/);
    const badRegion = await api(`/v1/apps/${APP}/machines`, { method: "POST", body: JSON.stringify({ region: "mars", config: { image: "i" } }) });
    expect(badRegion.status).toBe(422);
    expect(emulator!.core.requests.map((r) => r.status)).toEqual([401, 400, 422, 422]);
  });

  it("simulate mode runs machines without processes and can call back", async () => {
    const { client } = await start({ runner: "simulate", simulate: { durationMs: 50, callback: true } });
    const id = await created(client, spec("tiff-000009"));
    expect(await waitFor(id, "destroyed")).toBe(200);
    expect(emulator!.machinePids()).toEqual([]);
    expect(callbacks).toHaveLength(1);
    expect(callbacks[0]).toMatchObject({ path: "/callback/b1/tiff-000009", authorization: "Bearer cb-secret", body: { task_id: "tiff-000009", status: "success" } });
  });

  it("stop() leaves no machine process or grandchild alive", async () => {
    const { client } = await start();
    const ids = [
      await created(client, spec("tiff-000010", { FAKE_RUN_MS: "60000", FAKE_GRANDCHILD: "1" })),
      await created(client, spec("tiff-000011", { FAKE_RUN_MS: "60000", FAKE_GRANDCHILD: "1" })),
    ];
    for (const id of ids) expect(await waitFor(id, "started")).toBe(200);
    await eventually(() => ids.every((id) => emulator!.core.logs(id).some((l) => l.line.includes("grandchild"))));
    const pids = [...emulator!.machinePids()];
    const grandchildren = ids.map((id) => {
      const line = emulator!.core.logs(id).find((l) => l.line.includes("grandchild"))!.line;
      return Number(/grandchild (\d+)/.exec(line)![1]);
    });
    expect(pids).toHaveLength(2);
    expect([...pids, ...grandchildren].every(alive)).toBe(true);

    await emulator!.stop();
    await eventually(() => ![...pids, ...grandchildren].some(alive));
    expect(emulator!.machinePids()).toEqual([]);
    expect(ids.map((id) => emulator!.core.machine(id)!.state)).toEqual(["destroyed", "destroyed"]);
  });

  it("machine ids do not repeat across restarts with the same fault seed (per-machine log files stay one machine's)", async () => {
    const first = await start({ runner: "simulate", simulate: { durationMs: 10_000, callback: false } });
    const a = await created(first.client, spec("tiff-000012"));
    await emulator!.stop();
    emulator = undefined;
    const second = await start({ runner: "simulate", simulate: { durationMs: 10_000, callback: false } });
    const b = await created(second.client, spec("tiff-000012"));
    expect(b).not.toBe(a);
    expect(a).toMatch(/^[0-9a-f]{14}$/);
  });
});
