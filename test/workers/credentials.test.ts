// Credentials die with their purpose, and a success is believed only on the evidence (issue 20
// points 3 and 4): a reset or redrive ends every outstanding attempt (the batch's epoch is in each
// credential), upload URLs are asked for right before an upload and live minutes, an attempt that
// reported an error never wins later, every output is read back (size, signature, dimensions), the
// file list names outputs by their reserved keys, and a callback that cannot change anything reads
// no storage. Machines here write through the R2 binding as their presigned PUT would
// (support/engine.ts putAs honours the signed condition and keeps the writer metadata).
import { env, exports } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";
import { registerPhase } from "../../orchestrator/phases/index.ts";
import { tiffConversion } from "../../orchestrator/phases/tiff-conversion.ts";
import { LeaseResponse, MAX_PAGES_PER_TASK } from "../../shared/contracts.ts";
import {
  ADMIN,
  attemptToken,
  attemptsOf,
  callbackTo,
  errorBody,
  expireAll,
  finalFiles,
  getStatus,
  installWorld,
  jpegBytes,
  OUTPUT_HEIGHT,
  OUTPUT_SIZE,
  OUTPUT_WIDTH,
  outputTarget,
  putAs,
  putTiffs,
  startHanging,
  stub,
  supersede,
  successBody,
  waitForStatus,
  withStore,
  writeOutput,
  type World,
} from "./support/engine.ts";
import { lease, PoolRunner } from "./support/pool.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});



const admin = (what: "reset" | "redrive", b: string) => exports.default.fetch(`http://orchestrator.test/admin/${what}/${b}`, { method: "POST", headers: ADMIN });
const deletes = () => world.fly.requests.filter((r) => r.method === "DELETE").map((r) => r.path);

/** Storage calls the batch's DO makes from now on: counted, with how many were in flight at once (each held 5 ms so overlap shows). */
async function countStorage(batchId: string) {
  const stats = { reads: 0, heads: 0, inFlight: 0, peak: 0 };
  const bucket = env.BUCKET;
  const track = async <T>(call: () => Promise<T>): Promise<T> => {
    stats.inFlight++;
    stats.peak = Math.max(stats.peak, stats.inFlight);
    try {
      await new Promise((r) => setTimeout(r, 5));
      return await call();
    } finally {
      stats.inFlight--;
    }
  };
  const counted = {
    get: (key: string, options?: R2GetOptions) => (stats.reads++, track(() => bucket.get(key, options))),
    head: (key: string) => (stats.heads++, track(() => bucket.head(key))),
    list: (options?: R2ListOptions) => bucket.list(options),
    put: (...args: Parameters<R2Bucket["put"]>) => bucket.put(...args),
  } as unknown as R2Bucket;
  await runInDurableObject(stub(batchId), (instance) => {
    (instance as unknown as { env: Env }).env = { ...env, BUCKET: counted } as Env;
  });
  return stats;
}

describe("a reset or redrive ends every outstanding attempt", () => {
  it("after reset and redrive, attempt 1's credential settles nothing (401) and gets no upload URL; the redriven attempt finishes", async () => {
    const b = "cr-epoch";
    const [a1] = await startHanging(world, b, 1);
    expect(a1.CALLBACK_TOKEN).toMatch(/^v3\.0\.1\./);
    // Attempt 1 uploaded a real JPEG while it ran.
    expect(await writeOutput(a1)).toBe(true);
    expect((await admin("reset", b)).status).toBe(200);
    expect((await admin("redrive", b)).status).toBe(202);
    // The task waits to run again; attempt 1's machine is long gone, its credential still unexpired.
    const late = await callbackTo(b, a1.TASK_ID, successBody(a1), a1.CALLBACK_TOKEN);
    expect(late.status).toBe(401);
    expect(await late.json()).toMatchObject({ error: `attempt 1 of ${a1.TASK_ID} ended when the batch was reset or redriven (its credential is of epoch 0, the batch is at 2)` });
    const url = await outputTarget(a1);
    expect(url).toEqual({ ok: false, status: 401, error: expect.stringContaining("ended when the batch was reset or redriven") });
    expect((await getStatus(b)).progress).toMatchObject({ tasks_completed: 0, retrying: 1 });
    // The redrive's attempt, in the batch's new epoch, runs and finishes.
    world.runner.behaviour = () => "succeed";
    await expireAll(b);
    await runDurableObjectAlarm(stub(b));
    const s = await waitForStatus(b, (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_completed: 1, tasks_failed: 0 });
    const a2 = machineProcessEnv(world.runner.started.at(-1)!);
    expect(a2.CALLBACK_TOKEN).toMatch(/^v3\.2\.2\./);
    expect((await attemptsOf(b, a1.TASK_ID)).at(-1)).toMatchObject({ attempt: 2, outcome: "done" });
  });
});

