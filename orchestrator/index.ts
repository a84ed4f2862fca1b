// The orchestrator Worker: the HTTP API and the queue consumer. Each batch lives in its own
// BatchDO (idFromName(batch_id)); this file only validates input and routes to it.
import { Router, type IRequest } from "itty-router";
import { z } from "zod";
import {
  BatchId,
  HeartbeatRequest,
  LeaseRequest,
  describeZodError,
  MAX_CALLBACK_BYTES,
  QueueMessage,
  ReserveRequest,
  TaskId,
} from "../shared/contracts.ts";
import { backoffMs } from "../shared/backoff.ts";
import { timingSafeEqualText, verifyGrant } from "../shared/token.ts";
import type { ApiStatus } from "./batch-do.ts";
import { CursorError, getBatchRow, listBatches } from "./batch-index.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { consumeDeadLetter, deadLetterQueue } from "./dead-letters.ts";
import { health } from "./health.ts";
import { archivedStatus } from "./engine/retention.ts";
import { runWatchdog } from "./engine/watchdog.ts";
import { errorMessage, log, logError } from "./log.ts";
import { phaseNames, pipelineProblem } from "./phases/index.ts";

export { BatchDO } from "./batch-do.ts";
export { FlyBudget } from "./fly/budget.ts";

type Handler = (req: IRequest, env: Env) => Promise<Response> | Response;

const router = Router<IRequest, [Env]>({
  catch: (err: unknown) => {
    if (err instanceof HttpError) return Response.json({ error: err.message, ...err.details }, { status: err.status });
    if (err instanceof ConfigError) {
      logError("HTTP", "misconfigured", err);
      return Response.json({ error: err.message }, { status: 500 });
    }
    logError("HTTP", "unhandled", err);
    return Response.json({ error: "internal error" }, { status: 500 });
  },
});

router
  .get("/health", (req, env) => health(req, env))
  .get("/batches", reader(batches))
  .get("/status/:batchId", reader(withBatch(status)))
  .get("/status/:batchId/events", reader(withBatch(events)))
  .get("/status/:batchId/tasks", reader(withBatch(tasks)))
  .get("/status/:batchId/tasks/:taskId", reader(withBatch(task)))
  .get("/status/:batchId/timeline", reader(withBatch(timeline)))
  .post("/callback/:batchId/:taskId", withBatch(callback))
  .post("/outputs/:batchId/:taskId", withBatch(reserveOutputs))
  .post("/lease/:batchId", withBatch(lease))
  .post("/lease/:batchId/heartbeat", withBatch(heartbeat))
  .post("/admin/reset/:batchId", admin(withBatch(reset)))
  .post("/admin/redrive/:batchId", admin(withBatch(redrive)))
  .post("/admin/batches", admin(enqueue))
  .post("/admin/debug/evict-fly-budget", admin(evictFlyBudget))
  .all("*", (req) => Response.json({ error: `no route for ${req.method} ${new URL(req.url).pathname}` }, { status: 404 }));

export default {
  fetch: (request, env) => router.fetch(request, env),
  queue: async (batch, env, _ctx) => {
    const handle = batch.queue === deadLetterQueue(env) ? consumeDeadLetter : consume;
    await Promise.all(batch.messages.map((message) => handle(message, env)));
  },
  scheduled: async (controller, env, _ctx) => {
    await runWatchdog(env, controller.scheduledTime);
  },
} satisfies ExportedHandler<Env>;

// ---- handlers -------------------------------------------------------------------------------

async function status(req: IRequest, env: Env): Promise<Response> {
  const body = await stub(env, req.params.batchId).status();
  if (body) return Response.json(body);
  // Past retention the batch's storage is gone; its index row (D1) still has the final counts.
  const row = await getBatchRow(env.BATCH_INDEX, req.params.batchId);
  if (!row?.archived_at) throw new HttpError(404, "unknown batch", { batch_id: req.params.batchId });
  return Response.json(archivedStatus(row, loadConfig(env).BATCH_RETENTION_DAYS));
}

/** Server-Sent Events from the batch's DO; Last-Event-ID (header or ?last_event_id) resumes. */
async function events(req: IRequest, env: Env): Promise<Response> {
  const last = req.headers.get("last-event-id") ?? new URL(req.url).searchParams.get("last_event_id");
  if (last !== null && !/^[0-9]{1,15}$/.test(last)) throw new HttpError(400, "invalid Last-Event-ID: must be the id of an event this stream sent");
  return stub(env, req.params.batchId).fetch(new Request("https://batch/events", { headers: last !== null ? { "last-event-id": last } : {} }));
}

