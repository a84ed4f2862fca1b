// The fly-worker's checksum mode (PHASE=CHECKSUM) as a machine runs it: a real child process, real
// S3 (the local S3, which checks every signature as R2 does) reached through presigned URLs as the
// engine makes them — the PUT signing the sidecar's content type, its writer and If-None-Match — and
// a real HTTP callback receiver. The body it sends is judged by the CHECKSUM phase's own schema.
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { HeadObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXIT } from "../../fly-worker/exit-codes.ts";
import { startLocalS3, type LocalS3 } from "../../local/s3.ts";
import { presign } from "../../orchestrator/engine/presign.ts";
import { checksum } from "../../orchestrator/phases/checksum.ts";
import { ChecksumCallback, SIDECAR_CONTENT_TYPE, sidecarText } from "../../shared/checksum.ts";
import { WRITER_METADATA } from "../../shared/keys.ts";
import { callbackSubject, signToken } from "../../shared/token.ts";
import { startCallbackReceiver, type CallbackReceiver } from "./support/callback-receiver.ts";
import { getObjectBytes, localS3Client, objectExists, presignConfig, putFile } from "./support/s3.ts";
import { runWorker, type WorkerRun } from "./support/worker.ts";

const BUCKET = "fanout";
const SECRET = "test-callback-secret";
const BIG_MB = 128;
/** Streamed, the peak grows by GC slack, not with the input; held whole, it grows by at least BIG_MB. */
const GROWTH_LIMIT_MB = BIG_MB / 2;

let dir: string;
let s3: LocalS3;
let client: S3Client;
let receiver: CallbackReceiver;
let bigSha: string;
let smallSha: string;
let taskSeq = 0;

/** The storage config the engine presigns with: the local S3's key pair (it checks every signature). */
const storageConfig = () => presignConfig(s3, BUCKET);

async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/** Writes `mb` MiB of random bytes, a MiB at a time (the test process never holds the file either). */
async function randomFile(path: string, mb: number): Promise<void> {
  const out = createWriteStream(path);
  for (let i = 0; i < mb; i++) if (!out.write(randomBytes(1024 * 1024))) await new Promise<void>((r) => out.once("drain", () => r()));
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "fanout-checksum-test-"));
  [s3, receiver] = await Promise.all([startLocalS3({ buckets: [BUCKET] }), startCallbackReceiver()]);
  client = localS3Client(s3);
  const big = join(dir, "big.jpg");
  const small = join(dir, "small.jpg");
  await randomFile(big, BIG_MB);
  await writeFile(small, randomBytes(1024));
  await Promise.all([putFile(client, BUCKET, "scans/big.jpg", big, "image/jpeg"), putFile(client, BUCKET, "scans/small.jpg", small, "image/jpeg")]);
  [bigSha, smallSha] = await Promise.all([sha256Of(big), sha256Of(small)]);
}, 120_000);