describe("a success counts only when each output is really the picture", () => {
  it("5 bytes of junk, a JPEG of other dimensions, and a file that is no JPEG are refused naming what is wrong; nothing is decoded", async () => {
    const b = "cr-junk";
    const [junk, dims, zeros] = await startHanging(world, b, 3);
    const put = async (m: Record<string, string>, bytes: Uint8Array) => {
      const t = await outputTarget(m);
      if (!t.ok) throw new Error(t.error);
      expect(await putAs(t.key, t.headers, bytes)).toBe(true);
    };
    await put(junk, new TextEncoder().encode("junk!"));
    expect(await (await callbackTo(b, junk.TASK_ID, { ...successBody(junk), output_file_size: 5, width: undefined, height: undefined }, junk.CALLBACK_TOKEN)).json()).toMatchObject({ outcome: "error_recorded" });
    await put(dims, jpegBytes(OUTPUT_WIDTH, OUTPUT_HEIGHT));
    expect(await (await callbackTo(b, dims.TASK_ID, { ...successBody(dims), width: OUTPUT_WIDTH + 1 }, dims.CALLBACK_TOKEN)).json()).toMatchObject({ outcome: "error_recorded" });
    await put(zeros, new Uint8Array(OUTPUT_SIZE));
    expect(await (await callbackTo(b, zeros.TASK_ID, successBody(zeros), zeros.CALLBACK_TOKEN)).json()).toMatchObject({ outcome: "error_recorded" });
    const errors = Object.fromEntries(await Promise.all([junk, dims, zeros].map(async (m) => [m.TASK_ID, (await attemptsOf(b, m.TASK_ID))[0].error])));
    expect(errors).toEqual({
      [junk.TASK_ID]: `output ${junk.OUTPUT_R2_KEY} (image/jpeg) does not start with a JPEG signature (FF D8 FF)`,
      [dims.TASK_ID]: `output ${dims.OUTPUT_R2_KEY} (image/jpeg) is 640×480 pixels, not the 641×480 reported`,
      [zeros.TASK_ID]: `output ${zeros.OUTPUT_R2_KEY} (image/jpeg) does not start with a JPEG signature (FF D8 FF)`,
    });
    expect((await getStatus(b)).progress).toMatchObject({ tasks_completed: 0, retrying: 3 });
  });

  it("a JPEG whose frame header comes after a 3 KB APP segment checks out (a second ranged read); the file list names it by its key, never the machine's name", async () => {
    const b = "cr-name";
    const [m] = await startHanging(world, b, 1);
    // SOI, an APP1 segment of 3,000 bytes (an EXIF block, say), then the frame header of 1000×700.
    const size = 4096;
    const bytes = new Uint8Array(size);
    bytes.set([0xff, 0xd8, 0xff, 0xe1, 3000 >> 8, 3000 & 0xff]);
    bytes.set([0xff, 0xc2, 0x00, 0x11, 0x08, 700 >> 8, 700 & 0xff, 1000 >> 8, 1000 & 0xff, 0x03], 2 + 2 + 3000);
    bytes.set([0xff, 0xd9], size - 2);
    const t = await outputTarget(m);
    if (!t.ok) throw new Error(t.error);
    expect(await putAs(t.key, t.headers, bytes)).toBe(true);
    const hostile = "<img src=x onerror=alert(1)>.jpg";
    const body = {
      ...successBody(m),
      output_file_name: hostile,
      output_file_size: size,
      width: 1000,
      height: 700,
      outputs: [{ r2_key: m.OUTPUT_R2_KEY, file_name: hostile, file_size: size, width: 1000, height: 700, content_type: "text/html" }],
    };
    expect(await (await callbackTo(b, m.TASK_ID, body, m.CALLBACK_TOKEN)).json()).toMatchObject({ outcome: "done" });
    await waitForStatus(b, (x) => x.status === "DONE");
    const files = await finalFiles(world.downstream);
    const jpeg = files.find((f) => f.r2_key === m.OUTPUT_R2_KEY);
    expect(jpeg).toMatchObject({ file_name: m.OUTPUT_R2_KEY.split("/").pop(), content_type: "image/jpeg", file_size: size, width: 1000, height: 700 });
    expect(JSON.stringify(files)).not.toContain("<img");
  });

  it("a phase whose outputs are PDFs: its outputs are checked for %PDF-, a JPEG where a PDF belongs is refused", async () => {
    registerPhase({ ...tiffConversion, name: "TEST_PDF_OUT", slug: "tiff", outputContentType: "application/pdf" });
    const b = "cr-pdf";
    const [good, bad] = await startHanging(world, b, 2, "TEST_PDF_OUT");
    const pdf = new TextEncoder().encode(`%PDF-1.7\n${"x".repeat(OUTPUT_SIZE - 9)}`);
    for (const [m, bytes] of [[good, pdf], [bad, jpegBytes(OUTPUT_WIDTH, OUTPUT_HEIGHT)]] as const) {
      const t = await outputTarget(m);
      if (!t.ok) throw new Error(t.error);
      expect(t.headers["content-type"]).toBe("application/pdf");
      expect(await putAs(t.key, t.headers, bytes)).toBe(true);
      await callbackTo(b, m.TASK_ID, { ...successBody(m), width: undefined, height: undefined }, m.CALLBACK_TOKEN);
    }
    expect((await attemptsOf(b, good.TASK_ID))[0].outcome).toBe("done");
    expect((await attemptsOf(b, bad.TASK_ID))[0].error).toBe(`output ${bad.OUTPUT_R2_KEY} (application/pdf) does not start with %PDF-`);
  });
});

