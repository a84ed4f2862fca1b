// Drives the orchestrator in workerd tests: a Fly Machines API emulator behind
// http://fly.test (the documented API, the only thing mocked), a downstream behind
// http://downstream.test, and machines whose behaviour each test chooses.
import { env, exports } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { vi } from "vitest";
import { FlyEmulator, emulatorFetch, type FlyEmulatorOptions } from "../../../local/fly-emulator/api.ts";
import { machineProcessEnv, type MachineRunner, type RunnerEvents, type RunnerMachine } from "../../../local/fly-emulator/runner.ts";
import type { BatchDO, StatusBody } from "../../../orchestrator/batch-do.ts";
import type { BatchStore } from "../../../orchestrator/store/index.ts";
import { signGrant } from "../../../shared/token.ts";

export const CALLBACK_SECRET = "test-callback-secret";
/** Bytes of every output a test machine writes (and reports). */
export const OUTPUT_SIZE = 1234;
const env_ = env;
export const ADMIN = { authorization: "Bearer test-admin-token" };

/** What a machine does once started. */
export type Behaviour = "succeed" | "hang" | "error" | "silent-exit";

/** A runner whose machines do what the test says: call back, hang, or exit silently. */
export class TestRunner implements MachineRunner {
  readonly started: RunnerMachine[] = [];
  readonly live = new Map<string, { machine: RunnerMachine; events: RunnerEvents }>();
  behaviour: (m: RunnerMachine, nth: number) => Behaviour = () => "succeed";

  start(machine: RunnerMachine, events: RunnerEvents): void {
    this.started.push(machine);
    this.live.set(machine.id, { machine, events });
    const what = machine.dieSilently ? "silent-exit" : this.behaviour(machine, this.started.length);
    if (what === "hang") return;
    queueMicrotask(async () => {
      const env = machineProcessEnv(machine);
      let code = 137;
      const written = what === "succeed" ? await writeOutput(env) : true;
      if (what === "succeed" || what === "error") {
        const res = await postCallback(env, !written ? errorBody(env, UPLOAD_REFUSED(env)) : what === "succeed" ? successBody(env) : errorBody(env, "simulated failure"));
        code = res.ok ? 0 : 2;
      }
      this.live.delete(machine.id);
      events.exit(code);
    });
  }

  kill(id: string): void {
    this.live.delete(id);
  }

  /** Makes a hanging machine finish now. */
  async finish(id: string, what: "succeed" | "error" = "succeed"): Promise<Response> {
    const entry = this.live.get(id)!;
    const env = machineProcessEnv(entry.machine);
    const written = what === "succeed" ? await writeOutput(env) : true;
    const res = await postCallback(env, !written ? errorBody(env, UPLOAD_REFUSED(env)) : what === "succeed" ? successBody(env) : errorBody(env, "simulated failure"));
    this.live.delete(id);
    entry.events.exit(0);
    return res;
  }
}

/** The fly-worker's error when storage refuses its PUT on a failed condition (fly-worker/storage.ts). */
export const UPLOAD_REFUSED = (env: Record<string, string>) =>
  `upload of ${env.OUTPUT_R2_KEY} was refused (HTTP 412 PreconditionFailed): storage holds an object there that this attempt may not replace`;

/**
 * What a converting machine's upload leaves behind: the output object, of the size successBody
 * reports — written as its presigned PUT would be (R2 keeps the signed x-amz-meta-* headers as
 * custom metadata and refuses a failed If-None-Match / If-Match: developers.cloudflare.com/r2/api/s3/
 * conditional-operations/). False when storage refused it (HTTP 412).
 */
export async function writeOutput(env: Record<string, string>): Promise<boolean> {
  const headers = env.OUTPUT_HEADERS ? (JSON.parse(env.OUTPUT_HEADERS) as Record<string, string>) : {};
  const existing = await env_.BUCKET.head(env.OUTPUT_R2_KEY);
  if (headers["if-none-match"] === "*" && existing) return false;
  if (headers["if-match"] !== undefined && (!existing || headers["if-match"] !== existing.httpEtag)) return false;
  const customMetadata = Object.fromEntries(Object.entries(headers).filter(([k]) => k.startsWith("x-amz-meta-")).map(([k, v]) => [k.slice("x-amz-meta-".length), v]));
  await env_.BUCKET.put(env.OUTPUT_R2_KEY, new Uint8Array(OUTPUT_SIZE), { customMetadata, httpMetadata: { contentType: headers["content-type"] ?? "image/jpeg" } });
  return true;
}

