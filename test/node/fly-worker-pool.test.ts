// The fly-worker in pool mode, as a pool machine runs it: one real child process leasing task
// after task from a fake lease server (real HTTP on loopback, following the lease contract of
// shared/contracts.ts to the letter), a real S3 endpoint (fauxqs) and a real callback receiver.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CallbackError, CallbackSuccess, HeartbeatRequest, LeaseRequest, LeaseResponse, leaseSubject } from "../../shared/contracts.ts";
import { callbackSubject, signToken, verifyToken } from "../../shared/token.ts";
import { EXIT } from "../../fly-worker/exit-codes.ts";
import { startLocalS3, type LocalS3 } from "../../local/s3.ts";
import { startCallbackReceiver, type CallbackReceiver } from "./support/callback-receiver.ts";
import { compareJpeg } from "./support/jpeg-check.ts";
import { getObjectBytes, localS3Client, objectExists, putFile } from "./support/s3.ts";
import { generateTiffCorpus, type CorpusCase } from "./support/tiff-corpus.ts";
import { runWorker, type WorkerRun } from "./support/worker.ts";

const BUCKET = "fanout";
const SECRET = "test-callback-secret";

let dir: string;
let s3: LocalS3;
let client: S3Client;
let receiver: CallbackReceiver;
let corpus: Record<string, CorpusCase>;
let batchSeq = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "fanout-pool-test-"));
  [corpus, s3, receiver] = await Promise.all([generateTiffCorpus(join(dir, "corpus")), startLocalS3({ buckets: [BUCKET] }), startCallbackReceiver()]);
  client = localS3Client(s3);
  // A scan big and noisy enough that mozjpeg takes a while: the "slow task" of these tests.
  const slow = join(dir, "slow.tif");
  await sharp({ create: { width: 2400, height: 2000, channels: 3, background: "#808080", noise: { type: "gaussian", mean: 128, sigma: 60 } } })
    .tiff({ compression: "deflate" })
    .toFile(slow);
  await Promise.all([...Object.values(corpus).map((c) => putFile(client, BUCKET, `scans/${c.name}.tif`, c.path)), putFile(client, BUCKET, "scans/slow.tif", slow)]);
});

