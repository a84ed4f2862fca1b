import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  createRequests,
  finalFiles,
  installWorld,
  putManifest,
  putTiffs,
  secretsIn,
  sentCreateBodies,
  stub,
  waitForStatus,
  type World,
} from "./support/engine.ts";
import { PoolRunner } from "./support/pool.ts";

let world: World;
afterEach(async () => {
  await world.restore();
});

describe("a batch end to end through real alarms and callbacks", () => {
  it("converts 60 TIFFs from a manifest to DONE and posts the final list", async () => {
    world = installWorld();
    const keys = await putTiffs("b-many/", 60);
    await putManifest("b-many", "b-many/manifest.json", [...keys, "b-many/notes.txt"]);
    const before = Date.now();
    const started = await stub("b-many").start({ batch_id: "b-many", manifest_r2_key: "b-many/manifest.json" });
    expect(started).toEqual({ created: true, status: "TIFF_CONVERSION" });

    const status = await waitForStatus("b-many", (s) => s.status === "DONE");
    expect(status.progress).toMatchObject({ tasks_total: 60, tasks_completed: 60, tasks_failed: 0, pending: 0, running: 0 });
    expect(status.files_total).toBe(61 + 60);
    expect(status.completed_at).not.toBeNull();

    // One machine per task, created exactly as the engine rules say.
    const creates = createRequests(world.fly);
    expect(creates).toHaveLength(60);
    const body = creates[0].body as { name: string; region: string; config: Record<string, unknown> };
    expect(body.config).toMatchObject({ auto_destroy: true, restart: { policy: "no" }, image: env.FLY_IMAGE });
    expect(body.config.metadata).toMatchObject({ fanout_batch: "b-many", fanout_phase: "TIFF_CONVERSION", fanout_attempt: "1" });
    expect(body.region).toBe("iad");
    const machineEnv = world.runner.started[0].env;
    for (const name of ["TASK_ID", "BATCH_ID", "ATTEMPT", "INPUT_R2_KEY", "OUTPUT_R2_KEY", "INPUT_URL", "OUTPUT_URL", "OUTPUTS_URL", "CALLBACK_URL", "CALLBACK_TOKEN", "CREDENTIALS_EXPIRE_AT"]) {
      expect(machineEnv[name], name).toBeTruthy();
    }
    // What Fly stores (and shows anyone who can read the app) holds no storage key and no lasting
    // secret: the bodies as sent, env values included (the emulator's records redact them).
    const sent = sentCreateBodies(world.fly);
    expect(sent).toHaveLength(60);
    expect(sent.join("\n"), "the real env values are what is searched").toContain(machineEnv.CALLBACK_TOKEN);
    expect(secretsIn(sent), "a secret in a create body").toEqual([]);
    // What the emulator serves about its requests stays redacted (the real bodies are a test-only view).
    const served = await (await world.fly.handle(new Request("http://fly.test/_emulator/requests"))).text();
    expect(served).toContain('"CALLBACK_TOKEN":"[redacted]"');
    expect(served).not.toContain(machineEnv.CALLBACK_TOKEN);
    for (const name of ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_ACCOUNT_ID"]) expect(machineEnv[name], name).toBeUndefined();
    // Its credentials expire with the attempt: create answer 1 min + the TIFF phase's boot 10 min
    // and run 15 min + 5 min grace = 31 min after the attempt began (README, Security).
    const expiresAt = Date.parse(machineEnv.CREDENTIALS_EXPIRE_AT);
    const createdAt = creates.find((c) => (c.body as { name: string }).name === world.runner.started[0].name)!.time;
    expect(expiresAt - 31 * 60_000, "31 min after the attempt began, which was between the start and its create").toBeGreaterThanOrEqual(before);
    expect(expiresAt - 31 * 60_000).toBeLessThanOrEqual(createdAt);
    for (const name of ["INPUT_URL", "OUTPUT_URL"]) {
      // Signed at X-Amz-Date for X-Amz-Expires seconds, both whole seconds: it ends within a second of the credential.
      const q = new URL(machineEnv[name]).searchParams;
      const signedAt = Date.parse(q.get("X-Amz-Date")!.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, "$1-$2-$3T$4:$5:$6Z"));
      const end = signedAt + Number(q.get("X-Amz-Expires")) * 1000;
      expect(Math.abs(end - expiresAt), `${name} expires with the attempt`).toBeLessThan(1000);
    }
    expect(machineEnv.OUTPUT_R2_KEY).toBe(machineEnv.INPUT_R2_KEY.replace(/\.tif$/, ".jpg"));
    await vi.waitFor(() => expect(world.fly.liveMachineCount()).toBe(0), { timeout: 10_000 });

    // Finalisation: the final list keeps every original and adds each JPEG.
    expect(world.downstream.calls).toHaveLength(1);
    expect(world.downstream.calls[0].url).toBe("http://downstream.test/api/batches/b-many/enqueue-processed");
    const files = await finalFiles(world.downstream, 0);
    expect(files).toHaveLength(121);
    expect(files.filter((f) => f.r2_key.endsWith(".tif"))).toHaveLength(60);
    const jpeg = files.find((f) => f.r2_key === "b-many/scan-00007.jpg");
    expect(jpeg).toMatchObject({ source_r2_key: "b-many/scan-00007.tif", content_type: "image/jpeg" });
    expect(files.find((f) => f.r2_key === "b-many/scan-00007.tif")?.cid).toBe("cid-b-many/scan-00007.tif");
  });
});

describe("pool mode's create bodies", () => {
  it("hold a lease token for the machine and no lasting secret", async () => {
    const runner = new PoolRunner();
    world = installWorld({ runner });
    await putTiffs("b-pool-env/", 6);
    await stub("b-pool-env").start({ batch_id: "b-pool-env", r2_prefix: "b-pool-env/", pool: true });
    await waitForStatus("b-pool-env", (s) => s.status === "DONE");
    const sent = sentCreateBodies(world.fly);
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.join("\n"), "the real env values are what is searched").toContain(runner.started[0].env.LEASE_TOKEN);
    expect(secretsIn(sent), "a secret in a create body").toEqual([]);
    await vi.waitFor(() => expect(world.fly.liveMachineCount()).toBe(0), { timeout: 10_000 });
  });
});