const TasksQuery = z.object({
  status: z.enum(["pending", "retrying", "starting", "running", "done", "failed"]).optional(),
  cursor: z.string().regex(/^[0-9]{1,15}$/, "cursor must be the next_cursor of a previous page").optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

const BatchesQuery = z.object({
  status: z
    .string()
    .regex(/^(active|[A-Z][A-Z0-9_]{0,63})$/, "status must be `active` or a status such as DONE, ERROR, TIFF_CONVERSION")
    .optional(),
  cursor: z.string().regex(/^[A-Za-z0-9_-]{1,512}$/, "cursor must be the next_cursor of a previous page").optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});

/** The batch index (D1), newest first: what is running, what ended and how. */
async function batches(req: IRequest, env: Env): Promise<Response> {
  const query = parse(BatchesQuery, Object.fromEntries(new URL(req.url).searchParams), "query");
  try {
    return Response.json(await listBatches(env.BATCH_INDEX, { status: query.status ?? null, cursor: query.cursor ?? null, limit: query.limit }));
  } catch (error) {
    if (error instanceof CursorError) throw new HttpError(400, `invalid query: ${error.message}`);
    throw error;
  }
}

async function tasks(req: IRequest, env: Env): Promise<Response> {
  const query = parse(TasksQuery, Object.fromEntries(new URL(req.url).searchParams), "query");
  const page = await stub(env, req.params.batchId).tasks({
    status: (query.status ?? null) as ApiStatus | null,
    cursor: Number(query.cursor ?? 0),
    limit: query.limit,
  });
  if (!page) throw await unknownOrArchived(env, req.params.batchId);
  return Response.json(page);
}

const TimelineQuery = z.object({ limit: z.coerce.number().int().min(1).max(1000).default(400) });

/** The machine timeline in one read: open attempts and the latest ended ones (the dashboard draws it). */
async function timeline(req: IRequest, env: Env): Promise<Response> {
  const query = parse(TimelineQuery, Object.fromEntries(new URL(req.url).searchParams), "query");
  const body = await stub(env, req.params.batchId).timeline(query.limit);
  if (!body) throw await unknownOrArchived(env, req.params.batchId);
  return Response.json(body);
}

async function task(req: IRequest, env: Env): Promise<Response> {
  const taskId = parse(TaskId, req.params.taskId, "taskId");
  const body = await stub(env, req.params.batchId).task(taskId);
  if (!body) throw await unknownOrArchived(env, req.params.batchId, taskId);
  return Response.json(body);
}

/** The attempt a machine's credential names, or 401: bound to batch, task and attempt, and expiring. */
async function attemptOf(req: IRequest, env: Env, taskId: string, what: string): Promise<number> {
  const batchId = req.params.batchId;
  const verified = await verifyGrant(loadConfig(env).CALLBACK_SECRET, { kind: "callback", batchId, taskId }, req.headers.get("authorization"));
  if (!verified.ok) {
    log("Callback", "rejected", { batch_id: batchId, task_id: taskId, what, reason: verified.reason });
    throw new HttpError(401, `${what} token missing, invalid or expired`);
  }
  return verified.attempt;
}

/** Only the envelope is checked here; the task's phase checks the rest of the body. */
const CallbackEnvelope = z.looseObject({ task_id: TaskId, batch_id: BatchId });

async function callback(req: IRequest, env: Env): Promise<Response> {
  const { batchId } = req.params;
  const taskId = parse(TaskId, req.params.taskId, "taskId");
  const attempt = await attemptOf(req, env, taskId, "callback");
  const raw = await readJson(req, MAX_CALLBACK_BYTES);
  const body = parse(CallbackEnvelope, raw, "body");
  if (body.batch_id !== batchId || body.task_id !== taskId) {
    throw new HttpError(400, "body batch_id/task_id do not match the URL", {
      expected: { batch_id: batchId, task_id: taskId },
      received: { batch_id: body.batch_id, task_id: body.task_id },
    });
  }
  const reply = await stub(env, batchId).callback(taskId, attempt, raw);
  return Response.json(reply.body, { status: reply.code });
}

async function reserveOutputs(req: IRequest, env: Env): Promise<Response> {
  const taskId = parse(TaskId, req.params.taskId, "taskId");
  const attempt = await attemptOf(req, env, taskId, "outputs");
  const body = parse(ReserveRequest, await readJson(req, 4 * 1024), "body");
  const reply = await stub(env, req.params.batchId).reserveOutputs(taskId, attempt, body.pages);
  return Response.json(reply.body, { status: reply.code });
}

/** Pool machines authenticate with an expiring token bound to their batch and machine. */
async function poolMachine<T extends { worker_id: string }>(req: IRequest, env: Env, schema: z.ZodType<T>): Promise<T> {
  const body = parse(schema, await readJson(req, 16 * 1024), "body");
  const secret = loadConfig(env).CALLBACK_SECRET;
  const batchId = req.params.batchId;
  const verified = await verifyGrant(secret, { kind: "lease", batchId, workerId: body.worker_id }, req.headers.get("authorization"));
  if (!verified.ok) {
    log("Lease", "rejected", { batch_id: batchId, worker_id: body.worker_id, reason: verified.reason });
    throw new HttpError(401, "lease token missing, invalid or expired");
  }
  return body;
}

async function lease(req: IRequest, env: Env): Promise<Response> {
  const body = await poolMachine(req, env, LeaseRequest);
  const answer = await stub(env, req.params.batchId).lease(body.worker_id, body.machine_id ?? null);
  if (!answer) throw new HttpError(404, "unknown batch", { batch_id: req.params.batchId });
  return Response.json(answer);
}

async function heartbeat(req: IRequest, env: Env): Promise<Response> {
  const body = await poolMachine(req, env, HeartbeatRequest);
  const answer = await stub(env, req.params.batchId).heartbeat(body.worker_id, body.task_id);
  if (!answer) throw new HttpError(404, "unknown batch", { batch_id: req.params.batchId });
  return Response.json(answer, { status: answer.ok ? 200 : 409 });
}

async function reset(req: IRequest, env: Env): Promise<Response> {
  const result = await stub(env, req.params.batchId).reset();
  if (!result.ok) throw new HttpError(result.code, result.error, { batch_id: req.params.batchId });
  return Response.json(result);
}

async function redrive(req: IRequest, env: Env): Promise<Response> {
  const result = await stub(env, req.params.batchId).redrive();
  if (!result.ok) throw new HttpError(result.code, result.error, { batch_id: req.params.batchId });
  return Response.json(result, { status: 202 });
}

async function enqueue(req: IRequest, env: Env): Promise<Response> {
  const message = parse(QueueMessage, await readJson(req, 64 * 1024), "body");
  // The queue boundary checks the pipeline too (the batch ends in ERROR saying why); here it is a 400 before anything is queued.
  const problem = message.phases ? pipelineProblem(message.phases) : null;
  if (problem) throw new HttpError(400, `invalid body: ${problem}`, { registered_phases: phaseNames() });
  await env.BATCH_QUEUE.send(message, { contentType: "json" });
  log("HTTP", "batch_enqueued", { batch_id: message.batch_id });
  return Response.json(
    { ok: true, batch_id: message.batch_id, queued: true, status_url: `/status/${encodeURIComponent(message.batch_id)}` },
    { status: 202 },
  );
}

/** Debug hook for the soak (DEBUG_HOOKS=true only): evicts the app's FlyBudget DO, as the runtime may at any time. */
async function evictFlyBudget(_req: IRequest, env: Env): Promise<Response> {
  const config = loadConfig(env);
  if (!config.DEBUG_HOOKS) throw new HttpError(404, "debug hooks are off (set DEBUG_HOOKS=true)");
  try {
    await env.FLY_BUDGET.getByName(config.FLY_APP_NAME).evict();
  } catch (error) {
    // abort() ends the call with its reason: that is the eviction happening.
    if (!/evicted on request/.test(errorMessage(error))) throw error;
  }
  log("HTTP", "fly_budget_evicted", { app: config.FLY_APP_NAME });
  return Response.json({ ok: true, evicted: "FlyBudget", app: config.FLY_APP_NAME });
}

// ---- queue ----------------------------------------------------------------------------------

async function consume(message: Message<unknown>, env: Env): Promise<void> {
  let body: unknown = message.body;
  if (typeof body === "string") {
    try {
      body = JSON.parse(body);
    } catch {
      // Left as a string: validation below explains it.
    }
  }
  const parsed = QueueMessage.safeParse(body);
  try {
    if (!parsed.success) {
      const reason = `invalid queue message: ${describeZodError(parsed.error)}`;
      const batchId = BatchId.safeParse((body as { batch_id?: unknown } | null)?.batch_id);
      if (batchId.success) {
        await stub(env, batchId.data).recordInvalid(batchId.data, reason, JSON.stringify(body));
      }
      // Never retried: a malformed message will not become valid.
      log("Queue", "message_rejected", { message_id: message.id, batch_id: batchId.success ? batchId.data : null, error: reason });
      message.ack();
      return;
    }
    const result = await stub(env, parsed.data.batch_id).start(parsed.data);
    log("Queue", result.created ? "batch_recorded" : "redelivery_ignored", {
      message_id: message.id,
      batch_id: parsed.data.batch_id,
      status: result.status,
    });
    message.ack();
  } catch (error) {
    // ~2 s, 4 s … 5 min with jitter: messages that failed together do not come back together.
    const delaySeconds = Math.ceil(backoffMs(message.attempts, 2000, 300_000) / 1000);
    logError("Queue", "message_retry", error, { message_id: message.id, attempts: message.attempts, delay_s: delaySeconds });
    message.retry({ delaySeconds });
  }
}

// ---- helpers --------------------------------------------------------------------------------

class HttpError extends Error {
  readonly status: number;
  readonly details: Record<string, unknown>;
  constructor(status: number, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.status = status;
    this.details = details;
  }
}

/** 404 for a batch (or task) never seen; 410 for one whose records retention deleted (its status stays). */
async function unknownOrArchived(env: Env, batchId: string, taskId?: string): Promise<HttpError> {
  const row = await getBatchRow(env.BATCH_INDEX, batchId).catch(() => null);
  if (row?.archived_at) {
    return new HttpError(410, "batch archived: its tasks, attempts and events were deleted after BATCH_RETENTION_DAYS; GET /status/:batchId has its final counts", {
      batch_id: batchId,
    });
  }
  return new HttpError(404, taskId === undefined ? "unknown batch" : "unknown batch or task", { batch_id: batchId, ...(taskId === undefined ? {} : { task_id: taskId }) });
}

function parse<T extends z.ZodType>(schema: T, value: unknown, where: string): z.infer<T> {
  const result = schema.safeParse(value);
  if (!result.success) throw new HttpError(400, `invalid ${where}: ${describeZodError(result.error)}`);
  return result.data;
}

function stub(env: Env, batchId: string) {
  return env.BATCH_DO.getByName(batchId);
}

/** Validates :batchId before the handler runs. */
function withBatch(handler: Handler): Handler {
  return (req, env) => {
    let raw: string;
    try {
      raw = decodeURIComponent(req.params.batchId);
    } catch {
      throw new HttpError(400, "invalid batchId: malformed percent-encoding in the URL");
    }
    req.params.batchId = parse(BatchId, raw, "batchId");
    return handler(req, env);
  };
}

/** Status reads: open unless READ_TOKEN is set; then that token or the admin token. */
function reader(handler: Handler): Handler {
  return (req, env) => {
    const config = loadConfig(env);
    if (config.READ_TOKEN) {
      const given = (req.headers.get("authorization") ?? "").replace(/^Bearer\s+/, "").trim();
      if (!timingSafeEqualText(given, config.READ_TOKEN) && !timingSafeEqualText(given, config.ADMIN_TOKEN)) {
        throw new HttpError(401, "read token missing or invalid (Authorization: Bearer $READ_TOKEN)");
      }
    }
    return handler(req, env);
  };
}

function admin(handler: Handler): Handler {
  return (req, env) => {
    const token = loadConfig(env).ADMIN_TOKEN;
    const given = req.headers.get("authorization") ?? "";
    if (!given.startsWith("Bearer ") || !timingSafeEqualText(given.slice(7).trim(), token)) {
      throw new HttpError(401, "admin token missing or invalid (Authorization: Bearer $ADMIN_TOKEN)");
    }
    return handler(req, env);
  };
}

/** Reads a JSON body of at most `limit` bytes without trusting Content-Length. */
async function readJson(req: Request, limit: number): Promise<unknown> {
  const declared = Number(req.headers.get("content-length") ?? 0);
  if (declared > limit) throw new HttpError(413, `body larger than ${limit} bytes`);
  const reader = req.body?.getReader();
  if (!reader) throw new HttpError(400, "a JSON body is required");
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new HttpError(413, `body larger than ${limit} bytes`);
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    bytes.set(c, offset);
    offset += c.byteLength;
  }
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new HttpError(400, `body is not valid JSON: ${errorMessage(error)}`);
  }
}