describe("an attempt that reported an error never wins later", () => {
  it("its success while attempt 2 runs is refused (409), reads no storage, and its machine is destroyed; attempt 2 finishes the task", async () => {
    const b = "cr-liar";
    const [a1] = await startHanging(world, b, 1);
    // It uploads a real JPEG, then reports an error anyway.
    expect(await writeOutput(a1)).toBe(true);
    expect(await (await callbackTo(b, a1.TASK_ID, errorBody(a1, "simulated failure"), a1.CALLBACK_TOKEN)).json()).toMatchObject({ outcome: "error_recorded" });
    await expireAll(b);
    await runDurableObjectAlarm(stub(b));
    await vi.waitFor(() => expect(world.runner.started).toHaveLength(2), { timeout: 10_000 });
    const a2 = machineProcessEnv(world.runner.started[1]);
    const storage = await countStorage(b);
    const lie = await callbackTo(b, a1.TASK_ID, successBody(a1), a1.CALLBACK_TOKEN);
    expect(lie.status).toBe(409);
    expect(await lie.json()).toEqual({ error: `attempt 1 of ${a1.TASK_ID} already reported an error; it cannot settle the task (its machine is destroyed)` });
    expect(storage.reads + storage.heads, "storage calls for a callback that cannot change anything").toBe(0);
    await vi.waitFor(() => expect(deletes().some((p) => p.includes(a1.FLY_MACHINE_ID))).toBe(true), { timeout: 10_000 });
    const during = (await getStatus(b)).progress;
    expect(during.tasks_completed).toBe(0);
    expect(during.starting + during.running).toBe(1);
    await world.runner.finish(a2.FLY_MACHINE_ID);
    await waitForStatus(b, (x) => x.status === "DONE");
    expect((await attemptsOf(b, a1.TASK_ID)).map((a) => a.outcome)).toEqual(["failed", "done"]);
  });
});