afterAll(async () => {
  client?.destroy();
  await Promise.all([receiver?.close(), s3?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------
// The fake lease server: the engine's side of the lease contract, nothing more.

interface PlannedTask {
  taskId: string;
  inputName: string;
  outputKey: string;
  env: Record<string, string>;
}

/** What to answer a lease request with: a contract answer, or an HTTP status (an outage). */
type LeasePlan = LeaseResponse | { http: number; retryAfter?: string };

interface LeaseServer {
  leaseUrl: string;
  batchId: string;
  workerId: string;
  /** A valid LEASE_TOKEN for workerId. */
  token: string;
  /** Every lease request, in order, with when it came and what it was answered. */
  leases: { at: number; body: LeaseRequest; answer: LeasePlan }[];
  heartbeats: { at: number; body: HeartbeatRequest; status: number }[];
  /** Requests refused for a bad token or body (401/400). */
  refused: { path: string; status: number }[];
  /** Tasks whose lease this server has declared lost: heartbeats for them get 409. */
  lost: Set<string>;
  /** When each task was handed out. */
  leasedAt: Map<string, number>;
  close(): Promise<void>;
}

let taskSeq = 0;

async function planTask(batchId: string, inputName: string): Promise<PlannedTask> {
  const taskId = `tiff-${String(++taskSeq).padStart(6, "0")}`;
  const outputKey = `out/${batchId}/${inputName}-${taskId}.jpg`;
  // What the engine puts in a lease's env (batch-do.ts lease(): phase env + machine contract, no R2 keys).
  const env = {
    TASK_ID: taskId,
    BATCH_ID: batchId,
    PHASE: "TIFF_CONVERSION",
    INPUT_R2_KEY: `scans/${inputName}.tif`,
    OUTPUT_R2_KEY: outputKey,
    MEMORY_MB: "1024",
    R2_ACCOUNT_ID: "local",
    R2_BUCKET: BUCKET,
    R2_ENDPOINT: s3.endpoint,
    CALLBACK_URL: receiver.urlFor(batchId, taskId),
    CALLBACK_TOKEN: await signToken(SECRET, callbackSubject(batchId, taskId)),
  };
  return { taskId, inputName, outputKey, env };
}

/**
 * Starts a lease server for one batch and one worker. `plan(n)` answers the n-th lease request
 * (1-based); by default tasks are handed out in order, then `done`.
 */
async function startLeaseServer(options: { tasks: PlannedTask[]; plan?: (n: number, next: () => LeasePlan, server: LeaseServer) => LeasePlan; heartbeatMs?: number; batchId: string }): Promise<LeaseServer> {
  const { batchId } = options;
  const workerId = "pool-0001";
  const queue = [...options.tasks];
  const next = (): LeasePlan => {
    const task = queue.shift();
    if (!task) return { kind: "done", reason: "no work left" };
    return { kind: "task", task_id: task.taskId, env: task.env, lease_ms: (options.heartbeatMs ?? 100) * 3, heartbeat_ms: options.heartbeatMs ?? 100 };
  };
  const server: LeaseServer = {
    leaseUrl: "",
    batchId,
    workerId,
    token: await signToken(SECRET, leaseSubject(batchId, workerId)),
    leases: [],
    heartbeats: [],
    refused: [],
    lost: new Set(),
    leasedAt: new Map(),
    close: async () => {},
  };
  const holder = new Map<string, string>(); // task → worker holding its lease
  const reply = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  const leasePath = `/lease/${encodeURIComponent(batchId)}`;

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const path = req.url ?? "";
    const isLease = path === leasePath;
    const isHeartbeat = path === `${leasePath}/heartbeat`;
    if (req.method !== "POST" || (!isLease && !isHeartbeat)) {
      server.refused.push({ path, status: 404 });
      return reply(res, 404, { error: `no route for ${req.method} ${path}` });
    }
    let json: unknown;
    try {
      json = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      server.refused.push({ path, status: 400 });
      return reply(res, 400, { error: "body is not valid JSON" });
    }
    const parsed = (isLease ? LeaseRequest : HeartbeatRequest).safeParse(json);
    if (!parsed.success) {
      server.refused.push({ path, status: 400 });
      return reply(res, 400, { error: "invalid body" });
    }
    if (!(await verifyToken(SECRET, leaseSubject(batchId, parsed.data.worker_id), req.headers.authorization ?? null))) {
      server.refused.push({ path, status: 401 });
      return reply(res, 401, { error: "lease token missing or invalid" });
    }
    const now = Date.now();
    if (isHeartbeat) {
      const body = HeartbeatRequest.parse(json);
      const ours = holder.get(body.task_id) === body.worker_id && !server.lost.has(body.task_id);
      server.heartbeats.push({ at: now, body, status: ours ? 200 : 409 });
      return ours ? reply(res, 200, { ok: true }) : reply(res, 409, { ok: false, reason: `lease lost: task ${body.task_id} was returned to the batch` });
    }
    const body = LeaseRequest.parse(json);
    const answer = options.plan ? options.plan(server.leases.length + 1, next, server) : next();
    server.leases.push({ at: now, body, answer });
    if ("http" in answer) {
      if (answer.retryAfter !== undefined) res.setHeader("retry-after", answer.retryAfter);
      return reply(res, answer.http, { error: `scripted ${answer.http}` });
    }
    const checked = LeaseResponse.parse(answer); // the fake speaks the contract exactly
    if (checked.kind === "task") {
      holder.set(checked.task_id, body.worker_id);
      server.leasedAt.set(checked.task_id, now);
    }
    return reply(res, 200, checked);
  };
  const http = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const { port } = http.address() as AddressInfo;
  server.leaseUrl = `http://127.0.0.1:${port}${leasePath}`;
  server.close = () =>
    new Promise<void>((resolve, reject) => {
      http.closeAllConnections();
      http.close((error) => (error ? reject(error) : resolve()));
    });
  return server;
}

/** A pool machine's env as the engine creates it (batch-do.ts tendPool). */
function poolEnv(server: LeaseServer, extra: Record<string, string> = {}): Record<string, string> {
  return {
    POOL_MODE: "true",
    BATCH_ID: server.batchId,
    WORKER_ID: server.workerId,
    LEASE_URL: server.leaseUrl,
    LEASE_TOKEN: server.token,
    IDLE_TIMEOUT_MS: "5000",
    MEMORY_MB: "1024",
    PHASE: "TIFF_CONVERSION",
    R2_ACCOUNT_ID: "local",
    R2_ACCESS_KEY_ID: s3.credentials.accessKeyId,
    R2_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
    R2_BUCKET: BUCKET,
    R2_ENDPOINT: s3.endpoint,
    FLY_MACHINE_ID: `local-${server.workerId}`,
    CALLBACK_BACKOFF_MS: "20",
    ...extra,
  };
}

interface Pool {
  server: LeaseServer;
  tasks: PlannedTask[];
  /** A fresh TMPDIR for the worker, to see that each task's temp files are removed. */
  tmp: string;
}

async function pool(inputs: string[], options: { plan?: (n: number, next: () => LeasePlan, server: LeaseServer) => LeasePlan; heartbeatMs?: number } = {}): Promise<Pool> {
  const batchId = `batch-pool-${++batchSeq}`;
  const tasks: PlannedTask[] = [];
  for (const name of inputs) tasks.push(await planTask(batchId, name));
  const server = await startLeaseServer({ batchId, tasks, ...options });
  const tmp = await mkdtemp(join(dir, "tmp-"));
  return { server, tasks, tmp };
}

async function run(p: Pool, extra: Record<string, string> = {}): Promise<WorkerRun> {
  try {
    return await runWorker({ ...poolEnv(p.server, extra), TMPDIR: p.tmp }, { timeoutMs: 60_000 });
  } finally {
    await p.server.close();
  }
}

const events = (r: WorkerRun, component = "Pool") => r.logs.filter((l) => l.component === component).map((l) => String(l.fields.event));

/** What every pool run must honour: the log format and context, no secret anywhere, no temp files left. */
async function checkHygiene(r: WorkerRun, p: Pool): Promise<void> {
  const output = `${r.stdout}\n${r.stderr}`;
  const secrets = [p.server.token, s3.credentials.secretAccessKey, s3.credentials.accessKeyId, ...p.tasks.map((t) => t.env.CALLBACK_TOKEN)];
  for (const s of secrets) expect(output, "a secret leaked into the logs").not.toContain(s);
  const lines = output.split("\n").filter((l) => l.trim() !== "" && !l.includes("ExperimentalWarning") && !l.includes("--trace-warnings"));
  expect(lines.filter((l) => !/^\[(TiffConversion|Env|S3|Callback|FlyWorker|Pool)\] \{.*\}$/.test(l)), "every log line is `[Component] {json}`").toEqual([]);
  for (const { fields } of r.logs) expect(fields).toMatchObject({ batch_id: p.server.batchId, worker_id: p.server.workerId, machine_id: `local-${p.server.workerId}` });
  // Lines of a task carry its task_id; lines between tasks carry none.
  for (const l of r.logs.filter((x) => x.component === "TiffConversion")) expect(l.fields.task_id).toMatch(/^tiff-\d{6}$/);
  expect(await readdir(p.tmp), "each task's temp dir is removed").toEqual([]);
}

/** When each task was converting, from the worker's own lines: its first convert.start to its last convert.done. */
function conversionSpans(r: WorkerRun): Map<string, { start: number; end: number }> {
  const spans = new Map<string, { start: number; end: number }>();
  for (const { component, fields } of r.logs) {
    if (component !== "TiffConversion" || (fields.event !== "convert.start" && fields.event !== "convert.done")) continue;
    const at = Date.parse(String(fields.ts));
    const span = spans.get(String(fields.task_id)) ?? { start: Infinity, end: -Infinity };
    if (fields.event === "convert.start") span.start = Math.min(span.start, at);
    else span.end = Math.max(span.end, at);
    spans.set(String(fields.task_id), span);
  }
  return spans;
}

/** The most conversions in progress at one instant (a span ending as another starts does not overlap it). */
function mostAtOnce(spans: Iterable<{ start: number; end: number }>): number {
  const list = [...spans];
  return Math.max(0, ...list.map((a) => list.filter((b) => b.start <= a.start && a.start < b.end).length));
}

function onlyCallback(p: Pool, t: PlannedTask) {
  const received = receiver.forTask(p.server.batchId, t.taskId);
  expect(received, `exactly one callback for ${t.taskId}`).toHaveLength(1);
  return received[0];
}

describe("fly-worker pool mode", () => {
  it("converts several TIFFs in sequence in one process, then exits 0 on done", async () => {
    const names = ["rgb8", "cmyk-icc", "rgb16", "multipage-thumb-first"];
    const p = await pool(names);
    const r = await run(p);
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    await checkHygiene(r, p);
    // lease, convert, lease, … and a last lease answered done.
    expect(p.server.leases.map((l) => ("kind" in l.answer ? l.answer.kind : l.answer.http))).toEqual(["task", "task", "task", "task", "done"]);
    for (const l of p.server.leases) expect(l.body).toEqual({ worker_id: "pool-0001", machine_id: "local-pool-0001" });
    expect(p.server.refused).toEqual([]);
    for (const [i, t] of p.tasks.entries()) {
      const cb = onlyCallback(p, t);
      expect(await verifyToken(SECRET, callbackSubject(p.server.batchId, t.taskId), cb.authorization ?? null)).toBe(true);
      const body = CallbackSuccess.parse(cb.body);
      expect(body).toMatchObject({ task_id: t.taskId, batch_id: p.server.batchId, output_r2_key: t.outputKey, machine_id: "local-pool-0001" });
      const expected = corpus[names[i]].pages!;
      expect(body.pages).toBe(expected.length);
      const { bytes } = await getObjectBytes(client, BUCKET, t.outputKey);
      expect(await compareJpeg(bytes, expected[0], names[i] === "cmyk-icc" ? 90 : undefined), t.outputKey).toEqual([]);
      // Each task's total is its own, not the process's uptime.
      expect(body.performance?.total_time_ms).toBeLessThan(r.durationMs);
      // The callback of a task comes before the next lease request.
      if (i + 1 < p.server.leases.length) expect(cb.receivedAt).toBeLessThanOrEqual(p.server.leases[i + 1].at);
    }
    expect(events(r)).toEqual(["pool.start", ...names.flatMap(() => ["task.leased", "task.finished"]), "pool.done"]);
    expect(r.logs.find((l) => l.fields.event === "pool.done")?.fields).toMatchObject({ reason: "no work left", tasks: 4, failed: 0, exit_code: 0 });
  });

  it("POOL_CONCURRENCY=2 converts two tasks at once; every log line names its own task", async () => {
    // Two slow scans first: each takes long enough to convert that the other slot's starts meanwhile.
    const names = ["slow", "slow", "cmyk-icc", "rgb16"];
    const p = await pool(names);
    const r = await run(p, { POOL_CONCURRENCY: "2" });
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    await checkHygiene(r, p);
    const answers = p.server.leases.map((l) => ("kind" in l.answer ? l.answer.kind : l.answer.http));
    expect(answers.filter((a) => a === "task")).toHaveLength(4);
    expect(answers.filter((a) => a === "done")).toHaveLength(2); // each slot asks until told done
    // Two conversions were in progress at once, by the worker's own convert.start/convert.done times.
    const spans = conversionSpans(r);
    expect(spans.size).toBe(4);
    expect(mostAtOnce(spans.values()), JSON.stringify([...spans])).toBe(2);
    for (const t of p.tasks) {
      expect(CallbackSuccess.parse(onlyCallback(p, t).body)).toMatchObject({ task_id: t.taskId, output_r2_key: t.outputKey });
      expect(await objectExists(client, BUCKET, t.outputKey)).toBe(true);
      // Lines about this task's output carry this task's id, never the other slot's.
      const converted = r.logs.filter((l) => l.fields.event === "task.converted" && l.fields.output_r2_key === t.outputKey);
      expect(converted.map((l) => l.fields.task_id)).toEqual([t.taskId]);
    }
  });

  it("POOL_CONCURRENCY=3: the slots take turns downloading, then convert side by side", async () => {
    // Alike scans leased together would download together, each at a third of the network,
    // convert together and stay in step; one download at a time puts the slots out of step.
    const p = await pool(["slow", "slow", "slow"]);
    const r = await run(p, { POOL_CONCURRENCY: "3" });
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    await checkHygiene(r, p);
    const downloads = r.logs.filter((l) => l.component === "TiffConversion" && /^download\.(start|done)$/.test(String(l.fields.event)));
    expect(downloads.map((l) => `${String(l.fields.event)} ${String(l.fields.task_id)}`), "one download at a time").toEqual(
      downloads.filter((l) => l.fields.event === "download.start").flatMap((l) => [`download.start ${String(l.fields.task_id)}`, `download.done ${String(l.fields.task_id)}`]),
    );
    expect(downloads.filter((l) => l.fields.event === "download.start")).toHaveLength(3);
    // The slots that waited say how long; the three conversions still ran side by side: by the
    // worker's own convert.start/convert.done times, the last one started before the first ended.
    expect(Math.max(...downloads.map((l) => Number(l.fields.queued_ms ?? 0)))).toBeGreaterThan(0);
    const spans = conversionSpans(r);
    expect(spans.size).toBe(3);
    expect(mostAtOnce(spans.values()), JSON.stringify([...spans])).toBe(3);
  });

  it("heartbeats every heartbeat_ms while a slow task runs", async () => {
    const p = await pool(["slow"], { heartbeatMs: 100 });
    const r = await run(p);
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    await checkHygiene(r, p);
    const [t] = p.tasks;
    const cb = onlyCallback(p, t);
    CallbackSuccess.parse(cb.body);
    const leasedAt = p.server.leasedAt.get(t.taskId)!;
    const beats = p.server.heartbeats;
    const taskMs = cb.receivedAt - leasedAt;
    expect(taskMs, "the slow task takes long enough to need heartbeats").toBeGreaterThan(500);
    // Timers run late on a loaded machine: a third of the ideal count is still "every heartbeat_ms".
    expect(beats.length).toBeGreaterThanOrEqual(Math.max(3, Math.floor(taskMs / 100 / 3)));
    const nextLeaseAt = p.server.leases[1].at;
    for (const b of beats) {
      expect(b.body).toEqual({ worker_id: "pool-0001", task_id: t.taskId });
      expect(b.status).toBe(200);
      expect(b.at).toBeGreaterThan(leasedAt);
      expect(b.at, "heartbeats stop before the next lease").toBeLessThanOrEqual(nextLeaseAt);
    }
    // Spaced about heartbeat_ms apart, never in a burst.
    const gaps = beats.slice(1).map((b, i) => b.at - beats[i].at);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(80);
    expect(r.logs.find((l) => l.fields.event === "task.finished")?.fields).toMatchObject({ task_id: t.taskId, heartbeats: beats.length, lease_lost: false });
  });

  it("a lost lease (409) stops the heartbeats but the task still finishes and calls back", async () => {
    const p = await pool(["slow", "rgb8"], {
      heartbeatMs: 100,
      plan: (n, next, server) => {
        const answer = next();
        // The engine gives the first task away: its heartbeats now get 409.
        if (n === 1 && "kind" in answer && answer.kind === "task") setTimeout(() => server.lost.add(answer.task_id), 250);
        return answer;
      },
    });
    const r = await run(p);
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    await checkHygiene(r, p);
    const [slow, next] = p.tasks;
    CallbackSuccess.parse(onlyCallback(p, slow).body);
    CallbackSuccess.parse(onlyCallback(p, next).body);
    const slowBeats = p.server.heartbeats.filter((b) => b.body.task_id === slow.taskId);
    expect(slowBeats.filter((b) => b.status === 409), "one 409, then no more heartbeats for that task").toHaveLength(1);
    expect(slowBeats.at(-1)?.status).toBe(409);
    const lost = r.logs.find((l) => l.fields.event === "lease.lost");
    expect(lost?.fields).toMatchObject({ task_id: slow.taskId, reason: expect.stringMatching(/lease lost/) });
    expect(r.logs.find((l) => l.fields.event === "task.finished" && l.fields.task_id === slow.taskId)?.fields).toMatchObject({ status: "success", lease_lost: true });
    expect(p.server.leases).toHaveLength(3); // slow, rgb8, done
  });

  it("wait → sleeps wait_ms and asks again; then done → exit 0", async () => {
    const p = await pool([], {
      plan: (n) => (n <= 2 ? { kind: "wait", wait_ms: 300 } : { kind: "done", reason: "batch is DONE" }),
    });
    const r = await run(p);
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    await checkHygiene(r, p);
    expect(p.server.leases).toHaveLength(3);
    expect(p.server.leases[1].at - p.server.leases[0].at).toBeGreaterThanOrEqual(290);
    expect(p.server.leases[2].at - p.server.leases[1].at).toBeGreaterThanOrEqual(290);
    expect(r.logs.find((l) => l.fields.event === "pool.done")?.fields).toMatchObject({ reason: "batch is DONE", exit_code: 0, tasks: 0 });
  });

  it("wait, a task, more waits: exits 0 after IDLE_TIMEOUT_MS without a task", async () => {
    const p = await pool(["rgb8"], {
      plan: (n, next) => (n === 2 ? next() : { kind: "wait", wait_ms: 200 }),
    });
    const r = await run(p, { IDLE_TIMEOUT_MS: "800" });
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    await checkHygiene(r, p);
    CallbackSuccess.parse(onlyCallback(p, p.tasks[0]).body);
    const idle = r.logs.find((l) => l.fields.event === "pool.idle");
    expect(idle?.fields).toMatchObject({ exit_code: 0, tasks: 1, reason: expect.stringMatching(/no task for \d+ ms \(IDLE_TIMEOUT_MS=800\)/) });
    // The idle clock restarts after the task: ~800 ms of waits after the callback, not before.
    const cbAt = onlyCallback(p, p.tasks[0]).receivedAt;
    const last = p.server.leases.at(-1)!.at;
    expect(last - cbAt).toBeGreaterThanOrEqual(750);
    expect(last - cbAt).toBeLessThan(5000);
    expect(p.server.leases.at(-1)!.answer).toEqual({ kind: "wait", wait_ms: 200 }); // it asked once more before leaving
  });

  it("a bad LEASE_TOKEN: exits BAD_ENV at once with a clear message, token not shown", async () => {
    const p = await pool(["rgb8"]);
    const forged = "f".repeat(64);
    const r = await run(p, { LEASE_TOKEN: forged });
    expect(r.code).toBe(EXIT.BAD_ENV);
    expect(p.server.refused).toEqual([{ path: new URL(p.server.leaseUrl).pathname, status: 401 }]);
    expect(r.stderr).toMatch(/\[Pool\] .*"event":"lease.refused".*the orchestrator refused LEASE_TOKEN for worker pool-0001 of batch batch-pool-\d+ \(HTTP 401/);
    expect(`${r.stdout}${r.stderr}`).not.toContain(forged);
    expect(receiver.forTask(p.server.batchId, p.tasks[0].taskId)).toEqual([]);
  });

  it("an unknown batch (404): exits BAD_ENV naming LEASE_URL", async () => {
    const p = await pool([]);
    const r = await run(p, { LEASE_URL: p.server.leaseUrl.replace(/\/lease\/.*$/, "/lease/no-such-batch") });
    expect(r.code).toBe(EXIT.BAD_ENV);
    expect(r.stderr).toMatch(/does not know batch batch-pool-\d+ at LEASE_URL http:\/\/127\.0\.0\.1:\d+\/lease\/no-such-batch \(HTTP 404/);
  });

  it("a corrupt TIFF fails with an error callback and the loop goes on", async () => {
    const p = await pool(["garbage", "rgb8", "zero-byte", "rgb8-lzw"]);
    const r = await run(p);
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    await checkHygiene(r, p);
    const [garbage, ok1, empty, ok2] = p.tasks;
    expect(CallbackError.parse(onlyCallback(p, garbage).body)).toMatchObject({ error: expect.stringMatching(/truncated or corrupt/i), error_kind: "input", retryable: false });
    expect(CallbackError.parse(onlyCallback(p, empty).body).error).toMatch(/empty \(0 bytes\)/);
    CallbackSuccess.parse(onlyCallback(p, ok1).body);
    CallbackSuccess.parse(onlyCallback(p, ok2).body);
    expect(await objectExists(client, BUCKET, garbage.outputKey)).toBe(false);
    expect(await objectExists(client, BUCKET, ok2.outputKey)).toBe(true);
    expect(r.logs.find((l) => l.fields.event === "pool.done")?.fields).toMatchObject({ tasks: 4, failed: 2 });
  });

  it("a lease whose env is unusable gets a config error callback; the next task runs", async () => {
    const p = await pool(["rgb8", "rgb8-lzw"]);
    delete p.tasks[0].env.INPUT_R2_KEY;
    const r = await run(p);
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    expect(CallbackError.parse(onlyCallback(p, p.tasks[0]).body)).toMatchObject({ error: expect.stringMatching(/INPUT_R2_KEY is required but it is not set/), error_kind: "config", retryable: false });
    CallbackSuccess.parse(onlyCallback(p, p.tasks[1]).body);
  });

  it("retries the lease through an outage (5xx) and carries on", async () => {
    const p = await pool(["rgb8"], { plan: (n, next) => (n <= 2 ? { http: 503 } : next()) });
    const r = await run(p, { LEASE_BACKOFF_MS: "50" });
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    expect(p.server.leases.map((l) => ("http" in l.answer ? l.answer.http : l.answer.kind))).toEqual([503, 503, "task", "done"]);
    expect(events(r)).toEqual(expect.arrayContaining(["lease.retry", "lease.recovered"]));
  });

  it("waits as long as a 503's Retry-After HTTP date asks before leasing again", async () => {
    // Whole seconds only in an HTTP date: two seconds ahead is at least one second away.
    let askedUntil = 0;
    const p = await pool(["rgb8"], {
      plan: (n, next) => {
        if (n > 1) return next();
        askedUntil = (Math.floor(Date.now() / 1000) + 2) * 1000;
        return { http: 503, retryAfter: new Date(askedUntil).toUTCString() };
      },
    });
    const r = await run(p, { LEASE_BACKOFF_MS: "20" });
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    const [refused, second] = p.server.leases;
    expect("http" in refused.answer && refused.answer.http).toBe(503);
    // Backoff alone would ask again after ~20 ms; the date says a second or more.
    expect(second.at, `second lease ${second.at - refused.at} ms after the 503`).toBeGreaterThanOrEqual(askedUntil - 50);
  });

  it("gives up with exit 69 when the lease endpoint stays down for LEASE_RETRY_WINDOW_MS", async () => {
    const p = await pool([], { plan: () => ({ http: 502 }) });
    const started = Date.now();
    const r = await run(p, { LEASE_BACKOFF_MS: "50", LEASE_RETRY_WINDOW_MS: "1000" });
    expect(r.code).toBe(EXIT.LEASE_UNREACHABLE);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(p.server.leases.length).toBeGreaterThanOrEqual(3);
    expect(r.stderr).toMatch(/"event":"pool.exit".*failed for \d+ ms \(\d+ attempts; last: HTTP 502/);
  });

  it("a pool env with a problem is named and exits BAD_ENV before any lease", async () => {
    const p = await pool([]);
    // Storage access comes with each lease (presigned URLs): a pool machine needs no R2 key of its own.
    const r = await run(p, { LEASE_URL: "not a url", WORKER_ID: "" });
    expect(r.code).toBe(EXIT.BAD_ENV);
    expect(r.logs.find((l) => l.fields.event === "env.invalid")?.fields.problems).toEqual(["WORKER_ID is required but it is not set", 'LEASE_URL: must be an http(s) URL; received "not a url"']);
    expect(p.server.leases).toEqual([]);
  });
});