export function successBody(env: Record<string, string>): Record<string, unknown> {
  const key = env.OUTPUT_R2_KEY;
  return {
    task_id: env.TASK_ID,
    batch_id: env.BATCH_ID,
    status: "success",
    output_r2_key: key,
    output_file_name: key.slice(key.lastIndexOf("/") + 1),
    output_file_size: OUTPUT_SIZE,
    machine_id: env.FLY_MACHINE_ID,
    performance: { total_time_ms: 10, download_time_ms: 1, conversion_time_ms: 8, upload_time_ms: 1 },
  };
}

export function errorBody(env: Record<string, string>, error: string, retryable?: boolean): Record<string, unknown> {
  return { task_id: env.TASK_ID, batch_id: env.BATCH_ID, status: "error", error, ...(retryable === undefined ? {} : { retryable }) };
}

export async function postCallback(env: Record<string, string>, body: unknown, token?: string): Promise<Response> {
  return exports.default.fetch(
    new Request(env.CALLBACK_URL, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token ?? env.CALLBACK_TOKEN}` },
      body: JSON.stringify(body),
    }),
  );
}

/** A callback as attempt `attempt` (default 1) of the task would send it, with that attempt's credential. */
export async function callbackTo(batchId: string, taskId: string, body: unknown, token?: string, attempt = 1): Promise<Response> {
  const t = token ?? (await attemptToken(batchId, taskId, attempt));
  return postCallback({ CALLBACK_URL: `http://orchestrator.test/callback/${batchId}/${taskId}`, CALLBACK_TOKEN: t }, body);
}

export function attemptToken(batchId: string, taskId: string, attempt: number, expiresAt = Date.now() + 3_600_000): Promise<string> {
  return signGrant(CALLBACK_SECRET, { kind: "callback", batchId, taskId, attempt }, expiresAt);
}

export interface Downstream {
  calls: { url: string; body: string; headers: Record<string, string> }[];
  /** Status codes to answer, in order; 200 once they run out. */
  script: number[];
}

export interface World {
  fly: FlyEmulator;
  runner: TestRunner;
  downstream: Downstream;
  restore(): Promise<void>;
}

/** Routes fetches to the Fly emulator and the downstream; everything else passes through. */
export function installWorld(options: FlyEmulatorOptions = {}): World {
  const runner = new TestRunner();
  const fly = new FlyEmulator({ rateLimits: false, runner, keepSentBodies: true, ...options });
  const flyFetch = emulatorFetch(fly);
  const downstream: Downstream = { calls: [], script: [] };
  const original = globalThis.fetch;
  const spy = vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
    const request = new Request(input, init);
    const host = new URL(request.url).host;
    if (host === "fly.test") return flyFetch(request);
    if (host === "downstream.test") {
      downstream.calls.push({ url: request.url, body: await request.text(), headers: Object.fromEntries(request.headers) });
      return new Response(null, { status: downstream.script.shift() ?? 200 });
    }
    return original(request);
  });
  return {
    fly,
    runner,
    downstream,
    async restore() {
      for (const id of touched) await env.BATCH_DO.getByName(id).reset();
      touched.clear();
      spy.mockRestore();
      await fly.stop();
    },
  };
}

/**
 * The final file list a downstream POST names (`index`: which POST, the last by default): the
 * NDJSON object in R2, one entry per line (engine/file-list.ts, shared/finalisation.ts).
 */
export async function finalFiles(downstream: Downstream, index = -1): Promise<{ r2_key: string; source_r2_key?: string; cid?: string; [k: string]: unknown }[]> {
  const call = downstream.calls.at(index);
  if (!call) throw new Error("nothing was POSTed downstream");
  const { file_list } = JSON.parse(call.body) as { file_list: { key: string } };
  const object = await env.BUCKET.get(file_list.key);
  if (!object) throw new Error(`the POST names ${file_list.key}, which does not exist`);
  return (await object.text())
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as { r2_key: string });
}

/** Batches a test touched: reset when its world is restored, so no batch keeps working into the next test. */
const touched = new Set<string>();

export const stub = (batchId: string) => {
  touched.add(batchId);
  return env.BATCH_DO.getByName(batchId);
};

export async function getStatus(batchId: string): Promise<StatusBody> {
  touched.add(batchId);
  const res = await exports.default.fetch(`http://orchestrator.test/status/${batchId}`);
  if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
  return (await res.json()) as StatusBody;
}

export interface AttemptView {
  attempt: number;
  machine_id: string | null;
  outcome: string;
  error: string | null;
  ended_at: string | null;
}