describe("bounded work per request", () => {
  it("a refused success replayed, and copies of a callback sent together, cost no further storage read", async () => {
    const b = "cr-replay";
    const [a1] = await startHanging(world, b, 1);
    // a1 writes junk while it runs, then is superseded (its run limit passes).
    const t = await outputTarget(a1);
    if (!t.ok) throw new Error(t.error);
    await putAs(t.key, t.headers, new TextEncoder().encode("junk!"));
    const a2 = await supersede(world, b);
    const storage = await countStorage(b);
    const lying = { ...successBody(a1), output_file_size: 5, width: undefined, height: undefined };
    expect(await (await callbackTo(b, a1.TASK_ID, lying, a1.CALLBACK_TOKEN)).json()).toMatchObject({ outcome: "ignored", reason: "superseded" });
    expect(storage.reads).toBe(1);
    for (let i = 0; i < 5; i++) {
      expect(await (await callbackTo(b, a1.TASK_ID, lying, a1.CALLBACK_TOKEN)).json()).toMatchObject({ outcome: "ignored", reason: "already_reported" });
    }
    expect(storage.reads + storage.heads, "a replay reads nothing").toBe(1);
    // Five copies of attempt 2's success at once: one check, one answer for all.
    expect(await writeOutput(a2)).toBe(true);
    const before = storage.reads;
    const replies = await Promise.all(Array.from({ length: 5 }, () => callbackTo(b, a2.TASK_ID, successBody(a2), a2.CALLBACK_TOKEN).then((r) => r.json())));
    expect(replies.every((r) => (r as { outcome: string }).outcome === "done")).toBe(true);
    expect(storage.reads - before).toBe(1);
    expect((await getStatus(b)).progress.tasks_completed).toBe(1);
  });

  it("50 pages: their reservation and their checks run at most 6 storage calls at once", async () => {
    const b = "cr-pages";
    const [m] = await startHanging(world, b, 1);
    const storage = await countStorage(b);
    const reserve = await exports.default.fetch(m.OUTPUTS_URL, {
      method: "POST",
      headers: { authorization: `Bearer ${m.CALLBACK_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ pages: 50 }),
    });
    expect(reserve.status).toBe(200);
    const keys = ((await reserve.json()) as { outputs: { r2_key: string }[] }).outputs.map((o) => o.r2_key);
    expect(keys).toHaveLength(50);
    expect(storage.heads).toBe(49);
    expect(storage.peak).toBeLessThanOrEqual(6);
    expect(storage.peak).toBeGreaterThan(1);
    for (const k of keys) await env.BUCKET.put(k, jpegBytes(OUTPUT_WIDTH, OUTPUT_HEIGHT));
    storage.peak = 0;
    const outputs = keys.map((k, i) => ({ r2_key: k, file_name: "x.jpg", file_size: OUTPUT_SIZE, page: i + 1, width: OUTPUT_WIDTH, height: OUTPUT_HEIGHT }));
    expect(await (await callbackTo(b, m.TASK_ID, { ...successBody(m), outputs }, m.CALLBACK_TOKEN)).json()).toMatchObject({ outcome: "done" });
    expect(storage.reads).toBe(50);
    expect(storage.peak).toBeLessThanOrEqual(6);
  });

  it(`a task writes at most MAX_PAGES_PER_TASK (${MAX_PAGES_PER_TASK}) outputs: more is refused at the reservation and in a callback`, async () => {
    const b = "cr-ceiling";
    const [m] = await startHanging(world, b, 1);
    const over = await exports.default.fetch(m.OUTPUTS_URL, {
      method: "POST",
      headers: { authorization: `Bearer ${m.CALLBACK_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ pages: MAX_PAGES_PER_TASK + 1 }),
    });
    expect(over.status).toBe(400);
    expect(await over.json()).toEqual({ error: `invalid body: pages: a task writes at most ${MAX_PAGES_PER_TASK} outputs (MAX_PAGES_PER_TASK)` });
    const outputs = Array.from({ length: MAX_PAGES_PER_TASK + 1 }, (_, i) => ({ r2_key: `${b}/p${i}.jpg`, file_name: "p.jpg", file_size: 1 }));
    const cb = await callbackTo(b, m.TASK_ID, { ...successBody(m), outputs }, m.CALLBACK_TOKEN);
    expect(cb.status).toBe(400);
    expect(((await cb.json()) as { error: string }).error).toContain(`a task writes at most ${MAX_PAGES_PER_TASK} outputs`);
  });
});

