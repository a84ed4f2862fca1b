import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  createRequests,
  finalFiles,
  installWorld,
  putManifest,
  putTiffs,
  stub,
  waitForStatus,
  type World,
} from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

describe("a batch end to end through real alarms and callbacks", () => {
  it("converts 60 TIFFs from a manifest to DONE and posts the final list", async () => {
    const keys = await putTiffs("b-many/", 60);
    await putManifest("b-many", "b-many/manifest.json", [...keys, "b-many/notes.txt"]);
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
    // What Fly stores (and shows anyone who can read the app) holds no storage key and no lasting secret.
    const recorded = JSON.stringify(creates.map((c) => c.body));
    for (const secret of [env.R2_ACCESS_KEY_ID, env.R2_SECRET_ACCESS_KEY, env.CALLBACK_SECRET, env.FLY_API_TOKEN, env.ADMIN_TOKEN]) {
      expect(recorded.includes(secret), "a secret in a create body").toBe(false);
    }
    for (const name of ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_ACCOUNT_ID"]) expect(machineEnv[name], name).toBeUndefined();
    // Its credentials expire with the attempt: create + boot + run limits + grace, never days.
    const expires = Date.parse(machineEnv.CREDENTIALS_EXPIRE_AT) - Date.now();
    expect(expires).toBeGreaterThan(0);
    expect(expires).toBeLessThan(2 * 3_600_000);
    for (const name of ["INPUT_URL", "OUTPUT_URL"]) {
      const lifetime = Number(new URL(machineEnv[name]).searchParams.get("X-Amz-Expires")) * 1000;
      expect(Math.abs(lifetime - expires), `${name} expires with the attempt`).toBeLessThan(60_000);
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