/** Every attempt of a task, through GET /status/:batchId/tasks/:taskId. */
export async function attemptsOf(batchId: string, taskId: string): Promise<AttemptView[]> {
  const res = await exports.default.fetch(`http://orchestrator.test/status/${batchId}/tasks/${taskId}`);
  if (res.status !== 200) throw new Error(`task ${taskId}: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { attempts: AttemptView[] }).attempts;
}

/** Polls GET /status until `done(status)`; real alarms and callbacks do the work. */
export async function waitForStatus(
  batchId: string,
  done: (s: StatusBody) => boolean,
  timeoutMs = 20_000,
): Promise<StatusBody> {
  const until = Date.now() + timeoutMs;
  let last: StatusBody | undefined;
  while (Date.now() < until) {
    last = await getStatus(batchId).catch(() => undefined);
    if (last && done(last)) return last;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting; last status: ${JSON.stringify(last)}`);
}

/** Puts `n` TIFF-named objects under `prefix` (content does not matter: no conversion here). */
export async function putTiffs(prefix: string, n: number, extra: string[] = []): Promise<string[]> {
  const keys = Array.from({ length: n }, (_, i) => `${prefix}scan-${String(i).padStart(5, "0")}.tif`);
  for (let i = 0; i < keys.length; i += 100) {
    await Promise.all(keys.slice(i, i + 100).map((k) => env.BUCKET.put(k, "II*\0", { httpMetadata: { contentType: "image/tiff" } })));
  }
  await Promise.all(extra.map((k) => env.BUCKET.put(k, "x")));
  return keys;
}

export async function putManifest(batchId: string, key: string, files: string[]): Promise<void> {
  const manifest = {
    batch_id: batchId,
    directories: [
      {
        directory_path: "/archive",
        processing_config: { ocr: false },
        files: files.map((k) => ({ r2_key: k, logical_path: `/archive/${k.split("/").pop()}`, file_name: k.split("/").pop(), file_size: 4, content_type: k.endsWith(".tif") ? "image/tiff" : "text/plain", cid: `cid-${k}` })),
      },
    ],
  };
  await env.BUCKET.put(key, JSON.stringify(manifest));
}

/** Runs `fn` with the DO's store, e.g. to move a deadline into the past. */
export function withStore<R>(batchId: string, fn: (store: BatchStore, sql: SqlStorage) => R): Promise<R> {
  return runInDurableObject(stub(batchId), (instance: BatchDO, state) =>
    fn((instance as unknown as { store: BatchStore }).store, state.storage.sql),
  );
}

/** Makes every deadline and backoff of the batch due now, as if time had passed. */
export function expireAll(batchId: string): Promise<void> {
  return withStore(batchId, (_s, sql) => {
    sql.exec("UPDATE tasks SET deadline_at = 0, limit_at = 0 WHERE state IN ('creating','booting','running')");
    sql.exec("UPDATE tasks SET next_at = 0 WHERE state IN ('pending','retrying')");
    // Machines are looked at now; a single-task machine's boot deadline passes with its task's.
    sql.exec("UPDATE workers SET check_at = 0 WHERE state IN ('creating','booting','live')");
    sql.exec("UPDATE workers SET limit_at = 0 WHERE state IN ('creating','booting') AND task_id IS NOT NULL");
  });
}

export function createRequests(fly: FlyEmulator) {
  return fly.requests.filter((r) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]));
}

/**
 * Every create body as the orchestrator sent it, config.env values included (the emulator's
 * records redact them, so only these can show a secret sent to Fly).
 */
export function sentCreateBodies(fly: FlyEmulator): string[] {
  return createRequests(fly).map((r) => {
    const body = fly.sentBody(r);
    if (body === undefined) throw new Error(`no body kept for ${r.method} ${r.path}: make the emulator with keepSentBodies`);
    return body;
  });
}

/**
 * Which of the orchestrator's own secrets and keys each body holds (`NAME in body i`): none may
 * reach Fly, where anyone who can read the app's machines sees them. The R2 access key ID is the
 * one exception SigV4 makes: it is the X-Amz-Credential of every presigned URL, and only there.
 */
export function secretsIn(bodies: string[]): string[] {
  const secrets = { R2_ACCESS_KEY_ID: env.R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY: env.R2_SECRET_ACCESS_KEY, CALLBACK_SECRET: env.CALLBACK_SECRET, FLY_API_TOKEN: env.FLY_API_TOKEN, ADMIN_TOKEN: env.ADMIN_TOKEN };
  return bodies.flatMap((body, i) => {
    const outsideCredential = body.replace(/X-Amz-Credential=[^&"\\]*/g, "X-Amz-Credential=");
    return Object.entries(secrets).filter(([, value]) => outsideCredential.includes(value)).map(([name]) => `${name} in body ${i}`);
  });
}