describe("upload URLs are short-lived", () => {
  it("a page's URL lives 5 minutes from when it is asked for, and never past its attempt's credential", async () => {
    const b = "cr-ttl";
    const [m] = await startHanging(world, b, 1);
    const expires = (url: string) => Number(new URL(url).searchParams.get("X-Amz-Expires"));
    const own = await outputTarget(m);
    if (!own.ok) throw new Error(own.error);
    expect(expires(own.url)).toBe(300);
    // The same attempt's credential, expiring in 90 s: the URL expires with it.
    const soon = await outputTarget({ ...m, CALLBACK_TOKEN: await attemptToken(b, m.TASK_ID, 1, Date.now() + 90_000) });
    if (!soon.ok) throw new Error(soon.error);
    expect(expires(soon.url)).toBeLessThanOrEqual(90);
    expect(expires(soon.url)).toBeGreaterThan(80);
  });
});

describe("a pool lease works only for the machine it was given to, briefly", () => {
  it("the create body's token lasts until the boot limit; a lease names its machine; answers renew it for two lease timeouts; it dies with the machine", async () => {
    await world.restore();
    const runner = new PoolRunner();
    runner.lazy = () => true; // the test leases by hand
    world = installWorld({ runner });
    const b = "cr-lease";
    await putTiffs(`${b}/`, 2);
    const before = Date.now();
    await stub(b).start({ batch_id: b, r2_prefix: `${b}/`, pool: true, pool_tasks_per_machine: 1 });
    await vi.waitFor(() => expect(runner.started.length).toBeGreaterThanOrEqual(2), { timeout: 10_000 });
    const [m0, m1] = runner.started;
    const e0 = machineProcessEnv(m0);
    // Nothing in the create body lasts: the lease credential ends at create + boot limit (TIFF: 1 + 10 min).
    const expiry = (token: string) => Number(token.split(".")[3]);
    expect(expiry(e0.LEASE_TOKEN)).toBeLessThanOrEqual(Date.now() + 60_000 + 10 * 60_000);
    expect(expiry(e0.LEASE_TOKEN)).toBeGreaterThanOrEqual(before + 60_000 + 10 * 60_000);
    // The engine knows which machine it made for each worker row before anyone may lease as it.
    await vi.waitFor(async () => expect(await withStore(b, (s) => s.getWorker(e0.WORKER_ID)?.machine_id)).toBe(m0.id), { timeout: 10_000 });
    // The token read from the create body, used from anywhere else: refused.
    for (const elsewhere of ["m-elsewhere", m1.id]) {
      const stolen = await lease(e0, undefined, elsewhere);
      expect(stolen.status).toBe(401);
      expect(await stolen.json()).toEqual({ error: `lease refused: ${e0.WORKER_ID} is machine ${m0.id}, not ${elsewhere}: a lease credential works only for the machine it was given to` });
    }
    // From its own machine: a task, and a renewed credential good for two lease timeouts (2 × 60 s).
    const asked = Date.now();
    const answer = LeaseResponse.parse(await (await lease(e0, undefined, m0.id)).json());
    if (answer.kind !== "task") throw new Error(`expected a task, got ${JSON.stringify(answer)}`);
    expect(expiry(answer.lease_token!)).toBeGreaterThanOrEqual(asked + 120_000);
    expect(expiry(answer.lease_token!)).toBeLessThanOrEqual(Date.now() + 120_000);
    const hb = await exports.default.fetch(`${e0.LEASE_URL}/heartbeat`, {
      method: "POST",
      headers: { authorization: `Bearer ${answer.lease_token}`, "content-type": "application/json" },
      body: JSON.stringify({ worker_id: e0.WORKER_ID, machine_id: m0.id, task_id: answer.task_id }),
    });
    expect(await hb.json()).toMatchObject({ ok: true, lease_token: expect.any(String) });
    // The machine is destroyed and the engine sees it gone: its credential leases nothing more.
    const destroyed = await fetch(`http://fly.test/v1/apps/${env.FLY_APP_NAME}/machines/${m0.id}?force=true`, { method: "DELETE", headers: { authorization: `Bearer ${env.FLY_API_TOKEN}` } });
    expect(destroyed.status).toBe(200);
    await withStore(b, (_s, sql) => sql.exec("UPDATE workers SET check_at = 0"));
    await runDurableObjectAlarm(stub(b));
    expect(await (await lease(e0, answer.lease_token, m0.id)).json()).toEqual({ kind: "done", reason: "this machine has been retired" });
  });
});