afterAll(async () => {
  client?.destroy();
  await Promise.all([receiver?.close(), s3?.stop()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Planned {
  batchId: string;
  taskId: string;
  inputKey: string;
  outputKey: string;
  env: Record<string, string>;
}

/**
 * The env the engine gives a CHECKSUM machine (engine/access.ts attemptEnv + the phase's machine()):
 * the output does not exist yet, so its PUT signs If-None-Match: * (engine/outputs.ts outputAccess).
 */
async function plan(inputKey: string, overrides: { inputUrl?: string; outputKey?: string } = {}): Promise<Planned> {
  const batchId = "batch-sum";
  const taskId = `sum-${String(++taskSeq).padStart(6, "0")}`;
  const outputKey = overrides.outputKey ?? `${inputKey}.${taskSeq}.sha256`;
  const expiresAt = Date.now() + 10 * 60_000;
  const outputHeaders = { "content-type": checksum.outputContentType, [`x-amz-meta-${WRITER_METADATA}`]: `${batchId}/${taskId}`, "if-none-match": "*" };
  const phaseEnv = checksum.machine({ task_id: taskId, batch_id: batchId, input_key: inputKey, output_key: outputKey, size_bytes: 0, attempt: 1, params: {} }).env;
  const env = {
    ...phaseEnv,
    TASK_ID: taskId,
    BATCH_ID: batchId,
    PHASE: "CHECKSUM",
    ATTEMPT: "1",
    CALLBACK_URL: receiver.urlFor(batchId, taskId),
    CALLBACK_TOKEN: await signToken(SECRET, callbackSubject(batchId, taskId)),
    INPUT_URL: overrides.inputUrl ?? (await presign(storageConfig(), "GET", inputKey, expiresAt)),
    OUTPUT_URL: await presign(storageConfig(), "PUT", outputKey, expiresAt, Date.now(), outputHeaders),
    OUTPUT_HEADERS: JSON.stringify(outputHeaders),
    FLY_MACHINE_ID: `local-${taskId}`,
    CALLBACK_BACKOFF_MS: "20",
  };
  return { batchId, taskId, inputKey, outputKey, env };
}

function onlyCallback(p: Planned, r: WorkerRun) {
  const got = receiver.forTask(p.batchId, p.taskId);
  expect(got, `exactly one callback for ${p.taskId}; worker said:\n${r.stdout}\n${r.stderr}`).toHaveLength(1);
  return got[0];
}

/** No presigned URL (its signature is a capability) and no token in any line. */
function expectNoSecrets(r: WorkerRun, p: Planned): void {
  const output = `${r.stdout}\n${r.stderr}`;
  expect(output).not.toContain("X-Amz-Signature");
  expect(output).not.toContain(p.env.CALLBACK_TOKEN);
}

describe("checksum mode (PHASE=CHECKSUM)", () => {
  let bigRun: WorkerRun;
  let bigTask: Planned;

  it(`hashes a ${BIG_MB} MiB input streamed from its presigned URL: node:crypto's digest, the sha256sum sidecar at the reserved key, a callback the phase's schema accepts`, async () => {
    bigTask = await plan("scans/big.jpg");
    bigRun = await runWorker(bigTask.env, { timeoutMs: 120_000 });
    expect(bigRun.code, bigRun.stderr).toBe(EXIT.SUCCESS);
    const cb = onlyCallback(bigTask, bigRun);
    expect(cb.authorization).toBe(`Bearer ${bigTask.env.CALLBACK_TOKEN}`);
    // The phase's own schema (what the engine checks with), not the TIFF one.
    const parsed = checksum.callback.safeParse(cb.body);
    expect(parsed.success, JSON.stringify(cb.body)).toBe(true);
    const body = ChecksumCallback.parse(cb.body);
    if (body.status !== "success") throw new Error(`expected success, got ${JSON.stringify(body)}`);
    expect(body.sha256).toBe(bigSha);
    expect(body.input).toEqual({ r2_key: "scans/big.jpg", bytes: BIG_MB * 1024 * 1024 });
    expect(body.output_r2_key).toBe(bigTask.outputKey);
    const sidecar = await getObjectBytes(client, BUCKET, bigTask.outputKey);
    expect(sidecar.bytes.toString("utf8")).toBe(sidecarText(bigSha, "scans/big.jpg"));
    expect(sidecar.bytes.toString("utf8")).toBe(`${bigSha}  big.jpg\n`);
    expect(body.output_file_size).toBe(sidecar.bytes.length);
    // Stored with the content type and writer its URL signed (the phase's, SIDECAR_CONTENT_TYPE).
    expect(checksum.outputContentType).toBe(SIDECAR_CONTENT_TYPE);
    expect(sidecar.contentType).toBe(SIDECAR_CONTENT_TYPE);
    const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: bigTask.outputKey }));
    expect(head.Metadata).toEqual({ [WRITER_METADATA]: `${bigTask.batchId}/${bigTask.taskId}` });
    // The engine's result(): the input's entry gets its digest; the sidecar joins the file list with its own.
    const sidecarSha = createHash("sha256").update(sidecar.bytes).digest("hex");
    expect(body.sidecar_sha256).toBe(sidecarSha);
    const outcome = checksum.result({ task_id: bigTask.taskId, batch_id: bigTask.batchId, input_key: bigTask.inputKey, output_key: bigTask.outputKey, size_bytes: 0, attempt: 1, params: {} }, body);
    expect(outcome).toMatchObject({ ok: true, inputFields: { sha256: bigSha }, add: [{ r2_key: bigTask.outputKey, sha256: sidecarSha, file_size: sidecar.bytes.length, source_r2_key: "scans/big.jpg" }] });
    expect(bigRun.logs.filter((l) => l.component === "Checksum").map((l) => l.fields.event)).toEqual(["task.start", "read.start", "read.done", "upload.done", "task.done", "task.exit"]);
    expectNoSecrets(bigRun, bigTask);
  }, 180_000);

  it("holds memory bounded: the peak RSS hashing 128 MiB grows by less than half the input's size over hashing 1 KiB (streamed, never whole)", async () => {
    expect(bigRun, "the previous test ran the big input").toBeDefined();
    const small = await plan("scans/small.jpg");
    const smallRun = await runWorker(small.env, { timeoutMs: 60_000 });
    expect(smallRun.code, smallRun.stderr).toBe(EXIT.SUCCESS);
    expect(ChecksumCallback.parse(onlyCallback(small, smallRun).body)).toMatchObject({ status: "success", sha256: smallSha, input: { bytes: 1024 } });
    const reported = (r: WorkerRun) => Number(r.logs.find((l) => l.fields.event === "read.done")?.fields.peak_rss_mb);
    const growth = bigRun.peakRssMb - smallRun.peakRssMb;
    expect(growth, `peak RSS: ${bigRun.peakRssMb} MB for ${BIG_MB} MiB vs ${smallRun.peakRssMb} MB for 1 KiB (worker's own figures ${reported(bigRun)} / ${reported(smallRun)})`).toBeLessThan(GROWTH_LIMIT_MB);
    expect(reported(bigRun) - reported(smallRun), `the worker's own peak at read.done: ${reported(bigRun)} MB vs ${reported(smallRun)} MB`).toBeLessThan(GROWTH_LIMIT_MB);
    console.log(`[checksum memory] peak RSS ${bigRun.peakRssMb} MB (${BIG_MB} MiB input) vs ${smallRun.peakRssMb} MB (1 KiB); at read.done ${reported(bigRun)} vs ${reported(smallRun)} MB`);
  }, 120_000);

  it("an input that does not exist (HTTP 404): an error callback naming the key, not retryable, exit 65, no sidecar", async () => {
    const p = await plan("scans/missing.jpg");
    const r = await runWorker(p.env, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(EXIT.TASK_FAILED);
    const body = ChecksumCallback.parse(onlyCallback(p, r).body);
    expect(body).toMatchObject({ status: "error", error: "input object not found: scans/missing.jpg does not exist", retryable: false, error_kind: "input" });
    expect(checksum.callback.safeParse(body).success).toBe(true);
    expect(await objectExists(client, BUCKET, p.outputKey)).toBe(false);
    expectNoSecrets(r, p);
  }, 90_000);

  it("an expired presigned URL (the local S3 answers 403 ExpiredRequest, as R2): an error callback saying so, retryable (a new attempt gets fresh URLs)", async () => {
    const signedAt = Date.now() - 120_000;
    const expired = await presign(storageConfig(), "GET", "scans/big.jpg", signedAt + 60_000, signedAt);
    const p = await plan("scans/big.jpg", { inputUrl: expired });
    const r = await runWorker(p.env, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(EXIT.TASK_FAILED);
    const body = ChecksumCallback.parse(onlyCallback(p, r).body);
    expect(body).toMatchObject({
      status: "error",
      error: "download of scans/big.jpg was refused (HTTP 403): the presigned URL expired or does not cover this key",
      retryable: true,
    });
    // The phase turns it into a retry.
    expect(checksum.result({ task_id: p.taskId, batch_id: p.batchId, input_key: p.inputKey, output_key: p.outputKey, size_bytes: 0, attempt: 1, params: {} }, body)).toMatchObject({ ok: false, retryable: true });
    expect(await objectExists(client, BUCKET, p.outputKey)).toBe(false);
    expectNoSecrets(r, p);
  }, 90_000);

  it("an output key that already holds an object: storage refuses the If-None-Match PUT (412) and the worker reports it, retryable, the object untouched", async () => {
    const earlier = await plan("scans/small.jpg");
    expect((await runWorker(earlier.env, { timeoutMs: 60_000 })).code).toBe(EXIT.SUCCESS);
    const before = (await getObjectBytes(client, BUCKET, earlier.outputKey)).bytes;
    // Another task's URL for the same key, made while it looked free (the race the condition closes).
    const p = await plan("scans/small.jpg", { outputKey: earlier.outputKey });
    const r = await runWorker(p.env, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(EXIT.TASK_FAILED);
    expect(ChecksumCallback.parse(onlyCallback(p, r).body)).toMatchObject({
      status: "error",
      error: `upload of ${earlier.outputKey} was refused (HTTP 412 PreconditionFailed): storage holds an object there that this attempt may not replace`,
      retryable: true,
    });
    expect((await getObjectBytes(client, BUCKET, earlier.outputKey)).bytes.equals(before)).toBe(true);
  }, 120_000);

  it("an upload without the signed headers is refused: the URL stores only the content type it names", async () => {
    const p = await plan("scans/small.jpg");
    const { OUTPUT_HEADERS: _signed, ...withoutHeaders } = p.env;
    const r = await runWorker(withoutHeaders, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(EXIT.TASK_FAILED);
    expect(ChecksumCallback.parse(onlyCallback(p, r).body)).toMatchObject({
      status: "error",
      error: `upload of ${p.outputKey} was refused (HTTP 403): the presigned URL expired or does not cover this key`,
    });
    expect(await objectExists(client, BUCKET, p.outputKey)).toBe(false);
  }, 90_000);

  it("the callback goes the conversion's way: retried on 503 with the same body and token until delivered", async () => {
    const p = await plan("scans/small.jpg");
    receiver.scriptFor(p.batchId, p.taskId, [503, 503]);
    const r = await runWorker(p.env, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
    const got = receiver.forTask(p.batchId, p.taskId);
    expect(got).toHaveLength(3);
    expect(new Set(got.map((g) => JSON.stringify(g.body))).size).toBe(1);
    expect(got.every((g) => g.authorization === `Bearer ${p.env.CALLBACK_TOKEN}`)).toBe(true);
    expect(ChecksumCallback.parse(got[2].body)).toMatchObject({ status: "success", sha256: smallSha });
  }, 90_000);

  it("without PHASE (the old contract) the machine still converts a TIFF: the same JPEG input is refused as not a TIFF", async () => {
    const p = await plan("scans/small.jpg");
    const { PHASE: _phase, ...env } = p.env;
    const r = await runWorker({ ...env, OUTPUTS_URL: "http://127.0.0.1:1/outputs" }, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(EXIT.TASK_FAILED);
    const body = onlyCallback(p, r).body as { status: string; error: string };
    expect(body.status).toBe("error");
    expect(body.error).toMatch(/TIFF/);
    expect(r.logs.some((l) => l.component === "TiffConversion" && l.fields.event === "task.start" && l.fields.job === "tiff")).toBe(true);
  }, 90_000);
});

describe("checksum mode in a pool machine", () => {
  it("a lease whose env says PHASE=CHECKSUM is hashed and called back like a single-task machine's", async () => {
    const t = await plan("scans/small.jpg");
    let leases = 0;
    const heartbeats: unknown[] = [];
    const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" });
        if (req.url?.endsWith("/heartbeat")) {
          heartbeats.push(JSON.parse(Buffer.concat(chunks).toString("utf8")));
          return res.end(JSON.stringify({ ok: true }));
        }
        leases++;
        // The engine's lease: the task's attempt env (engine/access.ts), PHASE included.
        const { FLY_MACHINE_ID: _m, CALLBACK_BACKOFF_MS: _b, ...env } = t.env;
        res.end(JSON.stringify(leases === 1 ? { kind: "task", task_id: t.taskId, env, lease_ms: 30_000, heartbeat_ms: 10_000 } : { kind: "done", reason: "batch finished" }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const r = await runWorker(
        {
          POOL_MODE: "true",
          PHASE: "CHECKSUM",
          BATCH_ID: t.batchId,
          WORKER_ID: "pool-0001",
          LEASE_URL: `http://127.0.0.1:${port}/lease/${t.batchId}`,
          LEASE_TOKEN: "lease-token-for-test",
          IDLE_TIMEOUT_MS: "5000",
          MEMORY_MB: "256",
          FLY_MACHINE_ID: "local-pool-0001",
          CALLBACK_BACKOFF_MS: "20",
        },
        { timeoutMs: 60_000 },
      );
      expect(r.code, r.stderr).toBe(EXIT.SUCCESS);
      expect(leases).toBe(2);
      const body = ChecksumCallback.parse(onlyCallback(t, r).body);
      expect(body).toMatchObject({ status: "success", sha256: smallSha, output_r2_key: t.outputKey });
      expect((await getObjectBytes(client, BUCKET, t.outputKey)).bytes.toString("utf8")).toBe(`${smallSha}  small.jpg\n`);
      expect(r.logs.find((l) => l.fields.event === "task.finished")?.fields).toMatchObject({ status: "success", delivered: true });
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }, 90_000);
});

