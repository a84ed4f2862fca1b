// Issue 20's hostile probes of points 3–6 through the whole local stack (wrangler dev, the Fly
// emulator, real fly-worker processes, the local S3 checking every signature as R2 does), as an
// attacker would run them: someone who can read the Fly app's machines (their config.env, as the
// Machines API returns it) takes a machine's credentials while it boots, and an anonymous reader
// tries the API. READ_TOKEN is set the documented local way (what `READ_TOKEN=… npm start` does).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { APP_NAME } from "../../local/paths.ts";
import type { QueueMessage } from "../../shared/contracts.ts";
import { startE2EStack, watchToEnd, type E2EStack } from "./support/stack.ts";

const READ_TOKEN = "e2e-read-token-0123456789abcdef";
/** Each machine stays `created` this long before it starts: the window in which its env is read. */
const BOOT_DELAY_MS = 6000;

describe("credentials die with their purpose; reads need READ_TOKEN (issue 20, points 3–6)", () => {
  let stack: E2EStack;
  let flyToken: string;
  const probes: string[] = [];
  const say = (probe: string, answer: string) => probes.push(`${probe} → ${answer}`);

  beforeAll(async () => {
    stack = await startE2EStack({ readToken: READ_TOKEN, emulator: { faults: { bootDelayMs: BOOT_DELAY_MS } } });
    flyToken = (JSON.parse(readFileSync(join(stack.stateDir, "secrets.json"), "utf8")) as { FLY_API_TOKEN: string }).FLY_API_TOKEN;
  }, 180_000);
  afterAll(async () => {
    console.log(`[e2e credentials] hostile probes and their answers:\n  ${probes.join("\n  ")}`);
    await stack?.dispose();
  });

  const tiff = (w: number, h: number) => sharp({ create: { width: w, height: h, channels: 3, background: { r: 40, g: 90, b: 160 } } }).tiff().toBuffer();
  const put = (key: string, body: Buffer | string, contentType = "image/tiff") =>
    stack.s3client.send(new PutObjectCommand({ Bucket: stack.bucket, Key: key, Body: body, ContentType: contentType }));
  const bytesOf = async (key: string) => Buffer.from(await (await stack.s3client.send(new GetObjectCommand({ Bucket: stack.bucket, Key: key }))).Body!.transformToByteArray());

  type MachineView = { id: string; state: string; config: { env: Record<string, string>; metadata: Record<string, string> } };
  /**
   * What anyone with a token for the Fly app reads: the config.env of a machine of `batchId` (waits for one of attempt
   * `attempt`, or a pool machine, while it is `created`). Found in the emulator's own view of the app's machines — the
   * API's list is limited to 1/s per app and the engine's machine checks spend it, so a thief polling it starves — then
   * read the way a thief would, with Get Machine (5/s per machine) and the app's token.
   */
  async function stealEnv(batchId: string, attempt?: number): Promise<{ id: string; env: Record<string, string> }> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const machines = stack.emulator.core.machines() as unknown as MachineView[];
      const ours = machines.filter((x) => x.config.metadata.fanout_batch === batchId);
      const m = ours.find((x) => x.state === "created" && (attempt === undefined || x.config.metadata.fanout_attempt === String(attempt)));
      if (m) {
        const res = await fetch(`${stack.emulator.url}/v1/apps/${APP_NAME}/machines/${m.id}`, { headers: { authorization: `Bearer ${flyToken}` } });
        if (!res.ok) throw new Error(`Get Machine ${m.id}: HTTP ${res.status} ${await res.text()}`);
        const read = (await res.json()) as MachineView;
        return { id: read.id, env: read.config.env };
      }
      if (Date.now() > deadline) throw new Error(`no booting machine of ${batchId}${attempt ? ` attempt ${attempt}` : ""}: ${JSON.stringify(ours.map((x) => [x.id, x.state]))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const post = (url: string, token: string, body: unknown) =>
    fetch(url, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body) });
  const pageUrl = async (env: Record<string, string>, page = 1) => {
    const res = await post(env.OUTPUTS_URL, env.CALLBACK_TOKEN, { page });
    return { status: res.status, body: (await res.json()) as { error?: string; outputs?: { url: string; headers: Record<string, string>; r2_key: string }[] } };
  };
  const success = (env: Record<string, string>, size: number) => ({ task_id: env.TASK_ID, batch_id: env.BATCH_ID, status: "success", output_r2_key: env.OUTPUT_R2_KEY, output_file_name: "x.jpg", output_file_size: size });

  async function runToEnd(message: QueueMessage) {
    const { final, stalled } = await watchToEnd(stack, message.batch_id);
    expect(stalled, `batch ${message.batch_id} stalled`).toBeNull();
    return final;
  }

  it("reads: /health says a token is needed; anonymous reads are refused; the token works with any case of `Bearer`; every answer says nosniff", async () => {
    const health = await fetch(`${stack.orchestratorUrl}/health`);
    expect(((await health.json()) as { reads: string }).reads).toBe("token");
    for (const path of ["/batches", "/status/any-batch", "/status/any-batch/events", "/status/any-batch/tasks"]) {
      const anonymous = await fetch(`${stack.orchestratorUrl}${path}`);
      expect(anonymous.status, `${path} without a token`).toBe(401);
      expect(anonymous.headers.get("x-content-type-options")).toBe("nosniff");
      say(`anonymous GET ${path}`, `${anonymous.status}`);
    }
    for (const scheme of ["Bearer", "bearer", "BEARER"]) {
      const res = await fetch(`${stack.orchestratorUrl}/batches`, { headers: { authorization: `${scheme} ${READ_TOKEN}` } });
      expect(res.status, `${scheme} <READ_TOKEN>`).toBe(200);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    }
    const wrong = await fetch(`${stack.orchestratorUrl}/batches`, { headers: { authorization: "Bearer not-the-read-token-at-all" } });
    expect(wrong.status).toBe(401);
    say("GET /batches with `bearer <READ_TOKEN>` (lower case)", "200");
  });

  it("a 5-byte junk success with a machine's stolen credentials is refused; the task is retried and ends with a real JPEG", async () => {
    const b = "cred-junk";
    await put(`batches/${b}/scan.tif`, await tiff(320, 240));
    await stack.api.enqueue({ batch_id: b, r2_prefix: `batches/${b}/`, pool: false });
    const { env } = await stealEnv(b, 1);
    expect(env.OUTPUT_URL, "no upload URL in a create body").toBeUndefined();
    const target = await pageUrl(env);
    expect(target.status).toBe(200);
    const [o] = target.body.outputs!;
    expect(Number(new URL(o.url).searchParams.get("X-Amz-Expires"))).toBeLessThanOrEqual(300);
    const stored = await fetch(o.url, { method: "PUT", headers: { ...o.headers }, body: "junk!" });
    expect(stored.status).toBe(200);
    const cb = await post(env.CALLBACK_URL, env.CALLBACK_TOKEN, success(env, 5));
    expect(await cb.json()).toMatchObject({ outcome: "error_recorded" });
    say("5-byte junk PUT through attempt 1's URL + success callback (output_file_size 5)", `${cb.status} error_recorded`);
    const final = await runToEnd({ batch_id: b, r2_prefix: `batches/${b}/` });
    expect(final.status).toBe("DONE");
    expect(final.progress).toMatchObject({ tasks_completed: 1, tasks_failed: 0 });
    const [task] = await stack.api.allTasks(b);
    const detail = (await (await fetch(`${stack.orchestratorUrl}/status/${b}/tasks/${task.task_id}`, { headers: { authorization: `Bearer ${READ_TOKEN}` } })).json()) as { attempts: { error: string | null }[] };
    expect(detail.attempts[0].error).toBe(`output batches/${b}/scan.jpg (image/jpeg) does not start with a JPEG signature (FF D8 FF)`);
    const jpeg = await bytesOf(`batches/${b}/scan.jpg`);
    expect(await sharp(jpeg).metadata()).toMatchObject({ format: "jpeg", width: 320, height: 240 });
  });

  it("after a reset, attempt 1's credentials change nothing; a URL it got before is good for minutes only, and what it writes never counts", async () => {
    const b = "cred-reset";
    await put(`batches/${b}/scan.tif`, await tiff(256, 192));
    await stack.api.enqueue({ batch_id: b, r2_prefix: `batches/${b}/`, pool: false });
    const { env } = await stealEnv(b, 1);
    const before = await pageUrl(env);
    expect(before.status).toBe(200);
    expect(await stack.api.reset(b)).toMatchObject({ status: "ERROR" });
    const again = await pageUrl(env);
    expect(again).toMatchObject({ status: 401, body: { error: expect.stringContaining("ended when the batch was reset or redriven") } });
    say("attempt 1's OUTPUTS_URL after a reset", `${again.status} ${again.body.error}`);
    const late = await post(env.CALLBACK_URL, env.CALLBACK_TOKEN, success(env, 5));
    expect(late.status).toBe(401);
    say("attempt 1's callback after a reset", `${late.status}`);
    // The URL it was given before the reset cannot be revoked: storage takes a PUT for up to 5 minutes…
    const [o] = before.body.outputs!;
    const put1 = await fetch(o.url, { method: "PUT", headers: { ...o.headers }, body: "junk after reset" });
    say("PUT to the upload URL attempt 1 got before the reset", `${put1.status} (X-Amz-Expires ${new URL(o.url).searchParams.get("X-Amz-Expires")} s)`);
    // …but nothing counts it: a redrive's attempt (a new epoch) replaces it and ends DONE with the real JPEG.
    await stack.api.redrive(b);
    const afterRedrive = await post(env.CALLBACK_URL, env.CALLBACK_TOKEN, success(env, 16));
    expect(afterRedrive.status).toBe(401);
    say("attempt 1's callback after the redrive", `${afterRedrive.status}`);
    const final = await runToEnd({ batch_id: b, r2_prefix: `batches/${b}/` });
    expect(final.status).toBe("DONE");
    expect(await sharp(await bytesOf(`batches/${b}/scan.jpg`)).metadata()).toMatchObject({ format: "jpeg", width: 256, height: 192 });
    // Its URL's condition (If-None-Match: *) now meets an object: storage refuses it.
    const put2 = await fetch(o.url, { method: "PUT", headers: { ...o.headers }, body: "junk after done" });
    expect(put2.status).toBe(412);
    say("the same URL once the redriven attempt has written", `${put2.status}`);
  });

  it("a pool machine's LEASE_TOKEN read from its create body: refused from another machine, for at most its boot limit, and not at all once the batch is reset", async () => {
    const b = "cred-lease";
    await put(`batches/${b}/scan.tif`, await tiff(200, 150));
    await stack.api.enqueue({ batch_id: b, r2_prefix: `batches/${b}/`, pool: true });
    const { id, env } = await stealEnv(b);
    const expires = Number(env.LEASE_TOKEN.split(".")[3]);
    // Create answer (60 s) + the stack's BOOT_TIMEOUT_MS (15 s): never the 12 hours of before.
    expect(expires - Date.now()).toBeLessThanOrEqual(75_000);
    const elsewhere = await post(env.LEASE_URL, env.LEASE_TOKEN, { worker_id: env.WORKER_ID, machine_id: "attacker-machine" });
    expect(elsewhere.status).toBe(401);
    say("lease with a stolen LEASE_TOKEN from another machine id", `${elsewhere.status} ${((await elsewhere.json()) as { error: string }).error}`);
    const noMachine = await post(env.LEASE_URL, env.LEASE_TOKEN, { worker_id: env.WORKER_ID });
    expect(noMachine.status).toBe(400);
    await stack.api.reset(b);
    const afterReset = await post(env.LEASE_URL, env.LEASE_TOKEN, { worker_id: env.WORKER_ID, machine_id: id });
    expect(afterReset.status).toBe(401);
    say("lease with the stolen LEASE_TOKEN as its own machine, after a reset", `${afterReset.status}`);
  });
});