describe("one canonical credential, whatever the scheme's case", () => {
  it("a token with a leading zero in its epoch, attempt or expiry is refused; `bearer`, `BEARER` and `Bearer` all work, on callbacks, outputs, admin and reads", async () => {
    const b = "cr-canon";
    const [m] = await startHanging(world, b, 1);
    const [, epoch, attempt, expires, mac] = m.CALLBACK_TOKEN.split(".");
    for (const forged of [`v3.0${epoch}.${attempt}.${expires}.${mac}`, `v3.${epoch}.0${attempt}.${expires}.${mac}`, `v3.${epoch}.${attempt}.0${expires}.${mac}`]) {
      const res = await callbackTo(b, m.TASK_ID, errorBody(m, "from a second spelling of one token"), forged);
      expect(res.status, forged.slice(0, 30)).toBe(401);
    }
    const asked = await exports.default.fetch(m.OUTPUTS_URL, { method: "POST", headers: { authorization: `bearer ${m.CALLBACK_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ page: 1 }) });
    expect(asked.status).toBe(200);
    const adminToken = ADMIN.authorization.slice("Bearer ".length);
    const status = await exports.default.fetch(`http://orchestrator.test/status/${b}`, { headers: { authorization: `BEARER ${adminToken}` } });
    expect(status.status).toBe(200);
    expect(status.headers.get("x-content-type-options")).toBe("nosniff");
    const lower = await exports.default.fetch(m.CALLBACK_URL, { method: "POST", headers: { authorization: `bearer ${m.CALLBACK_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify(errorBody(m, "simulated failure")) });
    expect(await lower.json()).toMatchObject({ outcome: "error_recorded" });
    const reset = await exports.default.fetch(`http://orchestrator.test/admin/reset/${b}`, { method: "POST", headers: { authorization: `bearer ${adminToken}` } });
    expect(reset.status).toBe(200);
    const missing = await exports.default.fetch("http://orchestrator.test/no/such/route");
    expect(missing.status).toBe(404);
    expect(missing.headers.get("x-content-type-options")).toBe("nosniff");
  });
});
