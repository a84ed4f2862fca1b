// The bucket is the boundary (issue 20, points 1 and 2): every key that enters is canonical
// (shared/keys.ts keyProblem) and a batch reads only under its own place — its manifest's
// directory or its r2_prefix — so no `..` reaches another folder or bucket; an output key that
// holds an object this batch did not write is never replaced unless the message says
// `"overwrite": true`, and every PUT URL signs the condition that makes storage refuse the race.
// Machines here write through the R2 binding as their presigned PUT would (support/engine.ts
// writeOutput honours the signed If-None-Match / If-Match and keeps the writer metadata).
import { env, exports } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";
import { takenReason, WRITER_METADATA } from "../../orchestrator/engine/outputs.ts";
import {
  ADMIN,
  attemptsOf,
  attemptToken,
  expireAll,
  finalFiles,
  getStatus,
  installWorld,
  OUTPUT_SIZE,
  putManifest,
  stub,
  UPLOAD_REFUSED,
  waitForStatus,
  withStore,
  writeOutput,
  type World,
} from "./support/engine.ts";
import { PoolRunner } from "./support/pool.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

const BUCKET = env.R2_BUCKET;
const tiff = (key: string) => env.BUCKET.put(key, "II*\0", { httpMetadata: { contentType: "image/tiff" } });
const text = async (key: string) => (await env.BUCKET.get(key))?.text() ?? null;
const startedEnvs = () => world.runner.started.map((m) => machineProcessEnv(m));

async function failedTasks(batchId: string): Promise<{ input_key: string; error: string }[]> {
  const res = await exports.default.fetch(`http://orchestrator.test/status/${batchId}/tasks?status=failed`);
  return ((await res.json()) as { tasks: { input_key: string; error: string }[] }).tasks;
}

/** This batch's DO runs with `vars` over the test defaults (e.g. READ_SCOPE, ALLOWED_PREFIXES). */
async function withVars(batchId: string, vars: Record<string, string>): Promise<void> {
  await runInDurableObject(stub(batchId), (instance) => {
    (instance as unknown as { env: Env }).env = { ...env, ...vars } as Env;
  });
}

describe("keys are canonical and confined to the batch's place", () => {
  it("hostile manifest entries fail alone with the reason; nothing outside batches/trav-1/ is read or written", async () => {
    const b = "trav-1";
    await tiff(`batches/${b}/a.tif`);
    await env.BUCKET.put("private/secret.tif", "secret");
    await tiff("batches/other-batch/one.tif");
    const tooLong = `batches/${b}/${"é".repeat(503)}.tif`; // 15 + 1,006 + 4 = 1,025 bytes in 522 characters
    await putManifest(b, `batches/${b}/manifest.json`, [
      `batches/${b}/a.tif`,
      `batches/${b}/../../private/secret.tif`,
      "batches/../../other-bucket/x.tif",
      `batches/${b}/./a.tif`,
      `batches/${b}//a.tif`,
      `batches/${b}\\..\\x.tif`,
      tooLong,
      "batches/other-batch/one.tif",
    ]);
    await stub(b).start({ batch_id: b, manifest_r2_key: `batches/${b}/manifest.json` });
    const s = await waitForStatus(b, (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 8, tasks_completed: 1, tasks_failed: 7 });
    const reasons = Object.fromEntries((await failedTasks(b)).map((t) => [t.input_key, t.error]));
    expect(reasons).toEqual({
      [`batches/${b}/../../private/secret.tif`]: `"batches/${b}/../../private/secret.tif" is not a canonical object key: the key has a ".." segment`,
      "batches/../../other-bucket/x.tif": `"batches/../../other-bucket/x.tif" is not a canonical object key: the key has a ".." segment`,
      [`batches/${b}/./a.tif`]: `"batches/${b}/./a.tif" is not a canonical object key: the key has a "." segment`,
      [`batches/${b}//a.tif`]: `"batches/${b}//a.tif" is not a canonical object key: the key has an empty segment (a leading, trailing or doubled /)`,
      [`batches/${b}\\..\\x.tif`]: `"batches/${b}\\\\..\\\\x.tif" is not a canonical object key: the key contains a backslash`,
      [tooLong]: `"${tooLong.slice(0, 300)}…" is not a canonical object key: the key is 1025 bytes of UTF-8, more than R2's 1024`,
      "batches/other-batch/one.tif": `batches/other-batch/one.tif is outside this batch's place batches/${b}/: a batch reads only under its manifest's directory or its r2_prefix (READ_SCOPE=allowed-prefixes widens that to ALLOWED_PREFIXES)`,
    });
    // One machine, for the one file in its place; its URLs name exactly that file and its JPEG.
    const [m] = startedEnvs();
    expect(startedEnvs()).toHaveLength(1);
    expect(m.INPUT_R2_KEY).toBe(`batches/${b}/a.tif`);
    expect(new URL(m.INPUT_URL).pathname).toBe(`/${BUCKET}/batches/${b}/a.tif`);
    expect(new URL(m.OUTPUT_URL).pathname).toBe(`/${BUCKET}/batches/${b}/a.jpg`);
    expect(await text("private/secret.tif")).toBe("secret");
    for (const k of ["private/secret.jpg", "other-bucket/x.jpg", "batches/other-batch/one.jpg"]) expect(await env.BUCKET.head(k), k).toBeNull();
    // The downstream list has the file and its JPEG only.
    const final = { files: await finalFiles(world.downstream) };
    expect(final.files.map((f) => f.r2_key).sort()).toEqual([`batches/${b}/a.jpg`, `batches/${b}/a.tif`]);
  });

  it("a TIFF key without an extension whose JPEG key would pass 1,024 bytes fails, naming that key; one byte shorter converts", async () => {
    const b = "len-1";
    const input = `batches/${b}/${"é".repeat(503)}`; // 14 + 1,006 = 1,020 bytes; + ".jpg" = 1,024
    const longer = `batches/${b}/${"é".repeat(504)}`; // 1,022 bytes; + ".jpg" = 1,026
    for (const k of [input, longer]) await tiff(k);
    await stub(b).start({ batch_id: b, r2_prefix: `batches/${b}/` });
    const s = await waitForStatus(b, (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 2, tasks_completed: 1, tasks_failed: 1 });
    const [failed] = await failedTasks(b);
    expect(failed.input_key).toBe(longer);
    expect(failed.error).toBe(`its output key "${`${longer}.jpg`.slice(0, 300)}…" is not a canonical object key: the key is 1026 bytes of UTF-8, more than R2's 1024`);
    expect(startedEnvs().map((e) => e.OUTPUT_R2_KEY)).toEqual([`${input}.jpg`]);
  });

  it("a manifest key or r2_prefix with `..` is refused before anything is read, over HTTP (400) and over RPC (ERROR)", async () => {
    const res = await exports.default.fetch("http://orchestrator.test/admin/batches", {
      method: "POST",
      headers: { ...ADMIN, "content-type": "application/json" },
      body: JSON.stringify({ batch_id: "trav-2", manifest_r2_key: "batches/../private/manifest.json" }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toContain(`manifest_r2_key: not a canonical object key: the key has a ".." segment`);
    await env.BUCKET.put("private/manifest.json", JSON.stringify({ batch_id: "trav-3", directories: [{ directory_path: "/", files: [{ r2_key: "private/secret.tif" }] }] }));
    await stub("trav-3").start({ batch_id: "trav-3", manifest_r2_key: "batches/../private/manifest.json" });
    expect(await getStatus("trav-3")).toMatchObject({
      status: "ERROR",
      error: `invalid queue message: manifest_r2_key "batches/../private/manifest.json" is not canonical: the key has a ".." segment`,
      progress: { tasks_total: 0 },
    });
    await stub("trav-4").start({ batch_id: "trav-4", r2_prefix: "batches/trav-4/../../private/" });
    expect(await getStatus("trav-4")).toMatchObject({ status: "ERROR", error: expect.stringContaining(`r2_prefix "batches/trav-4/../../private/" is not canonical: the prefix has a ".." segment`) });
    expect(world.runner.started).toHaveLength(0);
  });

  it("an r2_prefix without its trailing / is a folder: batches/pfx-1 never takes batches/pfx-10/", async () => {
    await tiff("batches/pfx-1/a.tif");
    await tiff("batches/pfx-10/b.tif");
    const res = await exports.default.fetch("http://orchestrator.test/admin/batches", {
      method: "POST",
      headers: { ...ADMIN, "content-type": "application/json" },
      body: JSON.stringify({ batch_id: "pfx-1", r2_prefix: "batches/pfx-1" }),
    });
    expect(res.status).toBe(202);
    const s = await waitForStatus("pfx-1", (x) => x.status === "DONE");
    expect(s.progress.tasks_total).toBe(1);
    expect(startedEnvs().map((e) => e.INPUT_R2_KEY)).toEqual(["batches/pfx-1/a.tif"]);
  });

  it("READ_SCOPE=allowed-prefixes lets a manifest list another folder's file on purpose; that folder's existing JPEG is still not replaced", async () => {
    // Batch x-a converts its one.tif; its JPEG carries x-a's writer metadata.
    await tiff("batches/x-a/one.tif");
    await stub("x-a").start({ batch_id: "x-a", r2_prefix: "batches/x-a/" });
    await waitForStatus("x-a", (x) => x.status === "DONE" && x.progress.tasks_completed === 1);
    const before = await env.BUCKET.head("batches/x-a/one.jpg");
    expect(before?.customMetadata).toEqual({ [WRITER_METADATA]: "x-a/tiff-000000" });
    // Batch x-b's manifest, in batches/x-b/, lists x-a's TIFF.
    await putManifest("x-b", "batches/x-b/manifest.json", ["batches/x-a/one.tif"]);
    await withVars("x-b", { READ_SCOPE: "allowed-prefixes" });
    await stub("x-b").start({ batch_id: "x-b", manifest_r2_key: "batches/x-b/manifest.json" });
    await waitForStatus("x-b", (x) => x.status === "FAILED"); // its only task failed
    expect(await failedTasks("x-b")).toEqual([expect.objectContaining({ input_key: "batches/x-a/one.tif", error: takenReason("batches/x-a/one.jpg") })]);
    expect(world.runner.started).toHaveLength(1); // x-a's; x-b never got a machine
    expect((await env.BUCKET.head("batches/x-a/one.jpg"))?.etag).toBe(before!.etag);
  });
});

/** Starts a one-TIFF batch whose machine hangs (the test plays it); its attempt-1 env. */
async function startHanging(b: string): Promise<Record<string, string>> {
  world.runner.behaviour = () => "hang";
  await tiff(`batches/${b}/scan.tif`);
  await stub(b).start({ batch_id: b, r2_prefix: `batches/${b}/` });
  await vi.waitFor(() => expect(world.runner.started).toHaveLength(1), { timeout: 10_000 });
  return startedEnvs()[0];
}

/** Attempt 1 runs out of time (its machine is destroyed); the retry's backoff passes and attempt 2 gets a machine. */
async function supersede(b: string): Promise<void> {
  await expireAll(b);
  await runDurableObjectAlarm(stub(b));
  await expireAll(b);
  await runDurableObjectAlarm(stub(b));
  await vi.waitFor(() => expect(world.runner.started).toHaveLength(2), { timeout: 10_000 });
}

describe("no object is replaced by accident", () => {
  it("scan.tif beside an unlisted, pre-existing scan.jpg: that file fails naming the key, no machine is made for it, scan.jpg is untouched", async () => {
    const b = "ow-1";
    await tiff(`batches/${b}/scan.tif`);
    await tiff(`batches/${b}/other.tif`);
    await env.BUCKET.put(`batches/${b}/scan.jpg`, "precious");
    await putManifest(b, `batches/${b}/manifest.json`, [`batches/${b}/scan.tif`, `batches/${b}/other.tif`]);
    await stub(b).start({ batch_id: b, manifest_r2_key: `batches/${b}/manifest.json` });
    const s = await waitForStatus(b, (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 2, tasks_completed: 1, tasks_failed: 1 });
    expect(await failedTasks(b)).toEqual([expect.objectContaining({ input_key: `batches/${b}/scan.tif`, error: takenReason(`batches/${b}/scan.jpg`) })]);
    expect(startedEnvs().map((e) => e.INPUT_R2_KEY)).toEqual([`batches/${b}/other.tif`]);
    expect(await text(`batches/${b}/scan.jpg`)).toBe("precious");
    // The machine that ran signed its PUT against any object appearing meanwhile.
    expect(JSON.parse(startedEnvs()[0].OUTPUT_HEADERS)).toEqual({ "content-type": "image/jpeg", [`x-amz-meta-${WRITER_METADATA}`]: `${b}/tiff-000001`, "if-none-match": "*" });
    expect(new URL(startedEnvs()[0].OUTPUT_URL).searchParams.get("X-Amz-SignedHeaders")).toBe(`content-type;host;if-none-match;x-amz-meta-${WRITER_METADATA}`);
  });

  it("in pool mode too: the lease fails that task instead of handing it out", async () => {
    await world.restore();
    const runner = new PoolRunner();
    world = installWorld({ runner });
    const b = "ow-pool";
    await tiff(`batches/${b}/scan.tif`);
    await tiff(`batches/${b}/other.tif`);
    await env.BUCKET.put(`batches/${b}/scan.jpg`, "precious");
    await putManifest(b, `batches/${b}/manifest.json`, [`batches/${b}/scan.tif`, `batches/${b}/other.tif`]);
    await stub(b).start({ batch_id: b, manifest_r2_key: `batches/${b}/manifest.json`, pool: true, pool_tasks_per_machine: 1 });
    const s = await waitForStatus(b, (x) => x.status === "DONE");
    expect(s.progress).toMatchObject({ tasks_total: 2, tasks_completed: 1, tasks_failed: 1 });
    expect(await failedTasks(b)).toEqual([expect.objectContaining({ input_key: `batches/${b}/scan.tif`, error: takenReason(`batches/${b}/scan.jpg`) })]);
    const handedOut = runner.leases.flatMap((l) => ("kind" in l.answer && l.answer.kind === "task" ? [l.answer.task_id] : []));
    expect(handedOut).toEqual(["tiff-000001"]);
    expect(await text(`batches/${b}/scan.jpg`)).toBe("precious");
  });

  it('"overwrite": true replaces it on purpose (no condition signed); a message with another type for overwrite is refused', async () => {
    const b = "ow-2";
    await tiff(`batches/${b}/scan.tif`);
    await env.BUCKET.put(`batches/${b}/scan.jpg`, "earlier output");
    await putManifest(b, `batches/${b}/manifest.json`, [`batches/${b}/scan.tif`]);
    const bad = await exports.default.fetch("http://orchestrator.test/admin/batches", {
      method: "POST",
      headers: { ...ADMIN, "content-type": "application/json" },
      body: JSON.stringify({ batch_id: b, manifest_r2_key: `batches/${b}/manifest.json`, overwrite: "yes" }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toContain("overwrite");
    await stub(b).start({ batch_id: b, manifest_r2_key: `batches/${b}/manifest.json`, overwrite: true });
    await waitForStatus(b, (x) => x.status === "DONE" && x.progress.tasks_completed === 1);
    expect(JSON.parse(startedEnvs()[0].OUTPUT_HEADERS)).toEqual({ "content-type": "image/jpeg", [`x-amz-meta-${WRITER_METADATA}`]: `${b}/tiff-000000` });
    const replaced = await env.BUCKET.head(`batches/${b}/scan.jpg`);
    expect(replaced?.size).toBe(OUTPUT_SIZE);
    expect(replaced?.customMetadata).toEqual({ [WRITER_METADATA]: `${b}/tiff-000000` });
  });

  it("a retry after a lost callback replaces exactly its own earlier upload (If-Match on that ETag) and the task completes", async () => {
    const b = "ow-3";
    const a1 = await startHanging(b);
    expect(JSON.parse(a1.OUTPUT_HEADERS)["if-none-match"]).toBe("*");
    // Attempt 1 uploads, then its machine dies before calling back.
    expect(await writeOutput(a1)).toBe(true);
    const uploaded = await env.BUCKET.head(a1.OUTPUT_R2_KEY);
    await supersede(b);
    const a2 = startedEnvs()[1];
    expect(a2.ATTEMPT).toBe("2");
    expect(a2.OUTPUT_R2_KEY).toBe(a1.OUTPUT_R2_KEY);
    expect(JSON.parse(a2.OUTPUT_HEADERS)).toEqual({ "content-type": "image/jpeg", [`x-amz-meta-${WRITER_METADATA}`]: `${b}/tiff-000000`, "if-match": uploaded!.httpEtag });
    await world.runner.finish(a2.FLY_MACHINE_ID);
    await waitForStatus(b, (x) => x.status === "DONE" && x.progress.tasks_completed === 1);
  });

  it("an object that appears at the key during the attempt: storage refuses the upload (412), and the next attempt fails the file naming the key", async () => {
    const b = "ow-4";
    const a1 = await startHanging(b);
    await env.BUCKET.put(a1.OUTPUT_R2_KEY, "someone else's");
    const res = await world.runner.finish(a1.FLY_MACHINE_ID);
    expect(res.status).toBe(200);
    expect((await attemptsOf(b, a1.TASK_ID))[0]).toMatchObject({ outcome: "failed", error: UPLOAD_REFUSED(a1) });
    await expireAll(b);
    await runDurableObjectAlarm(stub(b));
    // Its only task failed: the batch is FAILED (every task of the phase failed).
    const s = await waitForStatus(b, (x) => x.status === "FAILED");
    expect(s.progress).toMatchObject({ tasks_completed: 0, tasks_failed: 1 });
    expect((await failedTasks(b))[0].error).toBe(takenReason(a1.OUTPUT_R2_KEY));
    expect(world.runner.started).toHaveLength(1);
    expect(await text(a1.OUTPUT_R2_KEY)).toBe("someone else's");
  });

  it("page keys: a retry reuses its reserved page key (If-Match on its own upload) and is refused one another writer filled (409, naming it)", async () => {
    const b = "ow-5";
    await env.BUCKET.put(`batches/${b}/scan-p002.jpg`, "an unlisted file");
    const a1 = await startHanging(b);
    const reserve = async (token: string) =>
      exports.default.fetch(`http://orchestrator.test/outputs/${b}/${a1.TASK_ID}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ pages: 2 }),
      });
    type Reserved = { outputs: { page: number; r2_key: string; url: string; headers: Record<string, string> }[] };
    const r1 = (await (await reserve(a1.CALLBACK_TOKEN)).json()) as Reserved;
    // The unlisted scan-p002.jpg is never an output: page 2 takes the next free key.
    expect(r1.outputs).toEqual([
      { page: 2, r2_key: `batches/${b}/scan-p002-2.jpg`, url: expect.any(String), headers: { "content-type": "image/jpeg", [`x-amz-meta-${WRITER_METADATA}`]: `${b}/tiff-000000`, "if-none-match": "*" } },
    ]);
    expect(new URL(r1.outputs[0].url).searchParams.get("X-Amz-SignedHeaders")).toBe(`content-type;host;if-none-match;x-amz-meta-${WRITER_METADATA}`);
    // Attempt 1 uploads page 2 as its URL says, then is superseded.
    expect(await writeOutput({ OUTPUT_R2_KEY: r1.outputs[0].r2_key, OUTPUT_HEADERS: JSON.stringify(r1.outputs[0].headers) })).toBe(true);
    const page2 = await env.BUCKET.head(r1.outputs[0].r2_key);
    await withStore(b, (_s, sql) => sql.exec("UPDATE workers SET check_at = ?", Date.now() + 3_600_000));
    await supersede(b);
    const token2 = await attemptToken(b, a1.TASK_ID, 2);
    const r2 = (await (await reserve(token2)).json()) as Reserved;
    expect(r2.outputs).toEqual([{ page: 2, r2_key: r1.outputs[0].r2_key, url: expect.any(String), headers: { "content-type": "image/jpeg", [`x-amz-meta-${WRITER_METADATA}`]: `${b}/tiff-000000`, "if-match": page2!.httpEtag } }]);
    // Another writer fills the reserved key: the reservation is refused, naming it.
    await env.BUCKET.put(r1.outputs[0].r2_key, "someone else's");
    const r3 = await reserve(token2);
    expect(r3.status).toBe(409);
    expect(await r3.json()).toEqual({ error: takenReason(r1.outputs[0].r2_key) });
    expect(await text(`batches/${b}/scan-p002.jpg`)).toBe("an unlisted file");
  });
});
